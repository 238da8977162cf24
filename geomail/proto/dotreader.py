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


# A partial line longer than this is passed on before its end arrives, so a line of any length
# costs no more memory than this (and the caller's receive buffer).
STREAM_AFTER = 4096


class DotReader:
    """Reads DATA content up to ``CRLF.CRLF``: unstuffs dots, converts CRLF to LF, checks limits.

    ``feed(data)`` returns how many bytes of ``data`` it consumed. Bytes it leaves are either an
    incomplete last line (feed them again with more data) or, once ``done``, what followed the
    terminating dot (the next pipelined commands). A ``BARE_NEWLINE`` fault stops reading.
    Lines are stored byte-exact however long they are; only a ``max_line`` above zero bounds
    them. A long line is passed to the sink in pieces, never held whole.
    """

    __slots__ = ("_line", "_max_line", "_max_size", "_mid_line", "_sink", "done", "fault", "size")

    def __init__(self, sink: Callable[[bytes], None], max_size: int, max_line: int = 0) -> None:
        self._sink = sink
        self._max_size = max_size
        # Octets of a line with its CRLF, not counting a stuffed leading dot (RFC 5321 4.5.3.1.6);
        # 0: no limit but the message size (as Postfix, which accepts lines of any length).
        self._max_line = max_line
        self._mid_line = False  # the start of the current line has been passed on already
        self._line = 0  # octets of the current line so far, while _mid_line
        self.done = False
        self.fault: DataFault | None = None
        self.size = 0  # octets of unstuffed content with CRLF line endings

    def feed(self, data: bytes) -> int:
        """Consume as much of ``data`` as possible."""
        if self.done or self.fault is DataFault.BARE_NEWLINE:
            return 0
        consumed = 0
        if self._mid_line:
            consumed = self._continue_line(data)
            if self._mid_line or self.fault is DataFault.BARE_NEWLINE:
                return consumed
            data = data[consumed:]
        last = data.rfind(b"\n") + 1
        if last:
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
            consumed += last
            data = data[last:]
        if len(data) > STREAM_AFTER:
            consumed += self._start_line(data)
        return consumed

    def _take(self, block: bytes) -> None:
        """Complete lines, starting at a line start."""
        if self._max_line and len(block) > self._max_line and self._has_long_line(block):
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

    def _start_line(self, data: bytes) -> int:
        """Pass on the start of a long line (``data`` has no LF); keep a final CR back, it may
        be the start of the CRLF."""
        used = len(data) - data.endswith(b"\r")
        piece = data[:used]
        if b"\r" in piece:
            self.fault = DataFault.BARE_NEWLINE
            return 0
        if piece.startswith(b"."):  # RFC 5321 4.5.2; not the terminator: that line has ended
            piece = piece[1:]
        self._mid_line = True
        self._line = 0
        self._pass(piece)
        return used

    def _continue_line(self, data: bytes) -> int:
        """Pass on more of a long line, up to its CRLF if that has come."""
        end = data.find(b"\n")
        if end < 0:
            used = len(data) - data.endswith(b"\r")
            piece = data[:used]
            if b"\r" in piece:
                self.fault = DataFault.BARE_NEWLINE
                return 0
            self._pass(piece)
            return used
        if end == 0 or data[end - 1] != 0x0D or b"\r" in data[: end - 1]:
            self.fault = DataFault.BARE_NEWLINE
            return 0
        self._mid_line = False
        self._pass(data[: end - 1] + b"\n")
        return end + 1

    def _pass(self, piece: bytes) -> None:
        """Part of a long line (its end: with the LF), already unstuffed."""
        ends = piece.endswith(b"\n")
        self._line += len(piece) + ends
        if self._max_line and self._line > self._max_line:
            self._fault(DataFault.LINE_TOO_LONG)
        self.size += len(piece) + ends
        if self.size > self._max_size:
            self._fault(DataFault.TOO_BIG)
        if self.fault is None:
            self._sink(piece)

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

    __slots__ = ("_line", "_max_line", "_max_size", "_pending_cr", "_sink", "fault", "size")

    def __init__(self, sink: Callable[[bytes], None], max_size: int, max_line: int = 0) -> None:
        self._sink = sink
        self._max_size = max_size
        self._max_line = max_line  # as DotReader's (no dot-stuffing in BDAT)
        self._line = 0  # octets of the current line so far
        self._pending_cr = False  # the previous chunk ended in CR
        self.fault: DataFault | None = None
        self.size = 0

    def feed(self, data: bytes) -> None:
        """Take the next part of the chunk data."""
        self.size += len(data)  # octets received, a CR held back for the next chunk included
        if self._max_line and self._has_long_line(data):
            self.fault = DataFault.LINE_TOO_LONG if self.fault in (
                None, DataFault.TOO_BIG) else self.fault
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
            self.fault = self.fault or DataFault.TOO_BIG
        elif self.fault is None:
            self._sink(data.replace(b"\r\n", b"\n"))

    def _has_long_line(self, data: bytes) -> bool:
        """Track line lengths over the raw octets, whatever the chunk boundaries."""
        first = data.find(b"\n")
        if first < 0:
            self._line += len(data)
            return self._line > self._max_line
        longest = self._line + first + 1
        last = data.rfind(b"\n")
        if last > first:  # the lines in between: each piece has its CR, not its LF
            longest = max(longest, max(map(len, data[first + 1 : last].split(b"\n"))) + 1)
        self._line = len(data) - last - 1
        return longest > self._max_line or self._line > self._max_line

    def finish(self) -> None:
        """The last chunk has been read: a CR left hanging at the very end is a bare CR."""
        if self._pending_cr:
            self.fault = DataFault.BARE_NEWLINE
        self._pending_cr = False
