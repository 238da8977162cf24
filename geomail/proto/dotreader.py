"""Readers for message content: DATA (dot-terminated, RFC 5321 4.1.1.4) and BDAT (RFC 3030).

Both hand LF-normalised content to a sink and never hold more than one line besides what the
caller passed in. Only CRLF ends a line: a bare CR or LF makes DATA stop at once (the connection
must close), so no smuggling payload such as ``\\n.\\r\\n`` can end a message early.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class DataFault(enum.Enum):
    """What went wrong with a message body; the reader keeps framing intact where it can."""

    TOO_BIG = "too big"  # over the size limit: content dropped, reading continues to the end
    LINE_TOO_LONG = "line too long"  # a line over the limit: likewise
    BARE_NEWLINE = "bare newline"  # a CR or LF not part of CRLF


def _has_bare_newline(block: bytes) -> bool:
    crlf = block.count(b"\r\n")
    return block.count(b"\n") != crlf or block.count(b"\r") != crlf


class DotReader:
    """Reads DATA content up to ``CRLF.CRLF``: unstuffs dots, converts CRLF to LF, checks limits.

    ``feed(data)`` returns how many bytes of ``data`` it consumed. Bytes it leaves are either an
    incomplete last line (feed them again with more data) or, once ``done``, what followed the
    terminating dot (the next pipelined commands). A ``BARE_NEWLINE`` fault stops reading.
    """

    __slots__ = ("_max_line", "_max_size", "_sink", "_skipping", "done", "fault", "size")

    def __init__(self, sink: Callable[[bytes], None], max_size: int, max_line: int) -> None:
        self._sink = sink
        self._max_size = max_size
        # Octets of a line with its CRLF, not counting a stuffed leading dot (RFC 5321 4.5.3.1.6).
        self._max_line = max_line
        self._skipping = False  # inside an over-long line: dropping bytes up to its end
        self.done = False
        self.fault: DataFault | None = None
        self.size = 0  # octets of unstuffed content with CRLF line endings

    def feed(self, data: bytes) -> int:
        """Consume as much of ``data`` (which starts at a line start) as possible."""
        if self.done or self.fault is DataFault.BARE_NEWLINE:
            return 0
        consumed = 0
        if self._skipping:
            consumed = self._skip_long_line(data)
            if self._skipping or self.fault is DataFault.BARE_NEWLINE:
                return consumed
            data = data[consumed:]
        last = data.rfind(b"\n") + 1
        if last == 0:
            if len(data) > self._max_line:  # too long even with a stuffed dot once its LF comes
                self._fault(DataFault.LINE_TOO_LONG)
                self._skipping = True
                # Keep the last byte: it may be the CR of the coming CRLF.
                return consumed + len(data) - 1
            return consumed
        block = data[:last]
        if block.startswith(b".\r\n"):
            self.done = True
            return consumed + 3
        end = block.find(b"\r\n.\r\n")
        if end >= 0:
            block = block[: end + 2]
        if _has_bare_newline(block):
            self.fault = DataFault.BARE_NEWLINE
            return consumed
        self._take(block)
        if end >= 0:
            self.done = True
            return consumed + end + 5
        return consumed + last

    def _take(self, block: bytes) -> None:
        if len(block) > self._max_line and self._has_long_line(block):
            self._fault(DataFault.LINE_TOO_LONG)
        lf = block.replace(b"\r\n", b"\n")
        if lf.startswith(b"."):
            lf = lf[1:]
        if b"\n." in lf:
            lf = lf.replace(b"\n.", b"\n")
        self.size += len(lf) + lf.count(b"\n")
        if self.size > self._max_size:
            self._fault(DataFault.TOO_BIG)
        if self.fault is None:
            self._sink(lf)

    def _has_long_line(self, block: bytes) -> bool:
        # Each piece is a line with its CR but without its LF, so at most max_line - 1 octets,
        # one more when it starts with a stuffed dot (RFC 5321 4.5.2).
        lines = block.split(b"\n")
        if max(map(len, lines)) < self._max_line:
            return False
        return any(len(line) >= self._max_line + line.startswith(b".") for line in lines)

    def _skip_long_line(self, data: bytes) -> int:
        end = data.find(b"\n")
        if end < 0:
            return max(len(data) - 1, 0)
        if end == 0 or data[end - 1] != 0x0D:
            self.fault = DataFault.BARE_NEWLINE
            return end
        self._skipping = False
        return end + 1

    def _fault(self, fault: DataFault) -> None:
        # A long line outranks TOO_BIG: both are always found, but in an order that depends on
        # the packet boundaries, and the reply must not.
        if self.fault is None or (
                self.fault is DataFault.TOO_BIG and fault is DataFault.LINE_TOO_LONG):
            self.fault = fault


class ChunkReader:
    """Reads the content of BDAT chunks (RFC 3030): exact octet counts, CRLF converted to LF.

    Framing comes from the counts, so a bare CR or LF cannot end anything early; it is still
    refused (``BARE_NEWLINE``) so that geomail never stores or relays one.
    """

    __slots__ = ("_max_size", "_pending_cr", "_sink", "fault", "size")

    def __init__(self, sink: Callable[[bytes], None], max_size: int) -> None:
        self._sink = sink
        self._max_size = max_size
        self._pending_cr = False  # the previous chunk ended in CR
        self.fault: DataFault | None = None
        self.size = 0

    def feed(self, data: bytes) -> None:
        """Take the next part of the chunk data."""
        self.size += len(data)  # octets received, a CR held back for the next chunk included
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._pending_cr = True
        # A bare newline outranks TOO_BIG, so the fault does not depend on packet boundaries.
        if self.fault is DataFault.BARE_NEWLINE:
            return
        if _has_bare_newline(data):
            self.fault = DataFault.BARE_NEWLINE
        elif self.size > self._max_size:
            self.fault = DataFault.TOO_BIG
        elif self.fault is None:
            self._sink(data.replace(b"\r\n", b"\n"))

    def finish(self) -> None:
        """The last chunk has been read: a CR left hanging at the very end is a bare CR."""
        if self._pending_cr:
            self.fault = DataFault.BARE_NEWLINE
        self._pending_cr = False
