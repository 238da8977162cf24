"""Bounded everything (RFC 5321 4.5.3): line and message sizes, recipients, connections in total
and per client IP, timeouts and protocol errors, each with a small configured limit."""

from __future__ import annotations

import time

import pytest

from tests.support import wait_for
from tests.support.dialog import Dialog, wait_closed
from tests.support.smtp import send, stored


def _start_transaction(smtp: Dialog, *recipients: str) -> None:
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
    for rcpt in recipients or ("test1@test.com",):
        smtp.cmd(f"RCPT TO:<{rcpt}>", "250 2.1.5")


def test_command_line_too_long(app):
    """RFC 5321 4.5.3.1.4: a command line is at most 512 octets; a longer one gets 500 5.5.2,
    whether it fits the read buffer or not, and the session goes on."""
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.cmd("NOOP " + "x" * 505, "250 2.0.0")  # 512 octets with CRLF: allowed
        smtp.cmd("NOOP " + "x" * 506, "500 5.5.2")
        smtp.cmd("EHLO " + "y" * 100_000, "500 5.5.2")
        smtp.cmd("EHLO client.example", "250 ")


@pytest.fixture
def small(make_app):
    return make_app(limits={"max_message_size": 10_000, "max_recipients": 3})


def test_message_too_big(small):
    """RFC 1870 6.3 / RFC 5321 4.5.3.1.7: content past the size limit is refused with 552 5.3.4
    once it ends (not stored), and the connection is still usable for a normal message."""
    with Dialog(small.ports["smtp"][0]) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        smtp.cmd("DATA", "354 ")
        line = b"x" * 98 + b"\r\n"
        smtp.send(b"Subject: big\r\n\r\n" + line * 150 + b".\r\n")
        smtp.expect("552 5.3.4")
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: small\r\n\r\nok\r\n.\r\n")
        smtp.expect("250 2.0.0")
    assert [m.body for m in stored(small, "test1@test.com")] == [b"Subject: small\n\nok\n"]


def test_message_size_boundary(small):
    """RFC 1870 3 / 6: the size is counted with CRLF line endings and without the dots that
    were doubled for transparency; a message of exactly the limit is accepted, one more octet
    is refused with 552 5.3.4."""
    head = b"Subject: edge\r\n\r\n"
    line = b"." + b"y" * 97 + b"\r\n"  # 100 octets, sent with a doubled dot
    body = head + line * ((10_000 - len(head)) // 100)
    exact = body + b"z" * (10_000 - len(body) - 2) + b"\r\n"
    assert len(exact) == 10_000
    code, _ = send(small.ports["smtp"][0], "s@remote.example", ["test1@test.com"], exact)
    assert code == 250
    code, text = send(small.ports["smtp"][0], "s@remote.example", ["test1@test.com"],
                      b"z" + exact)
    assert (code, text[:5]) == (552, "5.3.4")
    assert [m.body for m in stored(small, "test1@test.com")] == [exact.replace(b"\r\n", b"\n")]


def test_bdat_announced_past_the_limit_is_refused_unread(small):
    """RFC 1870 6.1 / RFC 3030 2: a BDAT chunk whose announced size is over
    the message size limit gets 552 5.3.4 and the connection is closed at once, without the
    server waiting for (or reading) the chunk."""
    with Dialog(small.ports["smtp"][0]) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        start = time.monotonic()
        smtp.line("BDAT 999999999 LAST")
        smtp.expect("552 5.3.4")
        smtp.expect_closed(within=2)
        assert time.monotonic() - start < 2
    assert stored(small, "test1@test.com") == []


def test_bdat_chunks_adding_up_past_the_limit(small):
    """RFC 1870 6.1 / RFC 3030 2: a chunk that would take the message past
    the limit together with the chunks before it gets 552 5.3.4 and the close, unread; nothing
    is stored and the next connection is served."""
    port = small.ports["smtp"][0]
    with Dialog(port) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        smtp.send(b"BDAT 6000\r\n" + b"a" * 5998 + b"\r\n")
        smtp.expect("250 2.0.0")
        smtp.line("BDAT 6000 LAST")
        smtp.expect("552 5.3.4")
        smtp.expect_closed(within=2)
    with Dialog(port) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        smtp.send(b"BDAT 4 LAST\r\nok\r\n")
        smtp.expect("250 2.0.0")
    assert [m.body for m in stored(small, "test1@test.com")] == [b"ok\n"]


def test_too_many_recipients(small):
    """RFC 5321 4.5.3.1.10: past the recipient limit the server replies 452 4.5.3 and the
    client sends the rest later; the message goes to the recipients accepted."""
    with Dialog(small.ports["smtp"][0]) as smtp:
        smtp.greeting()
        _start_transaction(smtp, "test1@test.com", "alice@example.com", "bob@example.com")
        smtp.cmd("RCPT TO:<test1@test.com>", "452 4.5.3")
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: three\r\n\r\nhi\r\n.\r\n")
        smtp.expect("250 2.0.0")
    for mailbox in ("test1@test.com", "alice@example.com", "bob@example.com"):
        assert len(stored(small, mailbox)) == 1


def test_per_ip_connection_cap(make_app):
    """RFC 5321 3.1 / 4.2.3 (421): past max_connections_per_ip, a client address gets 421 and
    a close; other addresses are served, and the address is served again once one closes."""
    app = make_app(limits={"max_connections_per_ip": 2})
    port = app.ports["smtp"][0]
    first, second = Dialog(port), Dialog(port)
    first.greeting()
    second.greeting()
    with Dialog(port) as third:
        third.expect("421 4.7.0")
        third.expect_closed()
    with Dialog(port, source="127.0.0.2") as other:
        other.greeting()
    second.cmd("QUIT", "221")
    second.close()
    first.cmd("NOOP", "250")

    def served_again() -> bool:
        with Dialog(port) as again:
            return again.reply().code == 220

    wait_for(served_again, timeout=5, message="a free slot for 127.0.0.1")
    first.close()


def test_total_connection_cap(make_app):
    """RFC 5321 3.1 / 4.2.3 (421): past max_connections in total, any client gets 421 and a
    close, whatever its address."""
    app = make_app(limits={"max_connections": 2, "max_connections_per_ip": 10})
    port = app.ports["smtp"][0]
    with Dialog(port, source="127.0.0.2") as a, Dialog(port, source="127.0.0.3") as b:
        a.greeting()
        b.greeting()
        with Dialog(port, source="127.0.0.4") as c:
            c.expect("421 4.7.0 Too many connections")
            c.expect_closed()
        a.cmd("NOOP", "250")
        b.cmd("NOOP", "250")


def test_idle_timeout(make_app):
    """RFC 5321 4.5.3.2.7: a client silent for longer than the command timeout gets 421 4.4.2
    and is disconnected."""
    app = make_app(limits={"command_timeout": "400ms"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        start = time.monotonic()
        smtp.sock.settimeout(5)
        smtp.expect("421 4.4.2")
        waited = time.monotonic() - start
        smtp.expect_closed()
    assert 0.35 <= waited < 3


def test_activity_keeps_a_session_alive(make_app):
    """RFC 5321 4.5.3.2.7: the timeout is per command: a client that keeps sending commands
    more often than the timeout is not disconnected (here for twice the timeout)."""
    app = make_app(limits={"command_timeout": "500ms"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            time.sleep(0.1)  # the pace of the client is what is tested, not a synchronisation
            smtp.cmd("NOOP", "250 2.0.0")
        smtp.cmd("QUIT", "221")


def test_data_timeout(make_app):
    """RFC 5321 4.5.3.2.6: a client that stalls inside DATA for longer than the data timeout
    gets 421 4.4.2; the partial message is dropped."""
    app = make_app(limits={"command_timeout": "10s", "data_timeout": "400ms"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: partial\r\n\r\nhalf a mess")
        start = time.monotonic()
        smtp.expect("421 4.4.2")
        assert time.monotonic() - start < 3
        smtp.expect_closed()
    assert stored(app, "test1@test.com") == []


def test_too_many_bad_commands(make_app):
    """RFC 5321 4.2.4 / 7.8 (resistance to attacks): after max_bad_commands protocol errors the
    server says 421 4.7.0 and closes."""
    app = make_app(limits={"max_bad_commands": 3})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.converse("""
            S: 220
            C: FROB
            S: 500 5.5.2
            C: MAIL FROM:<s@remote.example>
            S: 503 5.5.1
            C: NOOP
            S: 250 2.0.0
            C: XYZZY
            S: 500 5.5.2
            S: 421 4.7.0
            S: <closed>
        """)


def test_refused_client_does_not_stop_the_server(make_app):
    """RFC 5321 4.2.3 (421 is transient): once over-limit clients are gone the server still
    delivers (the slots were released, no greenlet leaked)."""
    app = make_app(limits={"max_connections_per_ip": 1})
    port = app.ports["smtp"][0]
    for _ in range(5):
        with Dialog(port) as holder:
            holder.greeting()
            with Dialog(port) as refused:
                refused.expect("421 4.7.0")
                wait_closed(refused.sock, 5)
    wait_for(lambda: app.tracker.total == 0, timeout=5, message="every slot released")
    code, _ = send(port, "s@remote.example", ["test1@test.com"], b"Subject: s\r\n\r\nx\r\n")
    assert code == 250
    assert len(stored(app, "test1@test.com")) == 1
