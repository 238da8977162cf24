"""Durable file writes (temp file, fsync, rename, directory fsync) and running them off the hub."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


Runner = Callable[..., Any]  # runner(fn, *args) -> fn(*args), run off the hub


def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in gevent's threadpool so the hub keeps serving other connections
    (its size is ``limits.io_threads``: ``Workers.start`` sets it)."""
    import gevent

    # ThreadPool.apply runs inline when called from a worker thread, so nesting is safe.
    result: T = gevent.get_hub().threadpool.apply(fn, args)
    return result


class ThreadRunner:
    """A ``Runner`` with threads of its own (started on first use); ``nice`` > 0 runs each
    call at that lower CPU priority."""

    def __init__(self, threads: int, nice: int = 0) -> None:
        from gevent.threadpool import ThreadPool

        self._pool = ThreadPool(threads)
        self._nice = nice

    def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        if self._nice:
            niced: T = self._pool.apply(_niced, (self._nice, fn, *args))
            return niced
        result: T = self._pool.apply(fn, args)
        return result

    def close(self) -> None:
        """Stop the threads (calls still queued are dropped)."""
        self._pool.kill()


def _niced(level: int, fn: Callable[..., T], *args: Any) -> T:
    # On Linux, PRIO_PROCESS with who=0 sets the calling thread's nice value only.
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, 0) < level:
            os.setpriority(os.PRIO_PROCESS, 0, level)
    return fn(*args)


HASH_NICE = 10  # hashing threads yield the CPU to the hub, so other sessions stay prompt


class Workers:
    """The thread pools of one App, sized from ``limits``:

    - ``io_threads``: gevent's own threadpool (``run_blocking``), for file writes and fsyncs;
      they wait in the kernel, so many run in parallel (the disk merges their flushes).
    - ``read``: mailbox reads. Reading many small messages is mostly Python work that holds
      the GIL; spread over the main pool's many threads it would make the hub wait for the
      GIL at every switch. Two threads keep the disk busy without that.
    - ``hash``: argon2 password checks, at nice ``HASH_NICE``. A login costs tens of ms of CPU;
      at normal priority the hub would wait behind it for a core and every other session's
      replies would slow down (see bench/README.md, auth).
    - ``verify``: DKIM and ARC verification of inbound mail (canonicalisation and hashing of
      the whole message: CPU work, a few threads).
    """

    def __init__(self, io_threads: int = 16, read_threads: int = 2,
                 password_threads: int = 2, verify_threads: int = 2) -> None:
        self.io_threads = io_threads
        self.read = ThreadRunner(read_threads)
        self.hash = ThreadRunner(password_threads, nice=HASH_NICE)
        self.verify = ThreadRunner(verify_threads)

    def start(self) -> None:
        """Size gevent's threadpool (it belongs to the hub, which the process shares)."""
        import gevent

        gevent.get_hub().threadpool.maxsize = self.io_threads

    def close(self) -> None:
        self.read.close()
        self.hash.close()
        self.verify.close()


def fsync_dir(path: str) -> None:
    """fsync a directory, so that a rename or create inside it survives a crash (blocking)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_synced(path: str, chunks: Iterable[bytes], mode: int = 0o600,
                      mtime: float | None = None) -> int:
    """Create ``path`` exclusively, write ``chunks``, fsync it; return its size (blocking).
    ``mtime`` is set before the fsync, so it is as durable as the content (a Maildir file's
    mtime is its IMAP INTERNALDATE).

    On any failure the partial file is removed, so nothing half-written stays behind.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    size = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
                size += written
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)
    return size


def read_file(path: str) -> bytes:
    """The whole file: os.read into a buffer of its size (FETCH of many small messages spends
    its time here, and a buffered file object costs more than the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        chunks = [data]  # it grew meanwhile
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes | Iterable[bytes], mode: int = 0o600,
                 sync_dir: bool = True) -> None:
    """Replace ``path`` durably: temp file in the same directory, fsync, rename, fsync the dir.

    Blocking; call it through ``run_blocking`` from a greenlet. With ``sync_dir=False`` the
    caller takes over the directory fsync (to share one among many writes, see ``DirSyncer``).
    """
    directory = os.path.dirname(path) or "."
    name = f".tmp.{os.getpid()}.{os.urandom(6).hex()}.{os.path.basename(path)}"
    tmp = os.path.join(directory, name)
    write_file_synced(tmp, [data] if isinstance(data, bytes) else data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class DirSyncer:
    """Group commit for directory fsyncs: callers that need the same directory synced share one.

    A caller arriving while an fsync of that directory is running cannot rely on it (its rename
    may have come too late), so it joins the next batch; every waiter of a batch is released by
    one fsync that started after its rename. Cooperative: call ``sync`` from greenlets.
    """

    def __init__(self, fsync: Callable[[str], None] | None = None) -> None:
        self._fsync = fsync or (lambda path: run_blocking(fsync_dir, path))
        self._next: dict[str, _Batch] = {}  # directory -> batch not yet started
        self._running: set[str] = set()

    def sync(self, directory: str) -> None:
        """Return once an fsync of ``directory`` that began after this call has completed."""
        import gevent

        batch = self._next.get(directory)
        if batch is None:
            batch = self._next[directory] = _Batch()
        if directory not in self._running:
            self._running.add(directory)
            gevent.spawn(self._drain, directory)
        batch.wait()
        if batch.error is not None:
            raise batch.error

    def _drain(self, directory: str) -> None:
        # One greenlet per directory runs batch after batch until nobody is waiting.
        try:
            while (batch := self._next.pop(directory, None)) is not None:
                try:
                    self._fsync(directory)
                except OSError as exc:
                    batch.error = exc
                batch.done()
        finally:
            self._running.discard(directory)


class _Batch:
    """Callers waiting for one directory fsync."""

    __slots__ = ("_event", "error")

    def __init__(self) -> None:
        from gevent.event import Event

        self._event = Event()
        self.error: OSError | None = None

    def wait(self) -> None:
        self._event.wait()

    def done(self) -> None:
        self._event.set()
