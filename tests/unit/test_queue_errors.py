"""RFC 5321 4.5.4.1 and 6.1: an exception while handling one queue item keeps it on its backoff
schedule with its state saved and, when it keeps failing, sets it aside (never deletes it); the
start-up scan never deletes a message body whose item exists in any form."""

from __future__ import annotations

import logging
import os

import pytest

from geomail.config import RelayConfig
from geomail.queue import dsn
from geomail.queue.control import format_queue_list
from geomail.queue.files import scan
from geomail.queue.item import QueueItem, Recipient
from geomail.queue.queue import Queue
from geomail.spool import BytesBody
from tests.support.privileges import owned_tempdir, running_as_root, unprivileged
from tests.unit.test_queue import PERM, START, world  # noqa: F401  (world is a fixture)


def _relay() -> RelayConfig:
    return RelayConfig(retry=(60.0, 300.0, 900.0), max_queue_time=86400.0, delay_warning=0,
                       max_item_errors=3)


def test_failing_item_keeps_backoff_saves_state_then_is_held(world, monkeypatch,  # noqa: F811
                                                             caplog) -> None:
    """RFC 5321 4.5.4.1 (retry strategy): when building the bounce raises (a
    bug), the item's state is saved with the error count, it is retried on the relay.retry
    backoff (60 s, then 300 s), not every retry[0], and after relay.max_item_errors turns in a
    row it moves to hold/ with its message, logged with its id and listed as held."""
    calls: list[float] = []

    def broken(**kwargs: object) -> bytes:
        calls.append(w.clock.now())
        raise ValueError("simulated bug in the DSN builder")

    monkeypatch.setattr(dsn, "build_dsn", broken)
    caplog.set_level(logging.INFO, logger="geomail")
    w = world(_relay(), remote={"bob@example.org": [PERM]})
    item_id = w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(b"x\n"))
    w.settle()
    assert len(calls) == 1
    saved = w.item(item_id)  # the outcome is on disk although the turn failed
    assert saved.recipients[0].status == "failed" and not saved.recipients[0].notified
    assert saved.extra["internal_errors"] == 1
    assert any(f"id={item_id}" in r.getMessage() and "simulated bug" in r.getMessage()
               for r in caplog.records if r.levelno >= logging.ERROR)

    w.clock.advance(61 * 1.1)  # the first step (with its jitter)
    w.settle()
    assert len(calls) == 2
    w.clock.advance(61 * 1.1)  # retry[0] again: too early now, the second step is 300 s
    w.settle()
    assert len(calls) == 2
    assert w.item(item_id).extra["internal_errors"] == 2
    w.clock.advance(300)
    w.settle()
    assert len(calls) == 3  # the third error in a row: set aside

    held = os.path.join(w.directory, "hold")
    assert sorted(os.listdir(held)) == [f"{item_id}.json", f"{item_id}.msg"]
    assert w.files() == ["hold"]
    assert w.queue.held == 1
    [listed] = w.queue.items()
    assert listed["id"] == item_id and "3 internal errors" in listed["held"]["reason"]
    assert "never (held)" in format_queue_list([listed])
    assert any("queue-item-held" in r.getMessage() and item_id in r.getMessage()
               for r in caplog.records)
    w.clock.advance(3600)
    w.settle()
    assert len(calls) == 3  # no more attempts

    restarted = w.make()  # a restart keeps it aside, listed
    w.queue.stop(1)
    restarted.load()
    try:
        assert [i["id"] for i in restarted.items()] == [item_id] and restarted.held == 1
        assert os.path.exists(os.path.join(held, f"{item_id}.msg"))
    finally:
        restarted.stop(1)


ITEM_ID = "018f000000000000000009"


def _item() -> QueueItem:
    return QueueItem(ITEM_ID, "a@example.com", [Recipient("b@example.org")], START, START)


@pytest.mark.parametrize("form", ["bad", "tmp", "held"])
def test_scan_keeps_a_body_whose_item_exists_in_any_form(tmp_path, form: str) -> None:
    """RFC 5321 6.1 (no queue scan loses mail): the start-up repair removes a message body
    only when its item exists in no form; a body next to a damaged ``.json.bad``, a temp item
    file, or an item in hold/ stays where it is."""
    directory = tmp_path / "queue"
    directory.mkdir()
    body = directory / f"{ITEM_ID}.msg"
    body.write_bytes(b"Subject: the mail itself\n\nhello\n")
    if form == "bad":
        (directory / f"{ITEM_ID}.json.bad").write_bytes(b"{garbage")
    elif form == "tmp":
        (directory / f".tmp.1.abc.{ITEM_ID}.json").write_bytes(_item().to_json())
    else:
        (directory / "hold").mkdir()
        (directory / "hold" / f"{ITEM_ID}.json").write_bytes(_item().to_json())
    assert scan(str(directory), repair=True) == []
    assert body.read_bytes() == b"Subject: the mail itself\n\nhello\n"
    assert scan(str(directory), repair=True) == []  # and again at the next start
    assert body.exists()


def test_scan_leaves_an_item_it_cannot_read_and_its_message() -> None:
    """RFC 5321 6.1 (an item root rewrote): an item rewritten by root as root:0600 is unreadable to
    the server's user; its start-up scan leaves it alone (no ``.bad``) and keeps its message,
    at the next start too (run as ``nobody`` when the suite runs as root)."""
    with owned_tempdir() as base:
        directory = base / "queue"
        directory.mkdir(mode=0o700)
        body = directory / f"{ITEM_ID}.msg"
        body.write_bytes(b"Subject: the mail itself\n\nhello\n")
        item = directory / f"{ITEM_ID}.json"
        item.write_bytes(_item().to_json())
        if running_as_root():
            for path in (directory, body):
                os.chown(path, *_nobody())
            item.chmod(0o600)  # root's, as `geomail queue flush` run as root left it
        else:
            item.chmod(0)
        with unprivileged():
            first = scan(str(directory), repair=True)
            second = scan(str(directory), repair=True)
            names = sorted(os.listdir(directory))
        assert first == second == []
        assert names == [f"{ITEM_ID}.json", f"{ITEM_ID}.msg"]


def _nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def test_scan_still_removes_a_true_orphan(tmp_path) -> None:
    """RFC 5321 6.1: a body with no item in any form is a put() that never returned (its client
    got no 250), removed at start-up."""
    directory = tmp_path / "queue"
    directory.mkdir()
    (directory / f"{ITEM_ID}.msg").write_bytes(b"x\n")
    assert scan(str(directory), repair=True) == []
    assert os.listdir(directory) == []


def _hops(count: int) -> bytes:
    return b"".join(b"Received: from hop%d.example by hop%d.example; Sun, 6 Dec 2026 03:00:00"
                    b" +0000\n" % (n, n + 1) for n in range(count))


def test_queued_mail_that_loops_is_bounced_not_relayed(tmp_path) -> None:
    """RFC 5321 6.3 (loop detection; Postfix hopcount_limit): a queued message carrying more
    Received fields than limits.max_received_headers (51 > 50) is not relayed nor delivered: the
    sender gets a DSN with Status 5.4.6; one with exactly 50 is relayed."""
    from tests.unit.test_queue import World, dsns

    w = World(str(tmp_path / "queue"), _relay())
    w.queue = Queue(w.directory, w.relay, "mail.example.com", local=w.local, remote=w.remote,
                    is_local=lambda a: a.endswith("@example.com"),
                    postmaster="postmaster@example.com", clock=w.clock, max_received=50)
    w.queue.load()
    try:
        looping = w.queue.put("alice@example.com", ["bob@example.org", "carol@example.com"],
                              BytesBody(_hops(50) + b"Subject: loop\n\nround and round\n"),
                              prefix=_hops(1))
        fine = w.queue.put("alice@example.com", ["dave@example.org"],
                           BytesBody(_hops(49) + b"Subject: fine\n\nhi\n"), prefix=_hops(1))
        w.settle()
        assert [r for _, r, _ in w.remote.calls] == [["dave@example.org"]]
        assert not [c for c in w.local.calls if c[0] != ""]  # carol got nothing but ...
        [report] = dsns(w.local)  # ... alice got the bounce
        blocks = report.get_payload()[1].get_payload()[1:]
        assert {b["Final-Recipient"] for b in blocks} == {"rfc822; bob@example.org",
                                                         "rfc822; carol@example.com"}
        assert {b["Status"] for b in blocks} == {"5.4.6"}
        assert all("mail loop: 51 Received" in b["Diagnostic-Code"] for b in blocks)
        assert looping not in [i["id"] for i in w.queue.items()]
        assert fine not in [i["id"] for i in w.queue.items()]
    finally:
        w.queue.stop(1)
