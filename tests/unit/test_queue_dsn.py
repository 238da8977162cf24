"""The DSN extension in the queue (RFC 3461 6.2, RFC 3464): NOTIFY decides which reports are
sent, success reports (delivered / relayed), RET and ENVID, ORCPT; the request is stored per
recipient and items from before it still load."""

from __future__ import annotations

import json
from collections.abc import Sequence

from geomail.config import RelayConfig
from geomail.delivery import Attempt, Outcome, Outcomes
from geomail.envelope import Body, MessageDSN, RecipientDSN
from geomail.queue.item import QueueItem
from geomail.spool import BytesBody
from tests.support import wait_for
from tests.unit.test_queue import PERM, TEMP, FakeCourier, dsns
from tests.unit.test_queue import world as world  # the fixture

BODY = b"Subject: Lunch\nFrom: alice@example.com\n\nthe body text\n"


class DSNCourier(FakeCourier):
    """FakeCourier that takes the DSN request and says whether the next hop offered DSN."""

    def __init__(self, name: str, script: dict | None = None, offers_dsn: bool = False):
        super().__init__(name, script)
        self.offers_dsn = offers_dsn
        self.requests: list[MessageDSN | None] = []

    def deliver(self, sender: str, recipients: Sequence[str], body: Body,
                dsn: MessageDSN | None = None) -> Outcomes:
        self.requests.append(dsn)
        out = super().deliver(sender, recipients, body)
        if self.name == "local":
            return {r: Outcome(o.error, Attempt(None, None)) for r, o in out.items()}
        return {r: Outcome(o.error, Attempt(o.attempt.remote_mta if o.attempt else None,
                                            "TLSv1.3", self.offers_dsn and dsn is not None))
                for r, o in out.items()}


def make(world, relay: RelayConfig | None = None, offers_dsn: bool = False, **script):
    w = world(relay) if relay else world()
    w.local = w.queue.local = DSNCourier("local", script.get("local"))
    w.remote = w.queue.remote = DSNCourier("remote", script.get("remote"), offers_dsn)
    return w


def request(ret: str | None = None, envid: str | None = None, **rcpts: RecipientDSN):
    return MessageDSN(ret, envid, {k.replace("_", "@", 1).replace("_", "."): v
                                   for k, v in rcpts.items()})


def test_old_items_load_and_new_fields_round_trip() -> None:
    """RFC 3461 6 state kept durably: an item written before the DSN fields loads with none
    (NOTIFY absent = FAILURE,DELAY); the new fields survive a write and a read."""
    old = {"version": 1, "id": "0190c1d2e3f4a5b6c7d8e9", "kind": "message",
           "sender": "alice@example.com", "created": 1.0, "next_attempt": 2.0,
           "recipients": [{"address": "bob@example.org", "status": "pending"}]}
    item = QueueItem.from_dict(old)
    assert (item.ret, item.envid, item.extra) == (None, None, {})
    rcpt = item.recipients[0]
    assert (rcpt.notify, rcpt.orcpt, rcpt.dsn_passed) == (None, None, False)
    assert rcpt.wants("FAILURE") and rcpt.wants("DELAY") and not rcpt.wants("SUCCESS")
    assert "ret" not in json.loads(item.to_json())
    item.ret, item.envid = "HDRS", "id+1"
    rcpt.notify, rcpt.orcpt = ["SUCCESS"], "rfc822;team@example.com"
    again = QueueItem.from_json(item.to_json())
    assert (again.ret, again.envid) == ("HDRS", "id+1")
    assert again.recipients[0].notify == ["SUCCESS"]
    assert again.recipients[0].orcpt == "rfc822;team@example.com"


def test_success_local_delivered(world) -> None:
    """RFC 3461 6.2.1 (a): NOTIFY=SUCCESS and delivery into a mailbox: a DSN with Action
    delivered, Status 2.0.0, Original-Recipient from ORCPT and Original-Envelope-Id (RFC 3464
    2.2.1, 2.3.1); the recipient without NOTIFY=SUCCESS gets none."""
    w = make(world)
    w.queue.put("alice@example.com", ["carol@example.com", "dave@example.com"], BytesBody(BODY),
                dsn=request(envid="QQ314159", carol_example_com=RecipientDSN(
                    ("SUCCESS",), "rfc822;team@example.com")))
    wait_for(lambda: dsns(w.local), 5, message="success DSN")
    wait_for(lambda: w.files() == [], 5, message="queue empty")
    [report] = dsns(w.local)
    assert report["Subject"] == "Successful Mail Delivery Report"
    per_message, *blocks = report.get_payload()[1].get_payload()
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; carol@example.com"]
    assert blocks[0]["Action"] == "delivered" and blocks[0]["Status"] == "2.0.0"
    assert blocks[0]["Original-Recipient"] == "rfc822; team@example.com"


def test_success_relayed_only_without_dsn_next_hop(world) -> None:
    """RFC 3461 6.2.1 (c), 5.2: relayed to a host without DSN: Action relayed; to one that
    offers DSN the request goes on (the courier gets it) and we send nothing."""
    for offers, expected in ((False, ["relayed"]), (True, [])):
        w = make(world, offers_dsn=offers)
        w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(BODY),
                    dsn=request("FULL", "e1", bob_example_org=RecipientDSN(("SUCCESS",))))
        wait_for(lambda w=w: w.files() == [], 5, message="queue empty")
        actions = [b["Action"] for r in dsns(w.local) for b in r.get_payload()[1].get_payload()[1:]]
        assert actions == expected
        assert w.remote.requests == [request("FULL", "e1", bob_example_org=RecipientDSN(
            ("SUCCESS",)))]
        w.queue.stop(1)


def test_notify_never_and_failure_only(world) -> None:
    """RFC 3461 4.1: NOTIFY=NEVER fails without a DSN; of two failed recipients only the one
    asking (NOTIFY absent or FAILURE) is in the bounce."""
    w = make(world, remote={"a@example.org": [PERM], "b@example.org": [PERM]})
    w.queue.put("alice@example.com", ["a@example.org", "b@example.org"], BytesBody(BODY),
                dsn=request(a_example_org=RecipientDSN(("NEVER",))))
    wait_for(lambda: w.files() == [], 5, message="queue empty")
    [report] = dsns(w.local)
    blocks = report.get_payload()[1].get_payload()[1:]
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; b@example.org"]


def test_notify_never_alone_sends_nothing(world) -> None:
    """RFC 3461 4.1: NOTIFY=NEVER: no DSN at all for a failure."""
    w = make(world, remote={"a@example.org": [PERM]})
    w.queue.put("alice@example.com", ["a@example.org"], BytesBody(BODY),
                dsn=request(a_example_org=RecipientDSN(("NEVER",))))
    wait_for(lambda: w.files() == [], 5, message="queue empty")
    assert dsns(w.local) == []


def test_delay_warning_only_when_asked(world) -> None:
    """RFC 3461 4.1: NOTIFY=DELAY gets the delay warning, NOTIFY=FAILURE does not."""
    relay = RelayConfig(retry=(60.0,), max_queue_time=3600.0, delay_warning=150.0)
    for notify, count in ((("DELAY",), 1), (("FAILURE",), 0)):
        w = make(world, relay, remote={"bob@example.org": [TEMP] * 20})
        w.queue.put("alice@example.com", ["bob@example.org"], BytesBody(BODY),
                    dsn=request(bob_example_org=RecipientDSN(notify)))
        for _ in range(4):
            w.settle()
            w.clock.advance(70)
        w.settle()
        assert len(dsns(w.local)) == count, notify
        w.queue.stop(1)


def test_ret_hdrs_and_full(world) -> None:
    """RFC 3461 4.3: RET=HDRS returns text/rfc822-headers, RET=FULL the whole message as
    message/rfc822 (RFC 3464 2)."""
    for ret, ctype, has_body in (("HDRS", "text/rfc822-headers", False),
                                 ("FULL", "message/rfc822", True)):
        w = make(world, remote={"a@example.org": [PERM]})
        w.queue.put("alice@example.com", ["a@example.org"], BytesBody(BODY),
                    dsn=request(ret, "env-7"))
        wait_for(lambda w=w: dsns(w.local), 5, message="bounce")
        [report] = dsns(w.local)
        third = report.get_payload()[2]
        assert third.get_content_type() == ctype
        assert ("the body text" in third.as_string()) is has_body
        assert "Subject: Lunch" in third.as_string()
        assert report.get_payload()[1].get_payload()[0]["Original-Envelope-Id"] == "env-7"
        w.queue.stop(1)


def test_ret_full_over_the_size_limit_returns_headers(world) -> None:
    """RFC 3461 4.3 (RET=FULL) and RFC 3464 2: a message larger than
    ``relay.bounce_size_limit`` comes back as text/rfc822-headers, not whole."""
    w = make(world, relay=RelayConfig(bounce_size_limit=len(BODY) - 1),
             remote={"a@example.org": [PERM]})
    w.queue.put("alice@example.com", ["a@example.org"], BytesBody(BODY),
                dsn=request("FULL", "env-8"))
    wait_for(lambda: dsns(w.local), 5, message="bounce")
    [report] = dsns(w.local)
    third = report.get_payload()[2]
    assert third.get_content_type() == "text/rfc822-headers"
    assert "the body text" not in third.as_string()
    w.queue.stop(1)


def test_null_sender_never_gets_a_success_dsn(world) -> None:
    """RFC 3461 6.2 / RFC 5321 6.1: no DSN to the null reverse-path, success included."""
    w = make(world)
    w.queue.put("", ["carol@example.com"], BytesBody(BODY),
                dsn=request(carol_example_com=RecipientDSN(("SUCCESS",))))
    wait_for(lambda: w.files() == [], 5, message="queue empty")
    assert [c[1] for c in w.local.calls] == [["carol@example.com"]]  # the message, no DSN


def test_old_item_on_disk_is_delivered_with_the_default_notify(world) -> None:
    """RFC 3461 4.1 (NOTIFY absent = FAILURE,DELAY): an item file from before the DSN fields,
    found at start, is loaded, tried and bounced as before."""
    w = make(world, remote={"bob@example.org": [PERM]})
    w.queue.stop(1)
    old = {"version": 1, "id": "0190c1d2e3f4a5b6c7d8e9", "kind": "message",
           "sender": "alice@example.com", "created": w.clock.now(),
           "next_attempt": w.clock.now(), "size": len(BODY), "crlf_size": len(BODY) + 3,
           "recipients": [{"address": "bob@example.org", "status": "pending"}]}
    with open(f"{w.directory}/0190c1d2e3f4a5b6c7d8e9.json", "w") as handle:
        json.dump(old, handle)
    with open(f"{w.directory}/0190c1d2e3f4a5b6c7d8e9.msg", "wb") as handle:
        handle.write(BODY)
    w.queue = w.make()
    w.queue.local, w.queue.remote = w.local, w.remote
    assert w.queue.load() == 1
    wait_for(lambda: dsns(w.local), 5, message="bounce")
    assert w.remote.requests == [None]  # nothing to pass on
    w.queue.stop(1)
