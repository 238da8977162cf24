"""Mail loops end (RFC 5321 6.3, inbound half): a message carrying more than
``limits.max_received_headers`` (default 50, Postfix's hopcount_limit) Received fields is
refused with 554 5.4.6 (RFC 3463: routing loop detected), for DATA and BDAT; and an alias loop
between two geomail instances ends in a bounce to the sender."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import free_port_on, wait_for
from tests.support.dialog import Dialog
from tests.support.geomail import running_app
from tests.support.outbound import mailbox, make_zone, parse_report, relay_settings
from tests.support.smtp import send, stored

HOP = (b"Received: from relay%d.example ([192.0.2.1])\r\n\tby relay.example (Postfix) with ESMTP"
       b" id 4Abc%d; Sun, 6 Dec 2026 03:00:00 +0000\r\n")


def _message(hops: int) -> bytes:
    return (b"".join(HOP % (i, i) for i in range(hops)) +
            b"From: a@remote.example\r\nSubject: hops\r\n\r\nReceived: in the body, no hop\r\n")


@pytest.mark.parametrize(("hops", "code"), [(50, 250), (51, 554)])
def test_received_header_limit_over_data(app, hops, code):
    """RFC 5321 6.3: 51 Received fields (over the default 50) get 554 5.4.6 after the data and
    nothing is stored; 50 are accepted (sent with smtplib)."""
    reply_code, text = send(app.ports["smtp"][0], "a@remote.example", ["test1@test.com"],
                            _message(hops))
    assert reply_code == code
    if code == 554:
        assert text.startswith("5.4.6 ")
        assert stored(app, "test1@test.com") == []
    else:
        [message] = stored(app, "test1@test.com")
        assert message.body == _message(hops).replace(b"\r\n", b"\n")


def test_received_header_limit_over_bdat(make_app):
    """The same over BDAT (RFC 3030), with the header section cut across chunks, and a
    configured ``limits.max_received_headers``; the session goes on."""
    app = make_app(limits={"max_received_headers": 5})
    content = _message(6)
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        for data, reply in ((content, "554 5.4.6"), (_message(5), "250 2.0.0")):
            smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
            smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
            smtp.send(b"BDAT 100\r\n" + data[:100])
            smtp.expect("250 2.0.0")
            smtp.send(b"BDAT %d LAST\r\n" % (len(data) - 100) + data[100:])
            smtp.expect(reply)
    assert [m.body for m in stored(app, "test1@test.com")] == [
        _message(5).replace(b"\r\n", b"\n")]


LOOP = {"loop-a.test": "127.0.0.51", "loop-b.test": "127.0.0.52"}


def _instance(tmp_path: Path, zone, port: int, domain: str, alias: tuple[str, str],
              users: list[str]) -> dict:
    """A geomail for ``domain`` listening on its MX address, relaying through dnsmasq."""
    return {"hostname": f"mx.{domain}", "domains": [domain],
            "data_dir": str(tmp_path / domain), "users": {user: {} for user in users},
            "aliases": dict([alias]), "listen": {"smtp": [f"{LOOP[domain]}:{port}"]},
            "relay": relay_settings(zone, port), "limits": {"shutdown_grace": "1s"}}


def test_alias_loop_between_two_servers_ends_in_a_bounce(tmp_path):
    """An alias at A forwards to B, whose alias forwards back to A: the message goes round,
    gaining a Received field per hop, until a server refuses it with 554 5.4.6 (RFC 5321
    6.3); the forwarding server bounces it to the original sender (RFC 3464) instead of
    relaying for ever."""
    port = free_port_on(sorted(LOOP.values()))
    zone = make_zone(LOOP)
    try:
        a = _instance(tmp_path, zone, port, "loop-a.test", ("x@loop-a.test", "y@loop-b.test"),
                      ["origin@loop-a.test"])
        b = _instance(tmp_path, zone, port, "loop-b.test", ("y@loop-b.test", "x@loop-a.test"),
                      [])
        with running_app(a) as app_a, running_app(b) as app_b:
            data = b"From: origin@loop-a.test\r\nSubject: round and round\r\n\r\nhi\r\n"
            code, _ = send(app_a.ports["smtp"][0], "origin@loop-a.test", ["x@loop-a.test"], data,
                           host=LOOP["loop-a.test"])
            assert code == 250
            [bounce] = wait_for(lambda: mailbox(app_a.config.store.path, "origin@loop-a.test"),
                                60, message="the bounce to the original sender")
            _msg, _per_message, [per_rcpt], headers = parse_report(bounce)
            assert per_rcpt["Status"] == "5.4.6"
            assert "554 5.4.6" in per_rcpt["Diagnostic-Code"]
            hops = len(re.findall(rb"^Received:", headers, re.MULTILINE))
            assert 50 <= hops <= 52, hops
            wait_for(lambda: app_a.queue.items() == [] and app_b.queue.items() == [], 10,
                     message="both queues to empty")
    finally:
        zone.stop()
