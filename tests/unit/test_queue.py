"""queue.Queue with scripted couriers and a fake clock: durability, retries (RFC 5321 4.5.4.1),
bounces (RFC 3464), no bounce of the null sender (RFC 5321 6.1), restart from disk."""

from __future__ import annotations

import email
import json
import os
import random
from collections.abc import Sequence
from email import policy

import gevent
import pytest
from gevent.event import Event

from geomail.config import RelayConfig
from geomail.delivery import Attempt, DeliveryError, Outcome, Outcomes
from geomail.envelope import Body
from geomail.queue.files import QueueBusy
from geomail.queue.item import QueueItem
from geomail.queue.queue import Queue
from geomail.spool import BytesBody
from tests.support import wait_for

START = 1_700_000_000.0
MINUTE = 60.0
TEMP = DeliveryError("try later", False, 451, "4.3.0")
PERM = DeliveryError("no such user", True, 550, "5.1.1")


class FakeClock:
    """Virtual time: ``advance`` releases the waits whose deadline passed."""

    def __init__(self) -> None:
        self.t = START
        self.timers: list[tuple[float, Event]] = []
        self.sleepers: set[gevent.Greenlet] = set()  # greenlets parked in wait()

    def now(self) -> float:
        return self.t

    def wait(self, event: Event, deadline: float) -> None:
        if event.is_set() or self.t >= deadline:
            return
        timer = Event()
        entry = (deadline, timer)
        self.timers.append(entry)
        self.sleepers.add(gevent.getcurrent())
        try:
            gevent.wait([event, timer], count=1)
        finally:
            self.timers.remove(entry)
            self.sleepers.discard(gevent.getcurrent())

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for deadline, timer in list(self.timers):
            if deadline <= self.t:
                timer.set()
        gevent.sleep(0.01)


class FakeCourier:
    """Scripted outcomes per address (consumed one per attempt; then delivered)."""

    def __init__(self, name: str, script: dict[str, list[DeliveryError | None]] | None = None):
        self.name = name
        self.script = script or {}
        self.calls: list[tuple[str, list[str], bytes]] = []

    def deliver(self, sender: str, recipients: Sequence[str], body: Body) -> Outcomes:
        content = b"".join(body.chunks())
        self.calls.append((sender, list(recipients), content))
        out: Outcomes = {}
        for rcpt in recipients:
            steps = self.script.get(rcpt, [])
            out[rcpt] = Outcome(steps.pop(0) if steps else None,
                                Attempt(f"mx.{self.name} [192.0.2.1]:25", "TLSv1.3"))
        return out

    def delivered_to(self, address: str) -> list[bytes]:
        return [c for _, rcpts, c in self.calls if address in rcpts]


class World:
    def __init__(self, directory: str, relay: RelayConfig, **script) -> None:
        self.directory = directory
        self.relay = relay
        self.clock = FakeClock()
        self.local = FakeCourier("local", script.get("local"))
        self.remote = FakeCourier("remote", script.get("remote"))
        self.events: list[tuple[str, str, str | None]] = []
        self.queue = self.make()

    def make(self) -> Queue:
        return Queue(self.directory, self.relay, "mail.example.com", local=self.local,
                     remote=self.remote, is_local=lambda a: a.endswith("@example.com"),
                     postmaster="postmaster@example.com", clock=self.clock,
                     rng=random.Random(1),
                     on_event=lambda e, i, r: self.events.append((e, i.id, r and r.address)))

    def files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if n != "lock")

    def item(self, item_id: str) -> QueueItem:
        with open(os.path.join(self.directory, f"{item_id}.json"), "rb") as handle:
            return QueueItem.from_json(handle.read())

    def settle(self) -> None:
        """Let the send loops run until every one has finished or waits for the clock."""
        def parked() -> bool:
            loops = [e.greenlet for e in self.queue._entries.values() if e.greenlet]
            return all(g.dead or g in self.clock.sleepers for g in loops)

        gevent.sleep(0)
        wait_for(parked, 5, interval=0.002, message="send loops parked")


RELAY = RelayConfig(retry=(60.0, 300.0, 900.0), max_queue_time=3600.0, delay_warning=0)


@pytest.fixture
def world(tmp_path):
    worlds: list[World] = []

    def make(relay: RelayConfig = RELAY, **script) -> World:
        w = World(str(tmp_path / "queue"), relay, **script)
        os.makedirs(w.directory, exist_ok=True)
        w.queue.load()
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.queue.stop(1)


def dsns(courier: FakeCourier) -> list[email.message.Message]:
    return [email.message_from_bytes(c, policy=policy.default)
            for sender, _, c in courier.calls if sender == ""]


def test_put_is_durable_before_returning(world) -> None:
    """RFC 5321 4.5.4.1 / 6.1: when put returns, message and envelope are on disk (files
    fsynced), the message with the prefix before it, LF line endings."""
    w = world(remote={"bob@example.org": [TEMP]})
    item_id = w.queue.put("alice@example.com", ["bob@example.org"],
                          BytesBody(b"Subject: x\n\nhello \xc3\xa9\n"), prefix=b"Received: x\n")
    assert w.files() == [f"{item_id}.json", f"{item_id}.msg"]
    with open(os.path.join(w.directory, f"{item_id}.msg"), "rb") as handle:
        assert handle.read() == b"Received: x\nSubject: x\n\nhello \xc3\xa9\n"
    item = w.item(item_id)
    assert item.sender == "alice@example.com" and item.eight_bit
    assert item.size == 33 and item.crlf_size == 37
    assert ("queued", item_id, None) in w.events


def test_delivered_at_once_and_removed(world) -> None:
    """RFC 5321 4.5.4.1: the first attempt is immediate; a delivered item leaves the queue."""
    w = world()
    item_id = w.queue.put("alice@example.com", ["bob@example.org", "carol@example.com"],
                          BytesBody(b"Subject: x\n\nhi\n"))
    wait_for(lambda: w.files() == [], 5, message="item removed")
    assert w.remote.calls == [("alice@example.com", ["bob@example.org"], b"Subject: x\n\nhi\n")]
    assert w.local.calls == [("alice@example.com", ["carol@example.com"], b"Subject: x\n\nhi\n")]
    assert ("delivered", item_id, "bob@example.org") in w.events
    assert w.queue.items() == []


def test_backoff_schedule_then_last_step_repeats(world) -> None:
    """RFC 5321 4.5.4.1: retries follow relay.retry (plus up to 10% jitter), the last step
    repeating, until max_queue_time; the state is rewritten after every attempt."""
    w = world(remote={"bob@example.org": [TEMP] * 10})
    item_id = w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(b"x\n"))
    w.settle()
    expected = [60.0, 300.0, 900.0, 900.0]
    for attempt, step in enumerate(expected, start=1):
        item = w.item(item_id)
        assert item.attempts == attempt
        delay = item.next_attempt - w.clock.now()
        assert step <= delay <= step * 1.1, (attempt, delay)
        assert item.recipients[0].last_error == "451 4.3.0 try later"
        w.clock.advance(delay / 2)
        w.settle()
        assert len(w.remote.calls) == attempt  # not yet
        w.clock.advance(delay / 2 + 0.001)
        w.settle()
        assert len(w.remote.calls) == attempt + 1


def test_expiry_bounces_with_last_error(world) -> None:
    """RFC 5321 4.5.4.1 / RFC 3464: after max_queue_time a DSN (Action failed, the last
    temporary error as diagnostic) goes to the sender; the item leaves the queue."""
    w = world(RelayConfig(retry=(600.0,), max_queue_time=1000.0, delay_warning=0),
              remote={"bob@example.org": [TEMP] * 10})
    item_id = w.queue.put("alice@example.com", ["bob@example.org"],
                          BytesBody(b"Subject: Lunch\n\nhi\n"))
    w.settle()
    w.clock.advance(660)  # second attempt
    w.settle()
    w.clock.advance(400)  # the last attempt happens at the deadline, then the bounce
    wait_for(lambda: dsns(w.local), 5, message="bounce")
    assert len(w.remote.calls) == 3
    [report] = dsns(w.local)
    assert w.local.calls[0][1] == ["alice@example.com"]
    per_rcpt = report.get_payload()[1].get_payload()[1]
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "4.3.0"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 451 4.3.0 try later"
    assert per_rcpt["Remote-MTA"] == "dns; mx.remote"
    assert "Subject: Lunch" in report.get_payload()[2].get_payload(decode=True).decode()
    assert ("expired", item_id, "bob@example.org") in w.events
    wait_for(lambda: w.files() == [], 5, message="queue empty")


def test_permanent_failure_bounces_at_once_partial_success(world) -> None:
    """RFC 5321 4.2.1 / RFC 3464: a 5xx fails its recipient at once and bounces, while the
    other recipients of the message go on (delivered, or retried)."""
    w = world(remote={"bad@example.org": [PERM], "slow@example.net": [TEMP]})
    item_id = w.queue.put("alice@example.com", [("bad@example.org", "team@example.com"),
                                                "good@example.org", "slow@example.net"],
                          BytesBody(b"Subject: x\n\nhi\n"))
    wait_for(lambda: dsns(w.local), 5, message="bounce")
    [report] = dsns(w.local)
    blocks = report.get_payload()[1].get_payload()
    assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; bad@example.org"]
    assert blocks[1]["Original-Recipient"] == "rfc822; team@example.com"
    assert blocks[1]["Status"] == "5.1.1"
    w.settle()
    item = w.item(item_id)
    states = {r.address: (r.status, r.notified) for r in item.recipients}
    assert states == {"bad@example.org": ("failed", True),
                      "good@example.org": ("delivered", False),
                      "slow@example.net": ("pending", False)}
    calls = [sorted(r) for _, r, _ in w.remote.calls]
    assert calls == [["bad@example.org", "good@example.org"], ["slow@example.net"]]
    w.clock.advance(70)
    wait_for(lambda: w.files() == [], 5, message="item done")
    assert w.remote.calls[-1][1] == ["slow@example.net"]  # only the pending one again
    assert len(dsns(w.local)) == 1


def test_delay_warning_sent_once(world) -> None:
    """RFC 3464 2.3.3: one 'delayed' DSN after relay.delay_warning, not one per retry."""
    w = world(RelayConfig(retry=(60.0,), max_queue_time=3600.0, delay_warning=150.0),
              remote={"bob@example.org": [TEMP] * 20})
    item_id = w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(b"x\n"))
    for _ in range(8):
        w.settle()
        w.clock.advance(70)
    w.settle()
    reports = dsns(w.local)
    assert len(reports) == 1
    per_rcpt = reports[0].get_payload()[1].get_payload()[1]
    assert per_rcpt["Action"] == "delayed" and per_rcpt["Will-Retry-Until"]
    assert w.item(item_id).delay_warned
    assert ("delay-warning", item_id, None) in w.events


def test_null_sender_is_never_bounced(world) -> None:
    """RFC 5321 6.1 / RFC 3464 2: a message from <> that fails generates no DSN (no loops)."""
    w = world(remote={"bob@example.org": [PERM]})
    item_id = w.queue.put("", ["bob@example.org"], BytesBody(b"x\n"))
    wait_for(lambda: w.files() == [], 5, message="item dropped")
    assert dsns(w.local) == [] and len(w.remote.calls) == 1
    assert ("dropped", item_id, None) in w.events


def test_undeliverable_bounce_goes_to_postmaster_once(world) -> None:
    """RFC 5321 6.1 / 6.2: a bounce that cannot be delivered goes to the postmaster, and if that
    fails too it is dropped: never a bounce loop."""
    w = world(remote={"alice@example.org": [PERM]},
              local={"postmaster@example.com": [PERM]})
    w.queue.put("alice@example.org", ["bad@example.org"], BytesBody(b"x\n"))
    w.remote.script["bad@example.org"] = [PERM]
    wait_for(lambda: w.files() == [], 5, message="all dropped")
    senders = [(s, r) for s, r, _ in w.remote.calls + w.local.calls]
    assert ("", ["alice@example.org"]) in senders  # the bounce to the remote sender
    assert ("", ["postmaster@example.com"]) in senders  # the double bounce
    assert len(senders) == 3


def test_restart_resumes_without_resending(world) -> None:
    """RFC 5321 4.5.4.1 / 6.1: after a restart the queue resumes from disk, trying only the
    recipients not yet delivered."""
    w = world(remote={"slow@example.net": [TEMP]})
    item_id = w.queue.put("alice@example.com", ["fast@example.org", "slow@example.net"],
                          BytesBody(b"x\n"))
    w.settle()
    w.queue.stop(1)
    assert [r.status for r in w.item(item_id).recipients] == ["delivered", "pending"]
    w.remote.calls.clear()
    w.queue = w.make()
    assert w.queue.load() == 1
    w.clock.advance(70)
    wait_for(lambda: w.files() == [], 5, message="item done after restart")
    assert [r for _, r, _ in w.remote.calls] == [["slow@example.net"]]


def test_item_rewritten_atomically(world) -> None:
    """RFC 5321 6.1 (do not lose mail): each attempt replaces the item by rename, never by
    writing into it: an old version stays intact; no temp file is left; the file always parses."""
    w = world(remote={"bob@example.org": [TEMP] * 5})
    item_id = w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(b"x\n"))
    path = os.path.join(w.directory, f"{item_id}.json")
    versions = []
    for attempt in range(1, 4):
        w.settle()
        handle = open(path, "rb")  # noqa: SIM115 - kept open to see the old inode later
        content = handle.read()
        assert json.loads(content)["attempts"] == attempt
        versions.append((handle, content))
        assert not [n for n in os.listdir(w.directory) if n.startswith(".tmp")]
        w.clock.advance(1000)
    for handle, content in versions:
        handle.seek(0)
        assert handle.read() == content
        handle.close()


def test_load_repairs_crash_leftovers(tmp_path, world) -> None:
    """RFC 5321 6.1: at start-up a torn temp file and a body without an item (crash during put)
    are removed, an item without its body is dropped, a damaged item is set aside."""
    directory = tmp_path / "queue"
    directory.mkdir()
    good = QueueItem("018f000000000000000001", "a@example.com", [], START, START)
    from geomail.queue.item import Recipient

    good.recipients = [Recipient("b@example.org")]
    (directory / f"{good.id}.json").write_bytes(good.to_json())
    (directory / f"{good.id}.msg").write_bytes(b"x\n")
    (directory / ".tmp.1.abc.018f000000000000000002.json").write_bytes(b"{torn")
    (directory / "018f000000000000000003.msg").write_bytes(b"orphan\n")
    lost = QueueItem("018f000000000000000004", "a@example.com", [Recipient("c@x.org")],
                     START, START)
    (directory / f"{lost.id}.json").write_bytes(lost.to_json())
    (directory / "018f000000000000000005.json").write_bytes(b"garbage")
    (directory / "018f000000000000000005.msg").write_bytes(b"y\n")
    w = world()
    wait_for(lambda: w.remote.calls, 5, message="good item delivered")
    assert [r for _, r, _ in w.remote.calls] == [["b@example.org"]]
    assert sorted(os.listdir(directory)) == [
        "018f000000000000000005.json.bad", "018f000000000000000005.msg", "lock"]


def test_queue_directory_has_one_owner(world) -> None:
    """RFC 5321 6.1: two servers on one queue would deliver twice; the second is refused."""
    w = world()
    other = w.make()
    with pytest.raises(QueueBusy):
        other.load()


def test_tools_flush_delete_bounce(world) -> None:
    """RFC 3464 (administrative bounce): flush retries now, delete drops silently, bounce
    fails the pending recipients with a DSN."""
    w = world(remote={"a@example.org": [TEMP] * 5, "b@example.org": [TEMP] * 5,
                      "c@example.org": [TEMP, None]})
    first = w.queue.put("alice@example.com", ["a@example.org"], BytesBody(b"1\n"))
    second = w.queue.put("alice@example.com", ["b@example.org"], BytesBody(b"2\n"))
    third = w.queue.put("alice@example.com", ["c@example.org"], BytesBody(b"3\n"))
    w.settle()
    assert [i["id"] for i in w.queue.items()] == [first, second, third]
    assert w.queue.flush() == 3
    wait_for(lambda: third not in [i["id"] for i in w.queue.items()], 5, message="flushed")
    assert w.queue.delete(first) and not w.queue.delete(first)
    assert w.queue.bounce(second)
    wait_for(lambda: w.files() == [], 5, message="queue empty")
    assert not w.queue.delete("nonsense/../x")
    [report] = dsns(w.local)
    per_rcpt = report.get_payload()[1].get_payload()[1]
    assert per_rcpt["Final-Recipient"] == "rfc822; b@example.org"
    assert "administrator" in per_rcpt["Diagnostic-Code"]


def test_courier_crash_is_a_deferral(world) -> None:
    """RFC 5321 4.5.4.1: a bug in a courier defers the recipients instead of losing them."""
    w = world()

    def broken(sender, recipients, body):
        raise RuntimeError("bug")

    w.remote.deliver = broken  # type: ignore[method-assign]
    item_id = w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(b"x\n"))
    w.settle()
    item = w.item(item_id)
    assert item.recipients[0].status == "pending"
    assert item.recipients[0].last_error == "451 4.3.0 internal error"


def test_loop_survives_an_unexpected_error(world) -> None:
    """RFC 5321 4.5.4.1: an unexpected error in the send loop (say, the disk refusing a write)
    does not stall the item for good: it is tried again after the first retry step."""
    w = world(remote={"bob@example.org": [TEMP]})
    calls = {"n": 0}
    real_notify = w.queue._notify

    def flaky_notify(item):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        real_notify(item)

    w.queue._notify = flaky_notify  # type: ignore[method-assign]
    w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(b"x\n"))
    w.settle()
    assert len(w.remote.calls) == 1
    w.clock.advance(61)
    wait_for(lambda: w.files() == [], 5, message="delivered on the next turn")
    assert len(w.remote.calls) == 2


def test_unreleased_item_waits_for_release_or_withdraw(world) -> None:
    """RFC 5321 6.1 (no duplicates from our side): an item put with start=False is durable
    but not sent until release(); withdraw() removes it without a trace."""
    w = world()
    kept = w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(b"Subject: a\n\n"),
                       start=False)
    dropped = w.queue.put("alice@example.com", ["dan@example.org"],
                          BytesBody(b"Subject: b\n\n"), start=False)
    gevent.sleep(0.05)
    assert w.remote.calls == [] and len(w.files()) == 4
    w.queue.withdraw(dropped)
    assert w.files() == [f"{kept}.json", f"{kept}.msg"]
    w.queue.release(kept)
    wait_for(lambda: w.files() == [], 5, message="released item delivered")
    assert [c[1] for c in w.remote.calls] == [["bob@example.org"]]


def test_forwarded_copy_is_withdrawn_when_the_rest_cannot_be_queued(world) -> None:
    """RFC 5321 4.1.1.4 / 6.1: a message split into an SRS-forwarded item and the rest is
    sent only when both are queued; when the second put fails the client gets the error
    (451) and the first item is gone, so the client's retry duplicates nothing."""
    from geomail.dispatch import Targets, to_queue
    from geomail.envelope import Envelope
    from geomail.proto.smtp_types import SessionInfo

    w = world()
    real_put = w.queue.put

    def failing_second_put(*args, **kwargs):
        if kwargs.get("item_id") == "0190c1d2e3f4a5b6c7d8e9":
            raise OSError("disk full")
        return real_put(*args, **kwargs)

    w.queue.put = failing_second_put  # type: ignore[method-assign]
    targets = Targets(local={"carol@example.com": "list@example.com"},
                      remote={"bob@example.org": "list@example.com"})
    envelope = Envelope(sender="alice@origin.test", recipients=["list@example.com"])
    with pytest.raises(OSError):
        to_queue(w.queue, "mail.example.com", SessionInfo("s1", "192.0.2.9"), envelope,
                 "0190c1d2e3f4a5b6c7d8e9", targets, BytesBody(b"Subject: x\n\nhi\n"), b"",
                 forward_sender="SRS0=abcd=TT=origin.test=alice@example.com")
    gevent.sleep(0.05)
    assert w.files() == [] and w.remote.calls == [] and w.local.calls == []
