"""The store contract every format keeps (Maildir and mbox alike): the factory, and POP3
maildrops that are exclusive for a session (RFC 1939 4) and never leave a lock behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
from gevent.monkey import get_original

from geomail.config import StoreConfig
from geomail.errors import MailboxBusy
from geomail.safeio import run_blocking
from geomail.spool import BytesBody
from geomail.store import maildir, mbox
from geomail.store.base import Copy
from geomail.store.factory import open_store
from geomail.store.maildir import MaildirStore
from geomail.store.mbox import MboxStore
from tests.support import wait_for

real_sleep = get_original("time", "sleep")
HOST = "mail.example.com"
ALICE = "alice@example.com"
PREFIX = b"Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\n"
BODY = b"Subject: hello\n\nline one\n.dot\n"

Store = MaildirStore | MboxStore
# format -> (how a test builds the store, the module function that examines a mailbox in the
# threadpool while a maildrop opens)
FORMATS: dict[str, tuple[Callable[..., Store], tuple[Any, str]]] = {
    "maildir": (lambda path, **kw: MaildirStore(path, HOST, **kw), (maildir, "_examine")),
    "mbox": (lambda path, **kw: MboxStore(path, HOST, lock_timeout=0.3, **kw),
             (mbox, "_current_entries")),
}


@pytest.fixture(params=sorted(FORMATS))
def store_format(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(tmp_path: Path, store_format: str) -> Store:
    return FORMATS[store_format][0](str(tmp_path / "mail"))


def deliver(store: Store, body: bytes = BODY) -> None:
    store.deliver([Copy(ALICE, PREFIX)], BytesBody(body))


def test_open_store_builds_the_configured_format(tmp_path: Path, store_format: str) -> None:
    """The factory builds the store class that store.format names."""
    expected = type(FORMATS[store_format][0](str(tmp_path)))
    assert type(open_store(StoreConfig(store_format, str(tmp_path)), HOST)) is expected


def test_missing_mailbox_is_an_empty_maildrop(store: Store) -> None:
    """A mailbox nothing was delivered to yet opens as an empty maildrop (RFC 1939 4: the
    maildrop is opened at authentication), without being created."""
    drop = store.open_maildrop("nobody@example.com")
    assert list(drop.messages) == []
    drop.commit(set(), set())
    drop.close()
    assert not os.path.exists(store.mailbox_path("nobody@example.com"))


def test_second_open_is_busy_until_close(store: Store) -> None:
    """RFC 1939 4: one session per maildrop; MailboxBusy, also from another store instance,
    released by close() (idempotent); delivery goes on during a session."""
    deliver(store)
    first = store.open_maildrop(ALICE)
    with pytest.raises(MailboxBusy):
        store.open_maildrop(ALICE)
    other = type(store)(store.path, HOST)  # another instance: the lock still excludes it
    with pytest.raises(MailboxBusy):
        other.open_maildrop(ALICE)
    deliver(store, b"delivery goes on during a session\n")
    first.close()
    first.close()
    other.open_maildrop(ALICE).close()
    store.open_maildrop(ALICE).close()


def test_killed_session_greenlet_releases_the_mailbox(store: Store) -> None:
    """A session greenlet killed mid-session (close() in its finally) leaves no lock behind
    (RFC 1939 4: the lock lasts as long as the session)."""
    deliver(store)
    opened = gevent.event.Event()

    def session() -> None:
        drop = store.open_maildrop(ALICE)
        try:
            opened.set()
            gevent.sleep(30)
        finally:
            drop.close()

    greenlet = gevent.spawn(session)
    assert opened.wait(5)
    with pytest.raises(MailboxBusy):
        store.open_maildrop(ALICE)
    greenlet.kill()
    store.open_maildrop(ALICE).close()


def test_greenlet_killed_while_opening_leaves_no_lock(
    store: Store, store_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session killed while its maildrop is being opened in the threadpool (a timeout, a
    shutdown) does not leave the lock taken by the pool thread behind."""
    deliver(store)
    module, name = FORMATS[store_format][1]
    original = getattr(module, name)
    in_thread = threading.Event()

    def slow(*args: object) -> object:
        in_thread.set()
        real_sleep(0.3)
        return original(*args)

    monkeypatch.setattr(module, name, slow)
    opener = gevent.spawn(store.open_maildrop, ALICE)
    wait_for(in_thread.is_set, 5, message="the open to reach its thread")
    opener.kill()
    monkeypatch.undo()

    def opens() -> bool:
        try:
            store.open_maildrop(ALICE).close()
        except MailboxBusy:
            return False
        return True

    wait_for(opens, 5, message="the lock to be released (it leaked)")


def test_lock_of_a_killed_process_disappears(store: Store) -> None:
    """Another process's session lock is seen (MailboxBusy) and vanishes when it is SIGKILLed."""
    deliver(store)
    cls = type(store)
    script = textwrap.dedent(f"""
        from gevent import monkey; monkey.patch_all()
        import time
        from {cls.__module__} import {cls.__name__}
        drop = {cls.__name__}({store.path!r}, "h").open_maildrop({ALICE!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"locked\n"
        with pytest.raises(MailboxBusy):
            store.open_maildrop(ALICE)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    store.open_maildrop(ALICE).close()


def test_sequential_reads_of_small_messages_share_pool_calls(tmp_path: Path,
                                                             store_format: str) -> None:
    """Pipelined RETR (RFC 2920 spirit, RFC 1939 5) of many small messages reads ahead: 60
    messages take far fewer read-pool calls than 60; a single RETR takes one."""
    calls: list[object] = []

    def counting(fn: Callable[..., object], *args: object) -> object:
        calls.append(fn)
        return run_blocking(fn, *args)

    store = FORMATS[store_format][0](str(tmp_path / "mail"), reader=counting)
    for i in range(60):
        deliver(store, b"message %d\n" % i * 100)
    drop = store.open_maildrop(ALICE)
    calls.clear()
    contents = [b"".join(drop.read(i)) for i in range(60)]
    drop.close()
    assert contents == [PREFIX + b"message %d\n" % i * 100 for i in range(60)]
    assert len(calls) <= 10
    drop = store.open_maildrop(ALICE)
    calls.clear()
    assert b"".join(drop.read(30)) == PREFIX + b"message 30\n" * 100
    drop.close()
    assert len(calls) == 1
