"""mbox mailboxes (mboxrd), locked with fcntl and a dotlock, described by a sidecar index.

Layout for ``alice@example.com`` under the store path::

    example.com/alice                   the mbox (mboxrd: From_ lines, >From quoting)
    example.com/alice.lock              dotlock, held with the fcntl lock for every change
    example.com/.alice.index            the index (format in ``_mboxrd``): offsets, sizes, UIDLs
    example.com/.alice.pop3.lock        flocked for the length of a POP3 session

So local parts may not start with '.' nor end with '.lock'. The fcntl lock is an open file
description lock (Linux), so closing another descriptor of the mbox in this process cannot drop
it; it conflicts with the POSIX fcntl locks of other mail programs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import gevent
from gevent.lock import BoundedSemaphore

from geomail.envelope import Body
from geomail.errors import MailboxBusy, StoreError
from geomail.safeio import Runner, fsync_dir, run_blocking, write_atomic
from geomail.store._common import (
    ChunkWriter,
    ReadAhead,
    close_quietly,
    lock_session,
    make_dirs,
    os_error,
    read_message,
    remember,
    run_claimed,
    split_mailbox,
    stream_fd,
    unlink_quietly,
)
from geomail.store._mboxrd import (
    UNQUOTE,
    Entry,
    LineRewriter,
    Quoter,
    assign_uids,
    consistent,
    entry_line,
    from_line,
    header_line,
    index_lines,
    read_index,
    scan,
    state_of,
    tail_state,
    unquote,
)
from geomail.store.base import Copy, StoredMessage
from geomail.units import MiB

STALE_DOTLOCK = 300.0  # seconds; an older dotlock was left by a crashed program
_BUSY = object()
_OFD = getattr(fcntl, "F_OFD_SETLK", None) if struct.calcsize("P") == 8 else None


class _Target(NamedTuple):
    """The files of one mailbox."""

    mailbox: str
    directory: str
    mbox: str
    dotlock: str
    index_file: str
    session: str


class _Handle(NamedTuple):
    """A locked, open mbox."""

    fd: int
    dotlock: str

    def release(self) -> None:
        close_quietly(self.fd)  # drops the fcntl lock
        unlink_quietly(self.dotlock)


class MboxStore:
    """One mbox file per user, ``<path>/<domain>/<local>``."""

    def __init__(self, path: str, hostname: str, lock_timeout: float = 20.0,
                 reader: Runner = run_blocking) -> None:
        self.reader = reader  # the App's read pool (Workers.read), for POP3 reads
        self.path = os.path.abspath(path)
        self.hostname = hostname
        self.lock_timeout = lock_timeout  # then "mailbox locked"
        self._targets: dict[str, _Target] = {}
        self._ready: set[str] = set()  # mbox files known to exist
        self._mutex: dict[str, BoundedSemaphore] = {}  # one change at a time in this process
        self._held: set[str] = set()  # mboxes with a POP3 session in this process

    def mailbox_path(self, mailbox: str) -> str:
        """The mbox file of ``mailbox`` (not created); ``StoreError`` for an unsafe name."""
        return self._target(mailbox).mbox

    def _target(self, mailbox: str) -> _Target:
        target = self._targets.get(mailbox)
        if target is None:
            domain, local = split_mailbox(mailbox)
            if local.endswith(".lock"):
                raise StoreError(f"invalid mailbox name {mailbox!r} (would be a dotlock)")
            directory = f"{self.path}/{domain}"
            mbox = f"{directory}/{local}"
            target = remember(self._targets, mailbox, _Target(
                mailbox, directory, mbox, f"{mbox}.lock", f"{directory}/.{local}.index",
                f"{directory}/.{local}.pop3.lock"))
        return target

    # ---- delivery -------------------------------------------------------------------------

    def deliver(self, copies: Sequence[Copy], body: Body) -> None:
        """Append every copy (mboxes locked together) and fsync; on failure truncate them all."""
        if not copies:
            return
        groups: dict[_Target, list[bytes]] = {}
        for copy in copies:
            groups.setdefault(self._target(copy.mailbox), []).append(copy.prefix)
        plan = sorted(groups.items())  # a fixed lock order: no deadlock between deliveries
        self._locked([t for t, _ in plan], True, self._append, plan, body, time.time())

    def _append(self, handles: list[_Handle], plan: list[tuple[_Target, list[bytes]]],
                body: Body, now: float) -> None:
        undo: list[tuple[int, int]] = []
        done = []
        try:
            for handle, (target, prefixes) in zip(handles, plan, strict=True):
                st = os.fstat(handle.fd)
                undo.append((handle.fd, st.st_size))
                index: bool | None = tail_state(target.index_file) == state_of(st)
                if not index and not st.st_size:
                    index = None  # a new or emptied mbox: start a new index
                writer = ChunkWriter(handle.fd)
                offset = st.st_size
                if offset:
                    pad = _padding(handle.fd, offset)
                    writer.add(pad)
                    offset += len(pad)
                entries = []
                for prefix in prefixes:
                    separator = from_line(prefix, now)
                    writer.add(separator)
                    quoter = Quoter()
                    for piece in quoter.pieces(prefix, body.chunks()):
                        writer.add(piece)
                    writer.add(b"\n")
                    dig = quoter.digest.hexdigest()
                    data_off = offset + len(separator)
                    entries.append(Entry(offset, data_off, quoter.data_len, quoter.crlf_size,
                                         dig, dig))
                    offset = data_off + quoter.data_len + 1
                writer.flush()
                os.fsync(handle.fd)
                done.append((handle, target, entries, index, offset))
        except BaseException as exc:
            for fd, size in undo:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
            if isinstance(exc, OSError):
                raise os_error(f"deliver to {target.mailbox}", exc) from exc
            raise
        for handle, target, entries, index, end in done:
            # The index is a cache: if this fails it no longer matches the mbox and is rebuilt.
            with contextlib.suppress(OSError):
                state = state_of(os.fstat(handle.fd))
                if state[1] != end:  # a program that does not lock wrote too: rebuild later
                    index = False
                _extend_index(target.index_file, entries, state, index)

    def _make_mbox(self, target: _Target) -> None:
        created = make_dirs(self.path, target.directory)  # to fsync
        try:
            os.close(os.open(target.mbox, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600))
            created.append(target.directory)
        except FileExistsError:
            pass
        for directory in created:
            fsync_dir(directory)
        self._ready.add(target.mbox)

    # ---- locking --------------------------------------------------------------------------

    def _locked(self, targets: list[_Target], create: bool, fn: Callable[..., Any], *args: Any,
                release: Callable[[Any], None] | None = None) -> Any:
        """Run ``fn(handles, *args)`` in the threadpool with every target locked; a handle is
        None for a missing mbox unless ``create``. Waits at most ``lock_timeout`` for locks.
        ``release`` frees a result the caller did not live to receive."""

        def free(result: Any) -> None:
            if result is not _BUSY and release is not None:
                release(result)

        def call() -> Any:
            return run_claimed(free, self._call_locked, targets, create, fn, args)

        acquired = []
        try:
            for target in targets:
                mutex = self._mutex.setdefault(target.mbox, BoundedSemaphore())
                mutex.acquire()
                acquired.append(mutex)
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.005
            while (result := call()) is _BUSY:
                if time.monotonic() >= deadline:
                    raise StoreError("mailbox locked")
                gevent.sleep(delay)  # held by another program: poll, off the threadpool
                delay = min(delay * 2, 0.25)
            return result
        finally:
            for mutex in reversed(acquired):
                mutex.release()

    def _call_locked(self, targets: list[_Target], create: bool, fn: Callable[..., Any],
                     args: tuple[Any, ...]) -> Any:
        handles: list[_Handle | None] = []
        try:
            for target in targets:
                try:
                    handle = self._lock(target, create)
                except OSError as exc:
                    raise os_error(f"lock {target.mailbox}", exc) from exc
                if handle is _BUSY:
                    return _BUSY
                handles.append(handle)  # type: ignore[arg-type]
            return fn(handles, *args)
        finally:
            for handle in reversed(handles):
                if handle is not None:
                    handle.release()

    def _lock(self, target: _Target, create: bool) -> _Handle | object | None:
        if create and target.mbox not in self._ready:
            self._make_mbox(target)
        try:
            return _lock_file(target)
        except FileNotFoundError:
            if not create:
                return None  # no mailbox yet
            self._ready.discard(target.mbox)  # removed meanwhile: make it again, once
        self._make_mbox(target)
        return _lock_file(target)

    # ---- POP3 -----------------------------------------------------------------------------

    def open_maildrop(self, mailbox: str) -> MboxDrop:
        """Lock ``mailbox`` for one POP3 session and index it; ``MailboxBusy`` if in use."""
        target = self._target(mailbox)
        if target.mbox in self._held:
            raise MailboxBusy(f"{mailbox} is in use by another session")
        self._held.add(target.mbox)
        session_fd = None
        try:
            session_fd = run_claimed(close_quietly, _lock_session_if_any, target.session)
            entries, read_fd = self._locked([target], False, self._snapshot, target,
                                            release=lambda snapshot: close_quietly(snapshot[1]))
        except BaseException as exc:
            self._held.discard(target.mbox)
            close_quietly(session_fd)
            if isinstance(exc, OSError):
                raise os_error(f"open {mailbox}", exc) from exc
            raise
        return MboxDrop(self, target, session_fd, read_fd, entries)

    def _snapshot(self, handles: list[_Handle | None],
                  target: _Target) -> tuple[list[Entry], int | None]:
        if handles[0] is None:
            return [], None
        entries = _current_entries(handles[0].fd, target)
        return entries, os.open(target.mbox, os.O_RDONLY | os.O_CLOEXEC)

    def _rewrite(self, handles: list[_Handle | None], target: _Target, uids: set[str]) -> None:
        """Replace the mbox by a copy without the messages ``uids`` (crash-safe, blocking)."""
        if handles[0] is None:
            return  # the mailbox is gone: nothing left to delete
        src = handles[0].fd
        st = os.fstat(src)
        entries = _current_entries(src, target)  # also what was delivered since the snapshot
        if not any(entry.uid in uids for entry in entries):
            return
        ends = [entry.start for entry in entries[1:]] + [st.st_size]
        tmp = f"{target.directory}/.{os.path.basename(target.mbox)}.new.{os.urandom(4).hex()}"
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            kept = []
            out = _copy(src, dst, 0, entries[0].start)  # whatever precedes the first message
            for entry, end in zip(entries, ends, strict=True):
                if entry.uid not in uids:
                    shift = out - entry.start
                    kept.append(Entry(entry.start + shift, entry.data_off + shift,
                                      entry.data_len, entry.size, entry.uid, entry.digest))
                    out += _copy(src, dst, entry.start, end - entry.start)
            os.fsync(dst)
            new_state = state_of(os.fstat(dst))
            os.close(dst)
            dst = -1
            os.rename(tmp, target.mbox)
        except BaseException:
            close_quietly(dst if dst >= 0 else None)
            unlink_quietly(tmp)
            raise
        fsync_dir(target.directory)
        with contextlib.suppress(OSError):
            write_atomic(target.index_file, index_lines(kept, new_state), sync_dir=False)


class MboxDrop:
    """A POP3 session's snapshot of one mbox, in file order."""

    def __init__(self, store: MboxStore, target: _Target, session_fd: int | None,
                 read_fd: int | None, entries: list[Entry]) -> None:
        self.messages: Sequence[StoredMessage] = tuple(
            StoredMessage(entry.uid, entry.size, str(entry.start)) for entry in entries)
        self._store = store
        self._target = target
        self._session_fd = session_fd
        self._read_fd = read_fd  # the file as it was at the snapshot, even once replaced
        self._entries = entries
        self._ahead = ReadAhead([entry.data_len for entry in entries], self._read_small,
                                store.reader)
        self._closed = False

    def read(self, index: int) -> Iterator[bytes]:
        """The message as delivered (unquoted, LF line endings), in chunks of at most 256 KiB."""
        entry = self._entries[index]
        if self._closed or self._read_fd is None:
            raise StoreError("maildrop closed")
        yield from read_message(self._ahead, index, lambda: self._stream(entry))

    def _stream(self, entry: Entry) -> Iterator[bytes]:
        assert self._read_fd is not None
        run_blocking(self._check_start, entry)
        rewriter = LineRewriter(UNQUOTE, rb"\1")
        yield from stream_fd(self._read_fd, entry.data_off, entry.data_len, rewriter.feed,
                             self._store.reader)
        if tail := rewriter.flush():
            yield tail

    def _read_small(self, index: int) -> bytes:
        entry = self._entries[index]
        head = entry.data_off - entry.start
        assert self._read_fd is not None
        data = os.pread(self._read_fd, head + entry.data_len, entry.start)
        if len(data) != head + entry.data_len or not data.startswith(b"From "):
            raise StoreError("mailbox changed on disk; log in again")
        return unquote(data[head:])

    def _check_start(self, entry: Entry) -> None:
        assert self._read_fd is not None
        if os.pread(self._read_fd, 5, entry.start) != b"From ":
            raise StoreError("mailbox changed on disk; log in again")

    def commit(self, deleted: set[int], retrieved: set[int]) -> None:
        """Rewrite the mbox without ``deleted`` (mbox keeps no seen flag); durable."""
        if self._closed:
            raise StoreError("maildrop closed")
        if not deleted:
            return
        uids = {self._entries[i].uid for i in deleted}
        try:
            self._store._locked([self._target], False, self._store._rewrite, self._target, uids)
        except OSError as exc:
            raise os_error("update the mailbox", exc) from exc

    def close(self) -> None:
        """Release the session lock; idempotent, and never switches greenlets (safe in finally)."""
        if not self._closed:
            self._closed = True
            self._store._held.discard(self._target.mbox)
            close_quietly(self._session_fd)
            close_quietly(self._read_fd)


# ---- blocking helpers ------------------------------------------------------------------------


def _lock_file(target: _Target) -> _Handle | object:
    """Dotlock, open and fcntl-lock an mbox without waiting; ``_BUSY`` if someone holds it."""
    if not _take_dotlock(target.dotlock):
        return _BUSY
    try:
        fd = os.open(target.mbox, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            # A file replaced (rewritten) before we got the lock is not the mailbox any more.
            if not _fcntl_lock(fd) or os.stat(target.mbox).st_ino != os.fstat(fd).st_ino:
                os.close(fd)
                unlink_quietly(target.dotlock)
                return _BUSY
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        unlink_quietly(target.dotlock)
        raise
    return _Handle(fd, target.dotlock)


def _take_dotlock(path: str) -> bool:
    for attempt in (0, 1):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            try:
                if attempt or time.time() - os.stat(path).st_mtime < STALE_DOTLOCK:
                    return False
            except FileNotFoundError:
                continue  # released meanwhile
            unlink_quietly(path)  # left by a crashed program
            continue
        try:
            os.write(fd, b"%d\n" % os.getpid())
        finally:
            os.close(fd)
        return True
    return False


def _fcntl_lock(fd: int) -> bool:
    """Try to take a write lock on the whole file: an OFD lock where the kernel has them."""
    try:
        if _OFD is not None:
            fcntl.fcntl(fd, _OFD, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _lock_session_if_any(path: str) -> int | None:
    try:
        return lock_session(path)
    except FileNotFoundError:
        return None  # no domain directory: no mailbox, nothing to lock


def _padding(fd: int, size: int) -> bytes:
    """What makes the mbox end with a blank line before a new From_ line."""
    tail = os.pread(fd, 2, max(0, size - 2))
    if tail.endswith(b"\n\n") or tail == b"\n":
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _extend_index(path: str, entries: list[Entry], state: tuple[int, int, int],
                  mode: bool | None) -> None:
    """Add ``entries`` to a matching index (True), start a new one (None), or leave a stale one
    alone (False), to be rebuilt when the mailbox is opened."""
    if mode is False:
        return
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if mode else os.O_CREAT | os.O_TRUNC)
    lines = [] if mode else [header_line(state)]
    lines += [entry_line(entry, state) for entry in entries]
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, b"".join(lines))
    finally:
        os.close(fd)


def _current_entries(fd: int, target: _Target) -> list[Entry]:
    """The messages of a locked mbox, from its index or, if that is stale, by scanning."""
    st = os.fstat(fd)
    old, state = read_index(target.index_file)
    if state == state_of(st) and consistent(old, st.st_size):
        return assign_uids(old)
    entries = scan(fd, old)
    with contextlib.suppress(OSError):
        write_atomic(target.index_file, index_lines(entries, state_of(st)), sync_dir=False)
    return entries


def _copy(src: int, dst: int, offset: int, length: int) -> int:
    done = 0
    while done < length:
        data = os.pread(src, min(MiB, length - done), offset + done)
        if not data:
            raise StoreError("mailbox changed on disk during the update")
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view):]
        done += len(data)
    return done
