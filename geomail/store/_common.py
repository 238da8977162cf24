"""Helpers shared by the Maildir and mbox stores: mailbox names, session locks, errors, file I/O."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from geomail.errors import MailboxBusy, StoreError
from geomail.locks import try_lock
from geomail.safeio import Runner, run_blocking
from geomail.units import KiB, MiB

CHUNK = 256 * KiB  # messages below this are read in one go; larger ones are streamed in CHUNKs
READ_AHEAD = 512 * KiB  # at most this much of the following small messages is read ahead
_WRITE_BATCH = MiB
_IOV_MAX = 512
MAX_REMEMBERED = 100_000  # mailbox names whose paths a store keeps worked out

_UID_OK = re.compile(r"[\x21-\x7e]{1,70}")
T = TypeVar("T")


def split_mailbox(mailbox: str) -> tuple[str, str]:
    """``local@domain`` -> (domain, local), refusing anything that could leave the store."""
    local, sep, domain = mailbox.rpartition("@")
    for part in (local, domain):
        # A leading dot also keeps user names apart from the stores' own dotfiles.
        if not sep or not part or part.startswith(".") or "/" in part or "\0" in part:
            raise StoreError(f"invalid mailbox name {mailbox!r}")
    return domain, local


def os_error(action: str, exc: OSError) -> StoreError:
    """A ``StoreError`` with a short reason, e.g. "deliver to a@b: No space left on device"."""
    return StoreError(f"cannot {action}: {exc.strerror or type(exc).__name__}")


def valid_uid(text: str) -> bool:
    """May ``text`` be a UIDL as it is (RFC 1939 7: 1-70 characters 0x21-0x7E)?"""
    return _UID_OK.fullmatch(text) is not None


def digest(data: bytes) -> str:
    """A 32-character hex digest, stable across runs and versions (used for UIDs)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def mkdir(path: str) -> bool:
    """Create directory ``path`` with mode 0700; False if it already existed (blocking)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


def make_dirs(top: str, *chain: str) -> list[str]:
    """Create ``top`` (parents included), then each of ``chain``, each inside the one before;
    the directories whose entries changed, for the caller to fsync (blocking)."""
    created: list[str] = []
    if not os.path.isdir(top):
        os.makedirs(top, 0o700, exist_ok=True)
        created.append(os.path.dirname(top))
    for directory in chain:
        if mkdir(directory):
            created.append(os.path.dirname(directory))
    return created


def remember(cache: dict[str, T], key: str, value: T) -> T:
    """``cache[key] = value``, the cache emptied first once it holds ``MAX_REMEMBERED``."""
    if len(cache) >= MAX_REMEMBERED:
        cache.clear()
    cache[key] = value
    return value


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class ChunkWriter:
    """Writes many small pieces to ``fd`` with few syscalls (writev in large batches)."""

    __slots__ = ("_fd", "_parts", "_pending", "written")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._parts: list[bytes] = []
        self._pending = 0
        self.written = 0

    def add(self, data: bytes) -> None:
        if data:
            self._parts.append(data)
            self._pending += len(data)
            if self._pending >= _WRITE_BATCH or len(self._parts) >= _IOV_MAX:
                self.flush()

    def flush(self) -> None:
        parts, self._parts, self._pending = self._parts, [], 0
        first = 0
        while first < len(parts):
            if first == len(parts) - 1:
                done = os.write(self._fd, parts[first])
            else:
                done = os.writev(self._fd, parts[first:])
            self.written += done
            while first < len(parts) and done >= len(parts[first]):
                done -= len(parts[first])
                first += 1
            if done:  # a short write: go on from the middle of this part
                parts[first] = parts[first][done:]


def write_chunks(fd: int, head: bytes, chunks: Iterable[bytes]) -> int:
    """Write ``head`` then ``chunks`` to ``fd``; return the octets written (blocking)."""
    writer = ChunkWriter(fd)
    writer.add(head)
    for chunk in chunks:
        writer.add(chunk)
    writer.flush()
    return writer.written


def lock_session(path: str) -> int:
    """The descriptor holding ``path``'s lock for a POP3 session, or raise ``MailboxBusy``
    (blocking; a second session in this process is refused too)."""
    fd = try_lock(path)
    if fd is None:
        raise MailboxBusy("mailbox in use by another session")
    return fd


def run_claimed(release: Callable[[T], None], fn: Callable[..., T], *args: Any,
                runner: Callable[..., Any] = run_blocking) -> T:
    """``runner(fn, *args)`` (the threadpool), but if the calling greenlet is killed before it
    gets the result (a session lock, say), ``release(result)`` runs instead of it being lost."""
    turn = itertools.count()  # next() is atomic under the GIL: the second side releases
    box: list[T] = []

    def work() -> T:
        result = fn(*args)
        box.append(result)
        if next(turn):
            release(result)  # the caller is gone
        return result

    try:
        result: T = runner(work)
        return result
    except BaseException:
        if next(turn) and box:
            release(box[0])
        raise


def close_quietly(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


class ReadAhead:
    """Reads small messages, and when access is sequential the next few with them, in one
    threadpool call: a round trip to the pool costs more than reading a 10 KiB file, so a
    pipelined RETR of many messages would otherwise be bound by the pool, not by the disk."""

    __slots__ = ("_cache", "_next", "_read", "_reader", "_sizes", "_window")

    def __init__(self, sizes: Sequence[int | None], read: Callable[[int], bytes],
                 reader: Runner = run_blocking) -> None:
        self._sizes = sizes  # stored octets per message; None: unknown (not read ahead)
        self._read = read  # blocking: one whole small message
        self._reader = reader  # the read pool (Workers.read)
        self._cache: dict[int, bytes] = {}
        self._next = 0
        self._window = 1

    def small(self, index: int) -> bool:
        size = self._sizes[index]
        return size is not None and size < CHUNK

    def get(self, index: int) -> bytes:
        """Message ``index`` (which must be small), cooperative."""
        data = self._cache.pop(index, None)
        if data is None:
            batch = [index]
            if index == self._next:
                self._window = min(self._window * 2, 256)
                total = self._sizes[index] or 0
                for j in range(index + 1, min(index + self._window, len(self._sizes))):
                    size = self._sizes[j]
                    if size is None or size >= CHUNK or total + size > READ_AHEAD:
                        break
                    batch.append(j)
                    total += size
            else:
                self._window = 1
            results = self._reader(self._read_batch, batch)
            data = results[0]
            self._cache = dict(zip(batch[1:], results[1:], strict=False))
        self._next = index + 1
        return data

    def _read_batch(self, batch: list[int]) -> list[bytes]:
        results = [self._read(batch[0])]
        for j in batch[1:]:
            try:
                results.append(self._read(j))
            except (OSError, StoreError):
                break  # read again, and reported, when asked for
        return results


def read_message(ahead: ReadAhead, index: int,
                 stream: Callable[[], Iterator[bytes]]) -> Iterator[bytes]:
    """A maildrop message: small ones whole from ``ahead``, others from ``stream()``; an
    ``OSError`` becomes a ``StoreError``."""
    try:
        if ahead.small(index):
            if data := ahead.get(index):
                yield data
            return
        yield from stream()
    except OSError as exc:
        raise os_error("read message", exc) from exc


def stream_fd(fd: int, offset: int, length: int | None,
              transform: Callable[[bytes], bytes] | None = None,
              reader: Runner = run_blocking) -> Iterator[bytes]:
    """``length`` octets of ``fd`` from ``offset`` (to EOF if None) in CHUNKs, each passed
    through ``transform`` in the threadpool; cooperative."""
    while length is None or length > 0:
        want = CHUNK if length is None else min(CHUNK, length)
        raw_len, data = reader(_pread, fd, want, offset, transform)
        if raw_len == 0:
            if length:
                raise StoreError("message truncated on disk")
            return
        offset += raw_len
        if length is not None:
            length -= raw_len
        if data:
            yield data


def _pread(fd: int, want: int, offset: int,
           transform: Callable[[bytes], bytes] | None) -> tuple[int, bytes]:
    data = os.pread(fd, want, offset)
    return len(data), transform(data) if transform is not None and data else data
