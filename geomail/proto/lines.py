"""Command-line framing: CRLF-terminated lines with a length cap and bare CR/LF detection."""

from __future__ import annotations

import enum


class LineFault(enum.Enum):
    """Why ``LineBuffer.next_line`` returned no usable line."""

    TOO_LONG = "too long"  # the line exceeded the cap; it was drained to its end
    BARE_NEWLINE = "bare newline"  # a LF without CR, or a CR without LF (RFC 5321 2.3.8)


class LineBuffer:
    """Buffers received bytes and hands out complete command lines (RFC 5321 2.3.8, 4.5.3.1.4).

    A line longer than ``limit`` (including CRLF) is discarded up to its LF and reported once as
    ``LineFault.TOO_LONG``, so memory stays bounded and the protocol stays in step.
    """

    __slots__ = ("_buf", "_overflow", "limit")

    def __init__(self, limit: int) -> None:
        self._buf = b""
        self._overflow = False  # discarding the rest of an over-long line
        self.limit = limit

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf = self._buf + data if self._buf else data

    def next_line(self) -> bytes | LineFault | None:
        """The next line without its CRLF, a fault, or None when no complete line is buffered."""
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > self.limit:
                # Keep the last byte: it may be the CR of the coming CRLF.
                self._buf = buf[-1:]
                self._overflow = True
            return None
        self._buf = buf[end + 1 :]
        if self._overflow or end + 1 > self.limit:
            self._overflow = False
            if end == 0 or buf[end - 1] != 0x0D:
                return LineFault.BARE_NEWLINE
            return LineFault.TOO_LONG
        line = buf[: end - 1]
        if end == 0 or buf[end - 1] != 0x0D or b"\r" in line:
            return LineFault.BARE_NEWLINE
        return line

    def take(self) -> bytes:
        """Remove and return everything buffered (for the DATA/BDAT readers)."""
        data, self._buf = self._buf, b""
        return data

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (what a body reader did not consume)."""
        self._buf = data + self._buf

    def injected_before_tls(self) -> bool:
        """Bytes already buffered as the server is about to start TLS: plaintext pipelined
        after STARTTLS/STLS (by the client or by someone in the middle) must never be taken
        as if it had come over TLS (CVE-2011-0411; RFC 3207 4.2, RFC 2595 4)."""
        return bool(self._buf)

    def __len__(self) -> int:
        return len(self._buf)
