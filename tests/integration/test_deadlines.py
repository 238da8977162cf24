"""Deadlines, not idle timers (RFC 5321 4.5.3.2, Postfix's
``smtpd_per_record_deadline``): a command line, a DATA body, a BDAT chunk and a POP3 command must
arrive whole in time however the bytes trickle in, and every connection has a total lifetime
(``limits.max_connection_time``). Each test bounds its own wait, so that on a server with idle
timers it fails instead of hanging."""

from __future__ import annotations

import socket
import time

from geomail.server.connection import PARK_AFTER
from tests.support.dialog import Dialog, wait_closed
from tests.support.smtp import stored

TRICKLE_EVERY = 0.3  # seconds between two bytes: well under every timeout configured here


def trickle(sock: socket.socket, data: bytes, give_up: float) -> tuple[float, bytes]:
    """Send ``data`` one byte every TRICKLE_EVERY seconds (cycling through it) until the server
    closes; returns the seconds that took and what the server sent meanwhile. Fails after
    ``give_up`` seconds if the server is still listening to the trickle."""
    start = time.monotonic()
    received = b""
    index = 0
    while time.monotonic() - start < give_up:
        try:
            sock.sendall(data[index % len(data) : index % len(data) + 1])
        except OSError:  # reset after the server closed: the same as reading EOF
            return time.monotonic() - start, received
        index += 1
        sock.settimeout(TRICKLE_EVERY)  # the client's pace; it also watches for the close
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return time.monotonic() - start, received
        received += chunk
    raise AssertionError(f"still connected after {give_up}s of trickling ({index} bytes); "
                         f"received {received!r}")


def _start_transaction(smtp: Dialog) -> None:
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")


def test_trickled_command_line_is_cut_at_its_deadline(make_app):
    """RFC 5321 4.5.3.2.7 with Postfix's per-record deadline: a command line must arrive whole
    within ``command_timeout`` of the previous reply. A client sending one byte every 0.3 s and
    never ending its line gets 421 4.4.2 after about the timeout (1 s), not never."""
    app = make_app(limits={"command_timeout": "1s"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        waited, said = trickle(smtp.sock, b"NOOP " + b"x" * 400, give_up=6)
    assert said.startswith(b"421 4.4.2"), said
    assert 0.9 <= waited < 3


def test_deadline_survives_parking(make_app):
    """RFC 5321 4.5.3.2 (Postfix's smtpd_per_record_deadline): the deadline is an absolute time,
    kept while the connection is parked (a pause over PARK_AFTER) and woken: a line begun, paused
    1.5 s, continued and left unfinished is cut 2 s (``command_timeout``) after the previous reply,
    not 2 s after its last byte."""
    app = make_app(limits={"command_timeout": "2s"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        start = time.monotonic()
        smtp.send(b"NOOP")
        time.sleep(PARK_AFTER + 0.5)  # the pause under test: the connection parks
        smtp.send(b" more")
        _, said = wait_closed(smtp.sock, within=6)
        waited = time.monotonic() - start
    assert said.startswith(b"421 4.4.2"), said
    assert 1.9 <= waited < 3.0


def test_trickled_data_body_is_cut_at_its_deadline(make_app):
    """RFC 5321 4.5.3.2.6: a DATA body must arrive within ``data_timeout`` of the 354 (the
    credit of ``min_data_rate``, 500 octets/s, buys 2 ms per trickled byte); a client trickling
    a byte every 0.3 s gets 421 4.4.2 after about the timeout, and nothing is stored."""
    app = make_app(limits={"command_timeout": "10s", "data_timeout": "1s"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        smtp.cmd("DATA", "354 ")
        waited, said = trickle(smtp.sock, b"Subject: slow\r\n\r\nbody\r\n", give_up=6)
    assert said.startswith(b"421 4.4.2"), said
    assert 0.9 <= waited < 3
    assert stored(app, "test1@test.com") == []


def test_trickled_bdat_chunk_is_cut_at_its_deadline(make_app):
    """RFC 3030 2 with RFC 5321 4.5.3.2.6: a BDAT chunk must arrive within ``data_timeout`` of
    its BDAT command; trickling it a byte every 0.3 s ends with 421 4.4.2 after about that."""
    app = make_app(limits={"command_timeout": "10s", "data_timeout": "1s"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        smtp.line("BDAT 1000 LAST")
        waited, said = trickle(smtp.sock, b"x", give_up=6)
    assert said.startswith(b"421 4.4.2"), said
    assert 0.9 <= waited < 3
    assert stored(app, "test1@test.com") == []


def test_large_message_at_a_normal_pace_is_not_cut(make_app):
    """RFC 5321 4.5.3.2.5 (Postfix's ``smtpd_min_data_rate``): the data deadline grows with the
    data received, so a 3 MiB message sent at a steady pace that takes about twice
    ``data_timeout`` (1 s) is accepted and stored whole."""
    app = make_app(limits={"command_timeout": "10s", "data_timeout": "1s"})
    line = b"y" * 78 + b"\r\n"
    piece = line * 800  # 64,000 octets
    pieces = 48
    with Dialog(app.ports["smtp"][0], timeout=10) as smtp:
        smtp.greeting()
        _start_transaction(smtp)
        smtp.cmd("DATA", "354 ")
        start = time.monotonic()
        smtp.send(b"Subject: steady\r\n\r\n")
        for _ in range(pieces):
            smtp.send(piece)
            time.sleep(0.045)  # the client's pace is what is tested, not a synchronisation
        smtp.send(b".\r\n")
        smtp.expect("250 2.0.0")
        assert time.monotonic() - start > 1.5
    [message] = stored(app, "test1@test.com")
    assert message.body == b"Subject: steady\n\n" + piece.replace(b"\r\n", b"\n") * pieces


def test_connection_lifetime_limit(make_app):
    """RFC 5321 4.5.3.2: every connection has a total lifetime (``limits.max_connection_time``);
    a client that keeps the session busy with a NOOP every 0.2 s, never near the command
    timeout, still gets 421 4.4.2 and is closed once the lifetime (1.5 s) is over."""
    app = make_app(limits={"command_timeout": "10s", "max_connection_time": "1.5s"})
    with Dialog(app.ports["smtp"][0]) as smtp:
        start = time.monotonic()
        smtp.greeting()
        smtp.ehlo()
        while True:
            assert time.monotonic() - start < 6, "the lifetime limit never ended the session"
            time.sleep(0.2)  # the client's pace, not a synchronisation
            smtp.line("NOOP")
            reply = smtp.reply()
            if reply.code != 250:
                break
        assert reply.last.startswith("421 4.4.2"), reply.text
        assert "time limit" in reply.last
        smtp.expect_closed()
    assert 1.4 <= time.monotonic() - start < 4


def test_pop3_trickled_command_is_cut_at_its_deadline(make_app):
    """RFC 1939 3 (autologout) as a per-command deadline: a POP3 command line must arrive whole
    within ``pop3_timeout``; trickling a byte every 0.3 s gets -ERR and the close after about
    the timeout (1 s)."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"], "pop3": ["127.0.0.1:0"]},
                   limits={"pop3_timeout": "1s"})
    with socket.create_connection(("127.0.0.1", app.ports["pop3"][0]), timeout=5) as sock:
        assert sock.recv(4096).startswith(b"+OK")
        waited, said = trickle(sock, b"USER " + b"x" * 100, give_up=6)
    assert said.startswith(b"-ERR"), said
    assert 0.9 <= waited < 3


def test_pop3_connection_lifetime_limit(make_app):
    """RFC 1939 3 (autologout): the lifetime limit applies to POP3 too: a client sending CAPA every
    0.2 s gets -ERR and the close once ``limits.max_connection_time`` (1.5 s) is over."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"], "pop3": ["127.0.0.1:0"]},
                   limits={"pop3_timeout": "10s", "max_connection_time": "1.5s"})
    with socket.create_connection(("127.0.0.1", app.ports["pop3"][0]), timeout=5) as sock:
        start = time.monotonic()
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        while True:
            assert time.monotonic() - start < 6, "the lifetime limit never ended the session"
            time.sleep(0.2)  # the client's pace, not a synchronisation
            sock.sendall(b"CAPA\r\n")
            first = reader.readline()
            if not first.startswith(b"+OK"):
                break
            while reader.readline() not in (b".\r\n", b""):
                pass
        assert first.startswith(b"-ERR") and b"time limit" in first, first
        assert reader.readline() == b""
    assert 1.4 <= time.monotonic() - start < 4
