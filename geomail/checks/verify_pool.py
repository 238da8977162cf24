"""DKIM and ARC verification in worker processes of their own.

Verifying a signature is a few hundred microseconds of pure-Python work (dkimpy's
canonicalisation) per message. On the hub it delays every other connection by that much; in a
thread it is worse, because every socket call the hub makes hands the GIL to the verifying
thread and then waits to get it back (bench/README.md, checks). A process has a GIL of its
own: the hub sends the message and the keys it already looked up, and waits cooperatively for
the verdicts.

A worker is this program started afresh (``geomail verify-worker``; not a fork: a fork of a
gevent process with threads runs the parent's greenlets in the child), before the privilege
drop when the server starts as root (the one-file binary's unpacked files are readable only
by root): it imports what it needs, becomes ``user:`` itself, then answers one request at a
time on its stdin/stdout and never touches gevent. A worker that fails or hangs is killed and
replaced; the caller then verifies in-process (``VerifyPoolError``)."""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable

import gevent
import gevent.event
import gevent.lock
import gevent.os
import gevent.subprocess
from gevent.monkey import get_original

from geomail.checks.dkim_verify import ARCResult, DKIMResult, DKIMVerifier, Keys, warm_up
from geomail.errors import GeomailError

_FRAME = struct.Struct(">I")
RESPAWN_PAUSE = 10.0  # seconds without new workers after one failed
Verdicts = tuple[list[DKIMResult], ARCResult]


class VerifyPoolError(GeomailError):
    """A worker could not answer (it died, hung or could not be started)."""


class _Worker:
    """One worker process and the parent's ends of its pipes. Requests are pipelined: each is
    written as it comes and a reader greenlet hands the answers, which come in order, to their
    callers; so the worker never waits for the hub to send it the next message."""

    def __init__(self, command: list[str], on_failure: Callable[[_Worker], None]) -> None:
        self._process = gevent.subprocess.Popen(command, stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE, close_fds=True)
        assert self._process.stdin is not None and self._process.stdout is not None
        self.pid = self._process.pid
        self._to, self._from = self._process.stdin.fileno(), self._process.stdout.fileno()
        gevent.os.make_nonblocking(self._to)
        gevent.os.make_nonblocking(self._from)
        self._writing = gevent.lock.Semaphore()
        self._waiting: collections.deque[gevent.event.AsyncResult] = collections.deque()
        self._on_failure = on_failure
        self._reader = gevent.spawn(self._read_answers)

    @property
    def load(self) -> int:
        return len(self._waiting)

    def ask(self, request: bytes) -> gevent.event.AsyncResult:
        """Queue one request; the result is set to the answer's bytes or to an exception."""
        result = gevent.event.AsyncResult()
        with self._writing:  # one frame at a time, answers in the order of the frames
            self._waiting.append(result)
            _write_all(self._to, _FRAME.pack(len(request)) + request)
        return result

    def _read_answers(self) -> None:
        try:
            while True:
                (size,) = _FRAME.unpack(_read_exactly(self._from, _FRAME.size))
                answer = _read_exactly(self._from, size)
                self._waiting.popleft().set(answer)
        except (OSError, EOFError, IndexError) as exc:
            self._fail(VerifyPoolError(f"verification worker gone: {exc}"))

    def _fail(self, error: Exception) -> None:
        while self._waiting:
            self._waiting.popleft().set_exception(error)
        self._on_failure(self)

    def close(self) -> None:
        if self._reader is not gevent.getcurrent():
            self._reader.kill(block=False)
        while self._waiting:  # callers waiting on this worker hear of it at once
            self._waiting.popleft().set_exception(VerifyPoolError("verification worker closed"))
        with contextlib.suppress(OSError):
            self._process.kill()
        for pipe in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        with contextlib.suppress(gevent.Timeout, OSError):
            self._process.wait(timeout=2)


def worker_command(user: str | None) -> list[str]:
    """How to start a worker: this executable (the one-file binary) or this interpreter."""
    base = ([sys.executable, "verify-worker"] if getattr(sys, "frozen", False)
            else [sys.executable, "-m", "geomail", "verify-worker"])
    return base + (["--user", user] if user and os.geteuid() == 0 else [])


class VerifyPool:
    """Up to ``processes`` workers, started when first needed; ``verify`` is cooperative."""

    def __init__(self, processes: int, command: list[str], timeout: float = 30.0,
                 respawn_pause: float = RESPAWN_PAUSE) -> None:
        self.processes = processes
        self.command = command
        self.timeout = timeout
        self.respawn_pause = respawn_pause
        self._workers: list[_Worker] = []
        self._pause_until = 0.0  # after a worker failed: no new worker before this (monotonic)

    def start(self) -> None:
        """Start every worker now (the server, before its privilege drop); else each starts
        when first needed."""
        while len(self._workers) < self.processes:
            self._workers.append(self._spawn())

    def verify(self, chunks: list[bytes], keys: Keys, arc: bool) -> Verdicts:
        """The verdicts for the message (LF line endings, in ``chunks``); VerifyPoolError
        when no worker could give them."""
        request = pickle.dumps((chunks, keys.records, keys.failed, arc),
                               protocol=pickle.HIGHEST_PROTOCOL)
        worker = self._least_busy()
        try:
            with gevent.Timeout(self.timeout, VerifyPoolError("no answer in time")):
                answer = pickle.loads(worker.ask(request).get())  # our own child's bytes
        except VerifyPoolError:
            self._retire(worker)
            raise
        except (OSError, pickle.UnpicklingError) as exc:
            self._retire(worker)
            raise VerifyPoolError(f"verification worker failed: {exc}") from exc
        if isinstance(answer, str):  # the worker caught an error of its own
            raise VerifyPoolError(answer)
        verdicts: Verdicts = answer
        return verdicts

    def close(self) -> None:
        for worker in list(self._workers):
            self._retire(worker)

    def _least_busy(self) -> _Worker:
        idle = min(self._workers, key=lambda w: w.load, default=None)
        spawning = time.monotonic() >= self._pause_until
        if idle is None and not spawning:
            raise VerifyPoolError("no verification worker (pausing after a failure)")
        if (idle is None or idle.load) and len(self._workers) < self.processes and spawning:
            idle = self._spawn()
            self._workers.append(idle)
        assert idle is not None
        return idle

    def _spawn(self) -> _Worker:
        try:
            return _Worker(self.command, self._retire)
        except OSError as exc:
            raise VerifyPoolError(f"cannot start a verification worker: {exc}") from exc

    def _retire(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
            # A worker that cannot start (the binary's files unreadable after the privilege
            # drop) would otherwise be started again for every message.
            self._pause_until = time.monotonic() + self.respawn_pause
        worker.close()


def worker_main(argv: list[str]) -> int:  # pragma: no cover - the worker process
    """``geomail verify-worker [--user USER]``: become USER (if root), then serve stdin."""
    from geomail import system

    verifier = DKIMVerifier()
    warm_up(verifier)  # every module a verification loads, while the files are readable
    if argv[:1] == ["--user"] and len(argv) > 1:
        system.drop_privileges(argv[1])
    answers = os.dup(sys.stdout.fileno())  # the answers' own descriptor; anything a library
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints goes to stderr, not the pipe
    code = _serve(verifier, sys.stdin.fileno(), answers)
    # Leave without the interpreter's finalization: gevent's patched threading shutdown can
    # need a new hub there, and making one imports modules that a worker which dropped its
    # privileges may not read (a ModuleNotFoundError at exit, seen once in CI). The answers
    # went out with os.write; nothing else is buffered but stderr.
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


def _serve(verifier: DKIMVerifier, requests: int,
           answers: int) -> int:  # pragma: no cover - in the worker
    """The worker's loop: blocking reads and writes, no hub, until the parent goes away."""
    original_signal = get_original("signal", "signal")
    original_signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's
    original_signal(signal.SIGTERM, signal.SIG_DFL)
    original_signal(signal.SIGHUP, signal.SIG_IGN)
    read, write = get_original("os", "read"), get_original("os", "write")
    while True:
        head = _blocking_read(read, requests, _FRAME.size)
        if not head:
            return 0
        (size,) = _FRAME.unpack(head)
        chunks, records, failed, arc = pickle.loads(_blocking_read(read, requests, size))
        message = b"".join(chunks).replace(b"\n", b"\r\n")
        try:
            answer: object = verifier.verify(message, Keys(records, failed), arc)
        except Exception as exc:  # a bug in a verifier must not end the worker
            answer = f"{type(exc).__name__}: {exc}"
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_FRAME.pack(len(data)) + data)
        while view:
            view = view[write(answers, view):]


def _blocking_read(read: Callable[[int, int], bytes], fd: int,
                   size: int) -> bytes:  # pragma: no cover - in the child
    parts, left = [], size
    while left:
        part = read(fd, left)
        if not part:
            return b""
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[gevent.os.nb_write(fd, view):]


def _read_exactly(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = gevent.os.nb_read(fd, min(left, 1 << 20))
        if not part:
            raise EOFError("the worker closed its pipe")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
