"""IMAP mailboxes on a Maildir++ tree (issue #14): folders, flags, UIDs, MODSEQs, change
detection. Resources layer: every call blocks (file I/O, fsync); the IMAP shell runs them in
the thread pool. No gevent here (IDLE's waiting is ``policy/folder_notify``'s).

Layout (Dovecot's default Maildir++, https://doc.dovecot.org/configuration_manual/
mail_location/Maildir/): INBOX is the maildir itself, mailbox ``A/B`` is ``<maildir>/.A.B``
(modified UTF-7, ``imap_mutf7``) with ``tmp/ new/ cur/`` and an empty ``maildirfolder`` file.

- **Flags** live in the file name's info ``:2,<letters>`` (letters sorted, as Dovecot writes
  them): D \\Draft, F \\Flagged, R \\Answered, S \\Seen, T \\Deleted; keywords, $Forwarded
  among them (Dovecot ignores the letter P), are the letters ``a``..``z``, index 0..25 of
  ``dovecot-keywords`` (lines ``<index> <keyword>``); other letters (mutt's P) are kept as they
  are. So mutt, Dovecot and geomail see the same flags. A flag change is one atomic rename.
- **UIDs** and UIDVALIDITY: ``dovecot-uidlist`` through ``imap_uids.UidMap`` (crash-safe:
  NEXTUID is durable before a UID is returned, so a crash never reuses or reorders one).
- **MODSEQs** (RFC 7162): HIGHESTMODSEQ in ``geomail-modseq`` (``UidMap``); per message, and
  the modseqs of the last ``MAX_VANISHED`` expunges (QRESYNC VANISHED, RFC 7162 3.2.10), in
  ``geomail-modseqs``: ``1 V<uidvalidity>`` then ``<uid> <modseq> <info>`` and
  ``X<uid> <modseq>`` lines, written whole and atomically. A flag change made by anyone
  (another session, POP3, mutt) is seen at the next ``sync`` as an info that differs from the
  one recorded, and gets a new modseq. Dovecot keeps its modseqs in its index, which it
  rebuilds; this file is ours alone.
- **Special use** (RFC 6154): derived from the well-known names Sent, Drafts, Trash, Junk,
  Archive (Dovecot keeps them in its config); ``ensure()`` creates the five.
- **Subscriptions**: ``<maildir>/subscriptions`` in Dovecot's version 2 format (header
  ``V\\t2\\n\\n``, one mailbox a line, hierarchy levels separated by a tab, names in modified
  UTF-7: Dovecot's src/lib-storage/list/subscription-file.c); version 1 (plain lines with
  ``.``) is read.

Every folder operation holds an flock on ``<folder>/geomail-imap.lock``; POP3 and delivery do
not take it, which is fine: delivery only adds files to ``new/``, POP3 renames into ``cur/``
or unlinks, and both are seen by the next ``sync`` (a base name that vanishes is confirmed by
a second listing before its UID is forgotten, because readdir may miss a file renamed during
the listing).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from geomail.errors import StoreError
from geomail.proto import imap_mutf7
from geomail.proto.imap_fetch import Summary, summarize
from geomail.proto.imap_mailbox import (
    Appended,
    Copied,
    FolderInfo,
    FolderView,
    MailboxError,
    MessageInfo,
)
from geomail.safeio import fsync_dir, read_file, write_atomic, write_file_synced
from geomail.store.imap_cache import IMAPCache, Scan
from geomail.store.imap_uids import (
    MODSEQ_NAME,
    UIDLIST_NAME,
    UidListCorrupt,
    UidMap,
    base_name,
    parse_uidlist,
)

SUBDIRS = ("tmp", "new", "cur")
KEYWORDS_NAME = "dovecot-keywords"
MODSEQS_NAME = "geomail-modseqs"
SUBSCRIPTIONS_NAME = "subscriptions"
LOCK_NAME = "geomail-imap.lock"
SUBSCRIPTIONS_LOCK = "geomail-subscriptions.lock"
READY_NAME = "geomail-imap-ready"
STALE_TMP = 36 * 3600  # Maildir spec: a tmp/ file untouched this long is left over
MAX_KEYWORDS = 26  # the letters a..z
MAX_VANISHED = 10_000  # expunged UIDs remembered with their modseq (QRESYNC)
RENAME_RETRIES = 3  # a message file renamed this often while we open it, in a row, is busy
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
               "Junk": "\\Junk", "Archive": "\\Archive"}
SYSTEM_LETTERS = {"\\Draft": "D", "\\Flagged": "F",
                  "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
_LETTER_FLAGS = {letter: flag for flag, letter in SYSTEM_LETTERS.items()}
_FLAG_CASE = {flag.lower(): flag for flag in SYSTEM_LETTERS}
_KEYWORD = re.compile(r"[\x21-\x7e]+")
_KEYWORD_BAD = frozenset('(){ %*"\\]')
_V2_HEADER = "V\t2\n\n"
_T = TypeVar("_T")


# ---- flags ---------------------------------------------------------------------------------

def normalize_flag(flag: str) -> str:
    """A system flag in its canonical case (flags are case-insensitive, RFC 9051 2.3.2)."""
    return _FLAG_CASE.get(flag.lower(), flag)


def info_of(filename: str) -> str:
    """The flag letters of a Maildir file name (``:2,<letters>``), "" when none."""
    _, sep, info = filename.partition(":")
    return info[2:] if sep and info.startswith("2,") else ""


def with_info(filename: str, letters: Iterable[str]) -> str:
    """``filename`` with the info ``:2,<letters sorted>`` (Maildir spec: ASCII order)."""
    return f"{base_name(filename)}:2,{''.join(sorted(set(letters)))}"


class Keywords:
    """A folder's ``dovecot-keywords``: keyword <-> letter ``a``+index (Dovecot's format:
    lines ``<index> <name>``, https://doc.dovecot.org/admin_manual/mailbox_formats/maildir/).
    Names compare case-insensitively (RFC 9051 2.3.2); the first spelling is kept."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.names: dict[int, str] = {}
        with contextlib.suppress(FileNotFoundError), \
                open(path, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                index, _, name = line.rstrip("\n").partition(" ")
                if index.isdigit() and int(index) < MAX_KEYWORDS and name:
                    self.names[int(index)] = name

    def flags(self, letters: str) -> set[str]:
        """The IMAP flags of info ``letters`` (unknown keyword letters are dropped)."""
        out = set()
        for letter in letters:
            if letter in _LETTER_FLAGS:
                out.add(_LETTER_FLAGS[letter])
            elif "a" <= letter <= "z" and (name := self.names.get(ord(letter) - 97)):
                out.add(name)
        return out

    def find(self, keyword: str) -> str | None:
        lower = keyword.lower()
        for index, name in self.names.items():
            if name.lower() == lower:
                return chr(97 + index)
        return None

    def letters(self, flags: Iterable[str], add: bool) -> str:
        """The info letters of ``flags``; with ``add``, unknown keywords are given letters
        and the file is written durably (``MailboxError`` when all 26 are taken)."""
        out = []
        changed = False
        for flag in flags:
            flag = normalize_flag(flag)
            if flag in SYSTEM_LETTERS:
                out.append(SYSTEM_LETTERS[flag])
                continue
            if flag.startswith("\\"):
                continue  # \Recent and unknown system flags are not stored
            letter = self.find(flag)
            if letter is None and add:
                if not valid_keyword(flag):
                    raise MailboxError("CLIENTBUG", f"invalid keyword {flag!r}")
                free = [i for i in range(MAX_KEYWORDS) if i not in self.names]
                if not free:
                    raise MailboxError("LIMIT", "no more keywords in this mailbox")
                self.names[free[0]] = flag
                letter = chr(97 + free[0])
                changed = True
            if letter is not None:
                out.append(letter)
        if changed:
            text = "".join(f"{i} {n}\n" for i, n in sorted(self.names.items()))
            write_atomic(self.path, text.encode("utf-8", "surrogateescape"))
        return "".join(sorted(set(out)))

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(name for _, name in sorted(self.names.items()))


def valid_keyword(flag: str) -> bool:
    """An IMAP ``flag-keyword`` (RFC 9051 9: atom characters)."""
    return bool(_KEYWORD.fullmatch(flag)) and not _KEYWORD_BAD & set(flag)


# ---- messages and folder state -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Message:
    """One message as last synchronized: ``key`` is ``cur/<file name>``."""

    uid: int
    key: str
    flags: frozenset[str]
    modseq: int

    @property
    def filename(self) -> str:
        return self.key.partition("/")[2]

    @property
    def size(self) -> int | None:
        """RFC822.SIZE (with CRLF line ends) from the name's ``W=``, None when absent."""
        for item in base_name(self.filename).split(",")[1:]:
            if item.startswith("W=") and item[2:].isdigit():
                return int(item[2:])
        return None


@dataclass(frozen=True, slots=True)
class FolderState:
    """A folder as one ``sync`` found it; a session keeps the last one it reported."""

    uidvalidity: int
    uidnext: int
    highest_modseq: int
    messages: tuple[Message, ...]  # in UID order
    keywords: tuple[str, ...] = ()

    def by_uid(self) -> dict[int, Message]:
        return {m.uid: m for m in self.messages}


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed between two states (RFC 9051 7.4.1 EXPUNGE, 7.3.1 EXISTS, 7.5.2 FETCH)."""

    expunged: tuple[int, ...]  # UIDs, ascending
    added: tuple[Message, ...]
    flags: tuple[Message, ...]  # messages whose flags (or modseq) changed

    def __bool__(self) -> bool:
        return bool(self.expunged or self.added or self.flags)


def changes(old: FolderState, new: FolderState) -> Changes:
    """The difference a session must report when it moves from ``old`` to ``new``."""
    before = old.by_uid()
    now = new.by_uid()
    return Changes(
        tuple(sorted(uid for uid in before if uid not in now)),
        tuple(m for m in new.messages if m.uid not in before),
        tuple(m for m in new.messages if m.uid in before
              and (before[m.uid].flags != m.flags or before[m.uid].modseq != m.modseq)))


@dataclass(slots=True)
class _Modseqs:
    uidvalidity: int
    messages: dict[int, tuple[int, str]] = field(default_factory=dict)  # uid -> modseq, info
    expunged: dict[int, int] = field(default_factory=dict)  # uid -> modseq

    def render(self) -> bytes:
        lines = [f"1 V{self.uidvalidity}"]
        lines += [f"{u} {m} {i}" for u, (m, i) in sorted(self.messages.items())]
        lines += [f"X{u} {m}" for u, m in sorted(self.expunged.items())]
        return ("\n".join(lines) + "\n").encode("ascii")


def _load_modseqs(path: str, uidvalidity: int, cache: IMAPCache) -> _Modseqs:
    """The folder's modseqs (a copy the caller may change); empty when the file is missing
    or belongs to another UIDVALIDITY (the modseqs start over)."""
    parsed = cache.parsed(path, _parse_modseqs)
    if parsed is None or parsed.uidvalidity != uidvalidity:
        return _Modseqs(uidvalidity)
    return _Modseqs(uidvalidity, dict(parsed.messages), dict(parsed.expunged))


def _parse_modseqs(data: bytes) -> _Modseqs:
    lines = data.decode("ascii", "replace").split("\n")
    header = re.fullmatch(r"1 V(\d{1,10})", lines[0])
    result = _Modseqs(int(header[1]) if header else 0)
    if header is None:
        return result
    for line in lines[1:]:
        parts = line.split(" ")
        if len(parts) == 2 and parts[0][:1] == "X" and parts[0][1:].isdigit() \
                and parts[1].isdigit():
            result.expunged[int(parts[0][1:])] = int(parts[1])
        elif len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            result.messages[int(parts[0])] = (int(parts[1]), parts[2])
    return result


# ---- one folder ----------------------------------------------------------------------------

class MaildirFolder:
    """One selectable mailbox: a maildir at ``path`` (blocking calls)."""

    def __init__(self, path: str, name: str, hostname: str,
                 cache: IMAPCache | None = None) -> None:
        self.path = path
        self.name = name
        self._host = hostname.replace("/", "\\057").replace(":", "\\072")
        self.cache = cache if cache is not None else IMAPCache()
        self.uids = UidMap(path, cache=self.cache)
        self._seq = 0

    # -- reading --

    def sync(self, move_new: bool = True) -> FolderState:
        """Bring the UID list and modseqs up to date with ``new/`` and ``cur/``. With
        ``move_new`` (a session selected the folder) messages in ``new/`` move to ``cur/``
        with an empty info ``:2,``, as IMAP servers do (Maildir spec: new/ is "not yet seen
        by a reader"); their base names, hence their UIDs, stay the same."""
        with self._locked():
            return self._sync(move_new)

    def _sync(self, move_new: bool) -> FolderState:
        present = self._listing(move_new)
        kept = self.cache.scan(self.path, present, self._sources())
        if kept is not None:
            return cast(FolderState, kept.state)
        state = self._scan(present)
        self._keep(present, state, state.by_uid())
        return state

    def _keep(self, present: dict[str, str], state: FolderState,
              by_uid: dict[int, Message], uid_of: dict[str, int] | None = None,
              position: dict[int, int] | None = None) -> None:
        if uid_of is None:
            uid_of = {base_name(m.filename): m.uid for m in state.messages}
        if position is None:
            position = {m.uid: i for i, m in enumerate(state.messages)}
        self.cache.keep_scan(self.path, Scan(present, self._sources(), state, by_uid, uid_of,
                                             position))

    def _after_renames(self, scan: Scan, renamed: dict[str, str]) -> FolderState:
        """The folder after our own flag changes (``renamed``: base name -> new key) to
        ``scan``, taken under the same lock: only those messages get new modseqs and
        entries, the rest is the scan's (a STORE of a few messages in 10,000 costs its own
        messages, one copy of the tables and one write of the modseqs)."""
        state = cast(FolderState, scan.state)
        present = dict(scan.present)
        present.update(renamed)
        changed = sorted((scan.uid_of[base], key) for base, key in renamed.items())
        highest = self.uids.next_modseq(state.uidvalidity, len(changed))
        mods = _load_modseqs(f"{self.path}/{MODSEQS_NAME}", state.uidvalidity, self.cache)
        keywords = Keywords(f"{self.path}/{KEYWORDS_NAME}")
        by_uid = dict(scan.by_uid)
        messages = list(state.messages)
        modseq = highest - len(changed)
        for uid, key in changed:
            modseq += 1
            mods.messages[uid] = (modseq, info_of(key))
            message = Message(uid, key, frozenset(keywords.flags(info_of(key))), modseq)
            by_uid[uid] = message
            messages[scan.position[uid]] = message
        rendered = mods.render()
        write_atomic(f"{self.path}/{MODSEQS_NAME}", rendered)
        self.cache.seed(f"{self.path}/{MODSEQS_NAME}", rendered, mods)
        new = FolderState(state.uidvalidity, state.uidnext, highest, tuple(messages),
                          keywords.all)
        self._keep(present, new, by_uid, scan.uid_of, scan.position)
        return new

    def _sources(self) -> tuple[object, ...]:
        """What a scan reads besides the listing, as ``IMAPCache.parsed`` shares it (the
        same objects while the files' content is the same)."""
        uidlist: object
        try:
            uidlist = self.cache.parsed(f"{self.path}/{UIDLIST_NAME}", parse_uidlist)
        except UidListCorrupt:
            uidlist = object()  # never the same: the scan deals with it
        return (uidlist,
                self.cache.parsed(f"{self.path}/{MODSEQS_NAME}", _parse_modseqs),
                *(self.cache.parsed(f"{self.path}/{name}", bytes)
                  for name in (MODSEQ_NAME, KEYWORDS_NAME)))

    def _scan(self, present: dict[str, str]) -> FolderState:
        try:
            known = self.uids.load()
        except UidListCorrupt:
            known = self.uids.rebuild()
        if known is not None and any(b not in present for b in known.records):
            again = self._listing(False)  # readdir may miss a file renamed meanwhile
            for base, key in again.items():
                present.setdefault(base, key)
        try:
            result = self.uids.synchronize([k.partition("/")[2] for k in present.values()])
        except UidListCorrupt:
            self.uids.rebuild()
            result = self.uids.synchronize([k.partition("/")[2] for k in present.values()])
        uidlist = result.uidlist
        mods = _load_modseqs(f"{self.path}/{MODSEQS_NAME}", uidlist.uidvalidity, self.cache)
        by_uid = {rec.uid: base for base, rec in uidlist.records.items()}
        changed = [uid for uid, base in by_uid.items()
                   if mods.messages.get(uid, (0, None))[1] != info_of(present[base])]
        gone = [uid for uid in mods.messages if uid not in by_uid]
        highest = self.uids.highest_modseq(uidlist.uidvalidity)
        if changed or gone:
            highest = self.uids.next_modseq(uidlist.uidvalidity, len(changed) + len(gone))
            modseq = highest - len(changed) - len(gone)
            for uid in sorted(changed):
                modseq += 1
                mods.messages[uid] = (modseq, info_of(present[by_uid[uid]]))
            for uid in sorted(gone):
                modseq += 1
                del mods.messages[uid]
                mods.expunged[uid] = modseq
            _trim(mods)
            rendered = mods.render()
            write_atomic(f"{self.path}/{MODSEQS_NAME}", rendered)
            self.cache.seed(f"{self.path}/{MODSEQS_NAME}", rendered, mods)
        keywords = Keywords(f"{self.path}/{KEYWORDS_NAME}")
        # Messages whose file name and modseq are as in the last scan are the same objects
        # (a STORE changes a few of 10,000: the rest costs a lookup, not a parse).
        last = self.cache.last_scan(self.path)
        before = last.by_uid if last is not None and last.state.keywords == keywords.all \
            else {}
        messages = []
        for uid, base in sorted(by_uid.items()):
            key, modseq = present[base], mods.messages[uid][0]
            old = before.get(uid)
            if old is not None and old.key == key and old.modseq == modseq:
                messages.append(old)
            else:
                messages.append(Message(uid, key, frozenset(keywords.flags(info_of(key))),
                                        modseq))
        return FolderState(uidlist.uidvalidity, uidlist.next_uid, highest, tuple(messages),
                           keywords.all)

    def _listing(self, move_new: bool) -> dict[str, str]:
        """base name -> ``new/<name>`` or ``cur/<name>``; new/ is listed first, so a file
        another program moves to cur/ meanwhile is found in one of them."""
        present: dict[str, str] = {}
        moved = False
        for name in _names(f"{self.path}/new"):
            if move_new:
                target = name if ":" in name else f"{name}:2,"
                try:
                    os.rename(f"{self.path}/new/{name}", f"{self.path}/cur/{target}")
                    present[base_name(name)] = f"cur/{target}"
                    moved = True
                    continue
                except FileNotFoundError:
                    continue  # moved by someone else: found in cur/ below
            present[base_name(name)] = f"new/{name}"
        for name in _names(f"{self.path}/cur"):
            present[base_name(name)] = f"cur/{name}"
        if move_new:
            self._sweep_tmp()
        if moved:  # not needed for safety (same base name, same UID), but keeps \Recent stable
            fsync_dir(f"{self.path}/cur")
        return present

    def _sweep_tmp(self) -> None:
        """Remove what a crash left in ``tmp/`` (an APPEND or a delivery killed before its
        rename), once older than ``STALE_TMP`` (the Maildir spec's 36 hours)."""
        limit = time.time() - STALE_TMP
        for name in _names(f"{self.path}/tmp"):
            with contextlib.suppress(OSError):
                if os.stat(f"{self.path}/tmp/{name}").st_mtime < limit:
                    os.unlink(f"{self.path}/tmp/{name}")

    def known_path(self, message: Message) -> str:
        """Where the last scan saw the message's file (it may have been renamed since)."""
        return f"{self.path}/{message.key}"

    def file_path(self, message: Message) -> str:
        """The message's path now, following a rename by someone else (same base name);
        ``MailboxError`` (EXPUNGEISSUED) when it is gone."""
        path = self.known_path(message)
        if os.path.exists(path):
            return path
        found = self._find(base_name(message.filename))
        if found is None:
            raise MailboxError("EXPUNGEISSUED", "the message has been expunged")
        return f"{self.path}/{found}"

    def read(self, message: Message) -> bytes:
        """The whole message as stored (LF line ends, Maildir convention)."""
        return self._at_file(message, read_file)

    def internaldate(self, message: Message) -> float:
        """INTERNALDATE (RFC 9051 2.3.3): the file's mtime, set at APPEND."""
        return self._at_file(message, lambda path: os.stat(path).st_mtime)

    def _at_file(self, message: Message, use: Callable[[str], _T]) -> _T:
        """``use(path)`` on the message's file, looked up again when it was renamed between
        ``file_path`` and ``use`` (a flag change by another session or POP3, outside our
        lock): only a file that is not found at all is an expunge."""
        with contextlib.suppress(FileNotFoundError):  # where the last scan saw it: mostly
            return use(self.known_path(message))
        for _ in range(RENAME_RETRIES):
            try:
                return use(self.file_path(message))
            except FileNotFoundError:
                continue
        return use(self.file_path(message))

    def size(self, message: Message) -> int:
        """RFC822.SIZE with CRLF line ends: ``W=`` from the name, else counted."""
        known = message.size
        if known is not None:
            return known
        data = self.read(message)
        return len(data) + data.count(b"\n") - data.count(b"\r\n")

    def _find(self, base: str) -> str | None:
        for sub in ("cur", "new"):
            for name in _names(f"{self.path}/{sub}"):
                if base_name(name) == base:
                    return f"{sub}/{name}"
        return None

    # -- writing --

    def store(self, uids: Sequence[int], flags: Iterable[str], mode: str,
              unchanged_since: int | None = None) -> tuple[FolderState, list[int]]:
        """STORE (RFC 9051 6.4.6): ``mode`` "set", "add" or "remove"; with
        ``unchanged_since`` (CONDSTORE, RFC 7162 3.1.3) messages whose modseq is greater are
        left alone and returned as the second item (the MODIFIED set). Each change is an
        atomic rename; the new state (with new modseqs) is returned."""
        if mode not in ("set", "add", "remove"):
            raise ValueError(mode)
        with self._locked():
            before = self._sync(False)
            scan = self.cache.last_scan(self.path)
            if scan is not None and scan.state is not before:
                scan = None
            current = scan.by_uid if scan is not None else before.by_uid()
            keywords = Keywords(f"{self.path}/{KEYWORDS_NAME}")
            letters = set(keywords.letters(flags, add=mode != "remove"))
            modified = []
            renamed: dict[str, str] = {}
            exact = True  # every rename found the file where the scan saw it
            for uid in uids:
                message = current.get(uid)
                if message is None:
                    continue
                if unchanged_since is not None and message.modseq > unchanged_since:
                    modified.append(uid)
                    continue
                key, moved = self._rename(message, lambda old: _apply(old, letters, mode,
                                                                      keywords))
                exact = exact and not moved
                if key is not None:
                    renamed[base_name(message.filename)] = key
            if not renamed:
                return (before if exact else self._sync(False)), modified
            fsync_dir(f"{self.path}/cur")
            if scan is None or not exact:
                return self._sync(False), modified
            return self._after_renames(scan, renamed), modified

    def _rename(self, message: Message,
                change: Callable[[str], set[str]]) -> tuple[str | None, bool]:
        """Give ``message`` the info ``change(old info)``; follows a rename by someone else
        (same base name) once. Returns (the new key, or None when nothing changed or the
        message is gone; whether someone else had renamed it)."""
        key = message.key
        for attempt in range(2):
            filename = key.partition("/")[2]
            target = with_info(filename, change(info_of(filename)))
            if key == f"cur/{target}":
                return None, attempt > 0
            try:
                os.rename(f"{self.path}/{key}", f"{self.path}/cur/{target}")
                return f"cur/{target}", attempt > 0
            except FileNotFoundError:
                found = self._find(base_name(filename))
                if found is None:
                    return None, True  # expunged meanwhile: reported at the next sync
                key = found
        return None, True

    def append(self, data: bytes, flags: Iterable[str] = (),
               internaldate: float | None = None) -> tuple[int, int]:
        """APPEND (RFC 9051 6.3.12): write ``tmp/``, fsync, set the mtime (INTERNALDATE),
        rename into ``cur/`` with its flags, fsync ``cur/``, then give it a UID: (UIDVALIDITY,
        UID) for APPENDUID (RFC 4315). A crash before the UID is written leaves a complete
        message that the next ``sync`` finds and numbers with a fresh UID."""
        data = data.replace(b"\r\n", b"\n")
        wsize = len(data) + data.count(b"\n")
        with self._locked():
            keywords = Keywords(f"{self.path}/{KEYWORDS_NAME}")
            letters = keywords.letters(flags, add=True)
            name = self._new_name(len(data), wsize)
            final = f"{name}:2,{letters}"
            write_file_synced(f"{self.path}/tmp/{name}", [data], mtime=internaldate)
            try:
                os.rename(f"{self.path}/tmp/{name}", f"{self.path}/cur/{final}")
            except BaseException:
                _unlink_quietly(f"{self.path}/tmp/{name}")
                raise
            fsync_dir(f"{self.path}/cur")
            return self._numbered([final])

    def _numbered(self, finals: Sequence[str]) -> tuple[int, int]:
        uids = self.uids.assign(finals)
        state = self._sync(False)
        return state.uidvalidity, uids[base_name(finals[-1])]

    def copy(self, state: FolderState, uids: Sequence[int], dest: MaildirFolder,
             move: bool = False) -> tuple[int, list[tuple[int, int]]]:
        """COPY (RFC 9051 6.4.7) or MOVE (RFC 9051 6.4.8): hard links (else a durable copy)
        into ``dest``'s ``cur/`` under new names keeping the flags, ``cur/`` fsynced, then
        UIDs there; for MOVE the sources are then unlinked and forgotten here. Returns
        (destination UIDVALIDITY, [(source UID, destination UID)]) for COPYUID (RFC 4315).
        ``dest`` may be this folder: the copies get new UIDs, as Dovecot does (mbsync with a
        ``Trash`` on the server MOVEs deleted messages of Trash to Trash)."""
        by_uid = state.by_uid()
        chosen = [by_uid[u] for u in sorted(set(uids)) if u in by_uid]
        if not chosen:
            return dest.sync(False).uidvalidity, []
        same = dest.path == self.path
        first, second = sorted((self, dest), key=lambda f: f.path)  # one lock order: no deadlock
        # flock is per open file: taking the same folder's lock twice would wait forever
        with first._locked(), contextlib.nullcontext() if same else second._locked():
            src_kw = Keywords(f"{self.path}/{KEYWORDS_NAME}")
            dst_kw = Keywords(f"{dest.path}/{KEYWORDS_NAME}")
            pairs: list[tuple[Message, str]] = []
            for message in chosen:
                copy_to = functools.partial(self._copy_file, message=message, dest=dest,
                                            src_kw=src_kw, dst_kw=dst_kw)
                pairs.append((message, self._at_file(message, copy_to)))
            fsync_dir(f"{dest.path}/cur")
            assigned = dest.uids.assign([final for _, final in pairs])
            dest_state = dest._sync(False)
            if move:
                self._remove([m for m, _ in pairs])
            return dest_state.uidvalidity, [
                (m.uid, assigned[base_name(final)]) for m, final in pairs]

    def _copy_file(self, source: str, message: Message, dest: MaildirFolder,
                   src_kw: Keywords, dst_kw: Keywords) -> str:
        """One message of COPY/MOVE into ``dest``'s ``cur/``; its new file name there."""
        letters = dst_kw.letters(src_kw.flags(info_of(source.rpartition("/")[2])), add=True)
        stored = os.stat(source).st_size
        name = dest._new_name(stored, message.size or _crlf_size(source))
        final = f"{name}:2,{letters}"
        try:
            os.link(source, f"{dest.path}/cur/{final}")
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            with open(source, "rb") as handle:
                write_file_synced(f"{dest.path}/tmp/{name}", [handle.read()],
                                  mtime=os.stat(source).st_mtime)
            os.rename(f"{dest.path}/tmp/{name}", f"{dest.path}/cur/{final}")
        return final

    def expunge(self, state: FolderState, uids: Sequence[int] | None = None) -> list[int]:
        """EXPUNGE (RFC 9051 6.4.3) or UID EXPUNGE (RFC 4315 2.1): unlink the messages of
        ``state`` flagged \\Deleted (and in ``uids`` when given), fsync ``cur/``, forget their
        UIDs. Returns the UIDs expunged. A crash between unlink and the list update is
        repaired by the next ``sync`` (the UIDs are forgotten, never reused)."""
        wanted = None if uids is None else set(uids)
        with self._locked():
            current = self._sync(False).by_uid()
            victims = [m for m in current.values()
                       if "\\Deleted" in m.flags and (wanted is None or m.uid in wanted)
                       and m.uid in state.by_uid()]
            self._remove(victims)
            return sorted(m.uid for m in victims)

    def _remove(self, messages: Sequence[Message]) -> None:
        subs = set()
        for message in messages:
            for _ in range(2):
                try:
                    os.unlink(f"{self.path}/{message.key}")
                    subs.add(message.key.partition("/")[0])
                    break
                except FileNotFoundError:
                    found = self._find(base_name(message.filename))
                    if found is None:
                        break
                    message = Message(message.uid, found, message.flags, message.modseq)
        for sub in sorted(subs):
            fsync_dir(f"{self.path}/{sub}")
        self.uids.forget([m.filename for m in messages])
        self._sync(False)

    def vanished_since(self, modseq: int) -> list[int]:
        """UIDs expunged with a modseq above ``modseq`` (QRESYNC, RFC 7162 3.2.5.2), as far
        as the bounded memory reaches (``MAX_VANISHED``)."""
        uidvalidity = (self.uids.load() or self.uids.rebuild()).uidvalidity
        mods = _load_modseqs(f"{self.path}/{MODSEQS_NAME}", uidvalidity, self.cache)
        return sorted(u for u, m in mods.expunged.items() if m > modseq)

    # -- internals --

    def _new_name(self, size: int, wsize: int) -> str:
        now = time.time()
        self._seq += 1
        return (f"{int(now)}.M{int(now % 1 * 1_000_000):06d}P{os.getpid()}"
                f"Q{self._seq}R{os.urandom(4).hex()}.{self._host},S={size},W={wsize}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(f"{self.path}/{LOCK_NAME}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
        except FileNotFoundError:
            raise MailboxError("NONEXISTENT", f"mailbox {self.name!r} does not exist") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def watch_paths(self) -> tuple[str, str]:
        """What IDLE watches: ``new/`` gains deliveries, ``cur/`` sees flag changes and
        expunges."""
        return (f"{self.path}/new", f"{self.path}/cur")


def _apply(old: str, letters: set[str], mode: str, keywords: Keywords) -> set[str]:
    if mode == "add":
        return set(old) | letters
    if mode == "remove":
        return set(old) - letters
    # set: letters of keywords no longer named in dovecot-keywords, and letters that are no
    # flag of ours (mutt's P), are kept as they were, as Dovecot does
    return letters | {c for c in old if ("a" <= c <= "z" and ord(c) - 97 not in keywords.names)
                      or not ("a" <= c <= "z" or c in _LETTER_FLAGS)}


def _trim(mods: _Modseqs) -> None:
    if len(mods.expunged) > MAX_VANISHED:
        for uid in sorted(mods.expunged)[:len(mods.expunged) - MAX_VANISHED]:
            del mods.expunged[uid]


def _crlf_size(path: str) -> int:
    with open(path, "rb") as handle:
        data = handle.read()
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def _names(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# ---- the mailbox tree ----------------------------------------------------------------------

class MaildirMailboxes:
    """A user's mailboxes: the maildir at ``root`` and its Maildir++ folders (blocking)."""

    def __init__(self, root: str, hostname: str | None = None,
                 cache: IMAPCache | None = None) -> None:
        self.root = os.path.abspath(root)
        self.hostname = hostname or socket.gethostname()
        self.cache = cache if cache is not None else IMAPCache()

    def folder_path(self, name: str) -> str:
        """The directory of mailbox ``name``; ``MailboxError`` for a name we refuse."""
        if imap_mutf7.is_inbox(name):
            return self.root
        problem = imap_mutf7.check_name(name)
        if problem:
            raise MailboxError("CANNOT", problem)
        folder = imap_mutf7.folder_of(name)
        assert folder is not None and "/" not in folder
        return f"{self.root}/{folder}"

    def canonical(self, name: str) -> str:
        return "INBOX" if imap_mutf7.is_inbox(name) else name

    def exists(self, name: str) -> bool:
        path = self.folder_path(name)
        return all(os.path.isdir(f"{path}/{sub}") for sub in SUBDIRS)

    def open(self, name: str) -> MaildirFolder:
        """Mailbox ``name`` for SELECT/EXAMINE/STATUS/APPEND; ``MailboxError`` NONEXISTENT."""
        if imap_mutf7.is_inbox(name):
            self._make(self.root, folder=False)
        elif not self.exists(name):
            raise MailboxError("NONEXISTENT", f"no mailbox {name!r}")
        return MaildirFolder(self.folder_path(name), self.canonical(name), self.hostname,
                             self.cache)

    def ensure(self) -> None:
        """The maildir, and at first use the five special-use folders (RFC 6154),
        subscribed; ``geomail-imap-ready`` marks it done, so a folder the user deleted is
        not made again."""
        self._make(self.root, folder=False)
        if os.path.exists(f"{self.root}/{READY_NAME}"):
            return
        for entry in os.listdir(self.root):  # DELETEs a crash interrupted
            if entry.startswith("..geomail-deleted."):
                shutil.rmtree(f"{self.root}/{entry}", ignore_errors=True)
        for name in SPECIAL_USE:
            if not self.exists(name):
                self._make(self.folder_path(name), folder=True)
                self._subscribe(name, True)
        write_atomic(f"{self.root}/{READY_NAME}", b"")

    def list_folders(self) -> list[FolderInfo]:
        """Every mailbox, INBOX first, then by name: children (RFC 5258 CHILDREN), special
        use (RFC 6154), subscription, and ``noselect`` levels that exist only as the parent
        of a folder (Maildir++ ``.A.B`` without ``.A``, e.g. after DELETE A)."""
        names = ["INBOX"]
        for entry in _names_dirs(self.root):
            try:
                name = imap_mutf7.name_of(entry)
            except imap_mutf7.MUTF7Error:
                continue  # not a folder of ours (strange names)
            if all(os.path.isdir(f"{self.root}/{entry}/{s}") for s in SUBDIRS):
                names.append(name)
        present = set(names)
        missing = set()
        for name in names[1:]:
            parts = name.split("/")
            for depth in range(1, len(parts)):
                if (parent := "/".join(parts[:depth])) not in present:
                    missing.add(parent)
        subscribed = set(self.subscriptions())
        every = present | missing
        out = []
        for name in names[:1] + sorted(set(names[1:]) | missing):
            prefix = name + "/"
            use = frozenset({SPECIAL_USE[name]} if name in SPECIAL_USE else ())
            out.append(FolderInfo(name, use, any(n.startswith(prefix) for n in every),
                                  name in subscribed, name in missing))
        # RFC 9051 6.3.7: a subscription outlives its mailbox (Dovecot's DELETE and RENAME
        # leave it): LSUB still lists the name
        out += [FolderInfo(name, subscribed=True, noselect=True, exists=False)
                for name in sorted(subscribed - every - {"INBOX"})]
        return out

    def create(self, name: str) -> None:
        """CREATE (RFC 9051 6.3.4): the mailbox and any missing parents; ``MailboxError``
        ALREADYEXISTS for INBOX or an existing mailbox."""
        if imap_mutf7.is_inbox(name) or self.exists(name):
            raise MailboxError("ALREADYEXISTS", f"mailbox {name!r} already exists")
        self._make(self.root, folder=False)
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            level = "/".join(parts[:depth])
            if not self.exists(level):
                self._make(self.folder_path(level), folder=True)

    def delete(self, name: str) -> None:
        """DELETE (RFC 9051 6.3.5). INBOX is refused (CANNOT). A mailbox with children
        loses its messages and directory and stays as a \\Noselect level (the RFC's own
        example; Maildir++ shows it as the parent of ``.A.B`` without ``.A``, as Dovecot
        does); deleting such a \\Noselect level while it has children is refused
        (HASCHILDREN). The directory is renamed aside first, so a crash never leaves a
        half-deleted mailbox visible. Subscriptions stay (RFC 9051 6.3.5)."""
        if imap_mutf7.is_inbox(name):
            raise MailboxError("CANNOT", "INBOX cannot be deleted")
        path = self.folder_path(name)
        if not os.path.isdir(path):
            if self._children(name):
                raise MailboxError("HASCHILDREN", f"{name!r} has children and no messages")
            raise MailboxError("NONEXISTENT", f"no mailbox {name!r}")
        trash = f"{self.root}/..geomail-deleted.{os.urandom(6).hex()}"
        os.rename(path, trash)
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> None:
        """RENAME (RFC 9051 6.3.6), children included, parents of ``new`` created. RENAME
        INBOX moves INBOX's messages into a new mailbox ``new`` and leaves INBOX empty."""
        if imap_mutf7.is_inbox(new):
            raise MailboxError("ALREADYEXISTS", "INBOX already exists")
        target = self.folder_path(new)
        if os.path.exists(target):
            raise MailboxError("ALREADYEXISTS", f"mailbox {new!r} already exists")
        if imap_mutf7.is_inbox(old):
            self._rename_inbox(new)
            return
        source = self.folder_path(old)
        if not os.path.isdir(source):
            raise MailboxError("NONEXISTENT", f"no mailbox {old!r}")
        if (new + "/").startswith(old + "/"):
            raise MailboxError("CANNOT", "cannot move a mailbox into itself")
        moves = [(source, target)]
        for child in self._children(old):
            moves.append((self.folder_path(child), self.folder_path(new + child[len(old):])))
        if any(os.path.exists(dst) for _, dst in moves):
            raise MailboxError("ALREADYEXISTS", f"mailbox under {new!r} already exists")
        parts = new.split("/")
        for depth in range(1, len(parts)):
            level = "/".join(parts[:depth])
            if not self.exists(level):
                self._make(self.folder_path(level), folder=True)
        for src, dst in moves:
            os.rename(src, dst)
        fsync_dir(self.root)

    def _rename_inbox(self, new: str) -> None:
        self.create(new)
        inbox = MaildirFolder(self.root, "INBOX", self.hostname, self.cache)
        dest = self.open(new)
        state = inbox.sync(False)
        inbox.copy(state, [m.uid for m in state.messages], dest, move=True)

    def _children(self, name: str) -> list[str]:
        prefix = name + "/"
        out = []
        for entry in _names_dirs(self.root):
            with contextlib.suppress(imap_mutf7.MUTF7Error):
                child = imap_mutf7.name_of(entry)
                if child.startswith(prefix):
                    out.append(child)
        return sorted(out)

    # -- subscriptions (RFC 9051 6.3.7, 6.3.8) --

    def subscriptions(self) -> list[str]:
        """Subscribed names, from Dovecot's ``subscriptions`` file (version 2, or 1)."""
        try:
            with open(f"{self.root}/{SUBSCRIPTIONS_NAME}", encoding="utf-8",
                      errors="surrogateescape") as handle:
                text = handle.read()
        except FileNotFoundError:
            return []
        v2 = text.startswith(_V2_HEADER)
        body = text[len(_V2_HEADER):] if v2 else text
        out = []
        for line in body.split("\n"):
            if not line:
                continue
            levels = line.split("\t") if v2 else line.split(".")
            try:
                name = imap_mutf7.decode("/".join(_tab_unescape(x) for x in levels))
            except imap_mutf7.MUTF7Error:
                continue
            out.append(self.canonical(name))
        return list(dict.fromkeys(out))

    def subscribe(self, name: str) -> None:
        self.folder_path(name)  # validates
        self._subscribe(self.canonical(name), True)

    def unsubscribe(self, name: str) -> None:
        self._subscribe(self.canonical(name), False)

    def _subscribe(self, name: str, on: bool) -> None:
        self._make(self.root, folder=False)
        with _flocked(f"{self.root}/{SUBSCRIPTIONS_LOCK}"):
            names = [n for n in self.subscriptions() if n != name]
            if on:
                names.append(name)
            lines = ["\t".join(_tab_escape(x) for x in imap_mutf7.encode(n).split("/"))
                     for n in names]
            text = _V2_HEADER + "".join(f"{line}\n" for line in lines)
            write_atomic(f"{self.root}/{SUBSCRIPTIONS_NAME}", text.encode("utf-8"))

    def _make(self, path: str, folder: bool) -> None:
        created = False
        if not os.path.isdir(path):
            os.makedirs(path, 0o700, exist_ok=True)
            created = True
        for sub in SUBDIRS:
            with contextlib.suppress(FileExistsError):
                os.mkdir(f"{path}/{sub}", 0o700)
                created = True
        if folder and not os.path.exists(f"{path}/maildirfolder"):
            os.close(os.open(f"{path}/maildirfolder", os.O_CREAT | os.O_WRONLY, 0o600))
            created = True
        if created:
            fsync_dir(path)
            fsync_dir(os.path.dirname(path))


def _names_dirs(root: str) -> list[str]:
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if e.startswith(".") and e not in (".", "..")
                  and not e.startswith("..") and os.path.isdir(f"{root}/{e}"))


def _tab_escape(text: str) -> str:
    return (text.replace("\001", "\0011").replace("\t", "\001t")
            .replace("\r", "\001r").replace("\n", "\001n"))


def _tab_unescape(text: str) -> str:
    return (text.replace("\001t", "\t").replace("\001r", "\r").replace("\001n", "\n")
            .replace("\0011", "\001"))


@contextlib.contextmanager
def _flocked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- the session's interface ---------------------------------------------------------------

_MODES = {"+": "add", "-": "remove", "": "set"}


class MaildirMailStore:
    """``proto.imap_mailbox.MailStore`` over ``MaildirMailboxes``: one per logged-in user.
    Keeps the last view of each folder (to find files by UID); scans, sizes, dates and
    summaries live in the process's ``IMAPCache`` (``store/imap_cache``), shared by every
    session. Store faults (disk, corrupt files) become ``MailboxError`` UNAVAILABLE."""

    def __init__(self, root: str, hostname: str | None = None,
                 cache: IMAPCache | None = None) -> None:
        self.mailboxes = MaildirMailboxes(root, hostname, cache)
        self.cache = self.mailboxes.cache  # shared by the process's sessions (policy/imap)
        self._views: dict[str, tuple[MaildirFolder, dict[int, Message]]] = {}

    def list_folders(self) -> Sequence[FolderInfo]:
        with _faults():
            self.mailboxes.ensure()
            return self.mailboxes.list_folders()

    def create(self, name: str, special_use: frozenset[str]) -> None:
        expected = {SPECIAL_USE[name]} if name in SPECIAL_USE else set()
        if special_use and special_use != expected:
            # RFC 6154 5.3: special use follows from the name here (as Dovecot's config)
            raise MailboxError("USEATTR", "special use is given by the name here")
        with _faults():
            self.mailboxes.create(name)

    def delete(self, name: str) -> None:
        with _faults():
            path = self.mailboxes.folder_path(name)
            self.mailboxes.delete(name)
            self._views.pop(self.mailboxes.canonical(name), None)
            self.cache.forget(path)  # memory only: a scan is never reused unchecked

    def rename(self, old: str, new: str) -> None:
        with _faults():
            path = self.mailboxes.folder_path(old)
            self.mailboxes.rename(old, new)
            self._views.clear()
            self.cache.forget(path)

    def subscribe(self, name: str, subscribed: bool) -> None:
        with _faults():
            if subscribed:
                self.mailboxes.subscribe(name)
            else:
                self.mailboxes.unsubscribe(name)

    def view(self, name: str) -> FolderView:
        with _faults():
            folder = self._folder(name)
            return self._view(folder, folder.sync(True))

    def fetch(self, name: str, uid: int) -> bytes | None:
        with _faults():
            folder, messages = self._known(name)
            return self._read(folder, messages.get(uid))

    def fetch_many(self, name: str, uids: Sequence[int],
                   max_bytes: int) -> Sequence[tuple[int, bytes | None]]:
        with _faults():
            folder, messages = self._known(name)
            found: list[tuple[int, bytes | None]] = []
            total = 0
            for uid in uids:
                if found and total >= max_bytes:
                    break
                data = self._read(folder, messages.get(uid))
                found.append((uid, data))
                total += len(data) if data is not None else 0
            return found

    def summaries(self, name: str, uids: Sequence[int]) -> Sequence[tuple[int, Summary | None]]:
        with _faults():
            folder, messages = self._known(name)
            found: list[tuple[int, Summary | None]] = []
            for uid in uids:
                message = messages.get(uid)
                if message is None:
                    found.append((uid, None))
                    continue
                key = f"{folder.path}/{base_name(message.filename)}"
                summary = self.cache.summary(key)
                if summary is None:
                    data = self._read(folder, message)
                    if data is not None:
                        summary = summarize(data)
                        self.cache.keep_summary(key, summary)
                found.append((uid, summary))
            return found

    @staticmethod
    def _read(folder: MaildirFolder, message: Message | None) -> bytes | None:
        if message is None:
            return None
        try:
            return folder.read(message)
        except (MailboxError, FileNotFoundError):
            return None

    def store_flags(self, name: str, uids: Sequence[int], mode: str, flags: frozenset[str],
                    unchangedsince: int | None = None) -> Sequence[MessageInfo]:
        with _faults():
            folder, _ = self._known(name)
            state, modified = folder.store(uids, flags, _MODES[mode],
                                           unchangedsince)
            self._view(folder, state)
            wanted = set(uids) - set(modified)
            return [self._info(folder, m) for m in state.messages if m.uid in wanted]

    def append(self, name: str, message: bytes, flags: frozenset[str],
               date: datetime.datetime | None) -> Appended:
        with _faults():
            self.mailboxes.ensure()
            if not self.mailboxes.exists(name) and not imap_mutf7.is_inbox(name):
                raise MailboxError("NONEXISTENT", f"no mailbox {name!r}")
            folder = self._folder(name)
            uidvalidity, uid = folder.append(message, flags,
                                             date.timestamp() if date else None)
            return Appended(uidvalidity, uid)

    def copy(self, source: str, uids: Sequence[int], dest: str, move: bool) -> Copied:
        with _faults():
            self.mailboxes.ensure()
            if not self.mailboxes.exists(dest) and not imap_mutf7.is_inbox(dest):
                raise MailboxError("NONEXISTENT", f"no mailbox {dest!r}")
            folder, _ = self._known(source)
            target = self._folder(dest)
            uidvalidity, pairs = folder.copy(folder.sync(False), uids, target, move)
            return Copied(uidvalidity, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))

    def expunge(self, name: str, uids: Sequence[int]) -> Sequence[int]:
        with _faults():
            folder, _ = self._known(name)
            return folder.expunge(folder.sync(False), uids)

    def watch_paths(self, name: str) -> tuple[str, str]:
        """For IDLE (RFC 9051 6.3.13): the directories of mailbox ``name`` whose changes the
        shell waits for (``policy/folder_notify``) before it views the folder again."""
        with _faults():
            return self._folder(name).watch_paths()

    # -- internals --

    def _folder(self, name: str) -> MaildirFolder:
        # The special-use folders exist before any use, not only after the first LIST: a
        # client may APPEND to Sent first (RFC 6154 2).
        self.mailboxes.ensure()
        return self.mailboxes.open(name)

    def _known(self, name: str) -> tuple[MaildirFolder, dict[int, Message]]:
        known = self._views.get(self.mailboxes.canonical(name))
        if known is None:
            folder = self._folder(name)
            self._view(folder, folder.sync(False))
            known = self._views[self.mailboxes.canonical(name)]
        return known

    def _view(self, folder: MaildirFolder, state: FolderState) -> FolderView:
        self._views[folder.name] = (folder, self.cache.by_uid(folder.path, state))

        def make() -> FolderView:
            # the last view's entries for messages that did not change (the same objects)
            last = self.cache.last_view(folder.path)
            before: dict[int, tuple[Message, MessageInfo]] = {}
            if last is not None:
                last_infos = {info.uid: info for info in last[1].messages}
                before = {m.uid: (m, last_infos[m.uid]) for m in last[0].messages
                          if m.uid in last_infos}
            infos = []
            for message in state.messages:
                old = before.get(message.uid)
                if old is not None and old[0] is message:
                    infos.append(old[1])
                    continue
                with contextlib.suppress(MailboxError, FileNotFoundError):
                    infos.append(self._info(folder, message))
            return FolderView(state.uidvalidity, state.uidnext, state.highest_modseq,
                              tuple(infos), state.keywords)

        return cast(FolderView, self.cache.view(folder.path, state, make))

    def _info(self, folder: MaildirFolder, message: Message) -> MessageInfo:
        size, mtime = self.cache.meta(
            f"{folder.path}/{base_name(message.filename)}",
            lambda: (folder.size(message), folder.internaldate(message)))
        return MessageInfo(message.uid, message.flags, size,
                           datetime.datetime.fromtimestamp(mtime, datetime.UTC),
                           message.modseq)


@contextlib.contextmanager
def _faults() -> Iterator[None]:
    try:
        yield
    except MailboxError:
        raise
    except (StoreError, OSError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MailboxError("UNAVAILABLE", text or type(exc).__name__) from exc
