"""Error and junk limits over real sockets (Postfix's smtpd_soft_error_limit,
smtpd_hard_error_limit, smtpd_error_sleep_time, smtpd_junk_command_limit): a client that keeps
getting refusals is slowed down, then disconnected with 421 4.7.0."""

from __future__ import annotations

import logging
import smtplib
import time

from tests.support import wait_for
from tests.support.dialog import Dialog, DialogError, Reply
from tests.support.smtp import stored


def _replies_until_closed(smtp: Dialog, limit: int) -> list[Reply]:
    """Every reply up to the server's close (at most ``limit``; the close must come first)."""
    replies: list[Reply] = []
    while len(replies) < limit:
        try:
            replies.append(smtp.reply())
        except DialogError as exc:
            if "connection closed" not in str(exc):
                raise
            return replies
    raise AssertionError(f"still open after {limit} replies\n{smtp.dump()}")


def test_pipelined_directory_harvest_is_cut_off(app):
    """2,000 pipelined RCPTs for unknown users (a directory harvest, RFC 5321 7.8), with the
    default limits: past the soft limit (10) each refusal is delayed by 1 s, at the hard limit
    (20) the server says 421 4.7.0 and closes; only 20 of the 2,000 addresses got an answer."""
    with Dialog(app.ports["smtp"][0], timeout=20) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<harvester@remote.example>", "250 2.1.0")
        start = time.monotonic()
        smtp.send(b"".join(b"RCPT TO:<guess%d@test.com>\r\n" % i for i in range(2000)))
        replies = _replies_until_closed(smtp, 2000)
        elapsed = time.monotonic() - start
    assert [r.code for r in replies] == [550] * 20 + [421]
    assert replies[-1].last.startswith("421 4.7.0 Too many errors")
    assert 8 <= elapsed < 15  # the 11th..19th refusals were each delayed by 1 s


def test_pipelined_relay_attempts_are_cut_off(make_app, caplog):
    """2,000 pipelined relay attempts (554 5.7.1 each) end the same way; the operator's log
    says why the session ended (``disconnect ... reason=too-many-errors``, docs/logging.md)."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = make_app(limits={"error_sleep_time": "10ms"})
    with Dialog(app.ports["smtp"][0], timeout=20) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<spammer@remote.example>", "250 2.1.0")
        smtp.send(b"".join(b"RCPT TO:<v%d@elsewhere.example>\r\n" % i for i in range(2000)))
        replies = _replies_until_closed(smtp, 2000)
    assert [r.code for r in replies] == [554] * 20 + [421]
    wait_for(lambda: any("reason=too-many-errors" in r.getMessage() for r in caplog.records
                         if r.name == "geomail.mail" and "disconnect" in r.getMessage()),
             timeout=5, message="the disconnect line")


def test_junk_command_flood_is_cut_off(make_app):
    """9,000 pipelined NOOP/RSET/VRFY: past junk_command_limit (100) each counts as an error, so
    the connection ends at the hard limit, long before the end of the flood."""
    app = make_app(limits={"error_sleep_time": "10ms"})
    with Dialog(app.ports["smtp"][0], timeout=20) as smtp:
        smtp.greeting()
        smtp.send(b"NOOP\r\nRSET\r\nVRFY <a@test.com>\r\n" * 3000)
        replies = _replies_until_closed(smtp, 9000)
    assert len(replies) == 100 + 20 + 1
    assert replies[-1].last.startswith("421 4.7.0")
    assert {r.code for r in replies[:-1]} == {250, 252}  # the replies themselves are unchanged


def test_configured_limits_are_respected(make_app):
    """``limits.hard_error_limit`` and ``limits.junk_command_limit`` are what the server
    enforces."""
    app = make_app(limits={"hard_error_limit": 3, "soft_error_limit": 100,
                           "junk_command_limit": 5})
    port = app.ports["smtp"][0]
    with Dialog(port) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        for _ in range(3):  # the hard limit
            smtp.cmd("RCPT TO:<nobody@test.com>", "550 5.1.1")
        smtp.expect("421 4.7.0")
        smtp.expect_closed()
    with Dialog(port) as smtp:
        smtp.greeting()
        for _ in range(5):  # the junk limit
            smtp.cmd("NOOP", "250 2.0.0")
        smtp.cmd("NOOP", "250 2.0.0")  # errors 1 and 2, replies unchanged
        smtp.cmd("NOOP", "250 2.0.0")
        smtp.line("NOOP")
        smtp.expect("250 2.0.0")
        smtp.expect("421 4.7.0")
        smtp.expect_closed()


def test_slow_down_is_observable(make_app):
    """Past ``soft_error_limit`` every refusal comes after ``error_sleep_time`` (Postfix's
    smtpd_error_sleep_time); before it, at once. Measured generously: 300 ms of delay against
    a quick reply."""
    app = make_app(limits={"soft_error_limit": 2, "hard_error_limit": 6,
                           "error_sleep_time": "300ms"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        waits = []
        for _ in range(5):
            start = time.monotonic()
            smtp.cmd("RCPT TO:<nobody@test.com>", "550 5.1.1")
            waits.append(time.monotonic() - start)
        smtp.cmd("RCPT TO:<nobody@test.com>", "550 5.1.1")
        smtp.expect("421 4.7.0")
    assert max(waits[:2]) < 0.25, waits
    assert min(waits[2:]) >= 0.25, waits


def test_normal_session_with_a_few_typos_works(app):
    """A real client (smtplib) that mistypes a few recipients and commands still delivers
    message after message: accepted mail resets the counts (Postfix: errors "without
    delivering mail")."""
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"][0], timeout=10) as client:
        for n in range(4):
            client.ehlo("client.example")
            assert client.docmd("FROB")[0] == 500
            assert client.mail("s@remote.example")[0] == 250
            for typo in ("tset1@test.com", "test1@tset.com", "tes1@test.com"):
                assert client.rcpt(typo)[0] in (550, 554)
            assert client.rcpt("test1@test.com")[0] == 250
            assert client.noop()[0] == 250
            code, _ = client.data(b"Subject: %d\r\n\r\nhello\r\n" % n)
            assert code == 250
    assert len(stored(app, "test1@test.com")) == 4
