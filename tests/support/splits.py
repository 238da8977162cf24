"""The same bytes fed in different packets: a sans-IO parser must not care where TCP cut them.

``ways`` enumerates the cuts exhaustively for short inputs (h11's ``tr()``); ``chunkings`` and
``fed`` are the Hypothesis strategies the fuzz tests use for inputs of any length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

from hypothesis import strategies as st

MAX_CUTS = 64  # a few dozen packet boundaries per input find every boundary bug a hundred would
MAX_BYTEWISE = 4096  # longer inputs are not also tried byte by byte: too slow for little gain


def ways(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """h11's tr(): the same bytes whole, byte by byte, and split in two at every offset."""
    yield "whole", [data]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield f"split at {i}", [data[:i], data[i:]]


class _Snapshots(Protocol):
    def snapshot(self) -> object: ...


S = TypeVar("S", bound=_Snapshots)


def every_way(data: bytes, run: Callable[[list[bytes]], S]) -> S:
    """``run`` fed each of ``ways(data)``; every run's ``snapshot()`` must equal the first's
    (a sans-IO session does not care where TCP cut the bytes); the first run is returned."""
    first: S | None = None
    for name, chunks in ways(data):
        result = run(chunks)
        if first is None:
            first = result
        else:
            assert result.snapshot() == first.snapshot(), f"fed {name}"
    assert first is not None
    return first


def cut(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``offsets`` (any order, duplicates and out-of-range ones ignored)."""
    points = sorted({i for i in offsets if 0 < i < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` as a list of packets: whole, byte by byte (when short), or cut at arbitrary
    offsets.

    Shrinks towards fewer cuts, so a failure is reported with the fewest packet boundaries.
    """
    if len(data) < 2:
        return st.just([data])
    offsets = st.lists(st.integers(1, len(data) - 1), max_size=min(MAX_CUTS, len(data) - 1))
    cuts = offsets.map(lambda points: cut(data, points))
    if len(data) > MAX_BYTEWISE:
        return cuts
    return st.one_of(cuts, st.just([data[i : i + 1] for i in range(len(data))]))


@st.composite
def fed(draw: st.DrawFn, inputs: st.SearchStrategy[bytes]) -> tuple[bytes, list[bytes]]:
    """An input drawn from ``inputs`` and one way of cutting it into packets."""
    data = draw(inputs)
    return data, draw(chunkings(data))
