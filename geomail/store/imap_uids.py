"""IMAP UIDs of one Maildir folder, kept in Dovecot's ``dovecot-uidlist`` (format version 3),
and its HIGHESTMODSEQ (CONDSTORE, RFC 7162) in ``geomail-modseq`` beside it. Part of the IMAP
foundation (issue #14), not yet served. Every call blocks (file I/O, fsync): the IMAP shell
will run them in the thread pool.

``dovecot-uidlist`` as Dovecot 1.1+ writes it (src/lib-storage/index/maildir/maildir-uidlist.c):

    3 V<uidvalidity> N<nextuid> G<mailbox guid, 32 hex>
    <uid> [<key><value> ...] :<file name>

UIDs ascending, one line per message; other header fields and per-message extension fields
(``W<vsize>``, ``G<guid>``...) are kept as they were. Version 1 (Courier's
``courierimapuiddb``: ``1 <uidvalidity> <nextuid>`` then ``<uid> <name>``) is read too; we
always write version 3. Messages are keyed by their base name (before ``:2,``), as Dovecot
does, so flag changes do not change UIDs; Dovecot can take over the folder with the same UIDs.

Dovecot keeps modseqs in its index, which we do not write; ``geomail-modseq`` holds
``1 V<uidvalidity> M<highestmodseq>`` (reset when UIDVALIDITY changes). Per-message modseqs
are later work.

Durability: every change is written whole (temp file, fsync, rename, directory fsync,
``safeio.write_atomic``) before the call returns, under an flock on ``geomail-uidlist.lock``,
so no UID is handed out that a crash could give again, and NEXTUID never goes back. A temp file
left by a crash (``.tmp.*``) is removed under the lock. Not coordinated with a running Dovecot
(it locks with ``dovecot-uidlist.lock``, a dotlock): one server owns a folder at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from geomail.errors import StoreError
from geomail.safeio import write_atomic
from geomail.store.imap_cache import IMAPCache

UIDLIST_NAME = "dovecot-uidlist"
MODSEQ_NAME = "geomail-modseq"
LOCK_NAME = "geomail-uidlist.lock"
MAX_UID = 2**32 - 2  # Dovecot: a UID must stay below (uint32_t)-1
MAX_MODSEQ = 2**63 - 1  # RFC 7162 7
_EXT_KEY = re.compile(r"[A-Z]")
_TIME = re.compile(r"(\d+)\.(?:[^.]*?M(\d+))?")


class UidListCorrupt(StoreError):
    """``dovecot-uidlist`` cannot be read; its UIDs cannot be trusted (Dovecot then starts over
    with a new UIDVALIDITY; the caller decides: ``UidMap.rebuild``)."""


@dataclass(slots=True)
class Record:
    uid: int
    filename: str  # as written (may carry ":2,<flags>")
    extensions: str = ""  # " W1234 G..." as read, without the leading space


@dataclass(slots=True)
class UidList:
    """A folder's UIDs: ``records`` by base name, in UID order."""

    uidvalidity: int
    next_uid: int
    guid: str
    records: dict[str, Record] = field(default_factory=dict)
    header_extra: str = ""  # unknown header fields, kept

    def copy(self) -> UidList:
        """A copy whose records can change without changing this one (records are not
        changed in place, only added and removed)."""
        return UidList(self.uidvalidity, self.next_uid, self.guid, dict(self.records),
                       self.header_extra)

    def uid(self, basename: str) -> int | None:
        record = self.records.get(basename)
        return record.uid if record else None

    def render(self) -> bytes:
        header = f"3 V{self.uidvalidity} N{self.next_uid} G{self.guid}"
        lines = [header + (f" {self.header_extra}" if self.header_extra else "")]
        for record in self.records.values():
            ext = f" {record.extensions}" if record.extensions else ""
            lines.append(f"{record.uid}{ext} :{record.filename}")
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def base_name(filename: str) -> str:
    """A Maildir file name without its info (``:2,<flags>``)."""
    return filename.partition(":")[0]


def arrival_key(basename: str) -> tuple[int, int, str]:
    """Sort key for arrival order: the delivery second and microsecond of a Maildir name
    (``<sec>.M<usec>P<pid>...``), then the name."""
    match = _TIME.match(basename)
    if not match:
        return (2**63, 0, basename)
    return (int(match[1]), int(match[2] or 0), basename)


def parse_uidlist(data: bytes) -> UidList:
    """Parse ``dovecot-uidlist`` (version 3, or 1); ``UidListCorrupt`` when it is broken."""
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise UidListCorrupt("empty uidlist")
    head = lines[0].split(" ")
    version = head[0]
    uidvalidity = next_uid = 0
    guid = ""
    extra: list[str] = []
    if version == "1":
        if len(head) != 3 or not all(_digits(x) for x in head[1:]):
            raise UidListCorrupt("bad version 1 header")
        uidvalidity, next_uid = int(head[1]), int(head[2])
    elif version == "3":
        for item in head[1:]:
            if not item:
                continue
            key, value = item[0], item[1:]
            if key == "V" and _digits(value):
                uidvalidity = int(value)
            elif key == "N" and _digits(value):
                next_uid = int(value)
            elif key == "G" and re.fullmatch(r"[0-9a-f]{32}", value):
                guid = value
            else:
                extra.append(item)
    else:
        raise UidListCorrupt(f"unknown uidlist version {version[:10]!r}")
    if not 0 < uidvalidity < 2**32 or not 0 < next_uid <= MAX_UID + 1:
        raise UidListCorrupt("bad UIDVALIDITY or next UID")
    result = UidList(uidvalidity, next_uid, guid or os.urandom(16).hex(), {}, " ".join(extra))
    last = 0
    for number, line in enumerate(lines[1:], 2):
        uid_text, sep, rest = line.partition(" ")
        if not sep or not _digits(uid_text):
            raise UidListCorrupt(f"line {number}: bad UID")
        uid = int(uid_text)
        if not last < uid <= MAX_UID:
            raise UidListCorrupt(f"line {number}: UIDs not ascending")
        last = uid
        extensions = ""
        if version == "3":
            ext, colon, filename = rest.partition(":")
            if not colon:
                raise UidListCorrupt(f"line {number}: no file name")
            fields = ext.split()
            if not all(_EXT_KEY.match(f) for f in fields):
                raise UidListCorrupt(f"line {number}: bad extension field")
            extensions = " ".join(fields)
        else:
            filename = rest
        if not filename or "/" in filename:
            raise UidListCorrupt(f"line {number}: bad file name")
        base = base_name(filename)
        result.records.pop(base, None)  # Dovecot: a later line for the same file wins
        result.records[base] = Record(uid, filename, extensions)
    # Never hand out a UID already written, whatever the header says.
    result.next_uid = max(result.next_uid, last + 1)
    return result


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20


@dataclass(frozen=True, slots=True)
class Sync:
    """What ``UidMap.synchronize`` did: the current list, the base names newly given UIDs (in
    UID order) and the UIDs forgotten (expunged by someone, as far as the list knows)."""

    uidlist: UidList
    added: tuple[str, ...]
    removed: tuple[int, ...]


class UidMap:
    """The UID list and modseq counter of one Maildir folder at ``root`` (blocking calls)."""

    def __init__(self, root: str, clock: Callable[[], float] = time.time,
                 cache: IMAPCache | None = None) -> None:
        self.root = root
        self._clock = clock
        self._cache = cache  # parsed lists shared by the process's sessions

    @property
    def path(self) -> str:
        return f"{self.root}/{UIDLIST_NAME}"

    def load(self) -> UidList | None:
        """The list as on disk, None when there is none yet (no lock: renames are atomic)."""
        try:
            if self._cache is not None:
                parsed = self._cache.parsed(self.path, parse_uidlist)
                return parsed.copy() if parsed is not None else None
            with open(self.path, "rb") as handle:
                return parse_uidlist(handle.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {UIDLIST_NAME}: {exc.strerror}") from exc

    def synchronize(self, present: Iterable[str]) -> Sync:
        """Make the list match the folder: ``present`` are its file names (with or without
        info), new ones get UIDs in arrival order (``arrival_key``), absent ones are forgotten.
        Written durably before returning when anything changed; creates the list (with a new
        UIDVALIDITY) when there is none."""
        with self._locked():
            current = self.load()
            created = current is None
            uidlist = current if current is not None else self._new()
            names = {base_name(name): name for name in present}
            removed = tuple(r.uid for b, r in uidlist.records.items() if b not in names)
            for base in [b for b in uidlist.records if b not in names]:
                del uidlist.records[base]
            added = sorted((b for b in names if b not in uidlist.records), key=arrival_key)
            self._assign(uidlist, added, names)
            if created or added or removed:
                self._write(uidlist)
            return Sync(uidlist, tuple(added), removed)

    def assign(self, names: Sequence[str]) -> dict[str, int]:
        """Give UIDs to ``names`` (file names, in this order) not yet listed, e.g. messages
        this server just appended or moved in; their UIDs (APPENDUID/COPYUID, RFC 4315)."""
        with self._locked():
            uidlist = self.load() or self._new()
            bases = {base_name(name): name for name in names}
            new = [b for b in bases if b not in uidlist.records]
            self._assign(uidlist, new, bases)
            self._write(uidlist)
            return {b: uidlist.records[b].uid for b in bases}

    def forget(self, names: Iterable[str]) -> None:
        """Drop ``names`` (expunged); their UIDs are never given again (NEXTUID stays)."""
        with self._locked():
            uidlist = self.load()
            if uidlist is None:
                return
            gone = [b for b in {base_name(n) for n in names} if b in uidlist.records]
            for base in gone:
                del uidlist.records[base]
            if gone:
                self._write(uidlist)

    def rebuild(self) -> UidList:
        """Start over after ``UidListCorrupt``: an empty list with a new UIDVALIDITY (greater
        than the old one when it can be read); the caller then synchronizes."""
        with self._locked():
            uidlist = self._new()
            old = self._old_uidvalidity()
            if old >= uidlist.uidvalidity:
                uidlist.uidvalidity = min(old + 1, 2**32 - 1)
            self._write(uidlist)
            return uidlist

    def _old_uidvalidity(self) -> int:
        """The UIDVALIDITY in a list's header, even when the rest is broken; 0 if unreadable."""
        try:
            with open(self.path, "rb") as handle:
                head = handle.readline(200).decode("ascii", "replace").split()
        except OSError:
            return 0
        if head[:1] == ["1"] and len(head) > 1 and _digits(head[1]):
            return int(head[1])
        for item in head[1:] if head[:1] == ["3"] else ():
            if item[:1] == "V" and _digits(item[1:]):
                return int(item[1:])
        return 0

    # ---- HIGHESTMODSEQ (RFC 7162 3.1.1) --------------------------------------------------

    def highest_modseq(self, uidvalidity: int) -> int:
        """The folder's HIGHESTMODSEQ for this UIDVALIDITY (1 when none was kept)."""
        return self._read_modseq(uidvalidity)

    def next_modseq(self, uidvalidity: int, count: int = 1) -> int:
        """Reserve ``count`` modseqs, durably; the highest one reserved (the new
        HIGHESTMODSEQ). Never goes back, even across a crash."""
        if count < 1:
            raise ValueError("count must be positive")
        with self._locked():
            value = self._read_modseq(uidvalidity) + count
            if value > MAX_MODSEQ:
                raise StoreError("modseq space exhausted")
            write_atomic(f"{self.root}/{MODSEQ_NAME}", f"1 V{uidvalidity} M{value}\n".encode())
            return value

    def _read_modseq(self, uidvalidity: int) -> int:
        try:
            with open(f"{self.root}/{MODSEQ_NAME}", "rb") as handle:
                text = handle.read(200).decode("ascii", "replace")
        except FileNotFoundError:
            return 1
        match = re.fullmatch(r"1 V(\d{1,10}) M(\d{1,19})\n", text)
        if match is None:
            raise StoreError(f"{MODSEQ_NAME} is corrupt")
        return int(match[2]) if int(match[1]) == uidvalidity else 1

    # ---- internals ------------------------------------------------------------------------

    def _new(self) -> UidList:
        # Dovecot also takes the time: a list lost and made again gets a new UIDVALIDITY.
        uidvalidity = min(max(int(self._clock()), 1), 2**32 - 1)
        return UidList(uidvalidity, 1, os.urandom(16).hex())

    def _assign(self, uidlist: UidList, bases: Sequence[str], names: dict[str, str]) -> None:
        if uidlist.next_uid + len(bases) - 1 > MAX_UID:
            raise StoreError("UID space exhausted; the folder needs a new UIDVALIDITY")
        for base in bases:
            uidlist.records[base] = Record(uidlist.next_uid, base_name(names[base]))
            uidlist.next_uid += 1

    def _write(self, uidlist: UidList) -> None:
        try:
            write_atomic(self.path, uidlist.render(), mode=0o600)
        except OSError as exc:
            raise StoreError(f"cannot write {UIDLIST_NAME}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(f"{self.root}/{LOCK_NAME}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot lock {UIDLIST_NAME}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._sweep()
            yield
        finally:
            os.close(fd)

    def _sweep(self) -> None:
        """Remove temp files a crashed writer left (we hold the lock: none is live)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.root):
                if name.startswith(".tmp.") and name.endswith(
                        (f".{UIDLIST_NAME}", f".{MODSEQ_NAME}")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.root}/{name}")
