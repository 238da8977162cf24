"""The IMAP server session (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1) as a sans-IO state machine.

| command                                          | NOT AUTH | AUTH | SELECTED | RFC 9051 |
|--------------------------------------------------|----------|------|----------|----------|
| CAPABILITY NOOP LOGOUT ID                        | ok       | ok   | ok       | 6.1      |
| STARTTLS (once, before TLS)                      | ok       | BAD  | BAD      | 6.2.1    |
| LOGIN AUTHENTICATE                               | ok       | BAD  | BAD      | 6.2      |
| ENABLE                                           | BAD      | ok   | BAD      | 6.3.1    |
| SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE    | BAD      | ok   | ok       | 6.3      |
| UNSUBSCRIBE LIST LSUB NAMESPACE STATUS APPEND    | BAD      | ok   | ok       | 6.3      |
| IDLE                                             | BAD      | ok   | ok       | 6.3.13   |
| CLOSE UNSELECT EXPUNGE SEARCH FETCH STORE COPY   | BAD      | BAD  | ok       | 6.4      |
| MOVE CHECK (rev1), and the UID forms             | BAD      | BAD  | ok       | 6.4      |

The session never calls out: ``feed``, ``answer`` and ``changed`` return outputs for the shell
to carry out, in order. Actions: ``Send`` (response octets), ``StartTLS`` (after the tagged OK;
plaintext pipelined behind STARTTLS closes the connection instead), ``IdleStart``/``IdleStop``
(watch the selected folder, then stop: while watching, call ``changed()`` when it may have
changed), ``Close``. Requests, always the last output of a batch, answered with ``answer``:

- ``Authenticate(credentials)`` (LOGIN, AUTHENTICATE PLAIN/LOGIN): the user (``str``; the
  shell then opens that user's ``MailStore``), ``LoginRefused`` or ``Unavailable``;
- a ``StoreRequest`` (``proto/imap_mailbox``): the shell answers ``perform(store, request)``.

The session keeps the selected folder's view (``FolderView``: UIDs in sequence order, flags,
modseqs) and finds changes by asking ``ViewFolder`` again at NOOP, CHECK, IDLE and after
APPEND/COPY/MOVE/EXPUNGE; untagged EXPUNGE is never sent during FETCH, STORE or SEARCH
(RFC 9051 7.5.1). Malformed commands get ``BAD`` with the parser's reason; nothing raises.
QRESYNC's VANISHED (EARLIER) names the gaps among the UIDs (RFC 7162 3.2.10 allows UIDs the
client never saw), so the store keeps no expunge history. Mailbox names are UTF-8 once the
client enabled IMAP4rev2 (RFC 9051 5.1), modified UTF-7 before. Not implemented: UTF8=ACCEPT
for IMAP4rev1 clients (RFC 9755), the
\\Recent flag (rev1 ``RECENT`` is always 0), CONDSTORE's ``MODSEQ`` search entry types (a
plain MODSEQ search works), QRESYNC's sequence-match hint (ignored).
"""

from __future__ import annotations

import bisect
import email.header
import email.utils
import enum
import re
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import cast

from geomail.proto import imap_mutf7
from geomail.proto.imap_fetch import ParsedMessage, Summary, UnknownEncoding
from geomail.proto.imap_mailbox import (
    CANNOT,
    NONEXISTENT,
    Appended,
    AppendMessage,
    Copied,
    CopyMessages,
    CreateFolder,
    DeleteFolder,
    ExpungeMessages,
    FetchMessage,
    FetchMessages,
    FetchSummaries,
    FolderInfo,
    FolderView,
    ListFolders,
    MailboxError,
    MessageInfo,
    RenameFolder,
    StoreFlags,
    StoreRequest,
    SubscribeFolder,
    ViewFolder,
)
from geomail.proto.imap_parser import (
    CommandReader,
    CommandReady,
    Fatal,
    LineReady,
    LiteralRequest,
    ParseError,
    ReaderLimits,
    TooBig,
    parse_command,
    parse_done,
)
from geomail.proto.imap_render import (
    Literal8,
    Value,
    date_time,
    flag_list,
    render,
    sequence_set,
    tagged,
    untagged,
)
from geomail.proto.imap_types import (
    Append,
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
    Select,
    SequenceSet,
    Status,
    Store,
)
from geomail.proto.imap_types import Authenticate as AuthenticateCommand
from geomail.proto.reply import Close, StartTLS
from geomail.proto.sasl import MECHANISMS, Credentials, SASLError, SASLExchange, encode_challenge

IMPLEMENTATION = "geomail"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
SPECIAL_USE = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
                         "\\Trash"})
MAX_AUTH_FAILURES = 3
SEARCH_CHARSETS = ("UTF-8", "US-ASCII")


class State(enum.Enum):
    """RFC 9051 3: the connection's states."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = frozenset(State) - {State.LOGOUT}
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SEL = frozenset({State.SELECTED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
STATES: dict[str, frozenset[State]] = {
    "CAPABILITY": _ANY, "NOOP": _ANY, "LOGOUT": _ANY, "ID": _ANY,
    "STARTTLS": _NOT_AUTH, "LOGIN": _NOT_AUTH, "AUTHENTICATE": _NOT_AUTH,
    "ENABLE": frozenset({State.AUTHENTICATED}),
    **dict.fromkeys(("SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
                     "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE"),
                    _AUTH),
    **dict.fromkeys(("CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
                     "CHECK"), _SEL),
}


# ---- outputs, requests and answers -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    """Output: response octets."""

    data: bytes


@dataclass(frozen=True, slots=True)
class IdleStart:
    """Output: IDLE began; call ``changed()`` whenever the selected folder may have changed."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class IdleStop:
    """Output: IDLE ended; stop watching."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Request: check a login. Answer: the canonical user, ``LoginRefused`` or ``Unavailable``."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """Answer to ``Authenticate``: bad credentials; ``blocked`` when the client is throttled."""

    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Answer to any request: no answer now (a store fault, the shell's deadline)."""

    reason: str = ""


Request = Authenticate | StoreRequest
Output = Send | StartTLS | IdleStart | IdleStop | Close | Request


@dataclass(frozen=True, slots=True)
class IMAPSettings:
    """The per-listener knobs of a session."""

    tls_available: bool = False  # offer STARTTLS until TLS is active
    allow_plaintext_auth: bool = False
    max_bad_commands: int = 10
    limits: ReaderLimits = field(default_factory=ReaderLimits)


class _Signal(enum.Enum):
    """Between the engine and a task: ``WANT_LINE`` is yielded for the next raw line
    (AUTHENTICATE response, IDLE's DONE); ``CHANGED`` is sent into IDLE by ``changed()``."""

    WANT_LINE = "want line"
    CHANGED = "changed"


Task = Generator[Output | _Signal, object, None]


class _Refused(Exception):
    """A command ends with a tagged NO/BAD (raised inside a task)."""

    def __init__(self, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.code = status, text, code


@dataclass(slots=True)
class _Selected:
    name: str
    readonly: bool
    view: FolderView
    messages: list[MessageInfo]  # sequence order
    flags: set[str] = field(default_factory=set)  # announced in the last FLAGS response


class IMAPSession:
    """One IMAP conversation: ``feed(bytes)`` returns the outputs to carry out, in order; a
    request among them is answered with ``answer(result)`` (see the module docstring)."""

    def __init__(self, settings: IMAPSettings, tls_active: bool = False) -> None:
        self.settings = settings
        self.tls_active = tls_active
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.pending: Request | None = None
        self.enabled: set[str] = set()
        self.selected: _Selected | None = None
        self._reader = CommandReader(settings.limits)
        self._task: Task | None = None
        self._tag = ""
        self._want_line = False
        self._idling = False
        self._bad_commands = 0
        self._auth_failures = 0
        self._saved: tuple[int, ...] = ()  # SEARCHRES ``$``: UIDs
        self._index_of: dict[int, int] | None = None  # see _positions
        self._index_len = 0

    # ---- the engine ----------------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
                "UNSELECT", "UIDPLUS", "MOVE", "NAMESPACE", "SPECIAL-USE", "CREATE-SPECIAL-USE",
                "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "SEARCHRES",
                "CONDSTORE", "QRESYNC", "STATUS=SIZE"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.settings.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            if self.tls_active or self.settings.allow_plaintext_auth:
                caps.extend(f"AUTH={m}" for m in MECHANISMS)
            else:
                caps.append("LOGINDISABLED")
        return caps

    def greeting(self) -> bytes:
        """RFC 9051 7.1.1, with the capabilities (7.1 CAPABILITY code)."""
        return untagged(f"OK [CAPABILITY {' '.join(self.capabilities())}] "
                        f"{IMPLEMENTATION} IMAP server ready")

    def feed(self, data: bytes) -> list[Output]:
        """Take received bytes (``b""`` at end of stream); return what to send and do."""
        if self.state is State.LOGOUT:
            return []
        out: list[Output] = []
        if not data:
            self.state = State.LOGOUT
            if self._idling:
                out.append(IdleStop())
            out.append(Close())
            return out
        self._reader.feed(data)
        if self.pending is None:
            self._pump(out)
        return out

    def answer(self, result: object) -> list[Output]:
        """The answer to the pending request."""
        out: list[Output] = []
        if self.pending is None or self._task is None:
            return out
        self.pending = None
        self._step(out, result)
        self._pump(out)
        return out

    def changed(self) -> list[Output]:
        """While idling: the selected folder may have changed (the shell's watcher fired)."""
        out: list[Output] = []
        if self._idling and self.pending is None and self._task is not None:
            self._want_line = False
            self._step(out, _Signal.CHANGED)
            self._pump(out)
        return out

    def _send(self, out: list[Output], data: bytes) -> None:
        out.append(Send(data))  # not joined here: a large FETCH would be copied over and over

    def _step(self, out: list[Output], value: object) -> None:
        """Run the current task until it wants something from outside, or ends."""
        task = self._task
        assert task is not None
        while True:
            try:
                item = task.send(value)
            except StopIteration:
                self._task = None
                return
            except _Refused as refusal:
                self._task = None
                self._send(out, tagged(self._tag, refusal.status, refusal.text, refusal.code))
                return
            value = None
            if isinstance(item, _Signal):  # only WANT_LINE is ever yielded
                self._want_line = True
                self._reader.expect_line()
                return
            if isinstance(item, Send):
                self._send(out, item.data)
            elif isinstance(item, StartTLS | IdleStart | IdleStop | Close):
                out.append(item)
            else:
                self.pending = item
                out.append(item)
                return

    def _pump(self, out: list[Output]) -> None:
        while self.state is not State.LOGOUT and self.pending is None:
            if self._task is not None and not self._want_line:
                return
            event = self._reader.next_event()
            if event is None:
                return
            if isinstance(event, Fatal):
                self._bye(out, event.reason)
            elif isinstance(event, TooBig):
                self._too_big(out, event)
            elif isinstance(event, LiteralRequest):
                self._literal(out, event)
            elif isinstance(event, LineReady):
                if self._task is None or not self._want_line:  # cannot happen; be safe
                    continue
                self._want_line = False
                self._step(out, event.data)
            elif isinstance(event, CommandReady):
                self._command(out, event.data)
            if self._ended():
                return
            if any(isinstance(o, StartTLS) for o in out):
                return

    def _ended(self) -> bool:
        return self.state is State.LOGOUT

    def _bye(self, out: list[Output], reason: str) -> None:
        self._send(out, untagged(f"BYE {reason}"))
        if self._idling:
            out.append(IdleStop())
        out.append(Close())
        self.state = State.LOGOUT

    def _too_big(self, out: list[Output], event: TooBig) -> None:
        status = "NO" if event.name == "APPEND" and not event.fatal else "BAD"
        self._send(out, tagged(event.tag, status, "Literal too big", "TOOBIG"))
        if event.fatal:
            self._bye(out, "Literal too big")

    def _literal(self, out: list[Output], event: LiteralRequest) -> None:
        if event.name == "APPEND" and self.state not in _AUTH:
            self._send(out, tagged(event.tag, "BAD", "Log in first"))
            self._reader.refuse()
            return
        self._send(out, b"+ Ready for literal data\r\n")
        self._reader.accept()

    def _command(self, out: list[Output], data: bytes) -> None:
        try:
            command = parse_command(data)
        except ParseError as error:
            self._bad(out, error.tag, error.reason)
            return
        allowed = STATES.get(command.name, _ANY)
        if self.state not in allowed:
            text = ("Log in first" if self.state is State.NOT_AUTHENTICATED
                    else "No mailbox selected" if allowed is _SEL
                    else "Not allowed in this state")
            self._bad(out, command.tag, text)
            return
        handler = _HANDLERS.get(command.name)
        if handler is None:  # the parser knows it, we do not serve it
            self._bad(out, command.tag, "Command not supported")
            return
        self._tag = command.tag
        self._task = handler(self, command)
        self._step(out, None)

    def _bad(self, out: list[Output], tag: str | None, reason: str) -> None:
        self._bad_commands += 1
        if tag is None:
            self._send(out, untagged(f"BAD {reason}"))
        else:
            self._send(out, tagged(tag, "BAD", reason))
        if self._bad_commands >= self.settings.max_bad_commands:
            self._bye(out, "Too many invalid commands")

    # ---- helpers for tasks ---------------------------------------------------------------------

    def _ok(self, text: str, code: str | None = None) -> Send:
        return Send(tagged(self._tag, "OK", text, code))

    def _store(self, request: StoreRequest) -> Generator[Output | _Signal, object, object]:
        result = yield request
        if isinstance(result, Unavailable):
            raise _Refused("NO", "Try again later", "UNAVAILABLE")
        return result

    def _store_batch(self, request: FetchMessages | FetchSummaries
                     ) -> Generator[Output | _Signal, object, Sequence[tuple[int, object]]]:
        """A batch request's (uid, bytes or summary or None) pairs, at least one."""
        result = yield from self._store(request)
        if isinstance(result, MailboxError):
            raise self._failed(result)
        assert isinstance(result, Sequence) and result
        return cast(Sequence[tuple[int, object]], result)

    @property
    def _utf8_names(self) -> bool:
        """RFC 9051 5.1 (and RFC 9755 1: IMAP4rev2 includes UTF8=ACCEPT): once a client has
        enabled IMAP4rev2, mailbox names travel as UTF-8; before, in modified UTF-7."""
        return "IMAP4REV2" in self.enabled

    def _mailbox_name(self, name: str) -> str:
        """The client's name (modified UTF-7, or UTF-8 under IMAP4rev2) to ours, checked
        (RFC 9051 5.1)."""
        if imap_mutf7.is_inbox(name):
            return "INBOX"
        try:
            decoded = name if self._utf8_names else imap_mutf7.decode(name)
        except imap_mutf7.MUTF7Error as error:
            raise _Refused("NO", f"Bad mailbox name: {error}", CANNOT) from None
        reason = imap_mutf7.check_name(decoded)
        if reason is not None:
            raise _Refused("NO", f"Bad mailbox name: {reason}", CANNOT)
        return decoded

    def _wire_name(self, name: str) -> str:
        if name == "INBOX" or self._utf8_names:
            return name
        return imap_mutf7.encode(name)

    @staticmethod
    def _failed(error: MailboxError, trycreate: bool = False) -> _Refused:
        code = "TRYCREATE" if trycreate and error.code == NONEXISTENT else error.code
        return _Refused("NO", error.text, code)

    def _uids(self, sequence: SequenceSet, uid: bool) -> list[int]:
        """A sequence or UID set to the UIDs it names, in sequence order (RFC 9051 6.4.9)."""
        assert self.selected is not None
        messages = self.selected.messages
        if sequence.saved:
            wanted = set(self._saved)
            return [m.uid for m in messages if m.uid in wanted]
        if uid:
            uids = [m.uid for m in messages]  # ascending
            largest = uids[-1] if uids else 0
            chosen: set[int] = set()
            for low, high in sequence.ranges:
                a = largest if low is None else low
                b = largest if high is None else high
                a, b = min(a, b), max(a, b)
                chosen.update(uids[bisect.bisect_left(uids, a):bisect.bisect_right(uids, b)])
            return sorted(chosen)
        count = len(messages)
        spans: list[tuple[int, int]] = []
        for low, high in sequence.ranges:
            a = count if low is None else low
            b = count if high is None else high
            a, b = min(a, b), max(a, b)
            if b > count or a < 1:
                raise _Refused("BAD", "Invalid sequence number")
            spans.append((a, b))
        result: list[int] = []
        last = 0  # merged, so each message is taken once, in order
        for a, b in sorted(spans):
            a = max(a, last + 1)
            if a <= b:
                result.extend(m.uid for m in messages[a - 1:b])
                last = b
        return result

    def _positions(self) -> dict[int, int]:
        """UID -> 0-based index in the selected folder, rebuilt after the list changed."""
        selected = self.selected
        assert selected is not None
        if self._index_of is None or self._index_len != len(selected.messages):
            self._index_of = {m.uid: i for i, m in enumerate(selected.messages)}
            self._index_len = len(selected.messages)
        return self._index_of

    def _seq_of(self, uid: int) -> int:
        index = self._positions().get(uid)
        return 0 if index is None else index + 1

    def _info(self, uid: int) -> MessageInfo | None:
        assert self.selected is not None
        index = self._positions().get(uid)
        return None if index is None else self.selected.messages[index]

    def _set_info(self, info: MessageInfo) -> None:
        assert self.selected is not None
        index = self._positions().get(info.uid)
        if index is not None:
            self.selected.messages[index] = info

    def _new_keywords(self, infos: Iterable[MessageInfo]) -> bytes:
        """An untagged FLAGS when messages carry keywords not announced yet (RFC 9051
        7.3.5: the flags applicable in the mailbox)."""
        assert self.selected is not None
        known = self.selected.flags
        fresh = {f for info in infos for f in info.flags} - known
        if not fresh:
            return b""
        known.update(fresh)
        return untagged(f"FLAGS {flag_list(known).text}")

    def _flags_response(self, info: MessageInfo, uid: bool) -> bytes:
        items = [f"FLAGS {flag_list(info.flags).text}"]
        if uid or "CONDSTORE" in self.enabled:  # RFC 7162 3.2.4: UID and MODSEQ, always
            items.append(f"UID {info.uid}")
        if "CONDSTORE" in self.enabled:
            items.append(f"MODSEQ ({info.modseq})")
        return untagged(f"{self._seq_of(info.uid)} FETCH ({' '.join(items)})")

    def _remove(self, gone: Callable[[int], bool]) -> bytes:
        """Drop the messages whose UID is ``gone`` from the view: ``* n EXPUNGE`` from the
        highest number down (RFC 9051 7.5.1), or one ``* VANISHED`` once QRESYNC is enabled
        (RFC 7162 3.2.10)."""
        selected = self.selected
        assert selected is not None
        kept = [m for m in selected.messages if not gone(m.uid)]
        if len(kept) == len(selected.messages):
            return b""
        removed = [(seq, m.uid) for seq, m in enumerate(selected.messages, start=1)
                   if gone(m.uid)]
        selected.messages[:] = kept
        self._index_of = None
        if "QRESYNC" in self.enabled:
            return untagged(f"VANISHED {sequence_set(uid for _, uid in removed)}")
        return b"".join(untagged(f"{seq} EXPUNGE") for seq, _ in reversed(removed))

    def _vanished(self, ranges: Iterable[tuple[int | None, int | None]], top: int) -> str:
        """The UIDs in ``ranges`` (up to ``top``) that the folder does not hold, as a set:
        RFC 7162 3.2.10 lets VANISHED (EARLIER) name UIDs the client never saw, so gaps in
        the UIDs stand for expunged messages and the store keeps no history for us."""
        assert self.selected is not None
        present = [m.uid for m in self.selected.messages]
        ends = ((top if lo is None else lo, top if hi is None else hi) for lo, hi in ranges)
        spans = sorted((min(a, b), max(a, b)) for a, b in ends)
        gaps: list[str] = []
        last = 0
        for a, b in spans:
            a, b = max(a, last + 1, 1), min(b, top)
            if a > b:
                continue
            last = b
            start = a
            for uid in present[bisect.bisect_left(present, a):bisect.bisect_right(present, b)]:
                if uid > start:
                    gaps.append(f"{start}:{uid - 1}" if uid - 1 > start else str(start))
                start = uid + 1
            if start <= b:
                gaps.append(f"{start}:{b}" if b > start else str(start))
        return ",".join(gaps)

    def _sync(self, uid: bool = False) -> Generator[Output | _Signal, object, None]:
        """Ask for the folder again and report what changed (RFC 9051 7.5.1, 7.4.1)."""
        selected = self.selected
        if selected is None:
            return
        view = yield from self._store(ViewFolder(selected.name))
        if not isinstance(view, FolderView):
            return
        now = {m.uid: m for m in view.messages}
        data = self._new_keywords(view.messages)
        data += self._remove(lambda uid: uid not in now)
        for old in list(selected.messages):
            new = now[old.uid]
            if new.flags != old.flags or (new.modseq != old.modseq and "CONDSTORE" in self.enabled):
                self._set_info(new)
                data += self._flags_response(new, uid)
        largest = selected.messages[-1].uid if selected.messages else 0
        fresh = [m for m in view.messages if m.uid > largest]
        if fresh:
            selected.messages.extend(fresh)
            data += untagged(f"{len(selected.messages)} EXISTS")
        selected.view = view
        if data:
            yield Send(data)

    # ---- connection commands (RFC 9051 6.1, 6.2) --------------------------------------------

    def _capability(self, command: Command) -> Task:
        yield Send(untagged("CAPABILITY " + " ".join(self.capabilities())))
        yield self._ok("CAPABILITY completed")

    def _noop(self, command: Command) -> Task:
        yield from self._sync()
        yield self._ok(f"{command.name} completed")

    def _logout(self, command: Command) -> Task:
        yield Send(untagged("BYE Logging out"))
        yield self._ok("LOGOUT completed")
        self.state = State.LOGOUT
        yield Close()

    def _id(self, command: Command) -> Task:
        assert isinstance(command.arguments, Id)
        yield Send(untagged(b"ID " + render(("name", IMPLEMENTATION))))
        yield self._ok("ID completed")

    def _starttls(self, command: Command) -> Task:
        if self.tls_active or not self.settings.tls_available:
            raise _Refused("BAD", "TLS not available")
        yield self._ok("Begin TLS negotiation now")
        if self._reader_has_data():
            yield Send(untagged("BYE Commands pipelined after STARTTLS"))
            self.state = State.LOGOUT
            yield Close()
            return
        self.tls_active = True
        yield StartTLS()

    def _reader_has_data(self) -> bool:
        # RFC 9051 6.2.1 / RFC 3207 6: nothing may follow STARTTLS before the handshake.
        return bool(self._reader._buf)

    def _login_allowed(self) -> bool:
        return self.tls_active or self.settings.allow_plaintext_auth

    def _login(self, command: Command) -> Task:
        assert isinstance(command.arguments, Login)
        if not self._login_allowed():
            raise _Refused("NO", "Use STARTTLS first", "PRIVACYREQUIRED")
        yield from self._authenticated(Credentials(command.arguments.user,
                                                   command.arguments.password))

    def _authenticate(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, AuthenticateCommand)
        if not self._login_allowed():
            raise _Refused("NO", "Use STARTTLS first", "PRIVACYREQUIRED")
        if arguments.mechanism.upper() not in MECHANISMS:
            raise _Refused("NO", "Unsupported mechanism", "CANNOT")
        exchange = SASLExchange(arguments.mechanism)
        step = exchange.start(arguments.initial)
        while isinstance(step, str):
            yield Send(f"+ {encode_challenge(step)}\r\n".encode())
            line = yield _Signal.WANT_LINE
            assert isinstance(line, bytes)
            step = exchange.step(line.decode("utf-8", "replace"))
        if step is SASLError.CANCELLED:
            raise _Refused("BAD", "Authentication cancelled")
        if isinstance(step, SASLError):
            raise _Refused("BAD", f"Authentication failed: {step.value}")
        yield from self._authenticated(step)

    def _authenticated(self, credentials: Credentials) -> Task:
        result = yield Authenticate(credentials)
        if isinstance(result, str):
            self.user = result
            self.state = State.AUTHENTICATED
            yield self._ok("Logged in", "CAPABILITY " + " ".join(self.capabilities()))
            return
        self._auth_failures += 1
        if isinstance(result, LoginRefused):
            yield Send(tagged(self._tag, "NO", "Authentication failed", "AUTHENTICATIONFAILED"))
        else:
            yield Send(tagged(self._tag, "NO", "Try again later", "UNAVAILABLE"))
        if self._auth_failures >= MAX_AUTH_FAILURES:
            yield Send(untagged("BYE Too many failed logins"))
            self.state = State.LOGOUT
            yield Close()

    # ---- authenticated state (RFC 9051 6.3) -------------------------------------------------

    def _enable(self, command: Command) -> Task:
        assert isinstance(command.arguments, Enable)
        done = [c for c in command.arguments.capabilities
                if c in ("CONDSTORE", "IMAP4REV2", "QRESYNC") and c not in self.enabled]
        self.enabled.update(done)
        if "QRESYNC" in done:  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
            self.enabled.add("CONDSTORE")
        yield Send(untagged(" ".join(["ENABLED", *done])))
        yield self._ok("ENABLE completed")

    def _namespace(self, command: Command) -> Task:
        yield Send(untagged('NAMESPACE (("" "/")) NIL NIL'))
        yield self._ok("NAMESPACE completed")

    def _select(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, Select)
        if arguments.qresync is not None and "QRESYNC" not in self.enabled:
            raise _Refused("BAD", "ENABLE QRESYNC first")
        if self.selected is not None:
            self.selected = None
            self.state = State.AUTHENTICATED
            yield Send(untagged("OK [CLOSED] Previous mailbox closed"))
        name = self._mailbox_name(arguments.mailbox)
        view = yield from self._store(ViewFolder(name))
        if isinstance(view, MailboxError):
            raise self._failed(view)
        assert isinstance(view, FolderView)
        if arguments.condstore:
            self.enabled.add("CONDSTORE")
        rev2 = "IMAP4REV2" in self.enabled
        self.selected = _Selected(name, arguments.readonly, view, list(view.messages))
        self._index_of = None
        self.state = State.SELECTED
        self._saved = ()
        flags = (*SYSTEM_FLAGS, *view.keywords,
                 *sorted({f for m in view.messages for f in m.flags} - set(SYSTEM_FLAGS)
                         - set(view.keywords)))
        self.selected.flags = set(flags)
        lines = [f"{len(view.messages)} EXISTS"]
        if not rev2:
            lines.append("0 RECENT")
        lines.append(f"FLAGS {flag_list(flags).text}")
        permanent = () if arguments.readonly else (*flags, "\\*")
        lines.append(f"OK [PERMANENTFLAGS {flag_list(permanent).text}] Limited")
        lines.append(f"OK [UIDVALIDITY {view.uidvalidity}] UIDs valid")
        lines.append(f"OK [UIDNEXT {view.uidnext}] Predicted next UID")
        if not rev2:
            unseen = next((i + 1 for i, m in enumerate(view.messages)
                           if "\\Seen" not in m.flags), None)
            if unseen is not None:
                lines.append(f"OK [UNSEEN {unseen}] First unseen")
        if "CONDSTORE" in self.enabled:
            lines.append(f"OK [HIGHESTMODSEQ {view.highestmodseq}] Highest")
        data = b"".join(untagged(line) for line in lines)
        if rev2:
            data += untagged(b'LIST () "/" ' + render(self._wire_name(name)))
        qresync = arguments.qresync
        if qresync is not None and qresync.uidvalidity == view.uidvalidity:
            # RFC 7162 3.2.5.1: what vanished, then what changed since the client's modseq
            known = qresync.known_uids.ranges if qresync.known_uids else ((1, None),)
            vanished = self._vanished(known, view.uidnext - 1)
            if vanished:
                data += untagged(f"VANISHED (EARLIER) {vanished}")
            for seq, info in enumerate(view.messages, start=1):
                if info.modseq > qresync.modseq:
                    data += untagged(f"{seq} FETCH (UID {info.uid} FLAGS "
                                     f"{flag_list(info.flags).text} MODSEQ ({info.modseq}))")
        yield Send(data)
        mode = "READ-ONLY" if arguments.readonly else "READ-WRITE"
        yield self._ok(f"{command.name} completed", mode)

    def _create(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, MailboxCommand)
        name = arguments.mailbox.rstrip("/") or arguments.mailbox
        name = self._mailbox_name(name)
        use = frozenset(arguments.use)
        if use - SPECIAL_USE or len(use) > 1:
            raise _Refused("NO", "Unsupported special-use attribute", "USEATTR")
        if name == "INBOX":
            raise _Refused("NO", "INBOX exists", "ALREADYEXISTS")
        result = yield from self._store(CreateFolder(name, use))
        if isinstance(result, MailboxError):
            raise self._failed(result)
        yield self._ok("CREATE completed")

    def _delete(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, MailboxCommand)
        name = self._mailbox_name(arguments.mailbox)
        if name == "INBOX":
            raise _Refused("NO", "INBOX cannot be deleted", CANNOT)
        result = yield from self._store(DeleteFolder(name))
        if isinstance(result, MailboxError):
            raise self._failed(result)
        yield self._ok("DELETE completed")

    def _rename(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, Rename)
        old, new = self._mailbox_name(arguments.old), self._mailbox_name(arguments.new)
        if new == "INBOX":
            raise _Refused("NO", "INBOX exists", "ALREADYEXISTS")
        result = yield from self._store(RenameFolder(old, new))
        if isinstance(result, MailboxError):
            raise self._failed(result)
        yield self._ok("RENAME completed")

    def _subscribe(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, MailboxCommand)
        name = self._mailbox_name(arguments.mailbox)
        on = command.name == "SUBSCRIBE"
        result = yield from self._store(SubscribeFolder(name, on))
        if isinstance(result, MailboxError):
            raise self._failed(result)
        yield self._ok(f"{command.name} completed")

    def _list(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, List)
        kind = "LSUB" if arguments.lsub else "LIST"
        if arguments.patterns == ("",) and not arguments.extended:
            yield Send(untagged(f'{kind} (\\Noselect) "/" ""'))
            yield self._ok(f"{kind} completed")
            return
        folders = yield from self._store(ListFolders())
        if isinstance(folders, MailboxError):
            raise self._failed(folders)
        assert isinstance(folders, Sequence)
        matchers = [_pattern(arguments.reference + p) for p in arguments.patterns]
        subscribed_only = "SUBSCRIBED" in arguments.selection
        special_only = "SPECIAL-USE" in arguments.selection
        show_subscribed = subscribed_only or "SUBSCRIBED" in arguments.returns
        data = b""
        status_for: list[str] = []
        for folder in sorted(folders, key=lambda f: (f.name != "INBOX", f.name)):
            assert isinstance(folder, FolderInfo)
            wire = self._wire_name(folder.name)
            if not any(m(wire, folder.name == "INBOX") for m in matchers):
                continue
            if subscribed_only and not folder.subscribed:
                continue
            if special_only and not folder.special_use:
                continue
            if not folder.exists and not (subscribed_only or kind == "LSUB"):
                continue
            attributes = ["\\HasChildren" if folder.has_children else "\\HasNoChildren"]
            if not folder.exists:  # RFC 5258 3.4 (LSUB: RFC 3501 6.3.9's \Noselect)
                attributes = ["\\Noselect"] if kind == "LSUB" else ["\\NonExistent"]
            elif folder.noselect:
                attributes.append("\\Noselect")
            if show_subscribed and folder.subscribed and kind == "LIST":
                attributes.append("\\Subscribed")
            attributes.extend(sorted(folder.special_use))
            data += untagged(f"{kind} ({' '.join(attributes)}) \"/\" ".encode()
                             + render(wire))
            if arguments.status and not folder.noselect:
                status_for.append(folder.name)
        yield Send(data)
        for name in status_for:
            view = yield from self._store(ViewFolder(name))
            if isinstance(view, FolderView):
                yield Send(self._status_line(name, view, arguments.status))
        yield self._ok(f"{kind} completed")

    def _status_line(self, name: str, view: FolderView, items: Iterable[str]) -> bytes:
        values = {
            "MESSAGES": len(view.messages),
            "UIDNEXT": view.uidnext,
            "UIDVALIDITY": view.uidvalidity,
            "UNSEEN": sum(1 for m in view.messages if "\\Seen" not in m.flags),
            "DELETED": sum(1 for m in view.messages if "\\Deleted" in m.flags),
            "SIZE": sum(m.size for m in view.messages),
            "RECENT": 0,
            "HIGHESTMODSEQ": view.highestmodseq,
        }
        pairs = " ".join(f"{item} {values[item]}" for item in items if item in values)
        return untagged(b"STATUS " + render(self._wire_name(name)) + f" ({pairs})".encode())

    def _status(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, Status)
        name = self._mailbox_name(arguments.mailbox)
        view = yield from self._store(ViewFolder(name))
        if isinstance(view, MailboxError):
            raise self._failed(view)
        assert isinstance(view, FolderView)
        yield Send(self._status_line(name, view, arguments.items))
        yield self._ok("STATUS completed")

    def _append(self, command: Command) -> Task:
        arguments = command.arguments
        assert isinstance(arguments, Append)
        name = self._mailbox_name(arguments.mailbox)
        flags = frozenset(arguments.flags) - {"\\Recent"}
        result = yield from self._store(AppendMessage(name, arguments.message, flags,
                                                      arguments.date))
        if isinstance(result, MailboxError):
            raise self._failed(result, trycreate=True)
        assert isinstance(result, Appended)
        if self.selected is not None and self.selected.name == name:
            yield from self._sync()
        yield self._ok("APPEND completed", f"APPENDUID {result.uidvalidity} {result.uid}")

    def _idle(self, command: Command) -> Task:
        yield Send(b"+ idling\r\n")
        self._idling = True
        yield IdleStart(self.selected.name if self.selected else "")
        try:
            while True:
                event = yield _Signal.WANT_LINE
                if event is _Signal.CHANGED:
                    yield from self._sync()
                    continue
                assert isinstance(event, bytes)
                if parse_done(event):
                    break
                self._idling = False
                yield IdleStop()
                raise _Refused("BAD", "Expected DONE")
        finally:
            self._idling = False
        yield IdleStop()
        yield self._ok("IDLE terminated")

    # ---- selected state (RFC 9051 6.4) --------------------------------------------------------

    def _close(self, command: Command) -> Task:
        selected = self.selected
        assert selected is not None
        if command.name == "CLOSE" and not selected.readonly and selected.messages:
            # the store expunges those that carry \\Deleted now, marked by whichever session
            known = tuple(m.uid for m in selected.messages)
            yield from self._store(ExpungeMessages(selected.name, known))
        self.selected = None
        self.state = State.AUTHENTICATED
        yield self._ok(f"{command.name} completed")

    def _expunge(self, command: Command) -> Task:
        selected = self.selected
        arguments = command.arguments
        assert selected is not None and isinstance(arguments, Expunge)
        if selected.readonly:
            raise _Refused("NO", "Mailbox is read-only", "READ-ONLY")
        wanted = set(self._uids(arguments.uids, True)) if arguments.uids is not None else None
        # RFC 9051 6.4.3: all messages with \\Deleted, also those another session marked and
        # this one has not heard of yet: the store looks at the flags as they are now
        candidates = tuple(m.uid for m in selected.messages
                           if wanted is None or m.uid in wanted)
        if candidates:
            result = yield from self._store(ExpungeMessages(selected.name, candidates))
            if isinstance(result, MailboxError):
                raise self._failed(result)
        yield from self._sync(command.uid)
        yield self._ok(f"{'UID ' if command.uid else ''}EXPUNGE completed")

    def _check(self, command: Command) -> Task:
        yield from self._sync()
        yield self._ok("CHECK completed")

    def _fetch(self, command: Command) -> Task:
        selected = self.selected
        arguments = command.arguments
        assert selected is not None and isinstance(arguments, Fetch)
        if arguments.vanished:
            if "QRESYNC" not in self.enabled or not command.uid \
                    or arguments.changedsince is None:
                raise _Refused("BAD", "VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC")
            # RFC 7162 3.2.6: the UIDs of the set that are gone, before the FETCH responses
            top = selected.view.uidnext - 1
            if arguments.sequence.saved:
                vanished = ""
            else:
                vanished = self._vanished(arguments.sequence.ranges, top)
            if vanished:
                yield Send(untagged(f"VANISHED (EARLIER) {vanished}"))
        uids = self._uids(arguments.sequence, command.uid)
        attributes = list(arguments.attributes)
        if command.uid and not any(a.name == "UID" for a in attributes):
            attributes.insert(0, FetchAttribute("UID"))
        if arguments.changedsince is not None:
            self.enabled.add("CONDSTORE")
            if not any(a.name == "MODSEQ" for a in attributes):
                attributes.append(FetchAttribute("MODSEQ"))
        elif any(a.name == "MODSEQ" for a in attributes):
            self.enabled.add("CONDSTORE")
        needs_body = any(a.name not in _FROM_VIEW and not _from_summary(a) for a in attributes)
        needs_summary = not needs_body and any(_from_summary(a) for a in attributes)
        sets_seen = not selected.readonly and any(
            (a.name in ("RFC822", "RFC822.TEXT") or (a.name in ("BODY", "BINARY")
             and a.section is not None)) and not a.peek for a in attributes)
        plan = _fetch_plan(attributes, "CONDSTORE" in self.enabled)
        wanted = [uid for uid in uids if (info := self._info(uid)) is not None
                  and (arguments.changedsince is None or info.modseq > arguments.changedsince)]
        gone = False
        done = 0
        while done < len(wanted):
            # A batch of messages in one store call: the bytes (as many as FETCH_BATCH_BYTES
            # hold), or their summaries, or nothing beyond the view.
            batch: Sequence[tuple[int, object]]
            if needs_body:
                batch = yield from self._store_batch(
                    FetchMessages(selected.name, tuple(wanted[done:done + FETCH_BATCH]),
                                  FETCH_BATCH_BYTES))
            elif needs_summary:
                batch = yield from self._store_batch(
                    FetchSummaries(selected.name, tuple(wanted[done:done + FETCH_BATCH])))
            else:
                batch = [(uid, None) for uid in wanted[done:]]
            done += len(batch)
            present = [(uid, found) for uid, found in batch
                       if found is not None or not (needs_body or needs_summary)]
            gone = gone or len(present) < len(batch)
            seen: dict[int, MessageInfo] = {}
            unseen = tuple(uid for uid, _ in present
                           if sets_seen and (info := self._info(uid)) is not None
                           and "\\Seen" not in info.flags)
            if unseen:  # RFC 9051 6.4.5: BODY[...] (not PEEK) sets \Seen, once per batch
                result = yield from self._store(StoreFlags(selected.name, unseen, "+",
                                                           frozenset({"\\Seen"})))
                if isinstance(result, Sequence):
                    for new in result:
                        assert isinstance(new, MessageInfo)
                        self._set_info(new)
                        seen[new.uid] = new
            responses: list[bytes] = []  # the batch's, sent together
            for uid, found in present:
                info = self._info(uid)
                if info is None:
                    continue
                try:
                    items = b" ".join([item(
                        info, ParsedMessage(found) if isinstance(found, bytes) else None,
                        found if isinstance(found, Summary) else None) for item in plan])
                except UnknownEncoding as error:
                    if responses:
                        yield Send(b"".join(responses))
                    raise _Refused("NO", f"Cannot decode: {error}", "UNKNOWN-CTE") from None
                if uid in seen and not any(a.name == "FLAGS" for a in attributes):
                    items += b" FLAGS " + flag_list(info.flags).text.encode()
                if uid in seen and "CONDSTORE" in self.enabled \
                        and not any(a.name == "UID" for a in attributes):
                    items += f" UID {uid}".encode()  # RFC 7162 3.2.4: \Seen set implicitly
                responses.append(b"* %d FETCH (%b)\r\n" % (self._seq_of(uid), items))
            if responses:
                yield Send(b"".join(responses))
        if gone:
            raise _Refused("NO", "Some messages were expunged", "EXPUNGEISSUED")
        yield self._ok(f"{'UID ' if command.uid else ''}FETCH completed")

    def _store_flags(self, command: Command) -> Task:
        selected = self.selected
        arguments = command.arguments
        assert selected is not None and isinstance(arguments, Store)
        if selected.readonly:
            raise _Refused("NO", "Mailbox is read-only", "READ-ONLY")
        uids = self._uids(arguments.sequence, command.uid)
        if arguments.unchangedsince is not None:
            self.enabled.add("CONDSTORE")
        flags = frozenset(arguments.flags) - {"\\Recent"}
        result: object = []
        if uids:
            result = yield from self._store(StoreFlags(selected.name, tuple(uids), arguments.mode,
                                                       flags, arguments.unchangedsince))
        if isinstance(result, MailboxError):
            raise self._failed(result)
        assert isinstance(result, Sequence)
        changed = {info.uid for info in result if isinstance(info, MessageInfo)}
        data = self._new_keywords(i for i in result if isinstance(i, MessageInfo))
        for info in result:
            assert isinstance(info, MessageInfo)
            self._set_info(info)
            if not arguments.silent or "CONDSTORE" in self.enabled:
                data += self._flags_response(info, command.uid)
        if data:
            yield Send(data)
        code = None
        if arguments.unchangedsince is not None:
            present = {m.uid for m in selected.messages}
            modified = [u for u in uids if u not in changed and u in present]
            if modified:
                shown = modified if command.uid else [self._seq_of(u) for u in modified]
                code = f"MODIFIED {sequence_set(sorted(shown))}"
        yield self._ok(f"{'UID ' if command.uid else ''}STORE completed", code)

    def _copy(self, command: Command) -> Task:
        selected = self.selected
        arguments = command.arguments
        assert selected is not None and isinstance(arguments, CopyMove)
        move = command.name == "MOVE"
        if move and selected.readonly:
            raise _Refused("NO", "Mailbox is read-only", "READ-ONLY")
        dest = self._mailbox_name(arguments.mailbox)
        uids = self._uids(arguments.sequence, command.uid)
        prefix = "UID " if command.uid else ""
        if not uids:
            yield self._ok(f"{prefix}{command.name} completed")
            return
        result = yield from self._store(CopyMessages(selected.name, tuple(uids), dest, move))
        if isinstance(result, MailboxError):
            raise self._failed(result, trycreate=True)
        assert isinstance(result, Copied)
        code = None
        if result.source:
            code = (f"COPYUID {result.uidvalidity} {sequence_set(result.source)} "
                    f"{sequence_set(result.dest)}")
        if not move:
            if dest == selected.name:
                yield from self._sync(command.uid)
            yield self._ok(f"{prefix}COPY completed", code)
            return
        if code:
            yield Send(untagged(f"OK [{code}] Moved"))
        moved = set(result.source)
        data = self._remove(moved.__contains__)
        if data:
            yield Send(data)
        if dest == selected.name:  # the moved messages are back under new UIDs: EXISTS
            yield from self._sync(command.uid)
        yield self._ok(f"{prefix}MOVE completed")

    def _search(self, command: Command) -> Task:
        selected = self.selected
        arguments = command.arguments
        assert selected is not None and isinstance(arguments, Search)
        if arguments.charset is not None and arguments.charset not in SEARCH_CHARSETS:
            raise _Refused("NO", "Unsupported charset",
                           f"BADCHARSET ({' '.join(SEARCH_CHARSETS)})")
        key = arguments.key
        needs_body = _needs_message(key)
        sets: dict[SearchSet, frozenset[int]] = {}
        for item in _walk(key):
            if isinstance(item, SearchSet) and item not in sets:
                sets[item] = frozenset(self._uids(item.sequence, item.uid))
        matched: list[MessageInfo] = []
        for seq, info in enumerate(list(selected.messages), start=1):
            parsed: Message | None = None
            if needs_body:
                data = yield from self._store(FetchMessage(selected.name, info.uid))
                if not isinstance(data, bytes):
                    continue
                parsed = ParsedMessage(data).message
            if _matches(key, _Candidate(seq, info, parsed), sets):
                matched.append(info)
        numbers = [m.uid if command.uid else self._seq_of(m.uid) for m in matched]
        modseq = max((m.modseq for m in matched), default=0) if _has_modseq(key) else 0
        returns = arguments.returns
        if returns is None and "IMAP4REV2" in self.enabled:
            returns = ("ALL",)
        if returns is None:
            tail = f" (MODSEQ {modseq})" if modseq else ""
            line = " ".join(["SEARCH", *map(str, numbers)]) + tail
            yield Send(untagged(line))
        else:
            wanted = set(returns) or {"ALL"}
            if "SAVE" in wanted:
                self._saved = tuple(m.uid for m in matched)
                wanted.discard("SAVE")
            if wanted or not returns:
                parts = [f'ESEARCH (TAG "{self._tag}")'] + (["UID"] if command.uid else [])
                if "MIN" in wanted and numbers:
                    parts.append(f"MIN {min(numbers)}")
                if "MAX" in wanted and numbers:
                    parts.append(f"MAX {max(numbers)}")
                if "COUNT" in wanted:
                    parts.append(f"COUNT {len(numbers)}")
                if "ALL" in wanted and numbers:
                    parts.append(f"ALL {sequence_set(sorted(numbers))}")
                if modseq:
                    parts.append(f"MODSEQ {modseq}")
                yield Send(untagged(" ".join(parts)))
        yield self._ok(f"{'UID ' if command.uid else ''}SEARCH completed")


_HANDLERS: dict[str, Callable[[IMAPSession, Command], Task]] = {
    "CAPABILITY": IMAPSession._capability,
    "NOOP": IMAPSession._noop,
    "LOGOUT": IMAPSession._logout,
    "ID": IMAPSession._id,
    "STARTTLS": IMAPSession._starttls,
    "LOGIN": IMAPSession._login,
    "AUTHENTICATE": IMAPSession._authenticate,
    "ENABLE": IMAPSession._enable,
    "NAMESPACE": IMAPSession._namespace,
    "SELECT": IMAPSession._select,
    "EXAMINE": IMAPSession._select,
    "CREATE": IMAPSession._create,
    "DELETE": IMAPSession._delete,
    "RENAME": IMAPSession._rename,
    "SUBSCRIBE": IMAPSession._subscribe,
    "UNSUBSCRIBE": IMAPSession._subscribe,
    "LIST": IMAPSession._list,
    "LSUB": IMAPSession._list,
    "STATUS": IMAPSession._status,
    "APPEND": IMAPSession._append,
    "IDLE": IMAPSession._idle,
    "CLOSE": IMAPSession._close,
    "UNSELECT": IMAPSession._close,
    "EXPUNGE": IMAPSession._expunge,
    "CHECK": IMAPSession._check,
    "FETCH": IMAPSession._fetch,
    "STORE": IMAPSession._store_flags,
    "COPY": IMAPSession._copy,
    "MOVE": IMAPSession._copy,
    "SEARCH": IMAPSession._search,
}


# ---- LIST patterns (RFC 9051 6.3.9) -------------------------------------------------------------

def _pattern(pattern: str) -> Callable[[str, bool], bool]:
    """``*`` matches anything, ``%`` anything but the separator; INBOX in any case."""
    regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    exact = re.compile(regex, re.DOTALL)
    folded = re.compile(regex, re.DOTALL | re.IGNORECASE)

    def match(name: str, inbox: bool) -> bool:
        if inbox:
            return folded.fullmatch(name) is not None
        return exact.fullmatch(name) is not None

    return match


# ---- FETCH items (RFC 9051 6.4.5, 7.5.2) --------------------------------------------------------

def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    start, length = partial
    return data[start:start + length]


def _section_name(attribute: FetchAttribute) -> str:
    section = attribute.section
    assert section is not None
    parts = [".".join(map(str, section.part))] if section.part else []
    if section.text:
        text = section.text
        if section.fields:
            text += " (" + " ".join(section.fields) + ")"
        parts.append(text)
    name = "BINARY" if attribute.name == "BINARY" else "BODY"
    label = f"{name}[{'.'.join(parts)}]"
    if attribute.partial is not None:
        label += f"<{attribute.partial[0]}>"
    return label


FETCH_BATCH = 256  # messages per store call in a FETCH
FETCH_BATCH_BYTES = 1 << 20  # and at most about this many octets of them
_FROM_VIEW = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})


def _from_summary(attribute: FetchAttribute) -> bool:
    """An item the message's ``Summary`` holds (no need for the message's bytes)."""
    return attribute.name in ("ENVELOPE", "BODYSTRUCTURE") or (
        attribute.name == "BODY" and attribute.section is None)


FetchItem = Callable[[MessageInfo, "ParsedMessage | None", "Summary | None"], bytes]


def _fetch_plan(attributes: Sequence[FetchAttribute], condstore: bool) -> list[FetchItem]:
    """One renderer per item of a FETCH, chosen once for all its messages (an initial sync
    renders five items for each of 10,000 messages)."""
    plan: list[FetchItem] = []
    for attribute in attributes:
        name = attribute.name
        if name == "UID":
            plan.append(lambda info, parsed, summary: b"UID %d" % info.uid)
        elif name == "FLAGS":
            plan.append(lambda info, parsed, summary:
                        b"FLAGS " + flag_list(info.flags).text.encode())
        elif name == "INTERNALDATE":
            plan.append(lambda info, parsed, summary:
                        b'INTERNALDATE "%b"' % date_time(info.internaldate).encode())
        elif name == "RFC822.SIZE":
            plan.append(lambda info, parsed, summary: b"RFC822.SIZE %d" % (
                len(parsed.data) if parsed is not None else info.size))
        elif name == "MODSEQ":
            plan.append(lambda info, parsed, summary: b"MODSEQ (%d)" % info.modseq)
        elif _from_summary(attribute):
            plan.append(_summary_item(attribute))
        else:
            plan.append(_generic_item(attribute))
    if condstore and not any(a.name == "MODSEQ" for a in attributes):
        plan.append(lambda info, parsed, summary: b"MODSEQ (%d)" % info.modseq)
    return plan


def _generic_item(attribute: FetchAttribute) -> FetchItem:
    def item(info: MessageInfo, parsed: ParsedMessage | None, summary: Summary | None) -> bytes:
        return _message_item(attribute, parsed)

    return item


def _summary_item(attribute: FetchAttribute) -> FetchItem:
    name = attribute.name
    label = name.encode() + b" "

    def item(info: MessageInfo, parsed: ParsedMessage | None, summary: Summary | None) -> bytes:
        if summary is None:
            return _message_item(attribute, parsed)
        if name == "ENVELOPE":
            return label + summary.envelope
        return label + (summary.bodystructure if name == "BODYSTRUCTURE" else summary.body)

    return item


def _message_item(attribute: FetchAttribute, parsed: ParsedMessage | None) -> bytes:
    """One FETCH item that needs the message itself (RFC 9051 7.5.2): its structure, a
    section or a BINARY part."""
    assert parsed is not None
    name = attribute.name
    value: Value
    if name == "ENVELOPE":
        value = parsed.envelope()
    elif name == "BODYSTRUCTURE":
        value = parsed.bodystructure(True)
    elif name == "BODY" and attribute.section is None:
        value = parsed.bodystructure(False)
    elif name == "RFC822":
        value = parsed.data
    elif name == "RFC822.HEADER":
        value = parsed.header_bytes()
    elif name == "RFC822.TEXT":
        value = parsed.text_bytes()
    elif name == "BINARY.SIZE":
        section = attribute.section
        data = parsed.binary(section.part if section else ())
        label = f"BINARY.SIZE[{'.'.join(map(str, section.part)) if section else ''}]"
        return label.encode() + b" " + render(len(data) if data is not None else 0)
    elif name == "BINARY":
        section = attribute.section
        data = parsed.binary(section.part if section else ())
        # literal8 only when needed (NUL octets, RFC 9051 4.3.1), as Dovecot does:
        # imaplib-based clients (imapclient) cannot read ~{n}
        chunk = _partial(data, attribute.partial) if data is not None else None
        value = Literal8(chunk) if chunk is not None and b"\0" in chunk else chunk
        return _section_name(attribute).encode() + b" " + render(value)
    else:  # BODY[section]
        assert attribute.section is not None
        data = parsed.section(attribute.section)
        value = _partial(data if data is not None else b"", attribute.partial)
        return _section_name(attribute).encode() + b" " + render(value)
    return name.encode() + b" " + render(value)


# ---- SEARCH (RFC 9051 6.4.4) --------------------------------------------------------------------

@dataclass(slots=True)
class _Candidate:
    seq: int
    info: MessageInfo
    message: Message | None
    _text: dict[str, str] = field(default_factory=dict)


def _walk(key: SearchKey) -> Iterable[SearchKey]:
    stack = [key]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, SearchAnd):
            stack.extend(item.keys)
        elif isinstance(item, SearchOr):
            stack.extend((item.left, item.right))
        elif isinstance(item, SearchNot):
            stack.append(item.key)


def _needs_message(key: SearchKey) -> bool:
    return any(isinstance(k, SearchHeader | SearchText) or (isinstance(k, SearchDate) and k.sent)
               for k in _walk(key))


def _has_modseq(key: SearchKey) -> bool:
    return any(isinstance(k, SearchModSeq) for k in _walk(key))


def _decode_header(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _body_text(message: Message) -> str:
    texts: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() not in ("text", "message"):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            charset = part.get_content_charset() or "utf-8"
            try:
                texts.append(payload.decode(charset, "replace"))
            except LookupError:
                texts.append(payload.decode("utf-8", "replace"))
    return "\n".join(texts)


def _header_text(message: Message) -> str:
    return "\n".join(f"{k}: {_decode_header(str(v))}" for k, v in message.items())


def _matches(key: SearchKey, candidate: _Candidate,
             sets: dict[SearchSet, frozenset[int]]) -> bool:
    """Whether ``candidate`` satisfies ``key``: string keys are case-insensitive substrings
    (RFC 9051 6.4.4); dates compare days, the internal date in its own zone."""
    info = candidate.info
    match key:
        case SearchAll():
            return True
        case SearchAnd(keys):
            return all(_matches(k, candidate, sets) for k in keys)
        case SearchOr(left, right):
            return _matches(left, candidate, sets) or _matches(right, candidate, sets)
        case SearchNot(inner):
            return not _matches(inner, candidate, sets)
        case SearchFlag(flag, present):
            has = flag.lower() in {f.lower() for f in info.flags}
            return has == present
        case SearchSize(larger, size):
            return info.size > size if larger else info.size < size
        case SearchModSeq(modseq):
            return info.modseq >= modseq
        case SearchSet():
            return info.uid in sets.get(key, frozenset())
        case SearchDate(op, day, sent):
            if sent:
                assert candidate.message is not None
                value = candidate.message.get("Date")
                try:
                    when = email.utils.parsedate_to_datetime(str(value)).date()
                except (TypeError, ValueError, IndexError):
                    return False
            else:
                when = info.internaldate.date()
            return when < day if op == "before" else when == day if op == "on" else when >= day
        case SearchHeader(name, value):
            assert candidate.message is not None
            values = candidate.message.get_all(name) or []
            if not value:
                return bool(values)
            needle = value.casefold()
            return any(needle in _decode_header(str(v)).casefold() for v in values)
        case SearchText(where, value):
            assert candidate.message is not None
            if "body" not in candidate._text:
                candidate._text["body"] = _body_text(candidate.message).casefold()
            needle = value.casefold()
            if needle in candidate._text["body"]:
                return True
            return where != "BODY" and needle in _header_text(candidate.message).casefold()
    return False

