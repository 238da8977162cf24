"""Message bodies in transit: LF line endings, in memory while small, in a file when large.

Memory is bounded twice: one body stays whole in memory up to
``memory_limit``, and all bodies of the process together up to a ``MemoryBudget``
(``limits.spool_memory``); past either, the body goes to a file, written in blocks of at most
``SPILL_BLOCK``. So a thousand connections each in the middle of a large DATA hold a few KiB
each, not a quarter of a MiB, while small messages at ordinary concurrency never touch the disk.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from geomail.envelope import CHUNK_SIZE
from geomail.safeio import run_blocking
from geomail.units import KiB

SPILL_BLOCK = 32 * KiB  # a spilled body writes once this much is buffered
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


class MemoryBudget:
    """Octets of message bodies held whole in memory, counted across every connection."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` octets; False (nothing reserved) if that would pass the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


SPOOL_PREFIX = "body."  # the spill files of bodies being received


class Spool:
    """The body of one message being received (the SMTP session writes LF-normalised data).

    Up to ``memory_limit`` octets stay in memory, while ``budget`` (shared by all bodies) has
    room; past that the body goes to a temp file under ``directory``, written in blocks through
    the threadpool, so that a large message is never held whole in memory and a slow disk never
    stalls the hub.
    """

    __slots__ = ("_budget", "_buffered", "_charged", "_directory", "_fd", "_memory_limit",
                 "_parts", "_path", "crlf_size", "eight_bit", "size")

    def __init__(self, directory: str, memory_limit: int = 256 * KiB,
                 budget: MemoryBudget | None = None) -> None:
        self._directory = directory
        self._memory_limit = memory_limit
        self._budget = budget
        self._charged = 0  # octets reserved in the budget (while the body is in memory)
        self._parts: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._path: str | None = None
        self.size = 0
        self.crlf_size = 0
        self.eight_bit = False

    def write(self, data: bytes) -> None:
        """Append LF-normalised ``data``."""
        if not data:
            return
        self.size += len(data)
        self.crlf_size += len(data) + data.count(b"\n")
        if not self.eight_bit and _EIGHT_BIT.search(data):
            self.eight_bit = True
        self._parts.append(data)
        self._buffered += len(data)
        if self._fd is None:
            if self._buffered >= self._memory_limit or not self._charge(len(data)):
                self._spill()
        elif self._buffered >= SPILL_BLOCK:
            self._spill()

    def _charge(self, size: int) -> bool:
        if self._budget is None:
            return True
        if not self._budget.take(size):
            return False
        self._charged += size
        return True

    def _release(self) -> None:
        if self._charged and self._budget is not None:
            self._budget.give(self._charged)
        self._charged = 0

    def _spill(self) -> None:
        block = b"".join(self._parts)
        self._parts = []
        self._buffered = 0
        self._release()
        if self._fd is None:
            os.makedirs(self._directory, exist_ok=True)
            name = f"{SPOOL_PREFIX}{os.getpid()}.{os.urandom(8).hex()}"
            self._path = os.path.join(self._directory, name)
            self._fd = run_blocking(os.open, self._path,
                                    os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        run_blocking(_write_all, self._fd, block)

    def finish(self) -> None:
        """No more data will come: flush what a spilled body still holds in memory."""
        if self._fd is not None and self._parts:
            self._spill()

    @property
    def in_memory(self) -> bool:
        """True while the whole body is in memory."""
        return self._fd is None

    def getvalue(self) -> bytes:
        """The whole body; only for bodies still in memory (small ones)."""
        if self._fd is not None:
            raise ValueError("the body was spilled to disk; read it with chunks()")
        if len(self._parts) > 1:
            self._parts = [b"".join(self._parts)]
        return self._parts[0] if self._parts else b""

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The content, in order (blocking when spilled)."""
        if self._fd is None:
            yield from self._parts
            return
        offset = 0
        while chunk := os.pread(self._fd, chunk_size, offset):
            offset += len(chunk)
            yield chunk

    def discard(self) -> None:
        """Release the memory and remove the temp file."""
        self._parts = []
        self._buffered = 0
        self._release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None


class BytesBody:
    """A body already in memory (bounces, tests)."""

    __slots__ = ("crlf_size", "data", "size")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.crlf_size = self.size + data.count(b"\n")

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        for start in range(0, len(self.data), chunk_size):
            yield self.data[start : start + chunk_size]


def sweep(directory: str) -> int:
    """Remove the body files of transactions a crash interrupted (blocking; at start-up, once
    the data directory is ours): no client got a 250 for them. Returns how many."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        if name.startswith(SPOOL_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
                removed += 1
    return removed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
