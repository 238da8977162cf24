"""``geomail serve`` as a real process: SIGKILL right after a 250 loses nothing (durable before
acknowledged), and SIGTERM drains: transactions in flight finish, idle clients get 421."""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from tests.support import wait_for
from tests.support.dialog import Dialog
from tests.support.geomail import GeomailProcess
from tests.support.smtp import process_config
from tests.support.stored import Stored, maildir_messages, mbox_messages, tmp_files

pytestmark = pytest.mark.slow

MESSAGES = [b"Subject: crash %d\r\nMessage-ID: <crash.%d@remote.example>\r\n\r\n"
            b"line one\r\n..dotted\r\n" % (n, n) + b"x" * 70 * n + b"\r\n" for n in range(3)]


@pytest.fixture(params=["maildir", "mbox"])
def store_format(request) -> str:
    return request.param


@pytest.fixture
def server(tmp_path, store_format):
    process = GeomailProcess(process_config(tmp_path, limits={"shutdown_grace": "5s"},
                                            store={"format": store_format}))
    process.start()
    yield process
    process.kill()


def _store(tmp_path) -> str:
    return str(tmp_path / "data" / "mail")


def _messages(tmp_path, store_format: str) -> list[Stored]:
    """What a mail reader finds in test1's mailbox (Maildir new/ and cur/, or the mbox)."""
    if store_format == "mbox":
        return [message for _, message in mbox_messages(_store(tmp_path), "test1@test.com")]
    return maildir_messages(_store(tmp_path), "test1@test.com")


def _deliver(smtp: Dialog, data: bytes) -> str:
    smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
    smtp.cmd("DATA", "354 ")
    smtp.send(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    return smtp.expect("250 2.0.0").last


def test_sigkill_after_250_loses_nothing(server, tmp_path, store_format):
    """RFC 5321 6.1 (a server that has sent 250 is responsible for the message): SIGKILL the
    moment the last 250 arrives; after a restart every acknowledged message is in the Maildir,
    complete, and nothing half-written is visible as a message."""
    with Dialog(server.port()) as smtp:
        smtp.greeting()
        smtp.ehlo()
        ids = []
        for data in MESSAGES:
            ids.append(_deliver(smtp, data).rsplit(" ", 1)[1])
        server.kill()  # right after the third 250: no QUIT, no shutdown
    server.start()
    messages = _messages(tmp_path, store_format)
    assert [m.fields["id"] for m in messages] == ids
    assert [m.body for m in messages] == [d.replace(b"\r\n", b"\n") for d in MESSAGES]
    assert tmp_files(_store(tmp_path), "test1@test.com") == []
    with Dialog(server.port()) as smtp:  # and the restarted server delivers again
        smtp.greeting()
        smtp.ehlo()
        _deliver(smtp, MESSAGES[0])
    assert len(_messages(tmp_path, store_format)) == 4


def test_sigkill_during_data_stores_nothing(server, tmp_path, store_format):
    """RFC 5321 4.1.1.4 / 6.1: a message not yet acknowledged is not delivered; killed in the
    middle of DATA, the server leaves no message (whole or partial) behind."""
    with Dialog(server.port()) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        line = b"y" * 998 + b"\r\n"
        smtp.send(b"Subject: never acknowledged\r\n\r\n" + line * 400)
        spool = tmp_path / "data" / "spool"  # past 256 KiB the body is on disk: it got there
        wait_for(lambda: any(spool.iterdir()), timeout=10, message="the body spooled to disk")
        server.kill()
    server.start()
    assert _messages(tmp_path, store_format) == []


def test_sigterm_drains(server, tmp_path, store_format):
    """RFC 5321 3.8 / 4.2.3 (421 closes a session on shutdown): on SIGTERM the listeners stop,
    idle clients get 421 4.3.2 at once, a client in the middle of DATA finishes and gets its
    250 (then 421), and the process exits 0 within the grace period."""
    busy, idle, fresh = Dialog(server.port()), Dialog(server.port()), Dialog(server.port())
    try:
        busy.greeting()
        busy.ehlo()
        busy.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        busy.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        busy.cmd("DATA", "354 ")
        busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        idle.greeting()
        idle.ehlo()
        fresh.greeting()

        server.signal(signal.SIGTERM)
        start = time.monotonic()
        idle.expect("421 4.3.2")
        idle.expect_closed()
        fresh.expect("421 4.3.2")
        fresh.expect_closed()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port()), timeout=2).close()

        busy.send(b"second half\r\n.\r\n")
        busy.expect("250 2.0.0")
        busy.expect("421 4.3.2")
        busy.expect_closed()
        assert server.proc is not None
        assert server.proc.wait(timeout=5) == 0
        assert time.monotonic() - start < 5
    finally:
        for dialog in (busy, idle, fresh):
            dialog.close()
    [message] = _messages(tmp_path, store_format)
    assert message.body == b"Subject: in flight\n\nfirst half\nsecond half\n"
    log = server.log()
    assert "stopping signal=term" in log
    assert " INFO stopped" in log
    assert re.search(r"INFO disconnect session=\w+ client=127\.0\.0\.1 reason=shutdown", log)
