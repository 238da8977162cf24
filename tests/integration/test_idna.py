"""IDNA 2008 on the wire and in DNS (RFC 5890-5891, UTS 46): ``faß`` is ``xn--fa-hia``, never
``fass`` (IDNA 2003), for local routing of RCPT and for the MX lookup of relayed mail. Real
clients (smtplib with SMTPUTF8), a real dnsmasq and smtp-sink as the MX hosts."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.support import free_port_on, wait_for
from tests.support.geomail import PASSWORD, base_config, running_app
from tests.support.mta import SmtpSink
from tests.support.outbound import make_zone, sender_config
from tests.support.stored import maildir_messages

# The right MX and the one IDNA 2003 would pick (fass.test is another, registrable, domain).
MX = {"xn--fa-hia.test": "127.0.0.61", "fass.test": "127.0.0.62"}
MESSAGE = b"From: alice@example.com\r\nTo: user@fa\xc3\x9f.test\r\nSubject: idn\r\n\r\nhi\r\n"


def rcpt_replies(port: int, recipients: list[str], *, login: bool = False) -> list[int]:
    """MAIL FROM with SMTPUTF8 (RFC 6531 3.4), then one RCPT each: the reply codes."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        if login:
            client.login("alice@example.com", PASSWORD)
        assert client.mail("alice@example.com", ["SMTPUTF8"])[0] == 250
        return [client.rcpt(rcpt)[0] for rcpt in recipients]


def test_rcpt_u_label_and_a_label_reach_one_mailbox_and_not_fass(tmp_path: Path) -> None:
    """RFC 5890 2.3.2.1 / RFC 6531 3.2: with ``faß.example`` configured,
    ``user@faß.example`` (SMTPUTF8) and ``user@xn--fa-hia.example`` are the same local mailbox;
    ``user@fass.example`` is not ours (relay denied), as IDNA 2003 would have had it."""
    raw = base_config(tmp_path, domains=["test.com", "example.com", "faß.example"],
                      users={"user@faß.example": {}})
    with running_app(raw) as app:
        port = app.ports["smtp"][0]
        assert rcpt_replies(port, ["user@faß.example", "User@XN--FA-HIA.example",
                                   "user@FAß.example", "user@fass.example"]) == [
            250, 250, 250, 554]
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            refused = client.sendmail("someone@remote.example",
                                      ["user@faß.example", "user@xn--fa-hia.example"],
                                      b"Subject: idn\r\n\r\nhi\r\n", mail_options=["SMTPUTF8"])
            assert refused == {}
        [message] = maildir_messages(app.config.store.path, "user@xn--fa-hia.example")
        assert message.fields["mailbox"] == "user@xn--fa-hia.example"


def test_rcpt_with_an_invalid_idn_gets_553(tmp_path: Path) -> None:
    """RFC 5891 4.2 / RFC 5321 4.2.2: a recipient or sender domain that is
    not valid IDNA 2008 (a symbol, a misplaced joiner) gets a clear 553, for a client allowed
    to relay too; nothing is queued."""
    with running_app(base_config(tmp_path, listen={"submission": [
            {"address": "127.0.0.1:0", "allow_plaintext_auth": True}]})) as app:
        port = app.ports["submission"][0]
        assert rcpt_replies(port, ["x@☃.example", "x@a\u200db.example", "x@faß.example"],
                            login=True) == [553, 553, 250]
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.login("alice@example.com", PASSWORD)
            code, text = client.mail("alice@☃.example", ["SMTPUTF8"])
            assert (code, text[:5]) == (553, b"5.1.8")
        assert app.queue.items() == []


@pytest.fixture(scope="module")
def mx_port() -> int:
    return free_port_on(sorted(MX.values()))


def test_relayed_mail_goes_to_the_mx_of_the_a_label(tmp_path: Path, mx_port: int) -> None:
    """RFC 5321 5.1 with RFC 5891 5: mail for ``user@faß.test`` is relayed
    to the MX that DNS (dnsmasq) gives for ``xn--fa-hia.test`` and arrives there with the
    A-label recipient; the MX of ``fass.test`` gets nothing."""
    zone = make_zone(MX)
    try:
        with (SmtpSink(MX["xn--fa-hia.test"], mx_port) as right,
              SmtpSink(MX["fass.test"], mx_port) as wrong,
              running_app(sender_config(tmp_path, zone, mx_port)) as app):
            with smtplib.SMTP("127.0.0.1", app.ports["submission"][0], timeout=10) as client:
                client.login("alice@example.com", PASSWORD)
                assert client.sendmail("alice@example.com", ["user@faß.test"], MESSAGE,
                                       mail_options=["SMTPUTF8"]) == {}
            # The item goes once the MX said 250 to the whole message (smtp-sink has dumped it).
            wait_for(lambda: app.queue.items() == [], 15, message="the queue to empty")
            [got] = right.messages()
            assert got.rcpt_tos == ["user@xn--fa-hia.test"]
            assert got.content.endswith(MESSAGE.replace(b"\r\n", b"\n"))
            assert wrong.messages() == []
    finally:
        zone.stop()
