"""Feeding a DotReader (geomail/proto/dotreader.py) as SMTPSession does, for the unit tests
(tests/unit/test_dotreader.py) and the fuzz tests (tests/fuzz/)."""

from __future__ import annotations

from geomail.proto.dotreader import DotReader


class Driver:
    """Feeds a DotReader as SMTPSession does: unconsumed bytes go in front of the next packet."""

    def __init__(self, max_size: int = 10_000, max_line: int = 1000) -> None:
        self.content = bytearray()
        self.reader = DotReader(self.content.extend, max_size, max_line)
        self.pending = b""

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        used = self.reader.feed(self.pending)
        assert 0 <= used <= len(self.pending)
        self.pending = self.pending[used:]
