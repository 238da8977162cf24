"""Counting ``Received:`` fields while a message streams past, to stop mail loops (RFC 5321 6.3).

Every MTA a message passes adds one ``Received:`` field (RFC 5321 4.4), so a message that
carries more than a few dozen is going round in circles. Like Postfix's ``hopcount_limit``,
only the header section counts: it ends at the first empty line, or at the first line that is
neither a header field nor the continuation of one. Memory stays bounded whatever the line
lengths: of each line only its first few octets are looked at.
"""

from __future__ import annotations

import re

# Enough of a line to tell "Received:" (also the obsolete "Received :", RFC 5322 4.5.3) and
# whether a field name is well formed; longer field names are taken as fields without looking.
_PREFIX = 64
_RECEIVED = b"received"
_WSP = b" \t"
_FIELD_NAME = re.compile(rb"[!-9;-~]+")  # RFC 5322 3.6.8: printable US-ASCII except ':'


class HopCounter:
    """Counts the ``Received:`` fields of the header section of content fed in any pieces.

    ``feed`` takes the content as it arrives (LF or CRLF line endings, split anywhere);
    ``count`` is the number of ``Received:`` fields seen so far; ``done`` turns true once the
    header section has ended, after which feeding costs nothing.
    """

    __slots__ = ("_line", "count", "done")

    def __init__(self) -> None:
        self._line = b""  # the start of the current line, at most _PREFIX octets
        self.count = 0
        self.done = False

    def feed(self, data: bytes) -> None:
        """Take the next piece of content."""
        pos, end = 0, len(data)
        while not self.done and pos < end:
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            if self._line:
                room = _PREFIX - len(self._line)
                line = self._line + data[pos : pos + min(room, stop - pos)] if room > 0 else \
                    self._line
            else:
                line = data[pos : pos + min(_PREFIX, stop - pos)]
            if newline < 0:
                self._line = line
                return
            self._line = b""
            self._end_line(line)
            pos = newline + 1

    def finish(self) -> None:
        """The content ended (a last line without a line break counts too)."""
        if self._line and not self.done:
            line, self._line = self._line, b""
            self._end_line(line)
        self.done = True

    def _end_line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line:
            self.done = True  # the empty line that separates header and body (RFC 5322 2.1)
        elif line[:1] in (b" ", b"\t"):
            pass  # a folded continuation line (RFC 5322 2.2.3)
        else:
            name, colon, _ = line.partition(b":")
            if colon:
                name = name.rstrip(_WSP)
                if name.lower() == _RECEIVED:
                    self.count += 1
                elif not _FIELD_NAME.fullmatch(name):
                    self.done = True
            elif len(line) < _PREFIX or not _FIELD_NAME.fullmatch(line):
                self.done = True  # not a header field: the body has begun


def count_received(content: bytes) -> int:
    """The number of ``Received:`` fields in the header section of a whole message."""
    counter = HopCounter()
    counter.feed(content)
    counter.finish()
    return counter.count
