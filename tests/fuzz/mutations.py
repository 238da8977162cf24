"""Hostile variants of real conversations: the fuzzers start from what the dialog tests say
(tests/support/corpus.py) and break it the ways a broken or hostile client would."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import strategies as st

CRLF = b"\r\n"
MAX_MUTATIONS = 5

Mutation = Callable[[st.DrawFn, bytes, Sequence[bytes]], bytes]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def _line_index(draw: st.DrawFn, lines: list[bytes]) -> int:
    return draw(st.integers(0, len(lines) - 1))


def _position(draw: st.DrawFn, data: bytes) -> int:
    return draw(st.integers(0, len(data)))


def insert_line(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """A line of another conversation, or a few random bytes as a line, put anywhere."""
    lines = _lines(data)
    donor = _lines(draw(st.sampled_from(seeds)))
    new = draw(st.one_of(st.sampled_from(donor), st.binary(max_size=40).map(lambda b: b + CRLF)))
    lines.insert(draw(st.integers(0, len(lines))), new)
    return b"".join(lines)


def delete_line(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    lines = _lines(data)
    del lines[_line_index(draw, lines)]
    return b"".join(lines)


def duplicate_line(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    lines = _lines(data)
    i = _line_index(draw, lines)
    lines[i:i] = [lines[i]] * draw(st.integers(1, 12))
    return b"".join(lines)


def change_case(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    lines = _lines(data)
    i = _line_index(draw, lines)
    change = draw(st.sampled_from([bytes.upper, bytes.lower, bytes.swapcase]))
    lines[i] = change(lines[i])
    return b"".join(lines)


def flip_bit(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    if not data:
        return data
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]


def insert_bytes(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """A bare CR or LF (RFC 5321 2.3.8), a NUL, an invalid UTF-8 sequence, a smuggling
    ending, or random bytes."""
    hostile = st.sampled_from([b"\r", b"\n", b"\n\r", b"\x00", b"\xff\xfe", b"\xc3",
                               b"\xed\xa0\x80", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b".",
                               b"\r\n.\r\n", b" ", b"\t"])
    i = _position(draw, data)
    return data[:i] + draw(st.one_of(hostile, st.binary(min_size=1, max_size=16))) + data[i:]


def long_line(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """Octets without a line end, around and far beyond the command and text line limits
    (RFC 5321 4.5.3.1.4-6), inside a line or as one."""
    length = draw(st.one_of(st.integers(250, 1100), st.integers(1100, 20_000)))
    filler = draw(st.sampled_from([b"x", b"A ", b".", b"\xc3\xa9", b"=", b"\x00"]))
    i = _position(draw, data)
    return data[:i] + (filler * length)[:length] + data[i:]


def truncate(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    return data[: _position(draw, data)]


def splice(draw: st.DrawFn, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """This conversation cut anywhere, then another one from anywhere."""
    other = draw(st.sampled_from(seeds))
    return data[: _position(draw, data)] + other[_position(draw, other) :]


MUTATIONS: tuple[Mutation, ...] = (insert_line, delete_line, duplicate_line, change_case,
                                   flip_bit, insert_bytes, long_line, truncate, splice)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A conversation from ``seeds``, as it is or after a few mutations (shrinks to the seed)."""
    data = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, MAX_MUTATIONS))):
        data = draw(st.sampled_from(MUTATIONS))(draw, data, seeds)
    return data


def command_soup(verbs: Sequence[str]) -> st.SearchStrategy[bytes]:
    """Lines of known verbs (any case) with random arguments, and random lines among them."""
    argument = st.one_of(st.text(max_size=30).map(str.encode), st.binary(max_size=30))
    line = st.one_of(
        st.tuples(st.sampled_from(verbs), argument).map(
            lambda va: (va[0].encode() + (b" " + va[1] if va[1] else b"")) + CRLF),
        st.binary(max_size=40).map(lambda b: b + CRLF),
    )
    return st.lists(line, max_size=20).map(b"".join)


def hostile(seeds: Sequence[bytes], verbs: Sequence[str]) -> st.SearchStrategy[bytes]:
    """The fuzzers' input: mostly mutated real conversations, some command soup."""
    return st.one_of(mutated(seeds), mutated(seeds), mutated(seeds), command_soup(verbs))
