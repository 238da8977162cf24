"""Long body lines (Postfix: no line length limit in the body): real mail has lines over RFC 5321
4.5.3.1.6's 1000 octets (HTML newsletters, some mailers) and Postfix accepts them, so geomail stores
them byte-exact, with memory bounded; a limit can still be configured
(``limits.max_line_length``)."""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

import pytest

from geomail.units import MiB
from tests.support.dialog import Dialog
from tests.support.geomail import GeomailProcess
from tests.support.smtp import process_config, send, stored
from tests.support.stored import maildir_messages


@pytest.mark.parametrize("store_format", ["maildir", "mbox"])
def test_long_body_line_is_stored_byte_exact(make_app, store_format):
    """A 5,000-octet body line (and a 100 KB one starting with a dot, which the client stuffs,
    RFC 5321 4.5.2) sent with smtplib is accepted and stored byte-exact, in a Maildir and in
    an mbox."""
    app = make_app(store={"format": store_format})
    html = b"<p>" + "é".encode() * 2497 + b"</p"
    assert len(html) == 5000
    dotted = b"." + b"d" * 99_999
    body = b"Subject: newsletter\r\n\r\n" + html + b"\r\n" + dotted + b"\r\nend\r\n"
    code, _ = send(app.ports["smtp"][0], "news@remote.example", ["test1@test.com"], body,
                   mail_options=["BODY=8BITMIME"])
    assert code == 250
    [message] = stored(app, "test1@test.com")
    assert message.body == body.replace(b"\r\n", b"\n")


def test_long_line_in_bdat(app):
    """The same through BDAT (RFC 3030): a 70,000-octet line split over two chunks."""
    content = b"Subject: chunked\r\n\r\n" + b"b" * 70_000 + b"\r\n"
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.send(b"BDAT 40000\r\n" + content[:40000])
        smtp.expect("250 2.0.0")
        smtp.send(b"BDAT %d LAST\r\n" % (len(content) - 40000) + content[40000:])
        smtp.expect("250 2.0.0")
    [message] = stored(app, "test1@test.com")
    assert message.body == content.replace(b"\r\n", b"\n")


def test_configured_line_limit_refuses(make_app):
    """With ``limits.max_line_length`` set (here 2000), a longer line gets 554 5.6.0 after the
    data and nothing is stored; a line at the limit passes."""
    app = make_app(limits={"max_line_length": 2000})
    port = app.ports["smtp"][0]
    code, text = send(port, "s@remote.example", ["test1@test.com"],
                      b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n")
    assert (code, text[:5]) == (554, "5.6.0")
    assert stored(app, "test1@test.com") == []
    code, _ = send(port, "s@remote.example", ["test1@test.com"],
                   b"Subject: edge\r\n\r\n" + b"x" * 1998 + b"\r\n")
    assert code == 250


def _peak_rss(pid: int) -> int:
    """VmHWM: the highest resident set size the process has had, in octets."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_50_mb_line_leaves_memory_flat(tmp_path):
    """A single 50 MB body line (max size 60 MB) is accepted and stored whole while the
    server's peak RSS grows by less than 16 MiB: the line is streamed to the spool, never held
    (memory stays bounded)."""
    config = process_config(tmp_path, limits={"max_message_size": "60MiB"})
    server = GeomailProcess(config).start()
    try:
        port = server.port()
        assert send(port, "s@remote.example", ["test1@test.com"], b"Subject: warm\r\n\r\nup\r\n")[
            0] == 250
        before = _peak_rss(server.proc.pid)  # type: ignore[union-attr]
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("client.example")
            assert client.mail("s@remote.example")[0] == 250
            assert client.rcpt("test1@test.com")[0] == 250
            assert client.putcmd("data") is None and client.getreply()[0] == 354
            sock: socket.socket = client.sock  # type: ignore[assignment]
            sock.sendall(b"Subject: one line\r\n\r\n")
            packet = b"L" * MiB
            for _ in range(50):
                sock.sendall(packet)
            sock.sendall(b"\r\n.\r\n")
            code, _ = client.getreply()
        assert code == 250
        growth = _peak_rss(server.proc.pid) - before  # type: ignore[union-attr]
        assert growth < 16 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"
        messages = maildir_messages(Path(tmp_path / "data" / "mail"), "test1@test.com")
        assert sorted(len(m.body) for m in messages) == [
            len(b"Subject: warm\n\nup\n"), len(b"Subject: one line\n\n") + 50 * MiB + 1]
    finally:
        server.stop()
