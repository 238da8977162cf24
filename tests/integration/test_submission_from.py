"""A logged-in user cannot sign as someone else (RFC 6409 6.1): on submission the header
From (and Sender) must be addresses the user may use as MAIL FROM, or the message gets 553 5.7.1
after its end, nothing is stored or queued, and no DKIM signature is made for it. Real clients:
smtplib over implicit TLS (465) and STARTTLS (587), a raw dialog for BDAT."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
from pathlib import Path

import pytest

from geomail.dkim import keygen
from tests.support import free_port
from tests.support.dialog import Dialog
from tests.support.geomail import PASSWORD
from tests.support.smtp import stored

BODY = "Subject: hi\r\nDate: Tue, 14 Nov 2023 22:13:20 +0100\r\n\r\nhello\r\n"


@pytest.fixture
def app(make_app, tls_files, tmp_path: Path):
    """Submission on 465 and 587, DKIM keys for example.com and test.com, a queue whose DNS
    goes nowhere (remote mail would wait there), and port 25 trusting 127.0.0.0/8."""
    key = str(tmp_path / "dkim.key")
    keygen(key)
    dead_dns = f"127.0.0.1:{free_port('127.0.0.1', socket.SOCK_DGRAM)}"
    return make_app(
        tls={"cert": tls_files["cert"], "key": tls_files["key"]},
        listen={"smtp": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"],
                "submissions": ["127.0.0.1:0"]},
        dkim={"key": key},
        relay={"nameservers": [dead_dns], "retry": ["1h"], "dns_timeout": "1s",
               "allow_networks": ["127.0.0.0/8"]})


def submit_as_bob(app, context: ssl.SSLContext, head: str,
                  recipients: tuple[str, ...] = ("test1@test.com",)) -> tuple[int, bytes]:
    """Log in as bob on 465 and send ``head`` + BODY; the reply to the end of data."""
    with smtplib.SMTP_SSL("localhost", app.ports["submissions"][0], context=context,
                          timeout=10) as client:
        client.login("bob@example.com", PASSWORD)
        assert client.mail("bob@example.com", ["SMTPUTF8"])[0] == 250
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        return client.data((head + BODY).encode())


def nothing_kept(app) -> bool:
    return stored(app, "test1@test.com") == [] and app.queue.items() == []


@pytest.mark.parametrize("head", [
    "From: alice@example.com\r\n",
    "From: Bob <alice@example.com>\r\n",  # his name, her address
    "From: \"bob@example.com\" <alice@example.com>\r\n",
    "From: ALICE@Example.COM\r\n",
    "From: alice+bob@example.com\r\n",
    "From: test1@test.com\r\n",  # a user of another hosted domain
    "From: team@example.com\r\n",  # an alias that reaches others too
    "From: someone@elsewhere.example\r\n",
    "From: bob@example.com, alice@example.com\r\n",  # RFC 5322 3.6.2: a list of authors
    "From: bob@example.com\r\nSender: alice@example.com\r\n",
    "From: bob@example.com\r\nFrom: alice@example.com\r\n",  # a second From field
    "From: alice\r\n",  # unqualified: taken at the envelope sender's domain
    "From: alice@example.com <bob@example.com>\r\n",  # parsers disagree: malformed
    "From: =?utf-8?q?alice@example.com?=\r\n",
    "From: Team:\r\n alice@example.com;\r\n",
])
def test_from_not_owned_is_refused_with_553(app, client_tls, head: str) -> None:
    """RFC 6409 6.1 and 8 / RFC 5322 3.6.2: bob, logged in, gets 553 5.7.1
    after DATA for a message whose From or Sender is not his (another user's address in any
    letter case or with a suffix, another hosted domain, an alias reaching others, a foreign
    address, one of several authors, a malformed field), and nothing is stored or queued."""
    code, text = submit_as_bob(app, client_tls, head)
    assert (code, text[:5]) == (553, b"5.7.1"), text
    assert b"From" in text
    assert nothing_kept(app)


@pytest.mark.parametrize("head", [
    "From: bob@example.com\r\n",
    "From: \"Bob the Builder\" <bob@example.com>\r\n",
    "From: BOB@EXAMPLE.COM\r\n",
    "From: bob+news@example.com\r\n",
    "From: Bob <bob@example.com>,\r\n bob+other@example.com\r\nSender: bob@example.com\r\n",
    "From: bob (Bob at home)\r\n",  # unqualified, at bob's domain
    "From: Nobody:;\r\n",  # an empty group names no author (RFC 6854)
    "",  # no From at all: nothing is claimed
])
def test_own_from_is_accepted(app, client_tls, head: str) -> None:
    """RFC 6409 6.1: bob's own address as From (display name, any letter
    case, a +suffix, several fields, a Sender) is accepted and delivered."""
    code, text = submit_as_bob(app, client_tls, head)
    assert code == 250, text
    [message] = stored(app, "test1@test.com")
    assert message.body.endswith((head + BODY).replace("\r\n", "\n").encode())


def test_alias_only_alice_reaches_is_hers(app, client_tls) -> None:
    """RFC 6409 6.1 (the MAIL FROM rule): alice may write From: al@ (an alias
    of hers only); on 587 after STARTTLS too."""
    with smtplib.SMTP("127.0.0.1", app.ports["submission"][0], timeout=10) as client:
        client.starttls(context=client_tls)
        client.login("alice@example.com", PASSWORD)
        assert client.sendmail("al@example.com", ["test1@test.com"],
                               ("From: Al <al@example.com>\r\n" + BODY).encode()) == {}
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("alice@example.com", ["test1@test.com"],
                            ("From: bob@example.com\r\n" + BODY).encode())
        assert info.value.smtp_code == 553
    assert len(stored(app, "test1@test.com")) == 1


def test_impersonation_is_not_signed_nor_queued_for_remote_recipients(app, client_tls) -> None:
    """RFC 6376 / DMARC (RFC 7489 3.1): bob's message From alice to a remote
    address would leave with a valid d=example.com signature; it is refused, so the queue
    stays empty and no signature exists anywhere."""
    code, _ = submit_as_bob(app, client_tls, "From: alice@example.com\r\n",
                            ("friend@elsewhere.example",))
    assert code == 553
    assert nothing_kept(app)
    code, _ = submit_as_bob(app, client_tls, "From: bob@example.com\r\n",
                            ("friend@elsewhere.example",))
    assert code == 250
    assert len(app.queue.items()) == 1  # his own From: queued (and signed)


def test_bdat_from_not_owned_is_refused(app, client_tls) -> None:
    """RFC 3030 / RFC 6409 6.1: the same check ends a BDAT LAST transaction."""
    data = ("From: alice@example.com\r\n" + BODY).encode()
    with Dialog(app.ports["submissions"][0], tls=client_tls) as dialog:
        dialog.greeting()
        dialog.ehlo()
        plain = base64.b64encode(f"\0bob@example.com\0{PASSWORD}".encode()).decode()
        dialog.cmd(f"AUTH PLAIN {plain}", "235 ")
        dialog.cmd("MAIL FROM:<bob@example.com>", "250 ")
        dialog.cmd("RCPT TO:<test1@test.com>", "250 ")
        dialog.send(b"BDAT %d LAST\r\n" % len(data) + data)
        dialog.expect("553 5.7.1")
        dialog.cmd("MAIL FROM:<bob@example.com>", "250 ")  # the session goes on
    assert nothing_kept(app)


def test_trusted_network_without_login_keeps_todays_behaviour(app) -> None:
    """RFC 6409 6.1 / ``relay.allow_networks``: a client there that did not log in (a script
    on the machine) is not held to a user's addresses."""
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"][0], timeout=10) as client:
        assert client.sendmail("cron@example.com", ["test1@test.com"],
                               ("From: alice@example.com\r\n" + BODY).encode()) == {}
    assert len(stored(app, "test1@test.com")) == 1


def test_from_beyond_the_scanned_header_cannot_slip_through(app, client_tls) -> None:
    """RFC 6409 6.1 / RFC 5322 3.6.2: geomail reads the first 256 KiB of a message for its header; a
    header section longer than that (a From field hidden after it) is refused, not let through."""
    padding = "".join(f"X-Pad-{i}: {'p' * 70}\r\n" for i in range(4000))  # ~330 KB
    head = "From: bob@example.com\r\n" + padding + "From: alice@example.com\r\n"
    code, text = submit_as_bob(app, client_tls, head)
    assert (code, text[:5]) == (553, b"5.7.1"), text
    assert nothing_kept(app)
