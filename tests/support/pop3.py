"""POP3 test support: a raw client that keeps the wire bytes, SMTP delivery, configs.

The fixtures that go with it are in ``tests/support/pop3_fixtures.py``.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.geomail import PASSWORD, base_config

ALICE = "alice@example.com"
SENDER = "sender@elsewhere.org"
CRLF = b"\r\n"


def pop3_overrides(tls: dict[str, str], store_format: str, **extra: Any) -> dict[str, Any]:
    """Config overrides: smtp; pop3[0] allows plaintext login, pop3[1] requires STLS; pop3s."""
    overrides: dict[str, Any] = {
        "store": {"format": store_format},
        "tls": {"cert": tls["cert"], "key": tls["key"]},
        "listen": {
            "smtp": ["127.0.0.1:0"],
            "pop3": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}, "127.0.0.1:0"],
            "pop3s": ["127.0.0.1:0"],
        },
    }
    overrides.update(extra)
    return overrides


def pop3_config(tmp_path: Path, tls: dict[str, str], store_format: str,
                **extra: Any) -> dict[str, Any]:
    """A whole raw config (for ``running_app`` / ``GeomailProcess``) over ``tmp_path``."""
    return base_config(tmp_path, **pop3_overrides(tls, store_format, **extra))


class Ports:
    """The ports of an App (in-process) or a GeomailProcess, by role."""

    def __init__(self, ports: dict[str, list[int]]) -> None:
        self.smtp = ports["smtp"][0]
        self.pop3 = ports["pop3"][0]  # allow_plaintext_auth: true
        self.pop3_strict = ports["pop3"][1]  # login only after STLS
        self.pop3s = ports["pop3s"][0]


# --------------------------------------------------------------------------------------------
# Sending and expected content
# --------------------------------------------------------------------------------------------


def send(smtp_port: int, message: bytes, to: str = ALICE, sender: str = SENDER) -> None:
    """Deliver ``message`` (CRLF line endings, not dot-stuffed) by SMTP; it must be accepted."""
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        refused = client.sendmail(sender, [to], message, mail_options=["BODY=8BITMIME"])
    assert refused == {}


def make_message(n: int, body_lines: int = 8, extra: bytes = b"") -> bytes:
    """A test message: 8-bit text, lines that need dot-stuffing, a line that is just '.', and
    lines an mbox must quote (``From ``, ``>From ``) and give back unquoted."""
    lines = [f"Body line {i} of message {n}".encode() for i in range(1, body_lines + 1)]
    lines[1:1] = [b".leading dot", b".", b"..two dots", "8-bit: héllo wörld ✓".encode(),
                  b"From the mbox's point of view", b">From quoted already", b""]
    head = (f"From: Sender <{SENDER}>\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
            f"Message-ID: <msg{n}@elsewhere.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
    return head.encode() + extra + CRLF + CRLF.join(lines) + CRLF


def stuff(content: bytes) -> bytes:
    """RFC 1939 3: byte-stuff a CRLF message and add the terminating line."""
    assert content.endswith(CRLF)
    lines = content[:-2].split(CRLF)
    return b"".join((b"." + line if line.startswith(b".") else line) + CRLF
                    for line in lines) + b".\r\n"


def unstuff(body: bytes) -> bytes:
    """RFC 1939 3: the content of a multi-line response body (terminator included in ``body``)."""
    assert body.endswith(b".\r\n") and (body == b".\r\n" or body.endswith(b"\r\n.\r\n"))
    content = body[:-3]
    if not content:
        return b""
    lines = content[:-2].split(CRLF)
    assert all(line != b"." for line in lines), "a lone '.' inside the body"
    return b"".join((line[1:] if line.startswith(b".") else line) + CRLF for line in lines)


def top(content: bytes, lines: int) -> bytes:
    """RFC 1939 7: what TOP n ``lines`` must return for a CRLF message."""
    head, sep, body = content.partition(CRLF + CRLF)
    assert sep
    body_lines = body.split(CRLF)[:-1]
    return head + CRLF + CRLF + b"".join(line + CRLF for line in body_lines[:lines])


def header_fields(message: bytes, newline: bytes = b"\n") -> list[bytes]:
    """The header fields of ``message`` (each with its continuation lines)."""
    head = message.split(newline + newline, 1)[0] + newline
    fields: list[bytes] = []
    for line in head.split(newline)[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + newline
        else:
            fields.append(line + newline)
    return fields


# --------------------------------------------------------------------------------------------
# A raw POP3 client
# --------------------------------------------------------------------------------------------


class RawPOP3:
    """A POP3 client over a plain socket that returns responses exactly as sent on the wire."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""
        self.greeting = self.line()

    @classmethod
    def connect(cls, port: int, context: ssl.SSLContext | None = None,
                timeout: float = 10.0) -> RawPOP3:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        return cls(sock, timeout)

    def __del__(self) -> None:  # a test that fails midway leaves no unclosed-socket warning
        with contextlib.suppress(Exception):
            self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def line(self) -> bytes:
        """One response line, CRLF included."""
        while CRLF not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(CRLF)
        return line + CRLF

    def body(self) -> bytes:
        """The rest of a multi-line response: raw (stuffed) lines and the ``.`` terminator."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 3
                break
            found = self.buf.find(b"\r\n.\r\n", start)
            if found >= 0:
                end = found + 5
                break
            start = max(0, len(self.buf) - 4)
            self._fill()
        body, self.buf = self.buf[:end], self.buf[end:]
        return body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def starttls(self, context: ssl.SSLContext) -> None:
        """Start TLS after ``+OK`` to STLS; nothing may be buffered from before (RFC 2595 4)."""
        assert not self.buf, f"plaintext received after STLS: {self.buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def cmd(self, command: str) -> bytes:
        """Send one command; return its status line."""
        self.send(command.encode() + CRLF)
        return self.line()

    def ok(self, command: str) -> bytes:
        status = self.cmd(command)
        assert status.startswith(b"+OK"), f"{command!r} -> {status!r}"
        return status

    def multi(self, command: str) -> tuple[bytes, bytes]:
        """A multi-line command: (status line, raw body with terminator)."""
        status = self.ok(command)
        return status, self.body()

    def login(self, user: str = ALICE, password: str = PASSWORD) -> bytes:
        self.ok(f"USER {user}")
        return self.cmd(f"PASS {password}")

    def listing(self, command: str = "LIST") -> dict[int, str]:
        _, body = self.multi(command)
        lines = unstuff(body).decode().split("\r\n")[:-1]
        return {int(n): value for n, value in (line.split(" ", 1) for line in lines)}

    def stat(self) -> tuple[int, int]:
        _, count, size = self.ok("STAT").decode().split()[:3]
        return int(count), int(size)

    def quit(self) -> bytes:
        status = self.cmd("QUIT")
        self.sock.close()
        return status

    def reset(self) -> None:
        """Drop the connection abruptly (RST), as a crashing client or network would."""
        raw = self.sock
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()

    def closed_by_server(self, timeout: float = 5.0) -> bytes:
        """Read until the server closes; return what came before. Fails after ``timeout``."""
        self.sock.settimeout(timeout)
        data = self.buf
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


@contextlib.contextmanager
def session(port: int, context: ssl.SSLContext | None = None,
            user: str = ALICE) -> Iterator[RawPOP3]:
    """A logged-in RawPOP3 session; QUITs at the end if still open."""
    client = RawPOP3.connect(port, context)
    status = client.login(user)
    assert status.startswith(b"+OK"), status
    try:
        yield client
    finally:
        with contextlib.suppress(OSError):
            client.quit()
