"""IMAP command framing and parsing, sans-IO (RFC 9051 section 9, the formal syntax; RFC 3501 9
for rev1; LITERAL+/LITERAL- RFC 7888; CONDSTORE/QRESYNC RFC 7162; extended LIST RFC 5258,
RFC 6154, RFC 5819; ESEARCH RFC 4731; SEARCHRES RFC 5182; SASL-IR RFC 4959; ID RFC 2971).

The foundation of the IMAP server (issue #14), not yet served. Two parts:

- ``CommandReader``: bytes in, events out. A command is one or more CRLF lines joined by
  literals (``{n}`` synchronizing, ``{n+}`` non-synchronizing, RFC 9051 4.3, RFC 7888). The
  reader returns ``CommandReady`` (the whole command, literals inline, without its final CRLF),
  ``LiteralRequest`` for a synchronizing literal (the caller answers ``accept()`` after sending
  ``+ ...``, or ``refuse()`` after a tagged NO/BAD: the client then sends nothing for it),
  ``TooBig`` (a literal over its limit: a synchronizing one is dropped with its command, the
  caller answers ``NO [TOOBIG]`` for APPEND, ``BAD`` otherwise; a non-synchronizing one is
  ``fatal``: answer ``BAD [TOOBIG]`` and close, RFC 7888 4) and ``Fatal`` (a line over its limit,
  a bare LF, a command over its total limit: send ``* BYE`` and close). ``expect_line()`` makes
  the next line raw (``LineReady``): AUTHENTICATE responses and IDLE's ``DONE``. The caller
  takes one event at a time (``next_event``) and handles it before asking for the next, so a
  pipelined command after IDLE or AUTHENTICATE is not read as a command too early. Literals
  are held in memory (an APPEND message up to ``max_message``): streaming them to a spool is
  later work.
- ``parse_command``: the bytes of one command to a typed ``imap_types.Command``, or
  ``ParseError`` (a short reason for ``BAD``; ``tag`` when it was readable). It raises nothing
  else, whatever the input (tests/fuzz/test_imap_parser.py).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass

from geomail.proto.imap_types import (
    Append,
    Arguments,
    Authenticate,
    Command,
    CopyMove,
    Enable,
    Expunge,
    Fetch,
    FetchAttribute,
    Id,
    List,
    Login,
    MailboxCommand,
    NoArguments,
    QResync,
    Rename,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    Section,
    Select,
    SequenceSet,
    Status,
    Store,
)

KiB = 1024
MAX_NUMBER = 2**32 - 1  # RFC 9051 9: number, nz-number
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 9: number64, mod-sequence-value (RFC 7162 7)
MAX_DEPTH = 32  # nested parentheses (search keys, lists): deeper is refused, not recursed
MAX_ID_PAIRS = 30  # RFC 2971 3.3


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """The reader's limits (RFC 9051 4: a server may refuse what it cannot handle; RFC 7888 4).

    ``max_line``: one line of a command without its CRLF; ``max_literal``: a literal of any
    command but APPEND; ``max_message``: an APPEND literal (the message); ``max_command``: the
    whole command without the APPEND message; ``max_nonsync_literal``: when set (4096 for
    LITERAL-), a larger non-synchronizing literal is ``TooBig(fatal=True)``."""

    max_line: int = 8 * KiB
    max_literal: int = 64 * KiB
    max_message: int = 50 * 1024 * KiB
    max_command: int = 256 * KiB
    max_nonsync_literal: int | None = None


# ---- reader events ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CommandReady:
    """A complete command: its bytes (literals inline), without the final CRLF."""

    data: bytes


@dataclass(frozen=True, slots=True)
class LineReady:
    """The raw line asked for by ``expect_line`` (an AUTHENTICATE response, IDLE's DONE)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class LiteralRequest:
    """A synchronizing literal of ``size`` octets was announced for ``tag`` ``name`` (e.g.
    ``"APPEND"``, ``"UID SEARCH"``). The reader waits for ``accept()`` or ``refuse()``."""

    tag: str
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class TooBig:
    """A literal over its limit (RFC 9051 7.1 TOOBIG, RFC 7888 4). ``fatal`` when its octets
    are on their way (non-synchronizing): answer BAD and close."""

    tag: str
    name: str
    size: int
    fatal: bool


@dataclass(frozen=True, slots=True)
class Fatal:
    """The stream cannot be followed any more: send ``* BYE reason`` and close."""

    reason: str


ReaderEvent = CommandReady | LineReady | LiteralRequest | TooBig | Fatal
_LITERAL_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\Z")


class CommandReader:
    """Incremental command framing (RFC 9051 2.2, 4.3; RFC 7888). Never raises on input."""

    def __init__(self, limits: ReaderLimits | None = None) -> None:
        self.limits = limits or ReaderLimits()
        self._buf = bytearray()
        self._parts: list[bytes] = []  # the command so far
        self._size = 0  # octets of the command so far, the APPEND message not counted
        self._literal = 0  # octets of a literal still to read into the command
        self._literal_counts = True
        self._waiting = False  # for accept()/refuse()
        self._raw_line = False
        self._dead = False

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def expect_line(self) -> None:
        """Return the next line raw, as ``LineReady``."""
        self._raw_line = True

    def accept(self) -> None:
        """After ``LiteralRequest`` (and the ``+`` continuation sent): read the literal."""
        self._waiting = False

    def refuse(self) -> None:
        """After ``LiteralRequest`` (and a tagged NO/BAD sent): drop the command."""
        self._waiting = False
        self._literal = 0
        self._reset()

    def next_event(self) -> ReaderEvent | None:
        """The next event, or None until more bytes are fed (or while a request waits)."""
        if self._dead or self._waiting:
            return None
        while True:
            if self._literal:
                take = min(self._literal, len(self._buf))
                if not take:
                    return None
                self._parts.append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._literal -= take
                if self._literal:
                    return None
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > self.limits.max_line + 1:
                    return self._fatal("line too long")
                return None
            if end > self.limits.max_line + 1:
                return self._fatal("line too long")
            if end == 0 or self._buf[end - 1] != 0x0D or 0x0D in self._buf[:end - 1]:
                return self._fatal("bare CR or LF")
            line = bytes(self._buf[:end - 1])
            del self._buf[:end + 1]
            if self._raw_line and not self._parts:
                self._raw_line = False
                return LineReady(line)
            event = self._line(line)
            if event is not None:
                return event

    def _line(self, line: bytes) -> ReaderEvent | None:
        self._size += len(line) + 2
        if self._size > self.limits.max_command:
            return self._fatal("command too long")
        self._parts.append(line)
        match = _LITERAL_END.search(line)
        if match is None:
            data = b"".join(self._parts)
            self._reset()
            return CommandReady(data)
        size, sync = int(match[2]), not match[3]
        tag, name = _tag_and_name(b"".join(self._parts[:1]))
        append = name == "APPEND"
        limit = self.limits.max_message if append else self.limits.max_literal
        nonsync_limit = self.limits.max_nonsync_literal
        if size > limit or (not sync and nonsync_limit is not None and size > nonsync_limit):
            self._reset()
            if not sync:
                self._dead = True
            return TooBig(tag, name, size, fatal=not sync)
        if not append or size <= self.limits.max_literal:
            self._size += size
            if self._size > self.limits.max_command:
                return self._fatal("command too long")
        self._parts.append(b"\r\n")
        self._literal = size
        if sync:
            self._waiting = True
            return LiteralRequest(tag, name, size)
        return None

    def _reset(self) -> None:
        self._parts = []
        self._size = 0

    def _fatal(self, reason: str) -> Fatal:
        self._dead = True
        self._buf.clear()
        self._reset()
        return Fatal(reason)


def _tag_and_name(line: bytes) -> tuple[str, str]:
    words = line.split(b" ", 3)
    tag = words[0].decode("ascii", "replace")[:64]
    name = words[1].upper().decode("ascii", "replace")[:32] if len(words) > 1 else ""
    if name == "UID" and len(words) > 2:
        name += " " + words[2].upper().decode("ascii", "replace")[:32]
    return tag, name


# ---- the parser -------------------------------------------------------------------------------

class ParseError(Exception):
    """Malformed command: ``reason`` for the tagged (or untagged, without a tag) BAD."""

    def __init__(self, reason: str, tag: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag


_CTL = frozenset(range(0x20)) | {0x7F}
# RFC 9051 9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials /
# resp-specials; ATOM-CHAR = any CHAR (%x01-7F) except atom-specials.
_ATOM = frozenset(range(0x01, 0x80)) - _CTL - frozenset(b'(){ %*"\\]')
_ASTRING = _ATOM | {ord("]")}
_LIST_CHAR = _ATOM | frozenset(b"%*]")
_TAG = _ASTRING - {ord("+")}
_DIGITS = frozenset(b"0123456789")
_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_DATE_TIME = re.compile(
    rb'"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_SYSTEM_FLAGS = {f.upper(): f for f in
                 ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}


class _Cursor:
    """Reads the tokens of one command (RFC 9051 9); every fault is a ParseError."""

    __slots__ = ("data", "depth", "pos", "tag")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.depth = 0
        self.tag: str | None = None

    def fail(self, reason: str) -> ParseError:
        return ParseError(reason, self.tag)

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def startswith(self, text: bytes) -> bool:
        return self.data[self.pos:self.pos + len(text)].upper() == text

    def expect(self, char: bytes, what: str) -> None:
        if self.data[self.pos:self.pos + 1] != char:
            raise self.fail(f"{what} expected")
        self.pos += 1

    def sp(self) -> None:
        self.expect(b" ", "space")

    def try_char(self, char: bytes) -> bool:
        if self.data[self.pos:self.pos + 1] == char:
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("unexpected characters after the arguments")

    def run(self, chars: frozenset[int], what: str) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] in chars:
            self.pos += 1
        if self.pos == start:
            raise self.fail(f"{what} expected")
        return data[start:self.pos]

    def atom(self, what: str = "atom") -> str:
        return self.run(_ATOM, what).decode("ascii")

    def word(self) -> str:
        """An atom, upper case (command names, keywords of the grammar)."""
        return self.atom("keyword").upper()

    def keyword(self, *choices: str) -> str:
        found = self.word()
        if found not in choices:
            raise self.fail(f"{'/'.join(choices)} expected")
        return found

    def open(self) -> None:
        self.expect(b"(", "'('")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail("too deeply nested")

    def close(self) -> None:
        self.expect(b")", "')'")
        self.depth -= 1

    def number(self, limit: int = MAX_NUMBER, nonzero: bool = False) -> int:
        digits = self.run(_DIGITS, "number")
        if len(digits) > 20 or int(digits) > limit:
            raise self.fail("number too large")
        if nonzero and (digits[0] == 0x30):
            raise self.fail("non-zero number expected")
        return int(digits)

    def modseq(self) -> int:
        """RFC 7162 7 mod-sequence-value: 1*DIGIT, positive, 63 bits."""
        value = self.number(MAX_NUMBER64)
        if not value:
            raise self.fail("non-zero number expected")
        return value

    # -- strings (RFC 9051 4.3) --

    def quoted(self) -> bytes:
        self.expect(b'"', "quoted string")
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self.fail("unterminated quoted string")
            char = data[self.pos]
            self.pos += 1
            if char == 0x22:
                return bytes(out)
            if char == 0x5C:
                escaped = self.peek()
                if escaped not in (0x22, 0x5C):
                    raise self.fail("bad escape in quoted string")
                self.pos += 1
                out.append(escaped)
            elif char in (0x00, 0x0A, 0x0D):
                raise self.fail("bad character in quoted string")
            else:
                out.append(char)

    def literal(self, binary: bool = False) -> bytes:
        if binary:
            self.expect(b"~", "literal8")
        self.expect(b"{", "literal")
        size = self.number(MAX_NUMBER64)
        self.try_char(b"+")
        self.expect(b"}", "'}'")
        self.expect(b"\r", "CRLF after literal")
        self.expect(b"\n", "CRLF after literal")
        if len(self.data) - self.pos < size:
            raise self.fail("literal shorter than announced")
        value = self.data[self.pos:self.pos + size]
        self.pos += size
        if not binary and 0 in value:
            raise self.fail("NUL in literal")
        return value

    def string_bytes(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        return self.literal()

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8") from None

    def string(self) -> str:
        return self.text(self.string_bytes())

    def astring(self) -> str:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.run(_ASTRING, "astring").decode("ascii")

    def nstring(self) -> str | None:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        self.keyword("NIL")
        return None

    def mailbox(self) -> str:
        name = self.astring()
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.run(_LIST_CHAR, "mailbox pattern").decode("ascii")

    # -- grammar pieces --

    def sequence_set(self) -> SequenceSet:
        """RFC 9051 9 sequence-set; ``$`` RFC 5182 2."""
        if self.try_char(b"$"):
            return SequenceSet(saved=True)
        ranges = []
        while True:
            low = self.seq_number()
            high = self.seq_number() if self.try_char(b":") else low
            ranges.append((low, high))
            if not self.try_char(b","):
                return SequenceSet(tuple(ranges))

    def seq_number(self) -> int | None:
        if self.try_char(b"*"):
            return None
        return self.number(nonzero=True)

    def flag(self) -> str:
        """RFC 9051 9 flag: a system flag, ``\\``-extension or keyword (atom)."""
        if self.try_char(b"\\"):
            name = "\\" + self.atom("flag")
            return _SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom("flag")

    def flag_list(self) -> tuple[str, ...]:
        self.open()
        flags = []
        if self.peek() != 0x29:
            flags.append(self.flag())
            while self.try_char(b" "):
                flags.append(self.flag())
        self.close()
        return tuple(flags)

    def atom_list(self, allow_empty: bool = True) -> tuple[str, ...]:
        self.open()
        items = []
        if self.peek() != 0x29 or not allow_empty:
            items.append(self.word())
            while self.try_char(b" "):
                items.append(self.word())
        self.close()
        return tuple(items)

    def date_time(self) -> datetime.datetime:
        """RFC 9051 9 date-time: ``"dd-Mon-yyyy hh:mm:ss +zzzz"``."""
        match = _DATE_TIME.match(self.data, self.pos)
        if match is None:
            raise self.fail("bad date-time")
        self.pos = match.end()
        day, month, year, hh, mm, ss, sign, zh, zm = match.groups()
        try:
            offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
            if zm > b"59":
                raise ValueError
            zone = datetime.timezone(-offset if sign == b"-" else offset)
            return datetime.datetime(int(year), self.month(month), int(day.strip() or b"x"),
                                     int(hh), int(mm), int(ss), tzinfo=zone)
        except ValueError:
            raise self.fail("bad date-time") from None

    def month(self, name: bytes) -> int:
        month = _MONTHS.get(name.decode("ascii").upper())
        if month is None:
            raise self.fail("bad month")
        return month

    def date(self) -> datetime.date:
        """RFC 9051 9 date: date-text, bare or quoted."""
        quoted = self.try_char(b'"')
        match = _DATE.match(self.data, self.pos)
        if match is None:
            raise self.fail("bad date")
        self.pos = match.end()
        if quoted:
            self.expect(b'"', "closing quote")
        try:
            return datetime.date(int(match[3]), self.month(match[2]), int(match[1]))
        except ValueError:
            raise self.fail("bad date") from None


# ---- commands ---------------------------------------------------------------------------------

def parse_command(data: bytes) -> Command:
    """One command (``CommandReady.data``) to a ``Command``; ``ParseError`` when malformed."""
    cur = _Cursor(data)
    try:
        tag = cur.run(_TAG, "tag").decode("ascii")
    except ParseError:
        raise ParseError("tag expected") from None
    cur.tag = tag
    cur.sp()
    name = cur.word()
    uid = False
    if name == "UID":
        cur.sp()
        name = cur.word()
        if name not in _UID_COMMANDS:
            raise cur.fail(f"UID {name[:20]} is not a command")
        uid = True
    handler = _COMMANDS.get(name)
    if handler is None:
        raise cur.fail("unknown command")
    try:
        arguments = handler(cur, name, uid)
    except RecursionError:  # not reachable with MAX_DEPTH, but never escape as another kind
        raise cur.fail("too deeply nested") from None
    cur.end()
    return Command(tag, name, arguments, uid)


def parse_done(data: bytes) -> bool:
    """IDLE's end (RFC 9051 6.3.13, RFC 2177): True for ``DONE`` (any case)."""
    return data.upper() == b"DONE"


def _no_arguments(cur: _Cursor, name: str, uid: bool) -> Arguments:
    return NoArguments()


def _select(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.3.2/6.3.3; select-param CONDSTORE (RFC 7162 3.1.8), QRESYNC (3.2.5)."""
    cur.sp()
    mailbox = cur.mailbox()
    condstore, qresync = False, None
    if cur.try_char(b" "):
        cur.open()
        while True:
            param = cur.word()
            if param == "CONDSTORE" and not condstore:
                condstore = True
            elif param == "QRESYNC" and qresync is None:
                cur.sp()
                qresync = _qresync(cur)
            else:
                raise cur.fail(f"unknown or repeated SELECT parameter {param[:20]}")
            if not cur.try_char(b" "):
                break
        cur.close()
    return Select(mailbox, name == "EXAMINE", condstore, qresync)


def _qresync(cur: _Cursor) -> QResync:
    cur.open()
    uidvalidity = cur.number(nonzero=True)
    cur.sp()
    modseq = cur.modseq()
    known = match = None
    if cur.try_char(b" "):
        if cur.peek() != 0x28:
            known = cur.sequence_set()
            if known.saved:
                raise cur.fail("$ not allowed here")
        if known is None or cur.try_char(b" "):
            cur.open()
            seqs = cur.sequence_set()
            cur.sp()
            uids = cur.sequence_set()
            cur.close()
            if seqs.saved or uids.saved:
                raise cur.fail("$ not allowed here")
            match = (seqs, uids)
    cur.close()
    return QResync(uidvalidity, modseq, known, match)


def _mailbox_only(cur: _Cursor, name: str, uid: bool) -> Arguments:
    cur.sp()
    return MailboxCommand(cur.mailbox())


def _create(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.3.4; CREATE-SPECIAL-USE ``(USE (\\Sent ...))`` (RFC 6154 3)."""
    cur.sp()
    mailbox = cur.mailbox()
    use: tuple[str, ...] = ()
    if cur.try_char(b" "):
        cur.open()
        cur.keyword("USE")
        cur.sp()
        use = cur.flag_list()
        cur.close()
    return MailboxCommand(mailbox, use)


def _rename(cur: _Cursor, name: str, uid: bool) -> Arguments:
    cur.sp()
    old = cur.mailbox()
    cur.sp()
    return Rename(old, cur.mailbox())


_SELECT_OPTIONS = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_RETURN_OPTIONS = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"}
_STATUS_ITEMS = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                 "HIGHESTMODSEQ", "APPENDLIMIT"}


def _list(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.3.9 and 9 (list, list-select-opts, list-return-opts); RFC 5258, 6154, 5819."""
    cur.sp()
    selection: tuple[str, ...] = ()
    extended = False
    if cur.peek() == 0x28:
        selection = cur.atom_list()
        extended = True
        unknown = set(selection) - _SELECT_OPTIONS
        if unknown:
            raise cur.fail("unknown LIST selection option")
        if "RECURSIVEMATCH" in selection and len(selection) == 1:
            raise cur.fail("RECURSIVEMATCH alone")  # RFC 5258 3.1: needs another option
        cur.sp()
    reference = cur.mailbox()
    cur.sp()
    if cur.peek() == 0x28:
        extended = True
        cur.open()
        patterns = [cur.list_mailbox()]
        while cur.try_char(b" "):
            patterns.append(cur.list_mailbox())
        cur.close()
    else:
        patterns = [cur.list_mailbox()]
    returns: list[str] = []
    status: tuple[str, ...] = ()
    if cur.try_char(b" "):
        extended = True
        cur.keyword("RETURN")
        cur.sp()
        cur.open()
        while cur.peek() != 0x29:
            option = cur.word()
            if option not in _RETURN_OPTIONS or option in returns:
                raise cur.fail("unknown or repeated LIST return option")
            returns.append(option)
            if option == "STATUS":
                cur.sp()
                status = _status_items(cur)
            if not cur.try_char(b" "):
                break
        cur.close()
    return List(reference, tuple(patterns), selection, tuple(returns), status,
                extended=extended)


def _lsub(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 3501 6.3.9 (rev1 only)."""
    cur.sp()
    reference = cur.mailbox()
    cur.sp()
    return List(reference, (cur.list_mailbox(),), ("SUBSCRIBED",), lsub=True)


def _status_items(cur: _Cursor) -> tuple[str, ...]:
    items = cur.atom_list(allow_empty=False)
    if not set(items) <= _STATUS_ITEMS:
        raise cur.fail("unknown STATUS item")
    return items


def _status(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.3.11."""
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    return Status(mailbox, _status_items(cur))


def _append(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.3.12: mailbox [flag-list] [date-time] literal (literal8 with BINARY)."""
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    flags: tuple[str, ...] = ()
    date = None
    if cur.peek() == 0x28:
        flags = cur.flag_list()
        cur.sp()
    if cur.peek() == 0x22:
        date = cur.date_time()
        cur.sp()
    binary = cur.peek() == 0x7E
    message = cur.literal(binary)
    return Append(mailbox, message, flags, date, binary)


def _login(cur: _Cursor, name: str, uid: bool) -> Arguments:
    cur.sp()
    user = cur.astring()
    cur.sp()
    return Login(user, cur.astring())


_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _authenticate(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.2.2; the initial response of SASL-IR (RFC 4959 7: base64 or ``=``)."""
    cur.sp()
    mechanism = cur.word()
    initial = None
    if cur.try_char(b" "):
        initial = cur.run(_BASE64, "initial response").decode("ascii")
        if initial != "=" and (len(initial) % 4 or "=" in initial.rstrip("=")
                               or initial.endswith("===")):
            raise cur.fail("bad base64 in initial response")
        initial = "" if initial == "=" else initial
    return Authenticate(mechanism, initial)


def _enable(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.3.1: ``ENABLE 1*(SP capability)``."""
    caps = []
    while cur.try_char(b" "):
        caps.append(cur.word())
    if not caps:
        raise cur.fail("capability expected")
    return Enable(tuple(caps))


def _id(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 2971 3.3: ``ID ("field" "value" ...)`` or ``ID NIL``."""
    cur.sp()
    if cur.peek() != 0x28:
        cur.keyword("NIL")
        return Id(None)
    cur.open()
    params: list[tuple[str, str | None]] = []
    while cur.peek() != 0x29:
        field = cur.string()
        cur.sp()
        params.append((field, cur.nstring()))
        if len(params) > MAX_ID_PAIRS:
            raise cur.fail("too many ID fields")
        if not cur.try_char(b" "):
            break
    cur.close()
    return Id(tuple(params))


def _expunge(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """EXPUNGE (RFC 9051 6.4.3), UID EXPUNGE sequence-set (6.4.9)."""
    if not uid:
        return Expunge()
    cur.sp()
    return Expunge(cur.sequence_set())


def _copy_move(cur: _Cursor, name: str, uid: bool) -> Arguments:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    return CopyMove(sequence, cur.mailbox())


# -- FETCH --

_SIMPLE_ATTS = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
                "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ"}
_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FETCH_ATOM = _ATOM - frozenset(b"[<")


def _fetch(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.4.5 and 9 (fetch, fetch-att); modifiers CHANGEDSINCE (RFC 7162 3.1.4) and
    VANISHED (RFC 7162 3.2.6, UID FETCH only)."""
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    atts: list[FetchAttribute] = []
    if cur.peek() == 0x28:
        cur.open()
        atts.append(_fetch_att(cur))
        while cur.try_char(b" "):
            atts.append(_fetch_att(cur))
        cur.close()
    else:
        start = cur.pos
        word = cur.run(_FETCH_ATOM, "fetch attribute").decode("ascii").upper()
        if word in _MACROS:
            atts.extend(FetchAttribute(att) for att in _MACROS[word])
        else:
            cur.pos = start
            atts.append(_fetch_att(cur))
    changedsince = None
    vanished = False
    if cur.try_char(b" "):
        cur.open()
        while True:
            modifier = cur.word()
            if modifier == "CHANGEDSINCE" and changedsince is None:
                cur.sp()
                changedsince = cur.modseq()
            elif modifier == "VANISHED" and uid and not vanished:
                vanished = True
            else:
                raise cur.fail("unknown or repeated FETCH modifier")
            if not cur.try_char(b" "):
                break
        cur.close()
        if vanished and changedsince is None:
            raise cur.fail("VANISHED needs CHANGEDSINCE")  # RFC 7162 3.2.6
    return Fetch(sequence, tuple(atts), changedsince, vanished)


def _fetch_att(cur: _Cursor) -> FetchAttribute:
    word = cur.run(_FETCH_ATOM, "fetch attribute").decode("ascii").upper()
    if word in _SIMPLE_ATTS:
        return FetchAttribute(word)
    if word in ("BODY", "BODY.PEEK"):
        if cur.peek() != 0x5B:
            if word == "BODY.PEEK":
                raise cur.fail("section expected")
            return FetchAttribute("BODY")
        section = _section(cur)
        return FetchAttribute("BODY", section, _partial(cur), word == "BODY.PEEK")
    if word in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        part = _section_binary(cur)
        partial = None if word == "BINARY.SIZE" else _partial(cur)
        name = "BINARY.SIZE" if word == "BINARY.SIZE" else "BINARY"
        return FetchAttribute(name, Section(part), partial, word == "BINARY.PEEK")
    raise cur.fail("unknown fetch attribute")


def _section_part(cur: _Cursor) -> tuple[tuple[int, ...], bool]:
    """``1.2.3`` and whether a ``.`` follows it (for section-text)."""
    part = [cur.number(nonzero=True)]
    while cur.try_char(b"."):
        if cur.peek() not in _DIGITS:
            return tuple(part), True
        part.append(cur.number(nonzero=True))
    return tuple(part), False


def _section(cur: _Cursor) -> Section:
    """RFC 9051 9 section / section-spec / section-msgtext / section-text."""
    cur.expect(b"[", "'['")
    part: tuple[int, ...] = ()
    text = None
    fields: tuple[str, ...] = ()
    if cur.peek() != 0x5D:
        dot = True
        if cur.peek() in _DIGITS:
            part, dot = _section_part(cur)
        if dot:
            word = cur.run(_FETCH_ATOM - {ord("]")}, "section text").decode("ascii").upper()
            allowed = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"}
            if part:
                allowed.add("MIME")
            if word not in allowed:
                raise cur.fail("bad section")
            text = word
            if word.startswith("HEADER.FIELDS"):
                cur.sp()
                cur.open()
                names = [cur.astring().upper()]
                while cur.try_char(b" "):
                    names.append(cur.astring().upper())
                cur.close()
                fields = tuple(names)
    cur.expect(b"]", "']'")
    return Section(part, text, fields)


def _section_binary(cur: _Cursor) -> tuple[int, ...]:
    """RFC 9051 9 section-binary: ``[`` [section-part] ``]``."""
    cur.expect(b"[", "'['")
    part: tuple[int, ...] = ()
    if cur.peek() != 0x5D:
        part, dot = _section_part(cur)
        if dot:
            raise cur.fail("bad binary section")
    cur.expect(b"]", "']'")
    return part


def _partial(cur: _Cursor) -> tuple[int, int] | None:
    """RFC 9051 9 partial: ``<number.nz-number>``."""
    if not cur.try_char(b"<"):
        return None
    offset = cur.number()
    cur.expect(b".", "'.'")
    length = cur.number(nonzero=True)
    cur.expect(b">", "'>'")
    return offset, length


# -- STORE --

def _store(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.4.6, store-att-flags; UNCHANGEDSINCE (RFC 7162 3.1.3)."""
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    unchanged = None
    if cur.peek() == 0x28:
        cur.open()
        cur.keyword("UNCHANGEDSINCE")
        cur.sp()
        unchanged = cur.number(MAX_NUMBER64)
        cur.close()
        cur.sp()
    mode = ""
    if cur.peek() in (0x2B, 0x2D):
        mode = chr(cur.peek())
        cur.pos += 1
    word = cur.keyword("FLAGS", "FLAGS.SILENT")
    cur.sp()
    if cur.peek() == 0x28:
        flags = cur.flag_list()
    else:
        items = [cur.flag()]
        while cur.try_char(b" "):
            items.append(cur.flag())
        flags = tuple(items)
    return Store(sequence, mode, word == "FLAGS.SILENT", flags, unchanged)


# -- SEARCH --

_SEARCH_RETURNS = {"MIN", "MAX", "ALL", "COUNT", "SAVE"}
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
    "RECENT": ("\\Recent", True),
}
_HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}
_KEYS_WITH_ARGUMENTS = {"KEYWORD", "UNKEYWORD", "HEADER", "BODY", "TEXT", "LARGER", "SMALLER",
                        "UID", "NOT", "OR", "MODSEQ", "BCC", "CC", "FROM", "SUBJECT", "TO",
                        "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_DATE_KEYS = {"BEFORE": ("before", False), "ON": ("on", False), "SINCE": ("since", False),
              "SENTBEFORE": ("before", True), "SENTON": ("on", True),
              "SENTSINCE": ("since", True)}


def _search(cur: _Cursor, name: str, uid: bool) -> Arguments:
    """RFC 9051 6.4.4 and 9 (search, search-program, search-return-opts, search-key)."""
    cur.sp()
    returns = None
    charset = None
    if cur.startswith(b"RETURN ("):
        cur.pos += len(b"RETURN ")
        cur.open()
        options: list[str] = []
        while cur.peek() != 0x29:
            option = cur.word()
            if option not in _SEARCH_RETURNS or option in options:
                raise cur.fail("unknown or repeated SEARCH return option")
            options.append(option)
            if not cur.try_char(b" "):
                break
        cur.close()
        cur.sp()
        returns = tuple(options)
    if cur.startswith(b"CHARSET "):
        cur.pos += len(b"CHARSET ")
        charset = cur.astring().upper()
        cur.sp()
    keys = [_search_key(cur)]
    while cur.try_char(b" "):
        keys.append(_search_key(cur))
    key = keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    return Search(key, charset, returns)


def _search_key(cur: _Cursor) -> SearchKey:
    """One RFC 9051 search-key (with RFC 3501's NEW, OLD, RECENT; RFC 7162's MODSEQ)."""
    char = cur.peek()
    if char == 0x28:
        cur.open()
        keys = [_search_key(cur)]
        while cur.try_char(b" "):
            keys.append(_search_key(cur))
        cur.close()
        return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    if char in _DIGITS or char in (0x2A, 0x24):
        return SearchSet(cur.sequence_set())
    word = cur.word()
    if word == "ALL":
        return SearchAll()
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return SearchFlag(flag, present)
    if word == "NEW":
        return SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))
    if word == "OLD":
        return SearchNot(SearchFlag("\\Recent"))
    if word not in _KEYS_WITH_ARGUMENTS:
        raise cur.fail("unknown search key")
    cur.sp()
    if word in ("KEYWORD", "UNKEYWORD"):
        return SearchFlag(cur.atom("keyword"), word == "KEYWORD")
    if word in _HEADER_KEYS:
        return SearchHeader(word, cur.astring())
    if word == "HEADER":
        field = cur.astring().upper()
        cur.sp()
        return SearchHeader(field, cur.astring())
    if word in ("BODY", "TEXT"):
        return SearchText(word, cur.astring())
    if word in _DATE_KEYS:
        op, sent = _DATE_KEYS[word]
        return SearchDate(op, cur.date(), sent)
    if word in ("LARGER", "SMALLER"):
        return SearchSize(word == "LARGER", cur.number(MAX_NUMBER64))
    if word == "UID":
        return SearchSet(cur.sequence_set(), uid=True)
    if word == "NOT":
        cur.depth += 1
        if cur.depth > MAX_DEPTH:
            raise cur.fail("too deeply nested")
        key = _search_key(cur)
        cur.depth -= 1
        return SearchNot(key)
    if word == "OR":
        cur.depth += 1
        if cur.depth > MAX_DEPTH:
            raise cur.fail("too deeply nested")
        left = _search_key(cur)
        cur.sp()
        right = _search_key(cur)
        cur.depth -= 1
        return SearchOr(left, right)
    if word == "MODSEQ":
        entry = None
        if cur.peek() == 0x22:
            entry_name = cur.text(cur.quoted())
            if not entry_name.startswith("/flags/"):
                raise cur.fail("bad MODSEQ entry name")
            cur.sp()
            entry = (entry_name, cur.keyword("PRIV", "SHARED", "ALL").lower())
            cur.sp()
        return SearchModSeq(cur.number(MAX_NUMBER64), entry)
    raise cur.fail("unknown search key")


Handler = Callable[[_Cursor, str, bool], Arguments]
_COMMANDS: dict[str, Handler] = {
    **dict.fromkeys(("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT",
                     "IDLE", "NAMESPACE"), _no_arguments),
    "SELECT": _select, "EXAMINE": _select,
    "CREATE": _create, "DELETE": _mailbox_only, "SUBSCRIBE": _mailbox_only,
    "UNSUBSCRIBE": _mailbox_only, "RENAME": _rename,
    "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "ENABLE": _enable, "ID": _id,
    "EXPUNGE": _expunge, "COPY": _copy_move, "MOVE": _copy_move,
    "FETCH": _fetch, "STORE": _store, "SEARCH": _search,
}
_UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"}
