"""The message body spool keeps memory bounded: per body, across bodies
(``limits.spool_memory``), and in blocks once a body is on disk."""

from __future__ import annotations

from pathlib import Path

from geomail.spool import SPILL_BLOCK, MemoryBudget, Spool
from geomail.units import KiB


def test_small_bodies_stay_in_memory_within_the_budget(tmp_path: Path):
    """A body under both limits never touches the disk, and its reservation
    is given back when it is discarded."""
    budget = MemoryBudget(64 * KiB)
    body = Spool(str(tmp_path), budget=budget)
    body.write(b"x" * 10 * KiB)
    assert body.in_memory and budget.used == 10 * KiB
    assert list(tmp_path.iterdir()) == []
    body.discard()
    assert budget.used == 0


def test_budget_shared_by_all_bodies_sends_the_rest_to_disk(tmp_path: Path):
    """Once the bodies held in memory together reach ``spool_memory``, the
    next body goes to a file (and gives back what it had reserved), whole and in order."""
    budget = MemoryBudget(48 * KiB)
    first, second = Spool(str(tmp_path), budget=budget), Spool(str(tmp_path), budget=budget)
    first.write(b"a" * 40 * KiB)
    second.write(b"b" * 4 * KiB)
    second.write(b"c" * 8 * KiB)  # 52 KiB in all: over the budget
    assert first.in_memory and not second.in_memory
    assert budget.used == 40 * KiB
    second.finish()
    assert b"".join(second.chunks()) == b"b" * 4 * KiB + b"c" * 8 * KiB
    first.discard()
    second.discard()
    assert budget.used == 0
    assert list(tmp_path.iterdir()) == []


def test_spilled_body_holds_at_most_a_block(tmp_path: Path):
    """A body on disk keeps less than SPILL_BLOCK octets in memory between
    writes, however large it grows."""
    body = Spool(str(tmp_path), memory_limit=16 * KiB, budget=MemoryBudget(1024 * KiB))
    piece = b"y" * 3000 + b"\n"
    for _ in range(200):  # ~600 KiB
        body.write(piece)
        assert body.in_memory or body._buffered < SPILL_BLOCK
    assert not body.in_memory
    body.finish()
    assert b"".join(body.chunks()) == piece * 200
    body.discard()
