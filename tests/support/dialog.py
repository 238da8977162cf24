"""Raw-socket protocol dialogs for tests, in the style of chasquid's chamuyero scripts.

A script is a block of lines; ``C: text`` is sent with CRLF, ``S: prefix`` expects the next
line the server sends to start with ``prefix``, ``S: <closed>`` expects the server to close::

    dialog.converse('''
        C: HELO
        S: 501 5.5.4
        C: QUIT
        S: 221 2.0.0
        S: <closed>
    ''')
"""

from __future__ import annotations

import socket
import ssl
import textwrap
import time
from dataclasses import dataclass

CRLF = b"\r\n"


@dataclass(frozen=True)
class Reply:
    """One complete (possibly multi-line) reply."""

    code: int
    lines: tuple[str, ...]  # each line as received, without CRLF

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def last(self) -> str:
        return self.lines[-1]


class DialogError(AssertionError):
    """The server said something else than the script expected."""


class Dialog:
    """A client connection that sends raw bytes and reads replies line by line."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, source: str | None = None,
                 timeout: float = 5.0, tls: ssl.SSLContext | None = None,
                 server_hostname: str = "localhost") -> None:
        self.timeout = timeout
        self.sock: socket.socket = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.sock.close()
                raise
        self._buf = b""
        self.transcript: list[str] = []

    # ---- low level ------------------------------------------------------------------------

    def send(self, data: bytes | str) -> None:
        """Send ``data`` exactly as given (no CRLF added), in one ``sendall``."""
        raw = data.encode() if isinstance(data, str) else data
        self.transcript.append(f"C: {raw!r}")
        self.sock.sendall(raw)

    def line(self, text: str | bytes) -> None:
        """Send one command line, CRLF added."""
        self.send((text.encode() if isinstance(text, str) else text) + CRLF)

    def read_line(self) -> str | None:
        """The next line from the server (without CRLF); None at end of stream."""
        while b"\n" not in self._buf:
            data = self._recv()
            if not data:
                if self._buf:
                    raise DialogError(f"connection closed inside a line: {self._buf!r}")
                return None
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        if not line.endswith(b"\r"):
            raise DialogError(f"server line without CRLF: {line!r}")
        text = line[:-1].decode("utf-8", "replace")
        self.transcript.append(f"S: {text}")
        return text

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):  # closed without close_notify
            return b""

    def reply(self) -> Reply:
        """Read one whole reply (RFC 5321 4.2.1: ``ddd-`` lines, then ``ddd ``)."""
        lines: list[str] = []
        while True:
            text = self.read_line()
            if text is None:
                raise DialogError(f"connection closed, expected a reply\n{self.dump()}")
            if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
                raise DialogError(f"malformed reply line {text!r}")
            lines.append(text)
            if text[3:4] != "-":
                return Reply(int(text[:3]), tuple(lines))

    # ---- expectations ---------------------------------------------------------------------

    def expect(self, prefix: str) -> Reply:
        """Read a reply whose last line starts with ``prefix`` (e.g. ``"250 2.1.0"``)."""
        reply = self.reply()
        if not reply.last.startswith(prefix):
            raise DialogError(f"expected {prefix!r}, got {reply.text!r}\n{self.dump()}")
        return reply

    def cmd(self, text: str | bytes, prefix: str) -> Reply:
        """Send a command line, expect a reply starting with ``prefix``."""
        self.line(text)
        return self.expect(prefix)

    def greeting(self) -> Reply:
        return self.expect("220 ")

    def expect_closed(self, within: float | None = None) -> None:
        """The server closes the connection without sending anything more."""
        self.sock.settimeout(within or self.timeout)
        try:
            if self._buf:
                raise DialogError(f"unexpected data before close: {self._buf!r}")
            data = self._recv()
        except TimeoutError:
            raise DialogError(f"connection still open\n{self.dump()}") from None
        if data:
            raise DialogError(f"unexpected data before close: {data!r}\n{self.dump()}")

    def converse(self, script: str) -> None:
        """Play a ``C:``/``S:`` script (see the module docstring)."""
        for raw in textwrap.dedent(script).strip().splitlines():
            raw = raw.strip()
            if not raw or raw.startswith("#"):
                continue
            who, _, text = raw.partition(": ")
            if who == "C":
                self.line(text)
            elif who == "S" and text == "<closed>":
                self.expect_closed()
            elif who == "S":
                got = self.read_line()
                if got is None or not got.startswith(text):
                    raise DialogError(f"expected {text!r}, got {got!r}\n{self.dump()}")
            else:
                raise ValueError(f"bad script line {raw!r}")

    # ---- TLS and the rest -----------------------------------------------------------------

    def starttls(self, context: ssl.SSLContext, server_hostname: str = "localhost") -> None:
        """``STARTTLS``, expect 220, then the handshake (RFC 3207 4)."""
        self.cmd("STARTTLS", "220 2.0.0")
        assert not self._buf, f"server sent data after its 220: {self._buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def ehlo(self, name: str = "client.example") -> set[str]:
        """EHLO; the extension keywords offered (upper case, without the greeting line)."""
        reply = self.cmd(f"EHLO {name}", "250 ")
        return {line[4:].split(" ")[0].upper() for line in reply.lines[1:]}

    def dump(self) -> str:
        return "\n".join(self.transcript[-30:])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Dialog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_closed(sock: socket.socket, within: float) -> tuple[float, bytes]:
    """Seconds until the peer closed ``sock``, and what it sent meanwhile; TimeoutError if it
    is still open after ``within`` seconds."""
    start = time.monotonic()
    deadline = start + within
    received = b""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            data = b""
        if not data:
            return time.monotonic() - start, received
        received += data
