"""The boundary between the IMAP session (``proto/imap``) and the folder store: what the session
asks, as typed requests, and the ``MailStore`` protocol that answers them. Pure: no I/O here.

**The store helper implements ``MailStore``** (``store/imap_maildir``, one object per logged-in
user, built by the shell once ``Authenticate`` returned the user). The session never calls the
store: it emits one of the request objects below (``StoreRequest``); the shell runs
``perform(store, request)`` off the hub (``safeio``'s read/write pools) and passes the result
back with ``session.answer(result)``. ``perform`` turns a ``MailboxError`` into a value, so the
session sees either the method's result or a ``MailboxError``.

Names are IMAP names as text: ``/`` the separator, already decoded from modified UTF-7 by the
session, ``INBOX`` for the inbox; the store maps them to Maildir++ folders (``imap_mutf7``).
Flags are IMAP flags as text (``\\Seen``, ``\\Answered``, ``\\Flagged``, ``\\Deleted``,
``\\Draft``, keywords). UIDs are ints; every list of messages is in ascending UID order.

Changes (NOOP, IDLE, after commands) are found by the session: it asks ``ViewFolder`` again and
compares the new ``FolderView`` with the one it holds (new UIDs, gone UIDs, flags/modseq that
changed), so the store keeps no per-session state.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from geomail.proto.imap_fetch import Summary

# RFC 9051 7.1 response codes a store failure maps to
NONEXISTENT = "NONEXISTENT"
ALREADYEXISTS = "ALREADYEXISTS"
CANNOT = "CANNOT"  # e.g. deleting INBOX, a name the store refuses
INUSE = "INUSE"
OVERQUOTA = "OVERQUOTA"
LIMIT = "LIMIT"
UNAVAILABLE = "UNAVAILABLE"  # a fault of the store (disk, corrupt UID list)


class MailboxError(Exception):
    """What a ``MailStore`` method raises to refuse: ``code`` one of the constants above (the
    session answers ``NO [code] text``; NONEXISTENT on APPEND/COPY/MOVE becomes TRYCREATE)."""

    def __init__(self, code: str, text: str = "") -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text or code.lower()


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """One mailbox for LIST (RFC 9051 6.3.9, RFC 6154, RFC 5258 CHILDREN): ``special_use`` e.g.
    ``{"\\Sent", "\\Trash"}``; ``noselect`` for a level that exists only as a parent;
    ``exists`` False for a subscribed name without a mailbox (only LSUB and LIST (SUBSCRIBED)
    show it: RFC 9051 6.3.7, RFC 5258 3.4 ``\\NonExistent``)."""

    name: str
    special_use: frozenset[str] = frozenset()
    has_children: bool = False
    subscribed: bool = False
    noselect: bool = False
    exists: bool = True


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message's metadata: ``size`` is RFC822.SIZE, counted with CRLF line ends (Dovecot's
    ``W=``); ``internaldate`` aware (UTC is fine); ``modseq`` >= 1."""

    uid: int
    flags: frozenset[str]
    size: int
    internaldate: datetime.datetime
    modseq: int = 1


@dataclass(frozen=True, slots=True)
class FolderView:
    """A folder as it is now (SELECT, STATUS, change polls): ``messages`` in UID order."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: tuple[MessageInfo, ...]
    keywords: tuple[str, ...] = ()  # keywords defined in the folder, for FLAGS


@dataclass(frozen=True, slots=True)
class Appended:
    """Result of ``append`` (RFC 4315 APPENDUID)."""

    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class Copied:
    """Result of ``copy`` (RFC 4315 COPYUID): ``source[i]`` became ``dest[i]``."""

    uidvalidity: int
    source: tuple[int, ...]
    dest: tuple[int, ...]


class MailStore(Protocol):
    """One user's folders. Every method may block (disk); the shell calls it off the hub. A
    refusal raises ``MailboxError``; anything else raised is a bug (the shell answers
    ``NO [SERVERBUG]``)."""

    def list_folders(self) -> Sequence[FolderInfo]:
        """Every folder (INBOX included), any order; the session matches LIST patterns."""
        ...

    def create(self, name: str, special_use: frozenset[str]) -> None:
        """CREATE (RFC 9051 6.3.4): parents are created too; ALREADYEXISTS if it exists."""
        ...

    def delete(self, name: str) -> None:
        """DELETE (RFC 9051 6.3.5): NONEXISTENT; CANNOT for INBOX."""
        ...

    def rename(self, old: str, new: str) -> None:
        """RENAME (RFC 9051 6.3.6), children move too; RENAME INBOX moves its messages to
        ``new`` and leaves INBOX empty."""
        ...

    def subscribe(self, name: str, subscribed: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (RFC 9051 6.3.7, 6.3.8); subscribing a missing name is fine."""
        ...

    def view(self, name: str) -> FolderView:
        """The folder now (SELECT, EXAMINE, STATUS, and polls for changes): NONEXISTENT."""
        ...

    def fetch(self, name: str, uid: int) -> bytes | None:
        """The message's bytes as stored (LF or CRLF: the session sends CRLF), None when it
        is gone."""
        ...

    def fetch_many(self, name: str, uids: Sequence[int],
                   max_bytes: int) -> Sequence[tuple[int, bytes | None]]:
        """``fetch`` of the first of ``uids`` and of as many following ones as fit in
        ``max_bytes`` together (at least one), in order: one call for many small messages."""
        ...

    def summaries(self, name: str, uids: Sequence[int]) -> Sequence[tuple[int, Summary | None]]:
        """``imap_fetch.summarize`` of each message of ``uids`` (None when gone), in order;
        a store may keep them (messages never change)."""
        ...

    def store_flags(self, name: str, uids: Sequence[int], mode: str, flags: frozenset[str],
                    unchangedsince: int | None = None) -> Sequence[MessageInfo]:
        """STORE (RFC 9051 6.4.6): ``mode`` ``"+"`` add, ``"-"`` remove, ``""`` replace. Returns
        the messages that still exist, with their new flags and modseq (a message whose modseq
        is above ``unchangedsince`` is left alone and not returned, RFC 7162 3.1.3)."""
        ...

    def append(self, name: str, message: bytes, flags: frozenset[str],
               date: datetime.datetime | None) -> Appended:
        """APPEND (RFC 9051 6.3.12), durable before it returns; NONEXISTENT, OVERQUOTA."""
        ...

    def copy(self, source: str, uids: Sequence[int], dest: str, move: bool) -> Copied:
        """COPY / MOVE (RFC 9051 6.4.7, 6.4.8): flags kept; UIDs gone meanwhile are skipped;
        with ``move`` the sources are expunged. NONEXISTENT when ``dest`` does not exist."""
        ...

    def expunge(self, name: str, uids: Sequence[int]) -> Sequence[int]:
        """Remove those of ``uids`` that carry ``\\Deleted`` now (the session passes every UID
        it may expunge: another session may have set the flag); returns the UIDs removed."""
        ...


# ---- requests: one per method, emitted by the session, run by the shell with ``perform`` ----

@dataclass(frozen=True, slots=True)
class ListFolders:
    pass


@dataclass(frozen=True, slots=True)
class CreateFolder:
    name: str
    special_use: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DeleteFolder:
    name: str


@dataclass(frozen=True, slots=True)
class RenameFolder:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class SubscribeFolder:
    name: str
    subscribed: bool


@dataclass(frozen=True, slots=True)
class ViewFolder:
    name: str


@dataclass(frozen=True, slots=True)
class FetchMessage:
    name: str
    uid: int


@dataclass(frozen=True, slots=True)
class FetchMessages:
    name: str
    uids: tuple[int, ...]
    max_bytes: int


@dataclass(frozen=True, slots=True)
class FetchSummaries:
    name: str
    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StoreFlags:
    name: str
    uids: tuple[int, ...]
    mode: str
    flags: frozenset[str]
    unchangedsince: int | None = None


@dataclass(frozen=True, slots=True)
class AppendMessage:
    name: str
    message: bytes
    flags: frozenset[str]
    date: datetime.datetime | None


@dataclass(frozen=True, slots=True)
class CopyMessages:
    source: str
    uids: tuple[int, ...]
    dest: str
    move: bool


@dataclass(frozen=True, slots=True)
class ExpungeMessages:
    name: str
    uids: tuple[int, ...]


StoreRequest = (ListFolders | CreateFolder | DeleteFolder | RenameFolder | SubscribeFolder
                | ViewFolder | FetchMessage | FetchMessages | FetchSummaries | StoreFlags
                | AppendMessage | CopyMessages | ExpungeMessages)
StoreResult = (Sequence[FolderInfo] | FolderView | bytes | Sequence[MessageInfo] | Appended
               | Copied | Sequence[int] | Sequence[tuple[int, bytes | None]]
               | Sequence[tuple[int, Summary | None]] | None | MailboxError)


def perform(store: MailStore, request: StoreRequest) -> StoreResult:
    """Run ``request`` against ``store`` (in the shell, off the hub); a ``MailboxError`` is
    returned, not raised."""
    try:
        match request:
            case ListFolders():
                return store.list_folders()
            case CreateFolder(name, use):
                store.create(name, use)
            case DeleteFolder(name):
                store.delete(name)
            case RenameFolder(old, new):
                store.rename(old, new)
            case SubscribeFolder(name, on):
                store.subscribe(name, on)
            case ViewFolder(name):
                return store.view(name)
            case FetchMessage(name, uid):
                return store.fetch(name, uid)
            case FetchMessages(name, uids, max_bytes):
                return store.fetch_many(name, uids, max_bytes)
            case FetchSummaries(name, uids):
                return store.summaries(name, uids)
            case StoreFlags(name, uids, mode, flags, since):
                return store.store_flags(name, uids, mode, flags, since)
            case AppendMessage(name, message, flags, date):
                return store.append(name, message, flags, date)
            case CopyMessages(source, uids, dest, move):
                return store.copy(source, uids, dest, move)
            case ExpungeMessages(name, uids):
                return store.expunge(name, uids)
            case _:
                raise TypeError(f"not a store request: {request!r}")
    except MailboxError as error:
        return error
    return None
