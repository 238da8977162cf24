"""Outbound relay through the whole App (RFC 5321 5.1, 4.5.4): mail submitted by a user, forwarded
by an alias or sent from a trusted network leaves through the queue, is found in DNS (dnsmasq) and
reaches real receiving servers on loopback: a second geomail as the MX (its Maildir shows what
arrived), aiosmtpd, smtp-sink."""

from __future__ import annotations

import calendar
import logging
import re
import smtplib
import time
from pathlib import Path

import dkim as dkimpy
import pytest

from geomail.dkim import keygen
from geomail.log import KeyValueFormatter
from tests.support import wait_for
from tests.support.geomail import running_app
from tests.support.mta import SmtpdPeer, SmtpSink
from tests.support.outbound import (
    SELECTOR,
    dnsfunc,
    mailbox,
    make_zone,
    mx_config,
    parse_report,
    sender_config,
    submit,
)
from tests.support.stored import split

MX = {"remote.test": "127.0.0.41", "other.test": "127.0.0.42", "sink.test": "127.0.0.43"}
BARE = (b"From: Alice <alice@example.com>\r\nTo: Someone <someone@remote.test>\r\n"
        b"Subject: Lunch on Friday\r\n\r\nHi,\r\n.a line with a leading dot\r\n..and two\r\n"
        b"\r\nbye\r\n")
COMPLETE = (b"From: Alice <alice@example.com>\r\nTo: Someone <someone@remote.test>\r\n"
            b"Subject: Minutes\r\nDate: Tue, 14 Nov 2023 22:13:20 +0100\r\n"
            b"Message-ID: <minutes.1@client.example>\r\n\r\nAll agreed.\r\n")
# The trace field the sending geomail puts first (RFC 5321 4.4), as the MX receives it.
SENDER_RECEIVED = re.compile(
    rb"Received: from (?P<helo>\S+) \(\[127\.0\.0\.1\]\)\n"
    rb"\tby mx\.test\.com \(geomail\) with (?P<protocol>\w+) id (?P<id>\w+)\n"
    rb"\tfor <(?P<rcpt>[^>\n]+)>; [^\n]+\n")
DKIM_FIELD = re.compile(rb"DKIM-Signature: [^\n]*\n(?:[ \t][^\n]*\n)*")
ADDED = re.compile(rb"Date: [^\n]+\nMessage-ID: <[^\n]+@mx\.test\.com>\n")


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = str(tmp_path_factory.mktemp("dkim") / "example.com.key")
    return path, keygen(path)


@pytest.fixture(scope="module")
def zone(dkim_key):
    server = make_zone(MX, dkim_txt=dkim_key[1])
    yield server
    server.stop()


@pytest.fixture
def remote_mx(tmp_path: Path, mx_port: int):
    """A second geomail: the MX of remote.test on 127.0.0.41 (users someone, other)."""
    with running_app(mx_config(tmp_path / "mx", MX["remote.test"], mx_port, "remote.test",
                               ["someone", "other"])) as mx:
        yield mx


@pytest.fixture
def sender(tmp_path: Path, zone, mx_port: int, dkim_key):
    """``sender(**overrides)``: the sending App (DKIM key for its domains), started."""
    apps = []

    def start(**overrides):
        raw = sender_config(tmp_path, zone, mx_port,
                            dkim={"selector": SELECTOR, "key": dkim_key[0]}, **overrides)
        context = running_app(raw)
        apps.append(context)
        return context.__enter__()

    yield start
    for context in reversed(apps):
        context.__exit__(None, None, None)


def arrived(mx, address: str, count: int = 1) -> list[bytes]:
    """Wait until ``count`` messages are in ``address``'s mailbox at the MX; return them."""
    return wait_for(lambda: (found := mailbox(mx.config.store.path, address))
                    and len(found) >= count and found, 10, message=f"{count} for {address}")


def own(app, address: str) -> list[bytes]:
    return mailbox(app.config.store.path, address)


def queue_empty(app) -> bool:
    return app.queue.items() == []


# ------------------------------------------------------------------------------------------


def test_submitted_mail_reaches_the_mx_byte_exact_and_its_dkim_signature_verifies(
        sender, remote_mx, zone) -> None:
    """RFC 6409 8 / RFC 5321 5.1 and 4.4 / RFC 6376 3.5 and 6: mail alice submits to a remote
    address is delivered to the MX found in DNS. The copy that arrives is what she sent, byte
    for byte, with only header fields added in front: the Received fields, a DKIM-Signature
    (d=example.com, our selector) and, when her message lacked them, Date and Message-ID. The
    signature verifies with dkimpy against the TXT record dnsmasq serves."""
    app = sender()
    port = app.ports["submission"][0]
    ids = [submit(port, ["someone@remote.test"], BARE),
           submit(port, ["someone@remote.test"], COMPLETE)]
    copies = arrived(remote_mx, "someone@remote.test", 2)
    assert len(copies) == 2
    by_subject = {b"Lunch" in c: c for c in copies}
    for raw, original, queue_id in ((by_subject[True], BARE, ids[0]),
                                    (by_subject[False], COMPLETE, ids[1])):
        copy = split(raw)  # the MX's own trace fields (Return-Path, Delivered-To, Received)
        assert copy.fields["sender"] == "alice@example.com"
        assert copy.fields["helo"] == "mx.test.com"  # our EHLO (RFC 5321 4.1.1.1)
        assert copy.fields["by"] == "mx.remote.test"
        rest = copy.body
        trace = SENDER_RECEIVED.match(rest)
        assert trace, rest[:300]
        assert trace["id"].decode() == queue_id and trace["protocol"] == b"ESMTPA"
        assert trace["rcpt"] == b"someone@remote.test"
        rest = rest[trace.end():]
        signature = DKIM_FIELD.match(rest)
        assert signature, rest[:300]
        tags = dict(re.findall(r"\b([a-z]+)=([^;\s]+)",
                               re.sub(r"\s+", "", signature[0].decode().split(":", 1)[1])))
        assert (tags["d"], tags["s"], tags["a"], tags["c"]) == (
            "example.com", SELECTOR, "rsa-sha256", "relaxed/relaxed")
        # RFC 6376 5.4: the fields that matter are signed, the added Date and Message-ID too.
        assert {"from", "to", "subject", "date", "message-id"} <= set(tags["h"].split(":"))
        rest = rest[signature.end():]
        if original is BARE:
            added = ADDED.match(rest)
            assert added, rest[:200]
            rest = rest[added.end():]
        assert rest == lf(original)
        crlf = raw.replace(b"\n", b"\r\n")
        assert dkimpy.verify(crlf, dnsfunc=dnsfunc(zone))
        for before, after in ((b"\r\n\r\n", b"\r\n\r\nP.S. "),  # the body
                              (b"Subject: ", b"Subject: Re: "),
                              (b"Message-ID: <", b"Message-ID: <x")):
            tampered = crlf.replace(before, after, 1)
            assert tampered != crlf and not dkimpy.verify(tampered, dnsfunc=dnsfunc(zone))
    wait_for(lambda: queue_empty(app), 10, message="the queue to empty")


def test_alias_to_a_remote_address_forwards_mail_from_anyone(sender, remote_mx) -> None:
    """RFC 5321 3.9.1 / 4.4 (aliases) and 3.6.2 (relaying is refused): an alias of ours that
    points to a remote address forwards mail that arrives on port 25 from any client, with the
    envelope sender rewritten by SRS (libsrs2's scheme) and nothing added but trace fields (not
    a submission: no Date, Message-ID or DKIM-Signature); the same client may not relay to that
    address directly."""
    app = sender(aliases={"fwd@example.com": "someone@remote.test",
                          "both@example.com": ["bob@example.com", "other@remote.test"]})
    port = app.ports["smtp"][0]
    data = b"From: stranger@far.example\r\nSubject: for the alias\r\n\r\nforward me\r\n"
    queue_id = submit(port, ["fwd@example.com", "both@example.com"], data,
                      sender="stranger@far.example", login=False)
    for address in ("someone@remote.test", "other@remote.test"):
        [raw] = arrived(remote_mx, address)
        copy = split(raw)
        assert re.fullmatch(r"SRS0=.{4}=[A-Z2-7]{2}=far\.example=stranger@test\.com",
                            copy.fields["sender"])  # the sender rewritten: docs/forwarding.md
        trace = re.match(rb"Received: from client\.example \(\[127\.0\.0\.1\]\)\n\tby mx\.test"
                         rb"\.com \(geomail\) with ESMTP id (\w+);\n\t[^\n]+\n", copy.body)
        assert trace and trace[1].decode() == queue_id, copy.body[:300]
        assert copy.body[trace.end():] == lf(data)
    [local] = wait_for(lambda: own(app, "bob@example.com"), 10, message="bob's copy")
    assert local.endswith(lf(data))
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("stranger@far.example")
        assert client.rcpt("someone@remote.test")[0] == 554
    wait_for(lambda: queue_empty(app), 10, message="the queue to empty")


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.3"])
def test_client_in_allow_networks_relays_without_auth(sender, tmp_path, mx_port, source) -> None:
    """RFC 6409 8 / RFC 5321 3.6.2 (``relay.allow_networks``): a client whose address is in
    relay.allow_networks may relay on port 25 without AUTH (from 127.0.0.1, and from another
    loopback address); its mail is treated as a submission (Date and Message-ID added)."""
    app = sender(relay={"allow_networks": ["127.0.0.0/8"]})
    data = b"From: cron@example.com\r\nSubject: nightly report\r\n\r\nall fine\r\n"
    with SmtpSink(MX["sink.test"], mx_port) as sink:
        submit(app.ports["smtp"][0], ["ops@sink.test"], data, sender="cron@example.com",
               login=False, source=source)
        wait_for(lambda: queue_empty(app), 10, message="delivery")
        [got] = sink.messages()
    assert got.rcpt_tos == ["ops@sink.test"] and got.mail_from == "cron@example.com"
    trace = re.match(rb"Received: from client\.example \(\[" + re.escape(source.encode()) +
                     rb"\]\)\n\tby mx\.test\.com \(geomail\) with ESMTP id \w+\n"
                     rb"\tfor <ops@sink\.test>; [^\n]+\n", got.content)
    assert trace, got.content[:300]
    rest = got.content[trace.end():]
    signature = DKIM_FIELD.match(rest)  # signed: From is at example.com, which has a key
    assert signature, rest[:300]
    added = ADDED.match(rest[signature.end():])
    assert added and rest[signature.end() + added.end():] == lf(data)


def test_address_outside_allow_networks_is_refused_relay(sender) -> None:
    """RFC 5321 3.6.2 and 4.2.2 (554 5.7.1): with allow_networks 10.0.0.0/8 a
    client from 127.0.0.1 is not trusted: a remote recipient gets 554 5.7.1 and nothing is
    queued; local recipients are still accepted."""
    app = sender(relay={"allow_networks": ["10.0.0.0/8"]})
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"][0], timeout=10) as client:
        client.ehlo("client.example")
        client.mail("cron@example.com")
        code, text = client.rcpt("ops@sink.test")
        assert (code, text[:5]) == (554, b"5.7.1")
        assert client.rcpt("bob@example.com")[0] == 250
        assert client.data(b"Subject: local only\r\n\r\nhi\r\n")[0] == 250
    assert app.queue.items() == []
    assert len(own(app, "bob@example.com")) == 1


def test_allow_networks_is_checked_against_the_client_address(sender, mx_port) -> None:
    """RFC 5321 3.6.2 (``relay.allow_networks``): the check uses the address the client connects
    from: with allow_networks 127.0.0.2/32, a client bound to 127.0.0.2 relays while one from
    127.0.0.1, on the same listener, gets 554 5.7.1."""
    app = sender(relay={"allow_networks": ["127.0.0.2/32"]})
    port = app.ports["smtp"][0]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("cron@example.com")
        assert client.rcpt("ops@sink.test")[0] == 554
    with SmtpSink(MX["sink.test"], mx_port) as sink:
        submit(port, ["ops@sink.test"], b"Subject: trusted\r\n\r\nhi\r\n",
               sender="cron@example.com", login=False, source="127.0.0.2")
        wait_for(lambda: queue_empty(app), 10, message="delivery")
        assert [m.rcpt_tos for m in sink.messages()] == [["ops@sink.test"]]


def test_5xx_from_the_mx_bounces_to_the_local_sender_as_rfc3464(sender, remote_mx) -> None:
    """RFC 5321 4.2.1 and 6.1 / RFC 3464 2-3 / RFC 3462 (multipart/report): when the MX refuses
    a recipient with 550 5.1.1, the sender finds a DSN in her own mailbox, from <>; it parses
    with the email package as multipart/report; report-type=delivery-status: a readable text
    part, a message/delivery-status part (Reporting-MTA, Final-Recipient, Action: failed,
    Status 5.1.1, Remote-MTA, Diagnostic-Code with the MX's reply) and the original headers
    as text/rfc822-headers."""
    app = sender()
    queue_id = submit(app.ports["submission"][0], ["nobody@remote.test"], COMPLETE)
    [raw] = wait_for(lambda: own(app, "alice@example.com"), 10, message="the bounce")
    assert raw.startswith(b"Return-Path: <>\nDelivered-To: alice@example.com\n")
    msg, per_message, [per_rcpt], headers = parse_report(raw)
    assert msg["To"] == "alice@example.com"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.test.com"
    assert msg["Auto-Submitted"] == "auto-replied"
    text = msg.get_payload()[0].get_content()
    assert "nobody@remote.test" in text and "550 5.1.1" in text
    assert per_message["Reporting-MTA"] == "dns; mx.test.com"
    assert per_message["X-Geomail-Queue-ID"] == queue_id
    assert per_rcpt["Final-Recipient"] == "rfc822; nobody@remote.test"
    assert per_rcpt["Action"] == "failed"
    assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", per_rcpt["Status"]) and \
        per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.remote.test"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert b"Subject: Minutes\n" in headers and b"Message-ID: <minutes.1@client.example>" in headers
    assert b"All agreed" not in headers
    wait_for(lambda: queue_empty(app), 10, message="the queue to empty")
    assert mailbox(remote_mx.config.store.path, "someone@remote.test") == []


def test_failed_message_with_null_sender_is_not_bounced(sender, remote_mx, caplog) -> None:
    """RFC 5321 4.5.5 and 6.1 / RFC 3464 2: a message with the null reverse-path <> that
    cannot be delivered produces no bounce (no loops): the operator log says dsn_to=none,
    the item leaves the queue without queueing a DSN, and no local mailbox gets anything."""
    caplog.set_level("INFO", logger="geomail.mail")
    app = sender()
    queue_id = submit(app.ports["submission"][0], ["nobody@remote.test"], COMPLETE, sender="")
    find_line(caplog, rf'bounced id={queue_id} to=nobody@remote\.test '
                      r'reason="550 5\.1\.1 No such user here" dsn_to=none')
    wait_for(lambda: queue_empty(app), 10, message="the queue to empty")
    for address in ("alice@example.com", "bob@example.com", "test1@test.com"):
        assert own(app, address) == [], address


def test_4xx_from_the_mx_defers_and_the_next_attempt_delivers(sender, mx_port) -> None:
    """RFC 5321 4.2.1 (4yz: try again) and 4.5.4.1 (retry): the MX answers 451 to the first
    attempt; the message stays queued with the reply recorded, and the next attempt after the
    first retry step (1s here) delivers it once; no DSN or delay notice is sent."""
    app = sender()
    with SmtpdPeer(MX["other.test"], mx_port) as peer:
        queue_id = submit(app.ports["submission"][0], ["flaky@other.test"], COMPLETE)
        item = wait_for(lambda: next((i for i in app.queue.items() if i["attempts"] >= 1), None),
                        10, message="the first attempt")
        [rcpt] = item["recipients"]
        assert item["id"] == queue_id and rcpt["status"] == "pending"
        assert rcpt["last_error"] == "451 4.3.0 Try again later (first attempt)"
        assert rcpt["remote_mta"].startswith(f"mx.other.test [{MX['other.test']}]:")
        assert item["next_attempt"] > rcpt["last_attempt"] + 0.9
        assert peer.messages() == []
        wait_for(lambda: queue_empty(app), 10, message="the retry to deliver")
        [got] = peer.messages()
    assert got.rcpt_tos == ["flaky@other.test"]
    assert got.content.endswith(lf(COMPLETE))
    assert own(app, "alice@example.com") == []


def test_two_remote_domains_and_a_local_user_are_handled_per_recipient(
        sender, remote_mx, mx_port) -> None:
    """RFC 5321 3.3 and 4.2.1 (each RCPT has its own reply) / RFC 3464 2.3: one message for
    a local user and four remote recipients at two domains, one of whose MX refuses a
    recipient with 5xx: that recipient alone is bounced (one per-recipient block); the
    others are delivered once each, at their own MX, and the local copy is stored."""
    app = sender()
    recipients = ["someone@remote.test", "other@remote.test", "ok@other.test",
                  "reject1@other.test", "bob@example.com"]
    with SmtpdPeer(MX["other.test"], mx_port) as peer:
        queue_id = submit(app.ports["submission"][0], recipients, COMPLETE)
        [raw] = wait_for(lambda: own(app, "alice@example.com"), 10, message="the bounce")
        wait_for(lambda: queue_empty(app), 10, message="the queue to empty")
        assert [m.rcpt_tos for m in peer.messages()] == [["ok@other.test"]]
    _, per_message, [per_rcpt], _ = parse_report(raw)
    assert per_message["X-Geomail-Queue-ID"] == queue_id
    assert per_rcpt["Final-Recipient"] == "rfc822; reject1@other.test"
    assert per_rcpt["Status"] == "5.1.1" and per_rcpt["Remote-MTA"] == "dns; mx.other.test"
    for address in ("someone@remote.test", "other@remote.test"):
        [copy] = mailbox(remote_mx.config.store.path, address)
        assert copy.endswith(lf(COMPLETE))
    [local] = own(app, "bob@example.com")
    assert local.startswith(b"Return-Path: <alice@example.com>\nDelivered-To: bob@example.com\n")
    assert local.endswith(lf(COMPLETE))


def test_operator_log_has_delivered_deferred_and_bounced_lines(sender, mx_port, caplog) -> None:
    """DESIGN rule 6 / RFC 5321 4.5.4.1 / RFC 3464: each outcome of the queue is one key=value
    line in the mail log: ``deferred`` (id, to, attempts, next attempt in the future, the MX's
    reply), ``bounced`` (id, to, reason, where the DSN goes) and ``delivered`` (id, to, relay,
    attempts, tls), for the DSN's local delivery too."""
    caplog.set_level("INFO", logger="geomail.mail")
    app = sender()
    with SmtpdPeer(MX["other.test"], mx_port):
        queue_id = submit(app.ports["submission"][0], ["flaky@other.test", "reject1@other.test"],
                          COMPLETE)
        mx = rf'"mx\.other\.test \[127\.0\.0\.42\]:{mx_port}"'
        delivered = find_line(caplog, rf"delivered id={queue_id} to=flaky@other\.test "
                                      rf"relay={mx} attempts=2 tls=none")
    deferred = find_line(caplog, rf"deferred id={queue_id} to=flaky@other\.test attempts=1 "
                                 r"next=(\S+) "
                                 r'reason="451 4\.3\.0 Try again later \(first attempt\)"')
    next_attempt = calendar.timegm(time.strptime(deferred[0][1], "%Y-%m-%dT%H:%M:%SZ"))
    assert next_attempt >= int(deferred[1].created) + 1  # the retry step (1s) lies ahead
    assert next_attempt <= delivered[1].created + 1
    find_line(caplog, rf"bounced id={queue_id} to=reject1@other\.test "
                      r'reason="550 5\.1\.1 No such user here" dsn_to=<alice@example\.com>')
    find_line(caplog, r"delivered id=\w+ to=alice@example\.com relay=local attempts=1")


FORMAT = KeyValueFormatter()


def find_line(caplog, pattern: str) -> tuple[re.Match[str], logging.LogRecord]:
    """Wait for a mail log line (without time and level) that matches ``pattern`` whole."""
    def lines() -> list[tuple[str, logging.LogRecord]]:
        return [(FORMAT.format(r).split(" ", 2)[2], r) for r in caplog.records
                if r.name == "geomail.mail"]

    def found():
        return next(((m, r) for line, r in lines() if (m := re.fullmatch(pattern, line))), None)

    try:
        return wait_for(found, 10, message=f"a mail log line like {pattern!r}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the log has:\n" + "\n".join(x for x, _ in lines())) from None
