"""DotReader (DATA) and ChunkReader (BDAT) from geomail/proto/dotreader.py, driven directly."""

from __future__ import annotations

import pytest

from geomail.proto.dotreader import ChunkReader, DataFault, DotReader
from geomail.units import MiB
from tests.support.dotreading import Driver
from tests.support.splits import ways


def read(data: bytes, **kwargs) -> Driver:
    """Read ``data`` every way; done, fault, size, content and the rest must always agree."""
    first: Driver | None = None
    for name, chunks in ways(data):
        driver = Driver(**kwargs)
        for chunk in chunks:
            driver.feed(chunk)
        reader = driver.reader
        if reader.fault is DataFault.BARE_NEWLINE:
            # Reading stopped; how much was taken before it depends on the packets.
            result = (reader.done, reader.fault)
        else:
            # After a fault nothing more is stored and size stops mattering.
            kept = None if reader.fault else (reader.size, bytes(driver.content))
            result = (reader.done, reader.fault, kept, driver.pending)
        if first is None:
            first, expected = driver, result
        else:
            assert result == expected, f"fed {name}"
    assert first is not None
    return first


def test_message_and_what_follows():
    """CRLF.CRLF ends the content (RFC 5321 4.1.1.4); CRLF becomes LF; what follows the dot
    (pipelined commands, RFC 2920) is left for the caller."""
    driver = read(b"Subject: hi\r\n\r\nHello\r\n.\r\nMAIL FROM:<a@example.org>\r\n")
    assert driver.reader.done and driver.reader.fault is None
    assert bytes(driver.content) == b"Subject: hi\n\nHello\n"
    assert driver.reader.size == len(b"Subject: hi\r\n\r\nHello\r\n")
    assert driver.pending == b"MAIL FROM:<a@example.org>\r\n"


def test_empty_message():
    """A dot line as the very first line is an empty message (RFC 5321 4.1.1.4)."""
    driver = read(b".\r\nQUIT\r\n")
    assert driver.reader.done
    assert bytes(driver.content) == b"" and driver.reader.size == 0
    assert driver.pending == b"QUIT\r\n"


@pytest.mark.parametrize(("wire", "stored"), [
    (b"..\r\n", b".\n"),
    (b"...\r\n", b"..\n"),
    (b"..leading\r\n", b".leading\n"),
    (b".x\r\n", b"x\n"),  # RFC 5321 4.5.2: a leading dot is removed, stuffed or not
    (b"a.\r\n.b\r\n", b"a.\nb\n"),
    (b"mid.dle\r\n", b"mid.dle\n"),
    (b"\r\n..\r\n\r\n", b"\n.\n\n"),
])
def test_dot_unstuffing(wire, stored):
    """The receiver deletes the first character of a line when it is a dot (RFC 5321 4.5.2)."""
    driver = read(wire + b".\r\n")
    assert bytes(driver.content) == stored
    assert driver.reader.size == len(stored) + stored.count(b"\n")


def test_feed_return_values():
    """feed() returns what it consumed: whole lines only; the terminator and nothing after it;
    0 once done."""
    content = bytearray()
    reader = DotReader(content.extend, 1000, 1000)
    assert reader.feed(b"partial") == 0
    assert reader.feed(b"partial line\r\nnext") == len(b"partial line\r\n")
    assert reader.feed(b"next\r\n\r\n.\r\nNOOP\r\n") == len(b"next\r\n\r\n.\r\n")
    assert reader.done
    assert reader.feed(b"NOOP\r\n") == 0
    assert bytes(content) == b"partial line\nnext\n\n"


def test_dot_line_that_is_not_the_terminator():
    """``.\\r\\n`` ends the message only at the start of a line (RFC 5321 4.1.1.4)."""
    driver = read(b"x.\r\n .\r\n..\r\n.\r\n")
    assert bytes(driver.content) == b"x.\n .\n.\n"


def test_eight_bit_content():
    """All octets but CR and LF pass unchanged (RFC 6152)."""
    body = bytes(b for b in range(256) if b not in (10, 13)) + b"\r\n"
    driver = read(body + b".\r\n")
    assert bytes(driver.content) == body[:-2] + b"\n"


def test_size_limit_then_continue():
    """Past max_size the reader stops storing, keeps reading to the dot, and reports TOO_BIG
    (RFC 1870 6.3); what follows the dot is intact."""
    driver = read(b"0123456789\r\n" * 5 + b".\r\nRSET\r\n", max_size=30)
    assert driver.reader.done and driver.reader.fault is DataFault.TOO_BIG
    assert driver.reader.size == 60
    assert driver.pending == b"RSET\r\n"
    assert len(driver.content) <= 30


def test_size_limit_exact():
    """The limit counts CRLF octets of the unstuffed content (RFC 1870 3)."""
    assert read(b"..12345\r\n.\r\n", max_size=8).reader.fault is None
    assert read(b"..123456\r\n.\r\n", max_size=8).reader.fault is DataFault.TOO_BIG


@pytest.mark.parametrize(("line", "fault"), [
    (b"x" * 998 + b"\r\n", None),
    (b"." + b"x" * 998 + b"\r\n", None),  # stuffed dot: 1001 octets on the wire
    (b"x" * 999 + b"\r\n", DataFault.LINE_TOO_LONG),
    (b".." + b"x" * 998 + b"\r\n", DataFault.LINE_TOO_LONG),
    (b"x" * 3000 + b"\r\n", DataFault.LINE_TOO_LONG),
])
def test_line_length(line, fault):
    """A text line is at most 1000 octets with its CRLF, not counting a stuffed dot (RFC 5321
    4.5.3.1.6, 4.5.2); a longer one is a fault, and reading continues to the dot."""
    driver = read(b"first\r\n" + line + b"last\r\n.\r\nNOOP\r\n")
    assert driver.reader.done
    assert driver.reader.fault is fault
    assert driver.pending == b"NOOP\r\n"
    if fault is None:
        assert bytes(driver.content) == b"first\n" + line[line.startswith(b".") : -2] + b"\nlast\n"


def test_line_length_is_configurable():
    """max_line is the limit with CRLF (RFC 5321 4.5.3.1.6 allows larger limits)."""
    assert read(b"x" * 8 + b"\r\n.\r\n", max_line=10).reader.fault is None
    assert read(b"x" * 9 + b"\r\n.\r\n", max_line=10).reader.fault is DataFault.LINE_TOO_LONG


@pytest.mark.parametrize("line", [b"x" * 5000 + b"\r\n", b".." + b"y" * 6000 + b"\r\n",
                                  b"." + b"z" * 4097 + b"\r\n", b"\xe4<p>" * 1500 + b"\r\n"])
def test_long_lines_without_a_limit(line):
    """With no line limit (``max_line=0``, the default, as Postfix)
    long lines are stored byte-exact, a stuffed dot removed (RFC 5321 4.5.2), the terminator
    still found, however the packets split them."""
    driver = read(b"first\r\n" + line + b"last\r\n.\r\nNOOP\r\n", max_line=0, max_size=MiB)
    assert driver.reader.done and driver.reader.fault is None
    assert bytes(driver.content) == b"first\n" + line[line.startswith(b".") : -2] + b"\nlast\n"
    assert driver.reader.size == len(b"first\r\n" + line + b"last\r\n") - line.startswith(b".")
    assert driver.pending == b"NOOP\r\n"


@pytest.mark.parametrize("payload", [b"\n.\r\n", b"\r.\r\n", b"\ra", b"\n"])
def test_bare_newline_inside_a_streamed_line(payload):
    """A bare CR or LF inside a line long enough to be passed on in pieces still stops
    reading (RFC 5321 2.3.8; the smuggling defence holds for long lines too)."""
    driver = Driver(max_line=0, max_size=MiB)
    driver.feed(b"q" * 8000)
    driver.feed(payload + b"MAIL FROM:<evil@x.example>\r\n.\r\n")
    assert driver.reader.fault is DataFault.BARE_NEWLINE and not driver.reader.done
    assert b"evil" not in driver.content


def test_memory_bound_on_a_huge_accepted_line():
    """A 50 MB line that is accepted (no line limit) is passed on as it comes: after each
    64 KiB packet at most one byte is left over, and it is stored whole."""
    stored = 0

    def sink(data: bytes) -> None:
        nonlocal stored
        stored += len(data)

    reader = DotReader(sink, 60 * MiB, 0)
    packet, pending = b"A" * 65536, b""
    for _ in range(50 * MiB // len(packet)):
        pending += packet
        pending = pending[reader.feed(pending):]
        assert len(pending) <= 1
    assert reader.feed(b"\r\n.\r\n") == 5
    assert reader.done and reader.fault is None
    assert stored == 50 * MiB + 1 and reader.size == 50 * MiB + 2


def test_memory_bound_on_a_huge_line():
    """A 10 MB line without LF is never buffered: after each 64 KiB packet at most one byte is
    left over (the possible CR of the coming CRLF), nothing is stored (RFC 5321 4.5.3.1.6)."""
    driver = Driver()
    packet = b"A" * 65536
    for _ in range(10 * MiB // len(packet)):
        driver.feed(packet)
        assert len(driver.pending) <= 1
    driver.feed(b"\r\nafter\r\n.\r\nQUIT\r\n")
    assert driver.reader.done and driver.reader.fault is DataFault.LINE_TOO_LONG
    assert driver.pending == b"QUIT\r\n"
    assert driver.content == b""


def test_memory_bound_in_one_feed():
    """The same in one 10 MB feed: all but the last byte consumed at once."""
    driver = Driver()
    driver.feed(b"B" * (10 * MiB))
    assert len(driver.pending) <= 1
    driver.feed(b"\r\n.\r\n")
    assert driver.reader.done and driver.reader.fault is DataFault.LINE_TOO_LONG


@pytest.mark.parametrize("payload", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r",
                                     b"\r.\r\n", b"\n", b"\r\r\n", b"a\rb\r\n"])
def test_bare_newline_stops(payload):
    """A bare CR or LF is a fault that stops reading at once: no smuggling payload can end the
    message early (RFC 5321 2.3.8, 4.1.1.4; CVE-2023-51764)."""
    driver = read(b"Subject: x\r\n\r\ntext" + payload + b"MAIL FROM:<evil@x.example>\r\n"
                  b"DATA\r\n.\r\n")
    assert driver.reader.fault is DataFault.BARE_NEWLINE
    assert not driver.reader.done
    assert b"evil" not in driver.content
    assert driver.reader.feed(b"more\r\n.\r\n") == 0


def test_bare_lf_ending_an_over_long_line():
    """An over-long line being skipped that ends in a bare LF is still a bare newline."""
    driver = read(b"x" * 1500 + b"\n.\r\n")
    assert driver.reader.fault is DataFault.BARE_NEWLINE


def test_terminator_after_a_fault_line():
    """After an over-long line the terminator is still found."""
    driver = Driver()
    driver.feed(b"y" * 5000)
    driver.feed(b"\r")
    driver.feed(b"\n")
    driver.feed(b".\r")
    driver.feed(b"\nRSET\r\n")
    assert driver.reader.done and driver.pending == b"RSET\r\n"


# --------------------------------------------------------------------------------------------
# ChunkReader (BDAT)
# --------------------------------------------------------------------------------------------


def chunks_read(parts: list[bytes], max_size: int = 1000) -> tuple[ChunkReader, bytes]:
    content = bytearray()
    reader = ChunkReader(content.extend, max_size)
    for part in parts:
        reader.feed(part)
    reader.finish()
    return reader, bytes(content)


@pytest.mark.parametrize(("data", "stored"), [
    (b"", b""),
    (b"line one\r\nline two\r\n", b"line one\nline two\n"),
    (b"no final newline", b"no final newline"),
    (b"\r\n.\r\n..\r\n", b"\n.\n..\n"),  # no dot handling in BDAT (RFC 3030 2)
    (bytes(b for b in range(256) if b not in (10, 13)), bytes(b for b in range(256)
                                                            if b not in (10, 13))),
])
def test_chunks_any_split(data, stored):
    """BDAT content is stored with CRLF as LF whatever the chunk boundaries, including a CRLF
    split as CR | LF (RFC 3030 2)."""
    for name, parts in ways(data):
        reader, content = chunks_read(parts)
        assert (reader.fault, content, reader.size) == (None, stored, len(data)), name


def test_chunk_size_counts_every_octet():
    """size is the octets received so far, a CR held for the next chunk included (the BDAT
    reply reports it, RFC 3030 2)."""
    content = bytearray()
    reader = ChunkReader(content.extend, 1000)
    reader.feed(b"abc\r")
    assert reader.size == 4 and bytes(content) == b"abc"
    reader.feed(b"\ndef")
    assert reader.size == 8 and bytes(content) == b"abc\ndef"


@pytest.mark.parametrize("data", [b"a\nb", b"a\rb", b"\n", b"\r", b"ends in cr\r", b"\r\r\n",
                                  b"\n\r"])
def test_chunk_bare_newline(data):
    """A bare CR or LF anywhere, also a CR that ends the last chunk, is BARE_NEWLINE
    (RFC 5321 2.3.8)."""
    for name, parts in ways(data):
        reader, _ = chunks_read(parts)
        assert reader.fault is DataFault.BARE_NEWLINE, name


def test_chunk_too_big():
    """Past max_size: TOO_BIG, nothing more stored, octets still counted (RFC 1870, 3030)."""
    reader, content = chunks_read([b"12345", b"67890", b"abc"], max_size=8)
    assert reader.fault is DataFault.TOO_BIG
    assert content == b"12345"
    assert reader.size == 13


def test_data_fault_does_not_depend_on_packets():
    """Content both too big and with an over-long line gets the same fault however it arrives
    (LINE_TOO_LONG), so the reply does not depend on TCP segmentation."""
    driver = read(b"0123456789\r\n" * 5 + b"y" * 1200 + b"\r\n.\r\nNOOP\r\n", max_size=30)
    assert driver.reader.fault is DataFault.LINE_TOO_LONG
    assert driver.pending == b"NOOP\r\n"


@pytest.mark.parametrize("data", [b"0123456789" * 3 + b"\n", b"\n" + b"0123456789" * 3,
                                  b"0123456789" * 3 + b"\r"])
def test_chunk_fault_does_not_depend_on_packets(data):
    """Content both too big and with a bare newline is BARE_NEWLINE however it is split."""
    for name, parts in ways(data):
        reader, _ = chunks_read(parts, max_size=20)
        assert reader.fault is DataFault.BARE_NEWLINE, name


@pytest.mark.parametrize(("data", "fault"), [
    (b"a" * 8 + b"\r\n" + b"b" * 8 + b"\r\n", None),
    (b"a" * 9 + b"\r\n", DataFault.LINE_TOO_LONG),
    (b"ok\r\n" + b"c" * 11, DataFault.LINE_TOO_LONG),
    (b"ok\r\n" + b"c" * 9 + b"\r\nok\r\n", DataFault.LINE_TOO_LONG),
])
def test_chunk_line_limit(data, fault):
    """A configured line limit (with CRLF) holds for BDAT content too, however the chunks
    split it (RFC 5321 4.5.3.1.6, RFC 3030 2)."""
    for name, parts in ways(data):
        content = bytearray()
        reader = ChunkReader(content.extend, 1000, 10)
        for part in parts:
            reader.feed(part)
        reader.finish()
        assert reader.fault is fault, name
