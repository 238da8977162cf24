"""LineBuffer (geomail/proto/lines.py): CRLF command lines, length cap, bare CR/LF."""

from __future__ import annotations

import pytest

from geomail.proto.lines import LineBuffer, LineFault
from geomail.units import MiB
from tests.support.splits import ways


def lines(data: bytes, limit: int = 20) -> list[bytes | LineFault]:
    """Every line ``data`` yields; the same whichever way it arrives, polled after each packet
    as SMTPSession does."""
    results = []
    for name, chunks in ways(data):
        buf = LineBuffer(limit)
        got: list[bytes | LineFault] = []
        for chunk in chunks:
            buf.feed(chunk)
            while (line := buf.next_line()) is not None:
                got.append(line)
            assert len(buf) <= max(limit, len(chunk)), name
        results.append((name, got))
    for name, got in results[1:]:
        assert got == results[0][1], f"fed {name}"
    return results[0][1]


def test_crlf_lines():
    """Lines end in CRLF, which is removed (RFC 5321 2.3.8); an incomplete line waits."""
    assert lines(b"EHLO x\r\nNOOP\r\n\r\nQUIT") == [b"EHLO x", b"NOOP", b""]


def test_incomplete_line_is_none():
    """next_line() is None until a line is complete; nothing is lost meanwhile."""
    buf = LineBuffer(100)
    buf.feed(b"NO")
    assert buf.next_line() is None
    buf.feed(b"OP\r")
    assert buf.next_line() is None
    assert len(buf) == 5
    buf.feed(b"\n")
    assert buf.next_line() == b"NOOP"
    assert buf.next_line() is None and len(buf) == 0


@pytest.mark.parametrize(("data", "expected"), [
    (b"NOOP\n", [LineFault.BARE_NEWLINE]),
    (b"\n", [LineFault.BARE_NEWLINE]),
    (b"NO\rOP\r\n", [LineFault.BARE_NEWLINE]),
    (b"NOOP\r\r\n", [LineFault.BARE_NEWLINE]),
    (b"\r\r\n", [LineFault.BARE_NEWLINE]),
    (b"A\r\nB\nC\r\n", [b"A", LineFault.BARE_NEWLINE, b"C"]),
])
def test_bare_newlines(data, expected):
    """A LF without CR, or a CR not followed by LF, is reported (RFC 5321 2.3.8)."""
    assert lines(data) == expected


def test_limit_counts_crlf():
    """The limit includes the CRLF (RFC 5321 4.5.3.1.4): a line of exactly ``limit`` octets
    passes, one more is TOO_LONG."""
    assert lines(b"x" * 18 + b"\r\n") == [b"x" * 18]
    assert lines(b"x" * 19 + b"\r\n") == [LineFault.TOO_LONG]


def test_too_long_is_reported_once_and_drained():
    """An over-long line is discarded up to its end and reported once; the next line is fine."""
    assert lines(b"y" * 100 + b"\r\nNOOP\r\n") == [LineFault.TOO_LONG, b"NOOP"]


def test_too_long_ending_in_bare_lf():
    """An over-long line that ends with a bare LF is a bare newline (the stricter fault)."""
    assert lines(b"y" * 100 + b"\nNOOP\r\n") == [LineFault.BARE_NEWLINE, b"NOOP"]


def test_memory_bound():
    """A 10 MB line is never buffered beyond the limit: after each 64 KiB packet at most one
    byte (a possible CR) is kept (RFC 5321 4.5.3.1.4)."""
    buf = LineBuffer(1024)
    packet = b"z" * 65536
    for _ in range(10 * MiB // len(packet)):
        buf.feed(packet)
        assert buf.next_line() is None
        assert len(buf) <= 1
    buf.feed(b"\r\nQUIT\r\n")
    assert buf.next_line() is LineFault.TOO_LONG
    assert buf.next_line() == b"QUIT"


def test_memory_bound_one_feed():
    """Likewise for 10 MB in a single packet."""
    buf = LineBuffer(512)
    buf.feed(b"z" * (10 * MiB))
    assert buf.next_line() is None
    assert len(buf) == 1


def test_take_and_unread():
    """take() empties the buffer for a body reader; unread() puts back what it left."""
    buf = LineBuffer(100)
    buf.feed(b"abc\r\ndef")
    assert buf.take() == b"abc\r\ndef"
    assert len(buf) == 0 and buf.next_line() is None
    buf.feed(b"\r\nghi\r\n")
    buf.unread(b"def")
    assert buf.next_line() == b"def"
    assert buf.next_line() == b"ghi"
