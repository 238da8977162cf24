"""SIGTERM drains every connection (RFC 5321 3.8 and 4.2.3): a connection that
was parked after a pause and woken again is served in a fresh greenlet; the drain must still wait
for it, whatever greenlet serves it."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from geomail.server.connection import PARK_AFTER
from tests.support import wait_for
from tests.support.dialog import Dialog
from tests.support.geomail import GeomailProcess
from tests.support.smtp import process_config
from tests.support.stored import maildir_messages

pytestmark = pytest.mark.slow


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_waits_for_a_connection_woken_from_parking(tmp_path):
    """RFC 5321 3.8 (a server shutting down lets the transaction in progress
    finish, then says 421): a client pauses longer than PARK_AFTER after RCPT (its connection
    parks), then sends DATA and the body slowly; SIGTERM arrives in the middle of the body, and
    the client pauses again (parked during the drain). The message still gets 250 and is
    stored, then 421 4.3.2, and the process exits 0 only after that."""
    server = GeomailProcess(process_config(tmp_path, limits={"shutdown_grace": "10s"}))
    server.start()
    try:
        with Dialog(server.port(), timeout=5) as smtp:
            smtp.greeting()
            smtp.ehlo()
            smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
            smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
            time.sleep(PARK_AFTER + 0.5)  # the pause under test: the connection parks
            smtp.cmd("DATA", "354 ")
            smtp.send(b"Subject: woken\r\n\r\nfirst part\r\n")
            smtp.send(b"second part\r\n")

            server.signal(signal.SIGTERM)
            wait_for(lambda: "stopping signal=term" in server.log(), timeout=5,
                     message="the server to start draining")
            wait_for(lambda: _refused(server.port()), timeout=5,
                     message="the listener to close")
            time.sleep(PARK_AFTER + 0.5)  # parks again, now during the drain
            assert server.proc is not None and server.proc.poll() is None, \
                "the server exited with a transaction in progress"
            smtp.send(b"third part\r\n.\r\n")
            smtp.expect("250 2.0.0")
            smtp.expect("421 4.3.2")
            smtp.expect_closed()
        assert server.proc.wait(timeout=10) == 0
    finally:
        server.kill()
    [message] = maildir_messages(str(tmp_path / "data" / "mail"), "test1@test.com")
    assert message.body == b"Subject: woken\n\nfirst part\nsecond part\nthird part\n"
    assert " INFO stopped" in server.log()
