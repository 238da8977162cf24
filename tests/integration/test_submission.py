"""TLS and mail submission (RFC 3207, RFC 6409, RFC 8314, RFC 4954): STARTTLS on 25 and 587,
implicit TLS on 465, AUTH PLAIN and LOGIN with throttling, sender enforcement, and certificate
reload on SIGHUP."""

from __future__ import annotations

import base64
import email
import email.utils
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

import pytest
import trustme

from geomail.log import KeyValueFormatter
from tests.support import free_port, wait_for
from tests.support.dialog import Dialog, wait_closed
from tests.support.geomail import PASSWORD, GeomailProcess, base_config
from tests.support.smtp import check_trace, process_config, send, stored
from tests.support.stored import maildir_files, maildir_messages

ALL_LISTENERS = {"smtp": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"],
                 "submissions": ["127.0.0.1:0"]}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN_ALICE = b64(f"\0alice@example.com\0{PASSWORD}")


def composed(subject: str, text: str, *, extra: str = "") -> bytes:
    """A message as a mail program submits it (CRLF): with the Date and Message-ID it always
    writes (RFC 5322 3.6.1, 3.6.4), so geomail has nothing to add and the stored copy is the
    message byte for byte."""
    msgid = f"<{subject.replace(' ', '.')}.{time.monotonic_ns()}@client.example>"
    return (f"{extra}Subject: {subject}\r\nDate: Tue, 14 Nov 2023 22:13:20 +0100\r\n"
            f"Message-ID: {msgid}\r\n\r\n{text}\r\n").encode()


def lf(message: bytes) -> bytes:
    """``message`` as geomail stores it (LF line endings)."""
    return message.replace(b"\r\n", b"\n")


@pytest.fixture
def tls_make(make_app, tls_files):
    """``tls_make(limits={...})``: an app with TLS on smtp, submission and submissions."""
    def start(**overrides):
        return make_app(tls={"cert": tls_files["cert"], "key": tls_files["key"]},
                        listen=ALL_LISTENERS, **overrides)
    return start


@pytest.fixture
def sub(tls_app, client_tls):
    """A submission (587) connection upgraded with STARTTLS, EHLO done, not logged in."""
    with Dialog(tls_app.ports["submission"][0]) as dialog:
        dialog.greeting()
        dialog.ehlo()
        dialog.starttls(client_tls)
        dialog.ehlo()
        yield dialog


@pytest.fixture
def implicit(tls_app, client_tls):
    """A submissions (465) connection, TLS from the first byte, EHLO done, not logged in."""
    with Dialog(tls_app.ports["submissions"][0], tls=client_tls) as dialog:
        dialog.greeting()
        dialog.ehlo()
        yield dialog


# ---- STARTTLS --------------------------------------------------------------------------------


def test_starttls_on_port_25(tls_app, client_tls):
    """RFC 3207 4-4.2: STARTTLS is offered on 25 while TLS is not active; after the upgrade the
    session starts over (EHLO again, no STARTTLS offered twice), AUTH is never offered on 25,
    and the Received field records TLS (RFC 3207 4.2, RFC 3848 ESMTPS)."""
    with Dialog(tls_app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        before = smtp.ehlo("before.example")
        assert "STARTTLS" in before and "AUTH" not in before
        smtp.starttls(client_tls)
        smtp.cmd("MAIL FROM:<s@remote.example>", "503 5.5.1")  # state reset: EHLO first
        after = smtp.ehlo("after.example")
        assert "STARTTLS" not in after and "AUTH" not in after
        smtp.cmd("STARTTLS", "503 5.5.1")
        smtp.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "502 5.5.1")
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: over tls\r\n\r\nsecret\r\n.\r\n")
        reply = smtp.expect("250 2.0.0")
    [message] = stored(tls_app, "test1@test.com")
    assert message.body == b"Subject: over tls\n\nsecret\n"
    check_trace(message, sender="s@remote.example", mailbox="test1@test.com",
                rcpt="test1@test.com", helo="after.example", protocol="ESMTPS",
                reply=reply.last, tls=True)
    assert message.fields["tls"].startswith("TLSv1.")


def test_starttls_on_submission(tls_app, client_tls):
    """RFC 3207 4.2 / RFC 4954 4 / RFC 6409 4.3: on 587, AUTH is absent and refused (538)
    before TLS, MAIL needs AUTH (530); after STARTTLS and EHLO again, AUTH PLAIN LOGIN is
    offered and a login lets mail through, recorded as ESMTPSA (RFC 3848)."""
    with Dialog(tls_app.ports["submission"][0]) as smtp:
        smtp.greeting()
        before = smtp.ehlo()
        assert "STARTTLS" in before and "AUTH" not in before
        smtp.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "538 5.7.11")
        smtp.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")
        smtp.starttls(client_tls)
        smtp.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "503 5.5.1")  # state reset: EHLO first
        reply = smtp.cmd("EHLO client.example", "250 ")
        offered = [line[4:] for line in reply.lines]
        assert "AUTH PLAIN LOGIN" in offered and "STARTTLS" not in offered
        smtp.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")
        smtp.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "235 2.7.0")
        smtp.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")
        smtp.cmd("RCPT TO:<bob@example.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        data = composed("submitted", "hi bob")
        smtp.send(data + b".\r\n")
        reply = smtp.expect("250 2.0.0")
    [message] = stored(tls_app, "bob@example.com")
    assert message.body == lf(data)
    check_trace(message, sender="alice@example.com", mailbox="bob@example.com",
                rcpt="bob@example.com", protocol="ESMTPSA", reply=reply.last, tls=True)


def test_starttls_handshake_timeout(tls_make):
    """RFC 3207 4 (``limits.tls_handshake_timeout``): the handshake after 220 runs under a timeout;
    a client that never starts it is dropped, and the server keeps serving."""
    app = tls_make(limits={"tls_handshake_timeout": "500ms"})
    with Dialog(app.ports["submission"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("STARTTLS", "220 2.0.0")
        waited, seen = wait_closed(smtp.sock, 5)
        assert waited < 3 and seen == b""
    with Dialog(app.ports["submission"][0]) as smtp:
        smtp.greeting()


@pytest.mark.parametrize("kind", ["smtp", "submission"])
def test_plaintext_injected_after_starttls_is_not_executed(tls_app, kind):
    """RFC 3207 4.2 / 6 (CVE-2011-0411): commands pipelined after STARTTLS in the same packet
    are not executed after the upgrade: the server says 554 and closes, nothing else."""
    with Dialog(tls_app.ports[kind][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.send(b"STARTTLS\r\nMAIL FROM:<x@y>\r\n")
        smtp.expect("554 5.5.1")
        smtp.expect_closed()


# ---- implicit TLS (465) -----------------------------------------------------------------------


def test_implicit_tls_submission_delivers(tls_app, client_tls):
    """RFC 8314 3.3 / RFC 4954: on 465 TLS starts at once; smtplib SMTP_SSL logs in with AUTH
    and the message is delivered (no STARTTLS offered inside TLS)."""
    with smtplib.SMTP_SSL("localhost", tls_app.ports["submissions"][0], context=client_tls,
                          timeout=10) as client:
        client.ehlo("client.example")
        assert "starttls" not in client.esmtp_features
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        client.login("alice@example.com", PASSWORD)
        data = composed("via 465", "implicit")
        refused = client.sendmail("alice@example.com", ["bob@example.com", "test1@test.com"],
                                  data)
    assert refused == {}
    for mailbox in ("bob@example.com", "test1@test.com"):
        [message] = stored(tls_app, mailbox)
        assert message.body == lf(data)
        check_trace(message, sender="alice@example.com", mailbox=mailbox, rcpt=mailbox,
                    protocol="ESMTPSA", tls=True)


def test_plaintext_client_on_465_is_dropped(tls_make, client_tls):
    """RFC 8314 3.3: 465 speaks TLS from the first byte; a client speaking plain SMTP, or one
    waiting for a banner, is dropped (no SMTP reply, no banner) and the server keeps serving."""
    app = tls_make(limits={"tls_handshake_timeout": "500ms"})
    port = app.ports["submissions"][0]
    with Dialog(port) as talker:
        talker.send(b"EHLO client.example\r\n")
        _, seen = wait_closed(talker.sock, 5)
        assert b"220" not in seen and b"250" not in seen  # at most a TLS alert
    with Dialog(port) as silent:
        waited, seen = wait_closed(silent.sock, 5)  # the handshake timeout drops it
        assert waited < 3 and b"220" not in seen
    with Dialog(port, tls=client_tls) as good:
        good.greeting()
        good.cmd("EHLO client.example", "250 ")
        good.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "235 2.7.0")


# ---- AUTH (RFC 4954) ----------------------------------------------------------------------------


def test_auth_plain_initial_response(implicit):
    """RFC 4954 4 / RFC 4616 2: AUTH PLAIN with the initial response logs in (235 2.7.0);
    a second AUTH is refused (503 5.5.1); a later EHLO resets the transaction, not the login
    (RFC 5321 4.1.4)."""
    implicit.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "235 2.7.0")
    implicit.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "503 5.5.1")
    implicit.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")
    implicit.ehlo()
    implicit.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")


def test_auth_plain_challenge(sub):
    """RFC 4954 4: AUTH PLAIN without an initial response gets an empty 334 challenge, then the
    base64 response logs in; the authorization identity may name the same user."""
    sub.cmd("AUTH PLAIN", "334")
    sub.cmd(b64(f"alice@example.com\0Alice@Example.com\0{PASSWORD}"), "235 2.7.0")


def test_auth_login(sub):
    """RFC 4954 4 (LOGIN, draft-murchison-sasl-login): 334 Username:, 334 Password:, 235."""
    reply = sub.cmd("AUTH LOGIN", "334 ")
    assert base64.b64decode(reply.last[4:]) == b"Username:"
    reply = sub.cmd(b64("alice@example.com"), "334 ")
    assert base64.b64decode(reply.last[4:]) == b"Password:"
    sub.cmd(b64(PASSWORD), "235 2.7.0")


def test_auth_login_initial_response(implicit):
    """RFC 4954 4: the initial-response form works for LOGIN too (the user name on the AUTH
    line, then only the password is asked for)."""
    reply = implicit.cmd(f"AUTH LOGIN {b64('bob@example.com')}", "334 ")
    assert base64.b64decode(reply.last[4:]) == b"Password:"
    implicit.cmd(b64(PASSWORD), "235 2.7.0")
    implicit.cmd("MAIL FROM:<bob@example.com>", "250 2.1.0")


@pytest.mark.parametrize("user, password", [("alice@example.com", "wrong password"),
                                            ("nobody@example.com", PASSWORD),
                                            ("test1@test.com", "")],
                         ids=["bad-password", "unknown-user", "user-without-password"])
def test_auth_bad_credentials(implicit, user, password):
    """RFC 4954 6 (535 5.7.8): a wrong password, an unknown user and a user without a password
    all get the same 535 5.7.8, so replies do not reveal who exists; MAIL still needs AUTH."""
    first = implicit.cmd(f"AUTH PLAIN {b64(chr(0) + user + chr(0) + password)}", "535 5.7.8")
    implicit.cmd("AUTH LOGIN", "334 ")
    implicit.cmd(b64(user), "334 ")
    second = implicit.cmd(b64(password) if password else "=", "535 5.7.8")
    assert first.last == second.last == "535 5.7.8 Authentication credentials invalid"
    implicit.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")


def test_auth_malformed_and_cancelled(sub):
    """RFC 4954 4: a response that is not base64 gets 501 5.5.2; "*" cancels the exchange with
    501; an unknown mechanism gets 504 5.5.4; none of them logs in."""
    sub.cmd("AUTH CRAM-MD5", "504 5.5.4")
    sub.cmd("AUTH PLAIN", "334")
    sub.cmd("not base64!", "501 5.5.2")
    sub.cmd("AUTH LOGIN", "334 ")
    sub.cmd("*", "501 5.0.0")
    sub.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")


def test_auth_malformed_plain_message(implicit):
    """RFC 4616 2: a PLAIN message without the two NULs (or naming another user as the
    authorization identity) is malformed: 501, not a login."""
    implicit.cmd(f"AUTH PLAIN {b64('alice@example.com ' + PASSWORD)}", "501 5.5.4")
    as_bob = b64(f"bob@example.com\0alice@example.com\0{PASSWORD}")
    implicit.cmd(f"AUTH PLAIN {as_bob}", "501 5.5.4")


def test_auth_failures_close_the_connection(implicit):
    """RFC 4954 4 / RFC 5321 4.2.3 (421): after repeated failed logins on one connection the
    server says 421 4.7.0 and closes."""
    bad = b64("\0alice@example.com\0nope")
    implicit.cmd(f"AUTH PLAIN {bad}", "535 5.7.8")
    implicit.cmd(f"AUTH PLAIN {bad}", "535 5.7.8")
    implicit.cmd(f"AUTH PLAIN {bad}", "421 4.7.0")
    implicit.expect_closed()


def _login(port: int, context: ssl.SSLContext, source: str, password: str = PASSWORD) -> str:
    """One login attempt on 465 from ``source``: the AUTH reply's last line."""
    with Dialog(port, source=source, tls=context) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.line(f"AUTH PLAIN {b64(chr(0) + 'alice@example.com' + chr(0) + password)}")
        return smtp.reply().last


def test_auth_throttling_and_block_expiry(tls_make, client_tls):
    """RFC 4954 6 (454 4.7.0 temporary failure): after max_auth_failures failed logins
    from one address, even the right password is refused (454 4.7.0) for auth_block_time;
    other addresses are unaffected; once the block expires the login succeeds."""
    app = tls_make(limits={"max_auth_failures": 2, "auth_block_time": "1s"})
    port = app.ports["submissions"][0]
    assert _login(port, client_tls, "127.0.0.2", "guess 1").startswith("535 5.7.8")
    assert _login(port, client_tls, "127.0.0.2", "guess 2").startswith("535 5.7.8")
    blocked_at = time.monotonic()
    assert _login(port, client_tls, "127.0.0.2").startswith("454 4.7.0")
    assert _login(port, client_tls, "127.0.0.1").startswith("235 2.7.0")  # per client address
    replies: list[str] = []

    def logged_in() -> bool:
        replies.append(_login(port, client_tls, "127.0.0.2"))
        return replies[-1].startswith("235 2.7.0")

    wait_for(logged_in, timeout=10, interval=0.1, message="the block to expire")
    assert time.monotonic() - blocked_at >= 0.8
    assert all(r.startswith(("454 4.7.0", "235 2.7.0")) for r in replies), replies


def test_auth_failures_are_logged_for_fail2ban(tls_make, client_tls, caplog):
    """RFC 4954 / DESIGN rule 6: each failed login is one key=value line with the client
    address first, and a block is logged too, so fail2ban can act."""
    caplog.set_level("INFO", logger="geomail.auth")
    app = tls_make(limits={"max_auth_failures": 2, "auth_block_time": "30s"})
    port = app.ports["submissions"][0]
    _login(port, client_tls, "127.0.0.3", "x")
    _login(port, client_tls, "127.0.0.3", "y")
    _login(port, client_tls, "127.0.0.3")
    lines = [r.getMessage() for r in caplog.records if r.name == "geomail.auth"]
    assert lines.count("auth-failed client=127.0.0.3 user=alice@example.com "
                       "reason=bad-password") == 2
    assert any(line.startswith("auth-blocked client=127.0.0.3 failures=2") for line in lines)
    assert "auth-failed client=127.0.0.3 user=alice@example.com reason=blocked" in lines


def test_passwd_hash_logs_in(make_app, tls_files, client_tls):
    """RFC 4954 (AUTH) with ``geomail passwd``: the hash `geomail passwd` prints from a piped
    password, pasted under users.<address>.password, lets that user log in over SMTP."""
    done = subprocess.run([sys.executable, "-m", "geomail", "passwd"], input=b"s3cret pass\n",
                          capture_output=True, timeout=30, check=True)
    password_hash = done.stdout.decode().strip()
    assert password_hash.startswith("$argon2id$")
    app = make_app(tls={"cert": tls_files["cert"], "key": tls_files["key"]},
                   listen={"submissions": ["127.0.0.1:0"]},
                   users={"carol@example.com": {"password": password_hash}})
    with Dialog(app.ports["submissions"][0], tls=client_tls) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd(f"AUTH PLAIN {b64(chr(0) + 'carol@example.com' + chr(0) + 's3cret')}",
                 "535 5.7.8")
        smtp.cmd(f"AUTH PLAIN {b64(chr(0) + 'carol@example.com' + chr(0) + 's3cret pass')}",
                 "235 2.7.0")


# ---- submission policy (RFC 6409) ----------------------------------------------------------------


def test_mail_requires_auth_on_submission(implicit, sub):
    """RFC 6409 4.3 / RFC 4954 6: MAIL without AUTH on 587 and 465 gets 530 5.7.0."""
    implicit.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")
    sub.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")


@pytest.mark.parametrize("sender, allowed", [
    ("alice@example.com", True), ("Alice@Example.COM", True), ("alice+tag@example.com", True),
    ("al@example.com", True), ("postmaster@example.com", True),
    ("bob@example.com", False), ("bob+alice@example.com", False), ("team@example.com", False),
    ("alice@elsewhere.example", False), ("test1@test.com", False),
])
def test_sender_enforcement(implicit, sender, allowed):
    """RFC 6409 6.1: an authenticated user sends only as their own address (with
    any +suffix) and aliases that reach only them; another user's address, an alias that
    reaches others too (team@) or a foreign address gets 553 5.7.1."""
    implicit.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "235 2.7.0")
    implicit.cmd(f"MAIL FROM:<{sender}>", "250 2.1.0" if allowed else "553 5.7.1")


def test_send_as_own_alias_delivers(tls_app, implicit):
    """RFC 6409 6.1 / RFC 5321 4.4: alice sends as her alias al@; the copy carries that
    Return-Path."""
    implicit.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "235 2.7.0")
    implicit.cmd("MAIL FROM:<al@example.com>", "250 2.1.0")
    implicit.cmd("RCPT TO:<bob@example.com>", "250 2.1.5")
    implicit.cmd("DATA", "354 ")
    data = composed("alias", "from al", extra="From: Al <al@example.com>\r\n")
    implicit.send(data + b".\r\n")
    implicit.expect("250 2.0.0")
    [message] = stored(tls_app, "bob@example.com")
    assert message.fields["sender"] == "al@example.com"
    assert message.body == lf(data)


def test_remote_recipient_from_authenticated_user(tls_make, client_tls, caplog):
    """RFC 6409 3.1: an authenticated user may send to
    remote addresses: the recipient is accepted and the message queued (with the local copy).
    One id names the message everywhere: the 250 reply, the ``accepted`` log line, the
    Received field (RFC 5321 4.4) and the queue item."""
    caplog.set_level("INFO", logger="geomail.mail")
    # DNS goes nowhere but loopback: a port where nobody answers (the remote copy waits).
    dead_dns = f"127.0.0.1:{free_port('127.0.0.1', socket.SOCK_DGRAM)}"
    app = tls_make(relay={"nameservers": [dead_dns], "retry": ["1h"], "dns_timeout": "1s"})
    with Dialog(app.ports["submissions"][0], tls=client_tls) as implicit:
        implicit.greeting()
        implicit.ehlo()
        implicit.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "235 2.7.0")
        implicit.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")
        implicit.cmd("RCPT TO:<friend@elsewhere.example>", "250 2.1.5")
        implicit.cmd("RCPT TO:<bob@example.com>", "250 2.1.5")
        implicit.cmd("DATA", "354 ")
        data = composed("out", "to the world")
        implicit.send(data + b".\r\n")
        msgid = implicit.expect("250 2.0.0").last.rsplit(" ", 1)[1]
    lines = [KeyValueFormatter().format(r) for r in caplog.records if r.name == "geomail.mail"]
    accepted = [line for line in lines if " accepted " in line]
    assert len(accepted) == 1, lines
    assert f" id={msgid} " in accepted[0] and "route=queue" in accepted[0]
    assert "to=friend@elsewhere.example,bob@example.com" in accepted[0]
    assert [item["id"] for item in app.queue.items()] == [msgid]
    [copy] = wait_for(lambda: stored_raw(app, "bob@example.com"), 10, message="bob's copy")
    ids = re.findall(rb"\tby mx\.test\.com \(geomail\) with ESMTPSA id (\w+)", copy)
    assert ids == [msgid.encode()]
    assert copy.endswith(lf(data))


def stored_raw(app, mailbox: str) -> list[bytes]:
    """The raw files of ``mailbox`` (queued mail has no single-recipient trace prefix)."""
    return [path.read_bytes() for path in maildir_files(app.config.store.path, mailbox)]


# ---- what submission adds (RFC 6409 8) --------------------------------------------------------

# RFC 5322 3.3 date-time (as produced: day-of-week, 2-digit time with seconds, numeric zone).
DATE_SYNTAX = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} "
                         r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                         r"\d\d:\d\d:\d\d [+-]\d{4}")
# RFC 5322 3.6.4 msg-id: "<" dot-atom-text "@" id-right ">", id-right being our hostname.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSGID_SYNTAX = re.compile(rf"<{ATEXT}(\.{ATEXT})*@mx\.test\.com>")


def _submit(port: int, context: ssl.SSLContext, data: bytes) -> None:
    with smtplib.SMTP_SSL("localhost", port, context=context, timeout=10) as client:
        client.login("alice@example.com", PASSWORD)
        assert client.sendmail("alice@example.com", ["bob@example.com"], data) == {}


@pytest.mark.parametrize("given", [(), ("Date",), ("Message-Id",), ("Date", "Message-ID")],
                         ids=["neither", "date-only", "message-id-only", "both"])
def test_submission_adds_only_the_missing_date_and_message_id(tls_app, client_tls, given):
    """RFC 6409 8.2 / 8.3 with RFC 5322 3.6 (3.6.1 orig-date, 3.6.4 msg-id): a submitted
    message without Date or Message-ID gets exactly one of each it lacks, right after the
    Received field: a date-time in RFC 5322 3.3 syntax close to now, and a msg-id whose right
    side is our hostname. Fields the message has (in any letter case) are left alone, and the
    message itself follows unchanged."""
    head = b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: bare\r\n"
    if "Date" in given:
        head += b"Date: Tue, 14 Nov 2023 22:13:20 +0100\r\n"
    if "Message-Id" in given:
        head += b"Message-Id: <given.1@client.example>\r\n"
    if "Message-ID" in given:
        head += b"MESSAGE-ID: <given.2@client.example>\r\n"
    data = head + b"\r\nbody\r\nDate: not a header, in the body\r\n"
    before = time.time()
    _submit(tls_app.ports["submissions"][0], client_tls, data)
    [message] = stored(tls_app, "bob@example.com")
    assert message.body.endswith(lf(data))
    added = message.body[: len(message.body) - len(lf(data))].decode()
    fields = dict(line.split(": ", 1) for line in added.splitlines())
    assert list(fields) == [f for f in ("Date", "Message-ID") if f.lower() not in
                            {g.lower() for g in given}]
    assert len(added.splitlines()) == len(fields)  # one each, nothing else
    if "Date" in fields:
        assert DATE_SYNTAX.fullmatch(fields["Date"]), fields["Date"]
        sent = email.utils.parsedate_to_datetime(fields["Date"]).timestamp()
        assert before - 2 <= sent <= time.time() + 1
    if "Message-ID" in fields:
        assert MSGID_SYNTAX.fullmatch(fields["Message-ID"]), fields["Message-ID"]
    parsed = email.message_from_bytes(message.raw)
    assert len(parsed.get_all("Date")) == len(parsed.get_all("Message-ID")) == 1


def test_added_message_ids_are_unique_and_large_messages_get_them_too(tls_app, client_tls):
    """RFC 5322 3.6.4 (a msg-id is unique) / RFC 6409 8.3: two bare submissions get different
    Message-IDs; a message large enough to be spooled to disk while it is read is looked at
    too."""
    small = b"Subject: one\r\n\r\nsmall\r\n"
    # Larger than the 256 KiB a body may keep in memory (geomail.spool.Spool).
    large = b"Subject: two\r\n\r\n" + b"".join(b"line %06d %s\r\n" % (i, b"y" * 60)
                                                 for i in range(6000))
    _submit(tls_app.ports["submissions"][0], client_tls, small)
    _submit(tls_app.ports["submissions"][0], client_tls, large)
    messages = stored(tls_app, "bob@example.com")
    assert len(messages) == 2
    ids = [email.message_from_bytes(m.raw)["Message-ID"] for m in messages]
    assert len(set(ids)) == 2 and all(MSGID_SYNTAX.fullmatch(i) for i in ids), ids
    by_size = sorted(messages, key=lambda m: len(m.raw))
    for message, data in zip(by_size, (small, large), strict=True):
        assert re.match(rb"Date: [^\n]+\nMessage-ID: <[^\n]+>\n", message.body)
        assert message.body.split(b"\n", 2)[2] == lf(data)


def test_port_25_mail_from_an_untrusted_client_gets_nothing_added(tls_app):
    """RFC 6409 8 (only for submissions) / RFC 5321 3.6 and 4.4 (a relay adds trace fields
    only): mail arriving on port 25 from a client that neither logged in nor is in
    relay.allow_networks is stored with no Date or Message-ID added, byte for byte."""
    data = b"From: someone@remote.example\r\nSubject: no date\r\n\r\nas it came\r\n"
    code, _ = send(tls_app.ports["smtp"][0], "someone@remote.example", ["bob@example.com"], data)
    assert code == 250
    [message] = stored(tls_app, "bob@example.com")
    assert message.body == lf(data)
    assert "Date" not in email.message_from_bytes(message.raw)


# ---- certificate reload (SIGHUP) --------------------------------------------------------------


def _write_cert(ca: trustme.CA, cert: str, key: str) -> None:
    issued = ca.issue_cert("localhost", "127.0.0.1", "mx.test.com")
    issued.private_key_pem.write_to_path(key)
    with open(cert, "wb") as handle:
        handle.write(b"".join(blob.bytes() for blob in issued.cert_chain_pems))


@pytest.mark.slow
def test_sighup_reloads_the_certificate(tmp_path, ca, client_tls):
    """RFC 8314 (certificate renewal without restart): after a new certificate is
    written and SIGHUP sent, new connections get it; a TLS connection opened before keeps
    working with the old one and can still submit mail. Users are reloaded too."""
    cert, key = str(tmp_path / "fullchain.pem"), str(tmp_path / "privkey.pem")
    _write_cert(ca, cert, key)
    tls = {"cert": cert, "key": key}
    listen = {"smtp": ["127.0.0.1:0"], "submissions": ["127.0.0.1:0"]}
    config = process_config(tmp_path, tls=tls, listen=listen)
    server = GeomailProcess(config)
    server.start()
    try:
        port = server.port("submissions")
        old = Dialog(port, tls=client_tls)
        old.greeting()
        old.ehlo()
        old.cmd(f"AUTH PLAIN {PLAIN_ALICE}", "235 2.7.0")
        old.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")
        old.cmd("RCPT TO:<carol@example.com>", "550 5.1.1")
        old.cmd("RSET", "250")

        new_ca = trustme.CA()
        new_context = ssl.create_default_context()
        new_ca.configure_trust(new_context)
        with pytest.raises(ssl.SSLCertVerificationError):
            Dialog(port, tls=new_context).close()
        _write_cert(new_ca, cert, key)
        users = base_config(tmp_path)["users"]
        process_config(tmp_path, tls=tls, listen=listen,
                       users={**users, "carol@example.com": {}})  # same file, one user more
        server.signal(signal.SIGHUP)

        def new_certificate_served() -> bool:
            try:
                with Dialog(port, tls=new_context) as fresh:
                    return fresh.greeting().code == 220
            except ssl.SSLCertVerificationError:
                return False

        wait_for(new_certificate_served, timeout=10, interval=0.05, message="the new cert")
        with pytest.raises(ssl.SSLCertVerificationError):
            Dialog(port, tls=client_tls).close()
        wait_for(lambda: "tls-reloaded" in server.log(), timeout=10, message="the reload log line")

        old.cmd("NOOP", "250 2.0.0")  # the connection from before the reload still works
        old.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")
        old.cmd("RCPT TO:<bob@example.com>", "250 2.1.5")
        old.cmd("RCPT TO:<carol@example.com>", "250 2.1.5")  # the reloaded user
        old.cmd("DATA", "354 ")
        data = composed("across a reload", "still here")
        old.send(data + b".\r\n")
        old.expect("250 2.0.0")
        old.cmd("QUIT", "221")
        old.close()
    finally:
        server.stop()
    for mailbox in ("bob@example.com", "carol@example.com"):
        [message] = maildir_messages(tmp_path / "data" / "mail", mailbox)
        assert message.body == lf(data)
