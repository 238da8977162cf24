"""The DSN extension end to end (RFC 3461): a geomail with real smtplib clients on submission,
dnsmasq for DNS and smtp-sink as next hops with DSN offered (its default) or not (``-N``);
the reports land in the sender's own Maildir."""

from __future__ import annotations

import email
import glob
import json
import os
import smtplib
from email import policy
from email.message import Message
from pathlib import Path

import pytest

from tests.support import free_port_on, wait_for
from tests.support.dns import Dnsmasq
from tests.support.geomail import PASSWORD, running_app
from tests.support.mta import SmtpSink
from tests.support.outbound import mailbox, mx_config, relay_settings, sender_config

MX = {"dsn.test": "127.0.0.91", "nodsn.test": "127.0.0.92", "reject.test": "127.0.0.93",
      "defer.test": "127.0.0.94", "example.com": "127.0.0.95", "geo.test": "127.0.0.96"}
MESSAGE = b"From: alice@example.com\r\nSubject: Lunch\r\n\r\nthe body text\r\n"


@pytest.fixture(scope="module")
def mx_port() -> int:
    return free_port_on(sorted(MX.values()))


@pytest.fixture(scope="module")
def zone():
    server = Dnsmasq()
    for domain, address in MX.items():
        server.mx(domain, f"mx.{domain}", 10).host(f"mx.{domain}", address)
    server.args.append("--local=/example.com/")  # answered here too (else SERVFAIL for AAAA)
    server.start()
    yield server
    server.stop()


def send(port: int, recipients: list[tuple[str, list[str]]], mail_options: list[str]) -> None:
    """One transaction as alice on submission, with DSN parameters (RFC 3461 4)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("dsn")
        client.login("alice@example.com", PASSWORD)
        assert client.mail("alice@example.com", mail_options)[0] == 250
        for rcpt, options in recipients:
            assert client.rcpt(rcpt, options)[0] == 250
        assert client.data(MESSAGE)[0] == 250


def reports(app) -> list[Message]:
    """The DSNs in alice's mailbox (multipart/report, RFC 3464)."""
    found = [email.message_from_bytes(raw, policy=policy.compat32)
             for raw in mailbox(app.config.store.path, "alice@example.com")]
    return [m for m in found if m.get_content_type() == "multipart/report"]


def blocks(report: Message) -> list[Message]:
    return report.get_payload()[1].get_payload()


def sink_dumps(sink: SmtpSink) -> list[str]:
    return [Path(p).read_text("utf-8", "replace") for p in sorted(glob.glob(
        os.path.join(sink.dump_dir, "*")))]


def test_success_dsn_for_local_delivery(tmp_path: Path, zone, mx_port: int) -> None:
    """RFC 3461 6.2.1 (a), RFC 3464 2.3: NOTIFY=SUCCESS to a local mailbox: the sender gets
    'Action: delivered' with Original-Recipient from ORCPT and Original-Envelope-Id; the other
    recipient (no NOTIFY) causes none; the message itself arrives."""
    with running_app(sender_config(tmp_path, zone, mx_port)) as app:
        send(app.ports["submission"][0],
             [("bob@example.com", ["NOTIFY=SUCCESS", "ORCPT=rfc822;b+2Bbob@example.com"]),
              ("test1@test.com", [])], ["ENVID=lunch-42"])
        wait_for(lambda: reports(app), 15, message="the success DSN")
        wait_for(lambda: app.queue.items() == [], 15, message="the queue to empty")
        [report] = reports(app)
        assert report["Subject"] == "Successful Mail Delivery Report"
        per_message, block = blocks(report)
        assert per_message["Original-Envelope-Id"] == "lunch-42"
        assert block["Final-Recipient"] == "rfc822; bob@example.com"
        assert block["Action"] == "delivered" and block["Status"] == "2.0.0"
        assert block["Original-Recipient"] == "rfc822; b+bob@example.com"
        assert len(mailbox(app.config.store.path, "bob@example.com")) == 1


def test_passed_on_to_a_next_hop_with_dsn(tmp_path: Path, zone, mx_port: int) -> None:
    """RFC 3461 5.2.1: a next hop offering DSN gets RET and ENVID on MAIL, NOTIFY and ORCPT
    on RCPT (xtext as received), and we send no 'relayed' DSN (6.2.1 (c) is its job)."""
    with (SmtpSink(MX["dsn.test"], mx_port) as sink,
          running_app(sender_config(tmp_path, zone, mx_port)) as app):
        send(app.ports["submission"][0],
             [("user@dsn.test", ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;u+2B1@dsn.test"])],
             ["RET=HDRS", "ENVID=e+2B1"])
        wait_for(lambda: app.queue.items() == [], 15, message="the queue to empty")
        [dump] = sink_dumps(sink)
        assert "X-Mail-Args: <alice@example.com>" in dump
        mail_args = next(x for x in dump.splitlines() if x.startswith("X-Mail-Args:"))
        assert "RET=HDRS" in mail_args and "ENVID=e+2B1" in mail_args
        rcpt_args = next(x for x in dump.splitlines() if x.startswith("X-Rcpt-Args:"))
        assert "NOTIFY=SUCCESS,DELAY" in rcpt_args and "ORCPT=rfc822;u+2B1@dsn.test" in rcpt_args
        assert reports(app) == []


def test_relayed_dsn_when_the_next_hop_lacks_dsn(tmp_path: Path, zone, mx_port: int) -> None:
    """RFC 3461 6.2.1 (c): NOTIFY=SUCCESS relayed to a host without DSN (smtp-sink -N): we
    send 'Action: relayed' with Remote-MTA, and no DSN parameters go to that host (5.2)."""
    with (SmtpSink(MX["nodsn.test"], mx_port, ["-N"]) as sink,
          running_app(sender_config(tmp_path, zone, mx_port)) as app):
        send(app.ports["submission"][0], [("user@nodsn.test", ["NOTIFY=SUCCESS"])],
             ["RET=FULL"])
        wait_for(lambda: reports(app), 15, message="the relayed DSN")
        [report] = reports(app)
        block = blocks(report)[1]
        assert block["Action"] == "relayed" and block["Remote-MTA"] == "dns; mx.nodsn.test"
        [dump] = sink_dumps(sink)
        assert "NOTIFY" not in dump and "RET=" not in dump


def test_never_and_ret_hdrs_on_failures(tmp_path: Path, zone, mx_port: int) -> None:
    """RFC 3461 4.1: NOTIFY=NEVER: a rejected recipient causes no bounce; RFC 3461 4.3/4.4:
    the other (NOTIFY absent) is bounced with only the headers (RET=HDRS) and ENVID."""
    with (SmtpSink(MX["reject.test"], mx_port, ["-f", "RCPT"]),
          running_app(sender_config(tmp_path, zone, mx_port)) as app):
        send(app.ports["submission"][0], [("never@reject.test", ["NOTIFY=NEVER"]),
                                          ("other@reject.test", [])],
             ["RET=HDRS", "ENVID=env+3D9"])
        wait_for(lambda: reports(app), 15, message="the bounce")
        wait_for(lambda: app.queue.items() == [], 15, message="the queue to empty")
        [report] = reports(app)
        per_message, *rcpts = blocks(report)
        assert per_message["Original-Envelope-Id"] == "env=9"
        assert [b["Final-Recipient"] for b in rcpts] == ["rfc822; other@reject.test"]
        returned = report.get_payload()[2]
        assert returned.get_content_type() == "text/rfc822-headers"
        assert "Subject: Lunch" in returned.get_payload()
        assert "the body text" not in report.as_string()


def test_delay_warning_only_for_notify_delay(tmp_path: Path, zone, mx_port: int) -> None:
    """RFC 3461 4.1: with NOTIFY=DELAY the sender gets the delay warning (RFC 3464 2.3.3
    'delayed'); with NOTIFY=FAILURE only, none, though the warning time passed."""
    relay = {"delay_warning": "1s", "retry": ["1s"]}
    with (SmtpSink(MX["defer.test"], mx_port, ["-r", "RCPT"]),
          running_app(sender_config(tmp_path, zone, mx_port, relay=relay)) as app):
        port = app.ports["submission"][0]
        send(port, [("late@defer.test", ["NOTIFY=DELAY"])], [])
        send(port, [("quiet@defer.test", ["NOTIFY=FAILURE"])], [])

        def warned() -> bool:
            items = [json.loads(Path(p).read_text()) for p in glob.glob(
                os.path.join(app.queue.directory, "*.json"))]
            return len(items) == 2 and all(i["delay_warned"] for i in items)

        wait_for(warned, 20, message="both items past their warning time")
        wait_for(lambda: reports(app), 10, message="the delay warning")
        [report] = reports(app)
        [block] = blocks(report)[1:]
        assert block["Action"] == "delayed"
        assert block["Final-Recipient"] == "rfc822; late@defer.test"


def test_end_to_end_through_a_second_geomail(tmp_path: Path, zone, mx_port: int) -> None:
    """RFC 3461 5.2.1 and 6.2.1 (a): the request goes on to a second geomail (which offers
    DSN), which delivers into its mailbox and sends the 'delivered' report itself, back over
    SMTP to the sender's MX (the first geomail): Original-Envelope-Id and Original-Recipient as
    the sender gave them, Reporting-MTA the second geomail; the first sends no 'relayed'."""
    first = sender_config(tmp_path / "a", zone, mx_port)
    first["listen"] = {**first["listen"], "smtp": [f"{MX['example.com']}:{mx_port}"]}
    second = mx_config(tmp_path / "b", MX["geo.test"], mx_port, "geo.test", ["user"])
    second["relay"] = relay_settings(zone, mx_port)
    with running_app(second) as remote, running_app(first) as app:
        send(app.ports["submission"][0],
             [("user@geo.test", ["NOTIFY=SUCCESS", "ORCPT=rfc822;orig+2B1@geo.test"])],
             ["ENVID=e2e-1", "RET=HDRS"])
        wait_for(lambda: reports(app), 20, message="the second geomail's success DSN")
        [report] = reports(app)
        per_message, block = blocks(report)
        assert per_message["Reporting-MTA"] == "dns; mx.geo.test"
        assert per_message["Original-Envelope-Id"] == "e2e-1"
        assert block["Action"] == "delivered"
        assert block["Original-Recipient"] == "rfc822; orig+1@geo.test"
        assert len(mailbox(remote.config.store.path, "user@geo.test")) == 1
