"""MboxStore: mboxrd delivery, locking, the sidecar index, POP3 maildrops (RFC 1939)."""

from __future__ import annotations

import errno
import os
import random
import re
import stat
import subprocess
import sys
import textwrap
import time

import gevent
import gevent.event
import gevent.pool
import pytest
from gevent.monkey import get_original

from geomail.errors import StoreError
from geomail.spool import BytesBody, Spool
from geomail.store import _mboxrd
from geomail.store.base import Copy
from geomail.store.mbox import MboxStore
from tests.support.faults import fail_fsync_at

real_sleep = get_original("time", "sleep")
PREFIX = b"Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\n"
BODY = b"Subject: hello\n\nline one\n.dot\n"
SEPARATOR = re.compile(rb"From (\S+) \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n")
ALICE = "alice@example.com"


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@pytest.fixture
def store(tmp_path) -> MboxStore:
    return MboxStore(str(tmp_path / "mail"), "mail.example.com", lock_timeout=0.3)


def deliver(store: MboxStore, body: bytes = BODY, *mailboxes: str, prefix: bytes = PREFIX):
    store.deliver([Copy(m, prefix) for m in mailboxes or (ALICE,)], BytesBody(body))


def contents(store: MboxStore, mailbox: str = ALICE) -> list[bytes]:
    drop = store.open_maildrop(mailbox)
    try:
        return [b"".join(drop.read(i)) for i in range(len(drop.messages))]
    finally:
        drop.close()


def uids(store: MboxStore, mailbox: str = ALICE) -> list[str]:
    drop = store.open_maildrop(mailbox)
    drop.close()
    return [message.uid for message in drop.messages]


def index_path(store: MboxStore, mailbox: str = ALICE) -> str:
    mbox = store.mailbox_path(mailbox)
    return os.path.join(os.path.dirname(mbox), f".{os.path.basename(mbox)}.index")


def no_scan(monkeypatch) -> None:
    def fail(*args):
        raise AssertionError("the index should have been used")

    monkeypatch.setattr("geomail.store.mbox.scan", fail)


# ---- delivery ---------------------------------------------------------------------------------


def test_mboxrd_layout_byte_exact(store):
    """Each message is a From_ line (Return-Path sender, asctime date), the prefix and body,
    then a blank line (mboxrd)."""
    deliver(store)
    deliver(store, b"second\n")
    data = read(store.mailbox_path(ALICE))
    first = SEPARATOR.match(data)
    assert first and first[1] == b"bob@example.org"
    rest = data[first.end():]
    assert rest.startswith(PREFIX + BODY + b"\n")
    second = SEPARATOR.match(rest, len(PREFIX + BODY + b"\n"))
    assert second and rest[second.end():] == PREFIX + b"second\n\n"
    assert store.mailbox_path(ALICE) == store.path + "/example.com/alice"


def test_null_or_missing_return_path_gives_mailer_daemon(store):
    """A bounce (Return-Path: <>) or a prefix without Return-Path: From MAILER-DAEMON."""
    deliver(store, prefix=b"Return-Path: <>\n")
    deliver(store, prefix=b"X-Other: 1\n")
    separators = SEPARATOR.findall(read(store.mailbox_path(ALICE)))
    assert separators == [b"MAILER-DAEMON", b"MAILER-DAEMON"]


def test_from_lines_are_quoted_on_disk_and_unquoted_on_read(store):
    """mboxrd: every ^>*From line gets one more '>' when stored, one less when read."""
    body = (b"From the start\n>From quoted\n>>From twice\nFrom\n From indented\n"
            b"Fromage\n>From  \nend\n")
    deliver(store, body)
    data = read(store.mailbox_path(ALICE))
    assert (b">From the start\n>>From quoted\n>>>From twice\nFrom\n From indented\n"
            b"Fromage\n>>From  \nend\n") in data
    assert contents(store) == [PREFIX + body]


def test_sizes_are_exact_crlf_octets(store):
    """LIST size (RFC 1939 5) is the message with CRLF endings, unquoted."""
    body = b"From x\n>From y\n\n\nlast\n"
    deliver(store, body)
    drop = store.open_maildrop(ALICE)
    assert drop.messages[0].size == len(crlf(PREFIX + body))
    drop.close()


def test_message_without_final_newline_gets_one(store):
    """mbox cannot keep a message without a final newline: it gets one, counted in its size."""
    deliver(store, b"no newline")
    deliver(store, b"")
    drop = store.open_maildrop(ALICE)
    assert [m.size for m in drop.messages] == [len(crlf(PREFIX + b"no newline\n")),
                                               len(crlf(PREFIX))]
    drop.close()
    assert contents(store) == [PREFIX + b"no newline\n", PREFIX]


def test_permissions_and_no_dotlock_left(store):
    """The mbox is 0600, its new directory 0700; the dotlock is gone after the append."""
    deliver(store)
    mbox = store.mailbox_path(ALICE)
    assert stat.S_IMODE(os.stat(mbox).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(mbox)).st_mode) == 0o700
    assert not os.path.exists(mbox + ".lock")


def test_new_mbox_directories_are_fsynced(store, monkeypatch):
    """Creating the mailbox fsyncs the directories that gained an entry."""
    synced: list[str] = []
    monkeypatch.setattr("geomail.store.mbox.fsync_dir", synced.append)
    deliver(store)
    directory = os.path.dirname(store.mailbox_path(ALICE))
    assert {os.path.dirname(store.path), store.path, directory} <= set(synced)


@pytest.mark.parametrize("mailbox", [
    "../x@example.com", "a/b@example.com", "alice@..", "@example.com", "alice@", "alice",
    "a\0b@example.com", ".alice@example.com", "alice.lock@example.com",
])
def test_unsafe_names_are_refused(store, mailbox):
    """Names that would leave the store, or collide with a dotlock or index, are refused."""
    with pytest.raises(StoreError):
        deliver(store, BODY, mailbox)
    with pytest.raises(StoreError):
        store.open_maildrop(mailbox)
    assert not os.path.exists(store.path)


def test_second_mailbox_failing_leaves_the_first_untouched(store):
    """All or nothing: if the second mbox cannot be written (here a directory), the first is
    truncated back to its length and its index still matches."""
    deliver(store)
    before = read(store.mailbox_path(ALICE))
    os.makedirs(store.mailbox_path("bob@example.com"))
    with pytest.raises(StoreError, match=r"bob@example\.com: Is a directory"):
        deliver(store, b"new\n", ALICE, "bob@example.com")
    assert read(store.mailbox_path(ALICE)) == before
    assert contents(store) == [PREFIX + BODY]


def test_disk_full_truncates_every_mbox_back(store, monkeypatch):
    """ENOSPC at the second fsync: both mboxes are cut back to their original length."""
    deliver(store, BODY, ALICE, "bob@example.com")
    before = [read(store.mailbox_path(m)) for m in (ALICE, "bob@example.com")]
    fail_fsync_at(monkeypatch, 2)
    with pytest.raises(StoreError, match="No space left"):
        deliver(store, b"lost\n", ALICE, "bob@example.com")
    monkeypatch.undo()
    assert [read(store.mailbox_path(m)) for m in (ALICE, "bob@example.com")] == before
    assert contents(store) == [PREFIX + BODY]


def test_large_spilled_body_round_trips_in_chunks(store, tmp_path):
    """A spilled Spool body with From lines everywhere (some across chunk borders) is stored
    quoted and read back unquoted, streamed in chunks of about 256 KiB."""
    spool = Spool(str(tmp_path / "spool"), memory_limit=32 * 1024)
    rng = random.Random(7)
    for i in range(30_000):
        spool.write(rng.choice([b"From ", b">From ", b"Fr", b"", b"x" * 37]) + b"%d\n" % i)
    spool.finish()
    assert not spool.in_memory
    data = b"".join(spool.chunks())
    store.deliver([Copy(ALICE, PREFIX)], spool)
    spool.discard()
    drop = store.open_maildrop(ALICE)
    try:
        assert drop.messages[0].size == len(crlf(PREFIX + data))
        chunks = list(drop.read(0))
    finally:
        drop.close()
    assert len(chunks) > 1 and max(map(len, chunks)) <= 256 * 1024 + 4096
    assert b"".join(chunks) == PREFIX + data


def test_concurrent_deliveries_all_land(store, monkeypatch):
    """100 greenlets appending at once: every message is whole and listed, from the index."""
    pool = gevent.pool.Pool(100)
    for i in range(100):
        pool.spawn(deliver, store, b"message %d\nFrom %d\n" % (i, i))
    pool.join(raise_error=True)
    no_scan(monkeypatch)
    assert sorted(contents(store)) == sorted(
        PREFIX + b"message %d\nFrom %d\n" % (i, i) for i in range(100))


# ---- locking ----------------------------------------------------------------------------------


def test_stale_dotlock_is_removed(store):
    """A dotlock older than 5 minutes was left by a crashed program: it is removed."""
    deliver(store)
    dotlock = store.mailbox_path(ALICE) + ".lock"
    with open(dotlock, "w"):
        pass
    old = time.time() - 600
    os.utime(dotlock, (old, old))
    deliver(store, b"two\n")
    assert len(contents(store)) == 2 and not os.path.exists(dotlock)


def test_fresh_dotlock_makes_delivery_wait_then_fail(store):
    """A live dotlock is waited for, at most lock_timeout, then StoreError 'mailbox locked'."""
    deliver(store)
    dotlock = store.mailbox_path(ALICE) + ".lock"
    with open(dotlock, "w"):
        pass
    started = time.monotonic()
    with pytest.raises(StoreError, match="mailbox locked"):
        deliver(store, b"two\n")
    assert time.monotonic() - started >= 0.3
    gevent.spawn_later(0.1, os.unlink, dotlock)
    store.lock_timeout = 5
    deliver(store, b"two\n")
    assert len(contents(store)) == 2


def test_fcntl_lock_of_another_program_is_respected(store):
    """An fcntl lock held by another process (as mutt or procmail take it) delays delivery."""
    deliver(store)
    script = textwrap.dedent(f"""
        import fcntl, sys, time
        fd = open({store.mailbox_path(ALICE)!r}, "ab")
        fcntl.lockf(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(float(sys.argv[1]))
    """)
    child = subprocess.Popen([sys.executable, "-c", script, "0.6"], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"locked\n"
        started = time.monotonic()
        store.lock_timeout = 10
        deliver(store, b"two\n")
        assert time.monotonic() - started >= 0.3
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert len(contents(store)) == 2


# ---- the index --------------------------------------------------------------------------------


def test_index_matches_a_scan_and_is_used(store, monkeypatch):
    """The index written on delivery equals what scanning the mbox gives, and opening the
    maildrop uses it without reading the messages."""
    for body in (BODY, b"From a\n\n", b"", b"x\n\n\n"):
        deliver(store, body)
    entries, state = _mboxrd.read_index(index_path(store))
    fd = os.open(store.mailbox_path(ALICE), os.O_RDONLY)
    try:
        assert state == _mboxrd.state_of(os.fstat(fd))
        assert _mboxrd.scan(fd, []) == entries
    finally:
        os.close(fd)
    no_scan(monkeypatch)
    assert contents(store) == [PREFIX + BODY, PREFIX + b"From a\n\n", PREFIX, PREFIX + b"x\n\n\n"]


def test_external_append_triggers_rebuild_keeping_uids(store):
    """Mail appended by another program is found (index rebuilt by scanning); the UIDLs of
    the messages already there do not change (RFC 1939 7)."""
    deliver(store, b"one\n")
    deliver(store, b"two\n")
    before = uids(store)
    with open(store.mailbox_path(ALICE), "ab") as handle:
        handle.write(b"From other@example.net Mon Jan  1 00:00:00 2024\n"
                     b"Subject: external\n\n>From quoted\nbody\n\n")
    after = uids(store)
    assert after[:2] == before and len(set(after)) == 3
    assert contents(store)[2] == b"Subject: external\n\nFrom quoted\nbody\n"
    deliver(store, b"three\n")  # the index is valid again: appended to, not rebuilt
    assert uids(store)[:3] == after


def test_uids_stable_across_opens_and_rebuilds(store):
    """UIDLs are the same at every open, after the index is lost, and after it is torn."""
    for i in range(5):
        deliver(store, b"message %d\n" % i)
    first = uids(store)
    assert first == uids(store)
    for uid in first:
        assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid)
    os.unlink(index_path(store))
    assert uids(store) == first
    with open(index_path(store), "r+b") as handle:
        handle.truncate(os.path.getsize(index_path(store)) - 10)
    assert uids(store) == first
    with open(index_path(store), "ab") as handle:
        handle.write(b"\0" * 100 + b"\n")
    assert uids(store) == first


def test_identical_messages_get_distinct_stable_uids(store):
    """Two copies with identical content get distinct UIDLs, which survive deleting the
    first (the index keeps them) and a rebuild of a stale index (old UIDLs taken back)."""
    deliver(store)
    deliver(store)
    deliver(store)
    first = uids(store)
    assert len(set(first)) == 3
    drop = store.open_maildrop(ALICE)
    drop.commit({0}, set())
    drop.close()
    assert uids(store) == first[1:]
    with open(store.mailbox_path(ALICE), "ab") as handle:  # stale index: rebuilt by a scan
        handle.write(b"From x Mon Jan  1 00:00:00 2024\nexternal\n\n")
    assert uids(store)[:2] == first[1:]


def test_padding_after_a_message_without_blank_line(store):
    """A message appended by another program without the blank separator line gets one
    before the next From_ line, and is read back unchanged."""
    mbox = store.mailbox_path(ALICE)
    os.makedirs(os.path.dirname(mbox), mode=0o700)
    with open(mbox, "wb") as handle:
        handle.write(b"From x Mon Jan  1 00:00:00 2024\nno blank line\n")
    deliver(store)
    assert contents(store) == [b"no blank line\n", PREFIX + BODY]


# ---- POP3 maildrop ----------------------------------------------------------------------------


def test_commit_rewrites_without_deleted_keeping_later_mail(store, monkeypatch):
    """UPDATE (RFC 1939 6) removes deleted messages by writing a new file and renaming it
    over the mbox; mail delivered during the session is kept; the index stays valid."""
    for i in range(3):
        deliver(store, b"message %d\n" % i)
    before = uids(store)
    drop = store.open_maildrop(ALICE)
    deliver(store, b"during the session\n")
    inode = os.stat(store.mailbox_path(ALICE)).st_ino
    drop.commit({0, 2}, {1})
    drop.close()
    assert os.stat(store.mailbox_path(ALICE)).st_ino != inode
    no_scan(monkeypatch)
    assert contents(store) == [PREFIX + b"message 1\n", PREFIX + b"during the session\n"]
    assert uids(store)[0] == before[1]
    leftovers = [n for n in os.listdir(os.path.dirname(store.mailbox_path(ALICE)))
                 if n not in ("alice", ".alice.index", ".alice.pop3.lock")]
    assert leftovers == []


def test_commit_deleting_everything_then_delivering_again(store, monkeypatch):
    """Deleting all messages leaves an empty mbox whose index still matches."""
    deliver(store)
    drop = store.open_maildrop(ALICE)
    drop.commit({0}, set())
    drop.close()
    assert os.path.getsize(store.mailbox_path(ALICE)) == 0
    no_scan(monkeypatch)
    deliver(store, b"again\n")
    assert contents(store) == [PREFIX + b"again\n"]


def test_commit_ignores_messages_removed_meanwhile(store):
    """A message another program removed during the session is not an error."""
    deliver(store, b"one\n")
    deliver(store, b"two\n")
    drop = store.open_maildrop(ALICE)
    mbox = store.mailbox_path(ALICE)
    data = read(mbox)
    second = data.index(b"From ", 1)
    with open(mbox, "wb") as handle:  # another program keeps only the second message
        handle.write(data[second:])
    drop.commit({0}, set())
    drop.close()
    assert contents(store) == [PREFIX + b"two\n"]


def test_commit_keeps_mode_and_rewrite_failure_loses_nothing(store, monkeypatch):
    """A failing rewrite (disk full) leaves the mbox as it was and raises StoreError."""
    deliver(store, b"one\n")
    deliver(store, b"two\n")
    os.chmod(store.mailbox_path(ALICE), 0o640)
    before = read(store.mailbox_path(ALICE))
    drop = store.open_maildrop(ALICE)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError, match="No space left"):
        drop.commit({0}, set())
    monkeypatch.undo()
    assert read(store.mailbox_path(ALICE)) == before
    drop.commit({0}, set())
    drop.close()
    assert contents(store) == [PREFIX + b"two\n"]
    assert stat.S_IMODE(os.stat(store.mailbox_path(ALICE)).st_mode) == 0o640


def test_reads_after_commit_and_of_changed_file(store):
    """Reads use the file as it was at the snapshot; a file changed under the session gives
    StoreError, never wrong content."""
    deliver(store, b"one\n")
    deliver(store, b"two\n")
    drop = store.open_maildrop(ALICE)
    drop.commit({0}, set())
    assert b"".join(drop.read(1)) == PREFIX + b"two\n"  # the old file, still open
    drop.close()
    drop = store.open_maildrop(ALICE)
    with open(store.mailbox_path(ALICE), "r+b") as handle:
        handle.write(b"XXXXX")
    with pytest.raises(StoreError, match="changed"):
        b"".join(drop.read(0))
    drop.close()


# ---- the mboxrd line rewriter -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_line_rewriter_gives_the_same_result_for_any_split(seed):
    """Quoting and unquoting streamed in random pieces equal the whole-text substitution."""
    rng = random.Random(seed)
    words = [b"From ", b">From ", b">>", b"Fro", b"m ", b"x", b"\n", b">", b"From"]
    text = b"".join(rng.choice(words) for _ in range(400))
    for pattern, repl in ((_mboxrd.QUOTE, rb">\1"), (_mboxrd.UNQUOTE, rb"\1")):
        rewriter = _mboxrd.LineRewriter(pattern, repl)
        cuts = sorted(rng.sample(range(1, len(text)), 30))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        streamed = b"".join(rewriter.feed(p) for p in pieces) + rewriter.flush()
        assert streamed == pattern.sub(repl, text)
