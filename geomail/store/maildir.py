"""Maildir mailboxes (https://cr.yp.to/proto/maildir.html), named with Dovecot's S= and W= sizes."""

from __future__ import annotations

import itertools
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import gevent

from geomail.envelope import Body
from geomail.errors import MailboxBusy, StoreError
from geomail.safeio import DirSyncer, Runner, fsync_dir, run_blocking
from geomail.store._common import (
    CHUNK,
    ReadAhead,
    close_quietly,
    digest,
    lock_session,
    make_dirs,
    mkdir,
    os_error,
    read_message,
    remember,
    run_claimed,
    split_mailbox,
    stream_fd,
    unlink_quietly,
    valid_uid,
    write_chunks,
)
from geomail.store.base import Copy, StoredMessage

LOCK_NAME = "geomail-pop3.lock"  # in the maildir itself; flocked for a POP3 session
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_SUBDIRS = ("tmp", "new", "cur")
_TIME = re.compile(r"(\d+)\.([^.]*)")
_USEC = re.compile(r"M(\d+)")
# Process-wide on purpose: the Q field counts this process's deliveries (the P field names the
# process), so two stores in one process must not restart it; R is random per name (seeded
# once: an os.urandom per message is a system call each). Neither carries state anything
# reads back.
_counter = itertools.count(1)
_random = random.Random(os.urandom(16))


class MaildirStore:
    """One Maildir per user, ``<path>/<domain>/<local>/{tmp,new,cur}``.

    File names follow the Maildir spec and Dovecot:
    ``<sec>.M<usec>P<pid>Q<n>R<random>.<host>,S=<octets>,W=<octets with CRLF>[:2,<flags>]``.
    A POP3 session flocks ``<maildir>/geomail-pop3.lock``.
    """

    def __init__(self, path: str, hostname: str, dir_syncer: DirSyncer | None = None,
                 reader: Runner = run_blocking) -> None:
        self.path = os.path.abspath(path)
        self.hostname = hostname
        self._host = hostname.replace("/", "\\057").replace(":", "\\072")
        self._syncer = dir_syncer or DirSyncer()  # shared: concurrent deliveries, one fsync
        self._roots: dict[str, str] = {}  # mailbox -> maildir, validated
        self._ready: set[str] = set()  # maildirs whose tmp/new/cur were seen or made
        self._held: set[str] = set()  # maildirs with a POP3 session in this process
        self._reader = reader  # the App's read pool (Workers.read)
        self._listings: Listings = {}  # see _listing

    def mailbox_path(self, mailbox: str) -> str:
        """The maildir of ``mailbox`` (not created); ``StoreError`` for an unsafe name."""
        root = self._roots.get(mailbox)
        if root is None:
            domain, local = split_mailbox(mailbox)
            root = remember(self._roots, mailbox, f"{self.path}/{domain}/{local}")
        return root

    # ---- delivery -------------------------------------------------------------------------

    def deliver(self, copies: Sequence[Copy], body: Body) -> None:
        """Write every copy to ``tmp/``, fsync, rename into ``new/``, fsync ``new/``; or none."""
        if not copies:
            return
        now = time.time()
        stamp = f"{int(now)}.M{int(now % 1 * 1_000_000):06d}P{os.getpid()}Q"
        jobs = []
        for copy in copies:
            prefix = copy.prefix
            size = len(prefix) + body.size
            wsize = len(prefix) + prefix.count(b"\n") + body.crlf_size
            name = (f"{stamp}{next(_counter)}R{_random.getrandbits(32):08x}.{self._host}"
                    f",S={size},W={wsize}")
            root = self.mailbox_path(copy.mailbox)
            if copy.folder:  # a Maildir++ folder: "<maildir>/.<name>" (names are ours)
                root = f"{root}/.{copy.folder}"
            jobs.append((copy.mailbox, root, name, prefix, size))
        # All file work for all copies in one pool call: a pool round trip costs about as
        # much as the writes themselves.
        run_blocking(self._write_copies, jobs, body)
        new_dirs = list(dict.fromkeys(f"{job[1]}/new" for job in jobs))
        try:
            self._sync_dirs(new_dirs)
        except OSError as exc:
            run_blocking(_unlink_all, [f"{job[1]}/new/{job[2]}" for job in jobs])
            raise os_error(f"sync {new_dirs[0]}", exc) from exc

    def _write_copies(self, jobs: list[tuple[str, str, str, bytes, int]], body: Body) -> None:
        written: list[str] = []
        mailbox = jobs[0][0]
        try:
            for mailbox, root, name, prefix, size in jobs:  # noqa: B007 - mailbox: for errors
                try:
                    written.append(self._write_one(root, name, prefix, body, size))
                except FileNotFoundError:
                    self._ready.discard(root)  # a directory vanished: make it again, retry once
                    written.append(self._write_one(root, name, prefix, body, size))
        except BaseException as exc:
            for path in written:
                unlink_quietly(path)
            if isinstance(exc, OSError):
                raise os_error(f"deliver to {mailbox}", exc) from exc
            raise

    def _write_one(self, root: str, name: str, prefix: bytes, body: Body, size: int) -> str:
        if root not in self._ready:
            self._make_maildir(root)
        tmp, final = f"{root}/tmp/{name}", f"{root}/new/{name}"
        fd = os.open(tmp, _CREATE, 0o600)
        try:
            if write_chunks(fd, prefix, body.chunks()) != size:
                raise StoreError("cannot deliver: the body changed size while being written")
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, final)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            unlink_quietly(tmp)
            raise
        return final

    def _make_maildir(self, root: str) -> None:
        folder = os.path.basename(root).startswith(".")
        parents = (os.path.dirname(os.path.dirname(root)),) if folder else ()
        created = make_dirs(self.path, *parents, os.path.dirname(root), root)  # to fsync
        if any([mkdir(f"{root}/{sub}") for sub in _SUBDIRS]):
            created.append(root)
        if folder and not os.path.exists(f"{root}/maildirfolder"):  # Maildir++: a folder
            os.close(os.open(f"{root}/maildirfolder", os.O_CREAT | os.O_WRONLY, 0o600))
            created.append(root)
        if folder:
            for sub in _SUBDIRS:  # the mailbox itself, so POP3 and IMAP find its inbox
                if mkdir(f"{os.path.dirname(root)}/{sub}"):
                    created.append(os.path.dirname(root))
        for directory in created:
            fsync_dir(directory)
        self._ready.add(root)

    def _sync_dirs(self, dirs: list[str]) -> None:
        if len(dirs) == 1:
            self._syncer.sync(dirs[0])
            return
        waits = [gevent.spawn(_sync_catching, self._syncer, d) for d in dirs]
        gevent.joinall(waits)
        for wait in waits:
            if wait.value is not None:
                raise wait.value

    # ---- POP3 -----------------------------------------------------------------------------

    def open_maildrop(self, mailbox: str) -> MaildirDrop:
        """Lock ``mailbox`` for one POP3 session and list it; ``MailboxBusy`` if in use."""
        root = self.mailbox_path(mailbox)
        if root in self._held:
            raise MailboxBusy(f"{mailbox} is in use by another session")
        self._held.add(root)
        try:
            lock_fd, found = run_claimed(_release_snapshot, _snapshot, root, self._listings,
                                         runner=self._reader)
        except OSError as exc:
            self._held.discard(root)
            raise os_error(f"open {mailbox}", exc) from exc
        except BaseException:
            self._held.discard(root)
            raise
        return MaildirDrop(self._held, root, lock_fd, found, self._reader)


class _Found(NamedTuple):
    order: tuple[int, int, str]  # delivery second, microsecond, name
    uid: str
    size: int  # with CRLF line endings
    key: str  # "new/<name>" or "cur/<name>"
    stored: int | None  # octets on disk, if known without a stat


Listings = dict[str, tuple[tuple[int, int], list[_Found]]]  # maildir -> (mtimes, listing)


class MaildirDrop:
    """A POP3 session's snapshot of one Maildir, oldest message first."""

    def __init__(self, held: set[str], root: str, lock_fd: int | None,
                 found: list[_Found], reader: Runner = run_blocking) -> None:
        self.messages: Sequence[StoredMessage] = tuple(
            StoredMessage(f.uid, f.size, f.key) for f in found)
        self._held = held
        self._root = root
        self._lock_fd = lock_fd
        self._keys = [f.key for f in found]  # updated when a message is found moved
        self._stored = [f.stored for f in found]
        self._reader = reader
        self._ahead = ReadAhead(self._stored, self._read_small, reader)
        self._closed = False

    def read(self, index: int) -> Iterator[bytes]:
        """The message as stored (LF line endings), in chunks of at most 256 KiB."""
        self.messages[index]  # IndexError for a bad index
        if self._closed:
            raise StoreError("maildrop closed")
        yield from read_message(self._ahead, index, lambda: self._stream(index))

    def _stream(self, index: int) -> Iterator[bytes]:
        fd = self._reader(self._open, index)
        try:
            yield from stream_fd(fd, 0, None, reader=self._reader)
        finally:
            os.close(fd)

    def _read_small(self, index: int) -> bytes:
        fd = self._open(index)
        try:
            want = (self._stored[index] or 0) + 1
            data = os.read(fd, want)
            if len(data) < want:  # the usual case: a short read is the end of the file
                return data
            parts = [data]  # larger than its name says
            while data := os.read(fd, CHUNK):
                parts.append(data)
            return b"".join(parts)
        finally:
            os.close(fd)

    def _open(self, index: int) -> int:
        try:
            return os.open(f"{self._root}/{self._keys[index]}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self._relocate(index):
                raise StoreError("message no longer exists") from None
        return os.open(f"{self._root}/{self._keys[index]}", os.O_RDONLY | os.O_CLOEXEC)

    def _relocate(self, index: int) -> bool:
        """Find a message another program moved or re-flagged (same base name)."""
        base = self._keys[index].split("/", 1)[1].partition(":")[0]
        for sub in ("cur", "new"):
            try:
                names = os.listdir(f"{self._root}/{sub}")
            except FileNotFoundError:
                continue
            for name in names:
                if name.partition(":")[0] == base:
                    self._keys[index] = f"{sub}/{name}"
                    return True
        return False

    def commit(self, deleted: set[int], retrieved: set[int]) -> None:
        """Unlink ``deleted``; move ``retrieved`` to ``cur/`` with the S (seen) flag; durable."""
        if self._closed:
            raise StoreError("maildrop closed")
        if deleted or retrieved:
            try:
                run_blocking(self._commit, sorted(deleted), sorted(retrieved - deleted))
            except OSError as exc:
                raise os_error("update the mailbox", exc) from exc

    def _commit(self, deleted: list[int], seen: list[int]) -> None:
        touched: set[str] = set()
        failure: OSError | None = None
        for index, delete in [(i, True) for i in deleted] + [(i, False) for i in seen]:
            try:
                touched |= self._update(index, delete)
            except OSError as exc:
                failure = failure or exc  # go on with the others, report the first fault
        # Deletions are made durable. A "seen" mark lost in a crash only shows a message as
        # unread again, so a session that deleted nothing costs no directory fsync.
        for sub in sorted(touched) if deleted else ():
            fsync_dir(f"{self._root}/{sub}")
        if failure is not None:
            raise failure

    def _update(self, index: int, delete: bool) -> set[str]:
        """Delete or mark one message seen; the subdirectories changed (blocking)."""
        for attempt in (0, 1):
            sub, name = self._keys[index].split("/", 1)
            try:
                if delete:
                    os.unlink(f"{self._root}/{sub}/{name}")
                    return {sub}
                flagged = _with_seen(name)
                if sub == "cur" and flagged == name:
                    return set()
                os.rename(f"{self._root}/{sub}/{name}", f"{self._root}/cur/{flagged}")
                self._keys[index] = f"cur/{flagged}"
                return {sub, "cur"}
            except FileNotFoundError:
                if attempt or not self._relocate(index):
                    break  # removed meanwhile: not an error
        return set()

    def close(self) -> None:
        """Release the session lock; idempotent, and never switches greenlets (safe in finally)."""
        if not self._closed:
            self._closed = True
            self._held.discard(self._root)
            close_quietly(self._lock_fd)
            self._lock_fd = None


def _snapshot(root: str, listings: Listings) -> tuple[int | None, list[_Found]]:
    try:
        lock_fd = lock_session(f"{root}/{LOCK_NAME}")
    except FileNotFoundError:
        return None, []  # no mail delivered yet: an empty maildrop
    try:
        return lock_fd, _listing(root, listings)
    except BaseException:
        os.close(lock_fd)
        raise


LISTING_QUIET = 2.0
MAX_LISTINGS = 1000


def _listing(root: str, listings: Listings) -> list[_Found]:
    """The messages of ``root``. ``listings`` (the store's) holds the last listing of each
    maildir, keyed by the modification times of new/ and cur/: a mailbox unchanged since the
    last login is not listed and parsed again (a large maildir is slow to parse). Only
    listings of directories quiet for LISTING_QUIET seconds are kept, because a directory's
    mtime ticks coarsely and two changes may share one value."""
    key = (_mtime_ns(f"{root}/new"), _mtime_ns(f"{root}/cur"))
    cached = listings.get(root)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    found = []
    for sub in ("new", "cur"):
        try:
            names = os.listdir(f"{root}/{sub}")
        except FileNotFoundError:
            continue
        for name in names:
            if not name.startswith(".") and (item := _examine(root, sub, name)):
                found.append(item)
    found.sort()
    seen: set[str] = set()
    for i, item in enumerate(found):
        if item.uid in seen:  # the same base name in new/ and cur/
            found[i] = item._replace(uid=digest(item.key.encode("utf-8", "surrogateescape")))
        seen.add(found[i].uid)
    if time.time_ns() - max(key) > LISTING_QUIET * 1e9:
        if len(listings) >= MAX_LISTINGS:
            listings.clear()
        listings[root] = (key, found)
    return list(found)


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def _release_snapshot(snapshot: tuple[int | None, list[_Found]]) -> None:
    close_quietly(snapshot[0])


def _examine(root: str, sub: str, name: str) -> _Found | None:
    """What the name tells about a message; reads the file only when the name lacks W=."""
    base = name.partition(":")[0]
    size = stored = None
    for field in base.split(",")[1:]:
        value = field[2:]
        if value.isascii() and value.isdigit():
            if field.startswith("W="):
                size = int(value)
            elif field.startswith("S="):
                stored = int(value)
    match = _TIME.match(base)
    order = (0, 0, name)
    if match:
        usec = _USEC.search(match[2])
        order = (int(match[1]), int(usec[1]) if usec else 0, name)
    if size is None or not match:
        path = f"{root}/{sub}/{name}"
        try:
            if size is None:
                stored, size = _measure(path)
            if not match:
                order = (int(os.stat(path).st_mtime), 0, name)
        except (FileNotFoundError, IsADirectoryError):
            return None  # removed meanwhile, or not a message
    uid = base if valid_uid(base) else digest(base.encode("utf-8", "surrogateescape"))
    return _Found(order, uid, size, f"{sub}/{name}", stored)


def _measure(path: str) -> tuple[int, int]:
    """Octets of a file, and with CRLF line endings."""
    stored = lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            stored += len(chunk)
            lines += chunk.count(b"\n")
    return stored, stored + lines


def _with_seen(name: str) -> str:
    """``name`` with the Maildir S flag added (flags stay in ASCII order)."""
    base, sep, info = name.partition(":")
    if not sep:
        return f"{base}:2,S"
    if not info.startswith("2,") or "S" in info[2:]:
        return name
    return f"{base}:2,{''.join(sorted(info[2:] + 'S'))}"


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        unlink_quietly(path)


def _sync_catching(syncer: DirSyncer, directory: str) -> OSError | None:
    try:
        syncer.sync(directory)
    except OSError as exc:
        return exc
    return None
