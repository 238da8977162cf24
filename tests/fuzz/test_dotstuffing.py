"""Fuzzing message content framing: DotWriter (geomail/proto/dotwriter.py) against DotReader and
ChunkReader (geomail/proto/dotreader.py), each fed in arbitrary pieces."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from geomail.proto.dotreader import ChunkReader, DataFault
from geomail.proto.dotwriter import encode, encode_chunks
from tests.fuzz.mutations import MUTATIONS, insert_bytes, long_line, mutated
from tests.support.dotreading import Driver
from tests.support.splits import chunkings, fed

CRLF = b"\r\n"
NEXT = b"NOOP\r\n"  # a pipelined command after the message (RFC 2920)
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")  # a CR or LF that is not part of CRLF
MAX_SIZE = 1 << 20
# A text line bound (RFC 5321 4.5.3.1.6) that inputs reach, the default one, and none to speak of.
LINE_LIMITS = st.sampled_from([80, 1000, MAX_SIZE])

# A line of message content (LF form, no CR: geomail's internal form): short and full of dots
# and 8-bit octets, or long, past the 1,000-octet text line and the reader's streaming point.
_short_line = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_dotty_line = st.lists(st.sampled_from([b".", b"..", b"a", b" ", b"\xc3\xa9", b"\x00"]),
                       max_size=12).map(b"".join)
_long_line = st.tuples(st.sampled_from([b"x", b".", b"ab", b"\xff"]),
                       st.integers(900, 12_000)).map(lambda fn: (fn[0] * fn[1])[: fn[1]])
LINES = st.lists(st.one_of(_short_line, _dotty_line, _dotty_line, _long_line), max_size=30)
CONTENT = st.tuples(LINES, st.booleans()).map(
    lambda lb: b"\n".join(lb[0]) + (b"\n" if lb[1] and lb[0] else b""))


@st.composite
def _wire_inputs(draw: st.DrawFn) -> bytes:
    """The wire form of some content, then broken: bare CR/LF, NULs, long lines, flipped bits."""
    wire = encode(draw(CONTENT)) + NEXT
    seeds = [wire]
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.sampled_from([insert_bytes, insert_bytes, long_line, *MUTATIONS]))
        wire = mutation(draw, wire, seeds)
    return wire


WIRE = st.one_of(_wire_inputs(), mutated([b".\r\n", b"a\r\n.\r\n", b"\r\n..\r\n.\r\nQUIT\r\n"]),
                 st.binary(max_size=200))


def _expected(content: bytes) -> bytes:
    """What the reader hands on: the content, with a line end added when it had none."""
    return content + b"\n" if content and not content.endswith(b"\n") else content


def read(chunks: list[bytes], max_line: int = MAX_SIZE) -> Driver:
    driver = Driver(max_size=MAX_SIZE, max_line=max_line)
    for chunk in chunks:
        driver.feed(chunk)
    return driver


@given(st.data(), CONTENT)
def test_writer_then_reader_is_identity(data: st.DataObject, content: bytes) -> None:
    """RFC 5321 4.5.2 (transparency): whatever the content, dot-stuffed by the writer in pieces
    split anywhere and read back by the DATA reader in packets split anywhere, it comes back
    byte for byte (with a final line end), the reader stops exactly at the ``.`` line and leaves
    the pipelined command after it."""
    pieces = data.draw(chunkings(content), label="writer pieces")
    wire = b"".join(encode_chunks(pieces))
    assert wire == encode(content)
    packets = data.draw(chunkings(wire + NEXT), label="packets")
    driver = read(packets)
    assert driver.reader.done and driver.reader.fault is None
    assert bytes(driver.content) == _expected(content)
    assert driver.pending == NEXT


@given(st.data(), CONTENT)
def test_bdat_chunks_round_trip(data: st.DataObject, content: bytes) -> None:
    """RFC 3030 2 and RFC 5321 2.3.8: CRLF content sent as BDAT chunks of any sizes and received
    in packets split anywhere (the reader sees both as pieces; a CRLF may straddle two) comes
    back LF-normalised and byte for byte."""
    wire = content.replace(b"\n", CRLF)
    out = bytearray()
    reader = ChunkReader(out.extend, MAX_SIZE)
    for piece in data.draw(chunkings(wire), label="pieces"):
        reader.feed(piece)
    reader.finish()
    assert reader.fault is None and reader.size == len(wire)
    assert bytes(out) == content


# Found by this fuzzer on the old reader: a bare CR in a line that passed the line limit before
# its end arrived was dropped with the line (554, session goes on) instead of refused (521).
BARE_CR_IN_LONG_LINE = b"\r" + b"x" * 90 + b"\r\n.\r\n"


@given(fed(WIRE), LINE_LIMITS)
@example((BARE_CR_IN_LONG_LINE, [BARE_CR_IN_LONG_LINE[:91], BARE_CR_IN_LONG_LINE[91:]]), 80)
def test_reader_never_accepts_a_bare_newline(case: tuple[bytes, list[bytes]],
                                             max_line: int) -> None:
    """RFC 5321 2.3.8 and 4.1.1.4 (SMTP smuggling): a message the DATA reader ends without a
    fault contains only CRLF line ends up to its ``CRLF.CRLF``, and nothing it hands on ever
    contains a CR; a bare CR or LF before the end is a BARE_NEWLINE fault, however split."""
    data, chunks = case
    driver = read(chunks, max_line)
    reader = driver.reader
    assert b"\r" not in driver.content
    taken = data[: len(data) - len(driver.pending)] if reader.done else b""
    if reader.done and reader.fault is None:
        assert taken == b".\r\n" or taken.endswith(b"\r\n.\r\n")
        assert not BARE.search(taken), taken
    end = data.find(b"\r\n.\r\n")
    head = data[: end + 2] if not data.startswith(b".\r\n") else b""
    if end >= 0 and BARE.search(head):
        assert reader.fault is DataFault.BARE_NEWLINE and not reader.done


@given(fed(WIRE), LINE_LIMITS)
@example((BARE_CR_IN_LONG_LINE, [BARE_CR_IN_LONG_LINE[:91], BARE_CR_IN_LONG_LINE[91:]]), 80)
def test_reader_same_result_however_split(case: tuple[bytes, list[bytes]],
                                          max_line: int) -> None:
    """RFC 5321 4.1.1.4 and 2.3.8: where TCP cut the stream changes nothing: the end of the
    message, the fault, the content kept and the bytes left for the next command are the same
    as when the bytes come whole."""
    data, chunks = case

    def result(driver: Driver) -> tuple[object, ...]:
        reader = driver.reader
        if reader.fault is DataFault.BARE_NEWLINE:  # reading stopped: the rest is not read
            return (reader.done, reader.fault)
        kept = None if reader.fault else (reader.size, bytes(driver.content))
        return (reader.done, reader.fault, kept, driver.pending)

    assert result(read(chunks, max_line)) == result(read([data], max_line))


@given(fed(st.one_of(st.binary(max_size=300), WIRE)))
def test_chunk_reader_any_bytes(case: tuple[bytes, list[bytes]]) -> None:
    """RFC 3030 2 with RFC 5321 2.3.8: BDAT content is framed by its counts, but a bare CR or
    LF in it is still refused, wherever the chunk and packet boundaries fall; content without
    one comes back LF-normalised."""
    wire, pieces = case
    results = []
    for chunks in ([wire], pieces):
        out = bytearray()
        reader = ChunkReader(out.extend, MAX_SIZE)
        for chunk in chunks:
            reader.feed(chunk)
        reader.finish()
        assert b"\r" not in out
        results.append((reader.fault, bytes(out) if reader.fault is None else None))
    assert results[0] == results[1]
    if BARE.search(wire):
        assert results[0][0] is DataFault.BARE_NEWLINE
    else:
        assert results[0] == (None, wire.replace(CRLF, b"\n"))
