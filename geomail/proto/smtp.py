"""The SMTP server session (RFC 5321) as a sans-IO state machine: bytes in, outputs out.

The session never calls anything (h11's shape). ``feed(bytes)`` returns outputs in order:
actions for the shell (``Reply`` to send, ``StartTLS``, ``Delay``, ``Close``), notices about
the message being received (``MessageStart``: open a body; ``MessageData``: append LF-normalised
content; ``MessageAborted``: discard it) and at most one request, always last:

| request             | emitted when                              | answer                     |
|---------------------|-------------------------------------------|----------------------------|
| ``CheckSender``     | MAIL passed the syntax and size checks    | None, or the refusal Reply |
| ``CheckRecipient``  | RCPT passed the syntax and count checks   | None, or the refusal Reply |
| ``Authenticate``    | a SASL exchange yielded credentials       | the user, or a Reply       |
| ``MessageComplete`` | DATA's final dot or BDAT LAST, loop-free  | the Reply (250 if durable) |

While a request is unanswered the session reads nothing more (pipelined input stays buffered);
``answer(result)`` returns the reply and whatever the buffered input then produces. Each
``MessageStart`` (at DATA, or at a transaction's first BDAT chunk) is followed by its content
and then exactly one ``MessageComplete`` or ``MessageAborted``.

What each verb may do in each state (anything else gets 503 5.5.1):

| verb                | INITIAL | READY | MAIL         | RCPT  |
|---------------------|---------|-------|--------------|-------|
| HELO / EHLO         | ok      | ok    | ok, resets   | ok, resets |
| MAIL                | 503     | ok    | 503 (nested) | 503   |
| RCPT                | 503     | 503   | ok           | ok    |
| DATA                | 503     | 503   | 554 no rcpt  | ok    |
| BDAT (RFC 3030)     | 503     | 503   | 554 no rcpt  | ok    |
| STARTTLS (RFC 3207) | 503     | ok    | 503          | 503   |
| AUTH (RFC 4954)     | 503     | ok    | 503          | 503   |
| RSET NOOP HELP VRFY QUIT | ok | ok    | ok           | ok    |

A client the policy refuses at connect (``greeting(refusal)``: a DNSBL listing) is greeted with
554 instead of 220 and the session is REFUSED: RFC 5321 3.1 says the server must then wait for
QUIT (221) and should answer anything else 503. Those 503s count as protocol errors, so a client
that never quits is closed with 421 after ``max_bad_commands`` of them.

While DATA or BDAT content is read the session is in DATA/BDAT, during an AUTH exchange in AUTH;
a BDAT chunk is always read to its end, even when the command is refused (RFC 3030 2), unless
its size would take the message past the limit (552, closing, the chunk unread).

Refused and junk commands count against the error limits of ``proto/smtp_limits.py``; the
message content (DATA, BDAT, hop counting) is read by ``proto/smtp_content.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from geomail.envelope import Envelope, RecipientDSN
from geomail.proto import reply as R
from geomail.proto.dsn_params import (
    DSNParamError,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
)
from geomail.proto.lines import LineBuffer, LineFault
from geomail.proto.reply import Close, Delay, Reply, StartTLS
from geomail.proto.sasl import (
    MAX_RESPONSE,
    MECHANISMS,
    Credentials,
    SASLError,
    SASLExchange,
    encode_challenge,
)
from geomail.proto.smtp_args import ArgumentError, parse_path_argument
from geomail.proto.smtp_content import MESSAGE_ABORTED, MessageContent
from geomail.proto.smtp_limits import JUNK_VERBS, ErrorLimits
from geomail.proto.smtp_types import (
    Answer,
    Authenticate,
    CheckRecipient,
    CheckSender,
    MessageAborted,
    MessageComplete,
    MessageData,
    MessageStart,
    Request,
    SessionInfo,
    SMTPSettings,
    State,
)

if TYPE_CHECKING:
    from geomail.proto.dotreader import ChunkReader, DotReader
    from geomail.proto.hopcount import HopCounter

Output = Reply | StartTLS | Close | Delay | Request | MessageStart | MessageData | MessageAborted

# RFC 1870 4, RFC 4954 5, RFC 6152, RFC 6531: room MAIL parameters may add to the 512 octets.
PARAMETER_ALLOWANCE = 550
HTTP_VERBS = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "DELETE"})
MAX_AUTH_FAILURES_PER_CONNECTION = 3


class SMTPSession(MessageContent):
    """One SMTP server conversation. ``feed(bytes)`` returns the outputs to act on, in order."""

    # Thousands of idle sessions stay in memory: no per-instance __dict__.
    __slots__ = ("_auth_failures", "_limits", "_lines", "_out", "_pending", "_sasl", "_starttls",
                 "_trace", "accepted", "envelope", "info", "settings", "too_many_errors")

    def __init__(self, info: SessionInfo, settings: SMTPSettings,
                 trace: Callable[[str, str], None] | None = None) -> None:
        self.info = info
        self.settings = settings
        self.state = State.INITIAL
        self.envelope = Envelope()
        self._trace = trace
        limit = settings.max_command_length + PARAMETER_ALLOWANCE
        if settings.auth_offered:
            limit = max(limit, MAX_RESPONSE + 2)
        self._lines = LineBuffer(limit)
        self._limits = ErrorLimits(settings)
        self._auth_failures = 0
        self._hops: HopCounter | None = None
        self._body_open = False  # MessageStart sent, neither MessageComplete nor Aborted yet
        self._out: list[Output] = []  # the outputs of the feed or answer call in progress
        self._pending: Request | None = None  # the request awaiting ``answer``
        self._data: DotReader | None = None
        self._chunks: ChunkReader | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None
        self._sasl: SASLExchange | None = None
        self._starttls = False
        self._resume_state = State.READY  # where a BDAT chunk returns to
        self.accepted = 0  # messages answered 250 in this session
        self.too_many_errors = False  # ended by an error limit (421 4.7.0)

    # ---- I/O-facing API -------------------------------------------------------------------

    def greeting(self, refusal: Reply | None = None) -> Reply:
        """The 220 banner (RFC 5321 4.3.1), or ``refusal`` (a 554) in its place: the session is
        then REFUSED, waiting for QUIT (RFC 5321 3.1)."""
        if refusal is not None:
            self.state = State.REFUSED
            return refusal
        return Reply(220, None, f"{self.settings.hostname} {self.settings.banner}")

    @property
    def reading_data(self) -> bool:
        """True while message content is expected (the data timeout applies)."""
        return self.state in (State.DATA, State.BDAT)

    @property
    def pending(self) -> Request | None:
        """The request the shell must answer before the session reads on."""
        return self._pending

    def feed(self, data: bytes) -> list[Output]:
        """Take received bytes (``b""`` for end of stream); return what to send and do."""
        if self._pending is not None:
            raise RuntimeError(f"feed() while {type(self._pending).__name__} is unanswered")
        if self.state is State.CLOSED:
            return []
        out: list[Output] = []
        self._out = out
        if not data:
            self._close(out)
            return out
        self._lines.feed(data)
        self._run(out)
        self._out = []  # an idle session keeps no message data alive
        return out

    def answer(self, result: Answer) -> list[Output]:
        """The shell's answer to the pending request (see the module docstring); returns the
        reply and the outputs of any input buffered meanwhile."""
        request, self._pending = self._pending, None
        out: list[Output] = []
        self._out = out
        if isinstance(request, MessageComplete):
            assert isinstance(result, Reply)
            self._respond(self._message_answered(result), out)
        elif isinstance(request, CheckRecipient):
            assert result is None or isinstance(result, Reply)
            self._emit(self._recipient_answered(request.address, result, request.dsn), out)
        elif isinstance(request, CheckSender):
            assert result is None or isinstance(result, Reply)
            self._emit(self._sender_answered(request.envelope, result), out)
        elif isinstance(request, Authenticate):
            assert result is not None
            self._emit(self._auth_answered(result), out)
        else:
            raise RuntimeError("answer() without a pending request")
        if self.state is not State.CLOSED:
            self._run(out)
        self._out = []
        return out

    def _ask(self, request: Request) -> None:
        """Hand ``request`` to the shell; reading stops until ``answer``."""
        self._pending = request
        self._out.append(request)

    def _run(self, out: list[Output]) -> None:
        """Consume buffered input until it runs out, the session closes or a request waits."""
        while self.state is not State.CLOSED and self._pending is None:
            if self.state is State.DATA:
                if not self._read_data(out):
                    break
            elif self.state is State.BDAT:
                if not self._read_chunk(out):
                    break
            else:
                line = self._lines.next_line()
                if line is None:
                    break
                self._handle_line(line, out)
                if self._starttls:
                    self._starttls = False
                    if self._lines.injected_before_tls():
                        out[-1] = R.R554_TLS_PIPELINED
                        self._close(out)
                    else:
                        out.append(StartTLS())
                    break

    def tls_started(self, description: str) -> None:
        """The TLS handshake completed: forget everything the client said (RFC 3207 4.2)."""
        self._abort()
        self.info.tls = description
        self.info.helo = None
        self.info.esmtp = False
        self.info.auth_user = None
        self.state = State.INITIAL

    def abort(self) -> list[Output]:
        """Drop the transaction in progress (connection lost, timeout, shutdown); returns
        ``[MessageAborted()]`` if a body was open."""
        out: list[Output] = []
        self._out = out
        self._abort()
        return out

    def _abort(self) -> None:
        self._pending = None
        self._reset_transaction()
        if self.state not in (State.INITIAL, State.CLOSED, State.REFUSED):
            self.state = State.READY if self.info.helo else State.INITIAL

    # ---- command dispatch -----------------------------------------------------------------

    def _handle_line(self, line: bytes | LineFault, out: list[Output]) -> None:
        if line is LineFault.BARE_NEWLINE:
            out.append(R.R521_BARE_NEWLINE)
            self._close(out)
            return
        if line is LineFault.TOO_LONG:
            self._sasl = None
            self.state = self._idle_state() if self.state is State.AUTH else self.state
            self._error(R.R500_LINE_TOO_LONG, out)
            return
        assert isinstance(line, bytes)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._error(R.R500_UNRECOGNIZED.with_text("Invalid UTF-8 in command"), out)
            return
        if self.state is State.AUTH:
            self._trace_in("<auth data>")
            self._emit(self._auth_step(text), out)
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        self._trace_in("AUTH " + arg.split(" ")[0] + " <redacted>" if verb == "AUTH" else text)
        if self.state is State.REFUSED and verb != "QUIT":  # RFC 5321 3.1
            self._error(R.R503_REFUSED, out)
            return
        if verb != "AUTH" and len(line) + 2 > self._command_limit(verb):
            self._error(R.R500_LINE_TOO_LONG, out)
            return
        command = COMMANDS.get(verb)
        if command is None:
            if verb in HTTP_VERBS:
                out.append(R.R502_HTTP)
                self._close(out)
            else:
                self._error(R.R500_UNRECOGNIZED, out)
            return
        self._emit(command(self, arg.strip(" ")), out, verb in JUNK_VERBS)

    def _emit(self, reply: Reply | None, out: list[Output], junk: bool = False) -> None:
        """Queue a verb's reply, applying the error limits; close if the verb ended the
        session."""
        if reply is None:  # BDAT replies once its chunk has been read
            return
        if self.state is State.CLOSED:  # QUIT, or a refusal that ends the session itself
            out.append(reply)
            self._close(out)
            return
        protocol = reply.code >= 500 and (reply.enhanced or "").startswith("5.5.")
        self._respond(reply, out, junk=junk, protocol=protocol)

    def _command_limit(self, verb: str) -> int:
        extra = PARAMETER_ALLOWANCE if verb in ("MAIL", "RCPT") else 0
        return self.settings.max_command_length + extra

    def _error(self, reply: Reply, out: list[Output]) -> None:
        """A protocol error: reply, and close once the client has made too many."""
        self._respond(reply, out, protocol=True)

    def _respond(self, reply: Reply, out: list[Output], *, junk: bool = False,
                 protocol: bool = False) -> None:
        """Queue ``reply``, counted against the error limits; close with 421 at a hard one."""
        if self._limits.respond(reply, out.append, junk, protocol):
            out.append(R.R421_TOO_MANY_ERRORS)
            self.too_many_errors = True
            self._close(out)

    def _close(self, out: list[Output]) -> None:
        self._abort()
        self.state = State.CLOSED
        if not out or not isinstance(out[-1], Close):
            out.append(Close())

    def _idle_state(self) -> State:
        return State.READY if self.info.helo else State.INITIAL

    def _reset_transaction(self) -> None:
        if self._body_open:
            self._body_open = False
            self._out.append(MESSAGE_ABORTED)
        self._data = None
        self._chunks = None
        self._bdat_refusal = None
        self._hops = None
        self.envelope = Envelope()

    def _trace_in(self, text: str) -> None:
        if self._trace is not None:
            self._trace("->", text)

    # ---- verbs ----------------------------------------------------------------------------

    def cmd_HELO(self, arg: str) -> Reply:
        """RFC 5321 4.1.1.1."""
        if not arg:
            return R.R501_SYNTAX.with_text("HELO requires a domain")
        self._greet(arg.split(" ")[0], esmtp=False)
        return Reply(250, None, self.settings.hostname)

    def cmd_EHLO(self, arg: str) -> Reply:
        """RFC 5321 4.1.1.1; lists the extensions this session offers now."""
        if not arg:
            return R.R501_SYNTAX.with_text("EHLO requires a domain")
        self._greet(arg.split(" ")[0], esmtp=True)
        return _ehlo_reply(self.settings, self.settings.tls_available and not self.info.tls,
                           self._auth_allowed())

    def _greet(self, name: str, esmtp: bool) -> None:
        self._reset_transaction()
        self.info.helo = name
        self.info.esmtp = esmtp
        self.state = State.READY

    def _auth_allowed(self) -> bool:
        settings = self.settings
        return settings.auth_offered and bool(self.info.tls or not settings.tls_required_for_auth)

    def cmd_MAIL(self, arg: str) -> Reply | None:
        """RFC 5321 4.1.1.2, with SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531),
        RET and ENVID (RFC 3461 4.3, 4.4)."""
        if self.state is State.INITIAL:
            return R.R503_HELO_FIRST
        if self.state is not State.READY:
            return R.R503_NESTED_MAIL
        if self.settings.auth_required and not self.info.auth_user:  # RFC 6409 4.3
            return R.R530_AUTH_REQUIRED
        try:
            path = parse_path_argument(arg, "FROM", allow_null=True)
        except ArgumentError as exc:
            return _argument_reply(exc)
        envelope = Envelope(sender=path.address)
        for key, value in path.params.items():
            refusal = self._mail_parameter(envelope, key, value)
            if refusal is not None:
                return refusal
        if not path.address.isascii() and not envelope.smtputf8:
            return R.R553_NEEDS_SMTPUTF8
        self._ask(CheckSender(envelope))
        return None

    def _sender_answered(self, envelope: Envelope, refusal: Reply | None) -> Reply:
        if refusal is not None:
            return refusal
        self._reset_transaction()  # nothing of a BDAT refused before MAIL carries over
        self.envelope = envelope
        self.state = State.MAIL
        return R.R250_SENDER_OK

    def _mail_parameter(self, envelope: Envelope, key: str, value: str | None) -> Reply | None:
        if not self.info.esmtp:
            return R.R555_UNKNOWN_PARAMETER  # RFC 1869 4.4: no parameters after HELO
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                return R.R501_SYNTAX.with_text("SIZE needs a number")
            envelope.declared_size = int(value)
            if envelope.declared_size > self.settings.max_message_size:
                return R.R552_TOO_BIG  # RFC 1870 6.1
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                return R.R501_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME")
            envelope.body_type = value.upper()
        elif key == "SMTPUTF8" and value is None:
            envelope.smtputf8 = True
        elif key == "AUTH" and self._auth_allowed():
            pass  # RFC 4954 5: accepted; we do not relay the identity further
        elif key in ("RET", "ENVID"):
            try:
                if key == "RET":
                    envelope.ret = parse_ret(value)
                else:
                    envelope.envid = parse_envid(value)
            except DSNParamError as exc:
                return R.R501_SYNTAX.with_text(str(exc))
        else:
            return R.R555_UNKNOWN_PARAMETER
        return None

    def cmd_RCPT(self, arg: str) -> Reply | None:
        """RFC 5321 4.1.1.3, with NOTIFY and ORCPT (RFC 3461 4.1, 4.2)."""
        if self.state not in (State.MAIL, State.RCPT):
            return R.R503_NEED_MAIL if self.state is not State.INITIAL else R.R503_HELO_FIRST
        if self._in_bdat():
            return R.R503_BAD_SEQUENCE.with_text("RCPT cannot follow BDAT")  # RFC 3030 2
        try:
            path = parse_path_argument(arg, "TO", allow_null=False)
        except ArgumentError as exc:
            if exc.kind == "address" and arg.partition(":")[2].strip(" <>").lower() == "postmaster":
                path = None  # RFC 5321 4.5.1: "postmaster" without a domain must work
            else:
                return _argument_reply(exc)
        dsn = self._recipient_dsn(path.params) if path is not None else None
        if isinstance(dsn, Reply):
            return dsn
        address = path.address if path is not None else "postmaster"
        if not address.isascii() and not self.envelope.smtputf8:
            return R.R553_NEEDS_SMTPUTF8
        if len(self.envelope.recipients) >= self.settings.max_recipients:
            return R.R452_TOO_MANY_RECIPIENTS  # RFC 5321 4.5.3.1.10
        self._ask(CheckRecipient(self.envelope, address, dsn))
        return None

    def _recipient_dsn(self, params: dict[str, str | None]) -> RecipientDSN | Reply | None:
        """NOTIFY and ORCPT (RFC 3461 4.1, 4.2), the only RCPT parameters we know."""
        if not params:
            return None
        if not self.info.esmtp or set(params) - {"NOTIFY", "ORCPT"}:
            return R.R555_UNKNOWN_PARAMETER  # RFC 1869 4.4: no parameters after HELO
        try:
            notify = parse_notify(params["NOTIFY"]) if "NOTIFY" in params else None
            orcpt = (parse_orcpt(params["ORCPT"], self.envelope.smtputf8)
                     if "ORCPT" in params else None)
        except DSNParamError as exc:
            return R.R501_SYNTAX.with_text(str(exc))
        return RecipientDSN(notify, orcpt)

    def _recipient_answered(self, address: str, refusal: Reply | None,
                            dsn: RecipientDSN | None = None) -> Reply:
        if refusal is not None:
            return refusal
        if dsn is not None:
            self.envelope.dsn.setdefault(address, dsn)
        self.envelope.recipients.append(address)
        self.state = State.RCPT
        return R.R250_RECIPIENT_OK

    def _message_answered(self, reply: Reply) -> Reply:
        if reply.code == 250:
            self.accepted += 1
            self._limits.progress()  # the client delivered mail
        return reply

    def cmd_RSET(self, arg: str) -> Reply:
        """RFC 5321 4.1.1.5."""
        self._reset_transaction()
        self.state = self._idle_state()
        return R.R250_RESET

    def cmd_NOOP(self, arg: str) -> Reply:
        """RFC 5321 4.1.1.9."""
        return R.R250_OK

    def cmd_QUIT(self, arg: str) -> Reply:
        """RFC 5321 4.1.1.10."""
        self._abort()
        self.state = State.CLOSED
        return R.R221_BYE

    def cmd_VRFY(self, arg: str) -> Reply:
        """RFC 5321 3.5.3: never disclose whether a user exists."""
        if not arg:
            return R.R501_SYNTAX.with_text("VRFY requires an address")
        return R.R252_CANNOT_VRFY

    def cmd_EXPN(self, arg: str) -> Reply:
        """RFC 5321 3.5.2: list expansion is not offered."""
        return R.R502_NOT_IMPLEMENTED

    def cmd_HELP(self, arg: str) -> Reply:
        """RFC 5321 4.1.1.8."""
        return R.R214_HELP

    def cmd_STARTTLS(self, arg: str) -> Reply:
        """RFC 3207 4: 220, then the connection upgrades (see ``feed``)."""
        if not self.settings.tls_available or self.info.tls:
            return R.R502_NOT_IMPLEMENTED if not self.settings.tls_available else \
                R.R503_BAD_SEQUENCE.with_text("TLS already active")
        if arg:
            return R.R501_SYNTAX.with_text("STARTTLS takes no arguments")
        if self.state is State.INITIAL:
            return R.R503_HELO_FIRST
        if self.state is not State.READY:
            return R.R503_BAD_SEQUENCE.with_text("STARTTLS not allowed during a transaction")
        self._starttls = True
        return R.R220_READY_TLS

    def cmd_AUTH(self, arg: str) -> Reply | None:
        """RFC 4954 4: ``AUTH mechanism [initial-response]``."""
        if not self.settings.auth_offered:
            return R.R502_NOT_IMPLEMENTED
        if not self._auth_allowed():
            return R.R538_ENCRYPTION_REQUIRED
        if self.info.auth_user:
            return R.R503_ALREADY_AUTHENTICATED
        if self.state is State.INITIAL:
            return R.R503_HELO_FIRST
        if self.state is not State.READY:
            return R.R503_BAD_SEQUENCE.with_text("AUTH not allowed during a transaction")
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() not in MECHANISMS:
            return R.R504_UNKNOWN_MECHANISM
        self._sasl = SASLExchange(mechanism)
        return self._auth_result(self._sasl.start(initial or None))

    def _auth_step(self, text: str) -> Reply | None:
        assert self._sasl is not None
        return self._auth_result(self._sasl.step(text))

    def _auth_result(self, result: str | Credentials | SASLError) -> Reply | None:
        if isinstance(result, str):
            self.state = State.AUTH
            return Reply(334, None, encode_challenge(result))
        self._sasl = None
        self.state = self._idle_state()
        if isinstance(result, SASLError):
            # Cancelled or garbled exchanges count too, so AUTH/"*" cannot loop forever.
            return self._auth_failed(_SASL_REFUSALS[result])
        self._ask(Authenticate(result))
        return None

    def _auth_answered(self, outcome: str | Reply) -> Reply:
        if isinstance(outcome, str):
            self.info.auth_user = outcome
            return R.R235_AUTH_OK
        return self._auth_failed(outcome)

    def _auth_failed(self, refusal: Reply) -> Reply:
        self._auth_failures += 1
        if refusal.code == 421 or self._auth_failures >= MAX_AUTH_FAILURES_PER_CONNECTION:
            self.state = State.CLOSED
            if refusal.code != 421:
                return R.R421_AUTH_BLOCKED
        return refusal

@functools.lru_cache(maxsize=64)
def _ehlo_reply(settings: SMTPSettings, starttls: bool, auth: bool) -> Reply:
    """The EHLO reply (RFC 5321 4.1.1.1): the same few variants over and over, so cached."""
    lines = [settings.hostname, "PIPELINING", f"SIZE {settings.max_message_size}", "8BITMIME",
             "SMTPUTF8", "CHUNKING", "DSN", "ENHANCEDSTATUSCODES"]
    if starttls:
        lines.append("STARTTLS")
    if auth:
        lines.append("AUTH " + " ".join(MECHANISMS))
    return Reply(250, None, tuple(lines))


_SASL_REFUSALS = {
    SASLError.CANCELLED: R.R501_AUTH_CANCELLED,  # RFC 4954 4
    SASLError.BAD_BASE64: R.R501_BAD_BASE64,
    SASLError.MALFORMED: R.R501_SYNTAX.with_text("Malformed authentication data"),
}


def _argument_reply(exc: ArgumentError) -> Reply:
    return {"syntax": R.R501_SYNTAX, "address": R.R553_BAD_ADDRESS,
            "param": R.R555_UNKNOWN_PARAMETER,
            "duplicate": R.R501_SYNTAX.with_text("Duplicate parameter")}.get(exc.kind,
                                                                             R.R501_SYNTAX)


# Dispatch by verb: an explicit table, never getattr on client input.
COMMANDS: dict[str, Callable[[SMTPSession, str], Reply | None]] = {
    "HELO": SMTPSession.cmd_HELO, "EHLO": SMTPSession.cmd_EHLO, "MAIL": SMTPSession.cmd_MAIL,
    "RCPT": SMTPSession.cmd_RCPT, "DATA": SMTPSession.cmd_DATA, "BDAT": SMTPSession.cmd_BDAT,
    "RSET": SMTPSession.cmd_RSET, "NOOP": SMTPSession.cmd_NOOP, "QUIT": SMTPSession.cmd_QUIT,
    "VRFY": SMTPSession.cmd_VRFY, "EXPN": SMTPSession.cmd_EXPN, "HELP": SMTPSession.cmd_HELP,
    "STARTTLS": SMTPSession.cmd_STARTTLS, "AUTH": SMTPSession.cmd_AUTH,
}
