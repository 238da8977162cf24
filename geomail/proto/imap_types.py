"""The typed IMAP commands that ``proto/imap_parser`` produces (RFC 9051 section 9, the formal
syntax, and RFC 3501 9 for the rev1-only commands). Pure data: no I/O, nothing served yet.

Strings are ``str`` (UTF-8, RFC 9051 allows it in quoted strings and literals), except the
APPEND message, which stays ``bytes``. Mailbox names are as the client sent them (modified
UTF-7 or UTF-8: decoding is the session's choice, see ``proto/imap_mutf7``), with ``INBOX`` in
any case folded to ``INBOX`` (RFC 9051 5.1).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

STAR = None  # ``*`` in a sequence set: the largest number in use (RFC 9051 9, seq-number)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """RFC 9051 9 ``sequence-set``: ranges ``(low, high)`` as sent (``None`` for ``*``, a single
    number is ``(n, n)``); ``saved`` for ``$``, the result saved by SEARCH RETURN (SAVE)
    (RFC 9051 6.4.4.1, RFC 5182)."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False


# ---- FETCH (RFC 9051 6.4.5) -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Section:
    """RFC 9051 9 ``section-spec``: ``part`` (e.g. ``(1, 2)`` for ``1.2``), then ``text`` one of
    ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``, ``TEXT``, ``MIME`` or ``None``;
    ``fields`` the header names for the ``HEADER.FIELDS`` forms (upper case)."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """One fetch-att. ``name`` is ENVELOPE, FLAGS, INTERNALDATE, RFC822, RFC822.HEADER,
    RFC822.SIZE, RFC822.TEXT, BODY, BODYSTRUCTURE, UID, MODSEQ, BINARY or BINARY.SIZE.
    ``section`` is set for ``BODY[...]``/``BINARY[...]`` (``BODY`` without it is the structure);
    ``partial`` is ``<offset.length>``; ``peek`` for ``.PEEK`` (RFC 9051 6.4.5)."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH / UID FETCH (RFC 9051 6.4.5); ``changedsince`` and ``vanished`` are the CONDSTORE
    and QRESYNC modifiers (RFC 7162 3.1.4, 3.2.6); macros are expanded (ALL, FAST, FULL)."""

    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    changedsince: int | None = None
    vanished: bool = False


# ---- STORE (RFC 9051 6.4.6) -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Store:
    """``mode`` is ``"+"``, ``"-"`` or ``""`` (replace); ``unchangedsince`` RFC 7162 3.1.3."""

    sequence: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None


# ---- SEARCH (RFC 9051 6.4.4) ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SearchAll:
    """ALL."""


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """Keys side by side, or in parentheses: all must match."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """ANSWERED/UNANSWERED, DELETED, DRAFT, FLAGGED, SEEN, RECENT (rev1), KEYWORD/UNKEYWORD:
    ``flag`` (``\\Seen``, or a keyword) set (``present``) or not. NEW and OLD (rev1) are expanded
    to ``RECENT UNSEEN`` and ``NOT RECENT``."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER name value, and BCC, CC, FROM, SUBJECT, TO as their header fields (upper case)."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY (``where="BODY"``) or TEXT (header and body)."""

    where: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE (``sent=False``: internal date) and SENTBEFORE/SENTON/SENTSINCE;
    ``op`` is ``"before"``, ``"on"`` or ``"since"``."""

    op: str
    date: datetime.date
    sent: bool = False


@dataclass(frozen=True, slots=True)
class SearchSize:
    """LARGER n (``larger=True``) or SMALLER n."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A sequence set, or UID set (``uid=True``)."""

    sequence: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """MODSEQ [entry type] n (RFC 7162 3.1.5): ``entry`` is the ``"/flags/..."`` name and
    ``priv``/``shared``/``all``, or None."""

    modseq: int
    entry: tuple[str, str] | None = None


SearchKey = (SearchAll | SearchAnd | SearchOr | SearchNot | SearchFlag | SearchHeader
             | SearchText | SearchDate | SearchSize | SearchSet | SearchModSeq)


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH: ``returns`` the RETURN options (ESEARCH, RFC 9051 6.4.4 and
    RFC 4731: MIN MAX ALL COUNT SAVE), None when no RETURN was given (a rev1 ``* SEARCH``
    answer); ``charset`` upper case or None."""

    key: SearchKey
    charset: str | None = None
    returns: tuple[str, ...] | None = None


# ---- mailboxes --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QResync:
    """SELECT's QRESYNC parameter (RFC 7162 3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT or EXAMINE (``readonly``) (RFC 9051 6.3.2, 6.3.3), with CONDSTORE/QRESYNC."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class MailboxCommand:
    """DELETE, SUBSCRIBE, UNSUBSCRIBE (RFC 9051 6.3.5, 6.3.7, 6.3.8); CREATE with its
    ``use`` special-use attributes (RFC 6154 3)."""

    mailbox: str
    use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rename:
    """RENAME (RFC 9051 6.3.6)."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST, basic and extended (RFC 9051 6.3.9, RFC 5258, RFC 6154, RFC 5819), and LSUB
    (rev1, as ``selection=("SUBSCRIBED",)`` with ``lsub=True``). ``status`` the items of
    RETURN (STATUS (...))."""

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    lsub: bool = False
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS (RFC 9051 6.3.11): items upper case."""

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """APPEND (RFC 9051 6.3.12); ``date`` the optional date-time; ``binary`` for a literal8."""

    mailbox: str
    message: bytes
    flags: tuple[str, ...] = ()
    date: datetime.datetime | None = None
    binary: bool = False


@dataclass(frozen=True, slots=True)
class CopyMove:
    """COPY / MOVE and their UID forms (RFC 9051 6.4.7, 6.4.8)."""

    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Expunge:
    """EXPUNGE, or UID EXPUNGE with its UID set (RFC 9051 6.4.3, 6.4.9)."""

    uids: SequenceSet | None = None


# ---- connection -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Login:
    """LOGIN (RFC 9051 6.2.3)."""

    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE (RFC 9051 6.2.2) with the SASL-IR initial response (RFC 4959): the base64
    text, ``""`` for ``=`` (an empty response), None when absent. Not decoded here."""

    mechanism: str
    initial: str | None = None


@dataclass(frozen=True, slots=True)
class Enable:
    """ENABLE (RFC 9051 6.3.1): capability names, upper case."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Id:
    """ID (RFC 2971): field/value pairs (value None for NIL); None for ``ID NIL``."""

    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class NoArguments:
    """CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK (rev1), CLOSE, UNSELECT, IDLE, NAMESPACE."""


Arguments = (Fetch | Store | Search | Select | MailboxCommand | Rename | List | Status | Append
             | CopyMove | Expunge | Login | Authenticate | Enable | Id | NoArguments)


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command: ``name`` upper case without the UID prefix, ``uid`` for UID FETCH,
    UID STORE, UID SEARCH, UID COPY, UID MOVE, UID EXPUNGE (RFC 9051 6.4.9)."""

    tag: str
    name: str
    arguments: Arguments = field(default_factory=NoArguments)
    uid: bool = False
