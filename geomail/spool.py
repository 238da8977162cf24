"""Message bodies in transit: LF line endings, in memory while small, in a file when large."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from geomail.safeio import run_blocking

KiB = 1024
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


class Spool:
    """The body of one message being received (the SMTP session writes LF-normalised data).

    Up to ``memory_limit`` octets stay in memory; past that the body goes to a temp file under
    ``directory``, written in large blocks through the threadpool, so that a large message is
    never held whole in memory and a slow disk never stalls the hub.
    """

    __slots__ = ("_buffered", "_directory", "_fd", "_memory_limit", "_parts", "_path",
                 "crlf_size", "eight_bit", "size")

    def __init__(self, directory: str, memory_limit: int = 256 * KiB) -> None:
        self._directory = directory
        self._memory_limit = memory_limit
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
        if self._buffered >= self._memory_limit:
            self._spill()

    def _spill(self) -> None:
        block = b"".join(self._parts)
        self._parts = []
        self._buffered = 0
        if self._fd is None:
            os.makedirs(self._directory, exist_ok=True)
            self._path = os.path.join(self._directory, f"body.{os.getpid()}.{os.urandom(8).hex()}")
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

    def chunks(self, chunk_size: int = 256 * KiB) -> Iterator[bytes]:
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

    def chunks(self, chunk_size: int = 256 * KiB) -> Iterator[bytes]:
        for start in range(0, len(self.data), chunk_size):
            yield self.data[start : start + chunk_size]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
