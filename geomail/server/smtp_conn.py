"""The gevent I/O shell around one SMTPSession: socket reads and writes, timeouts, TLS, and
answering the session's requests with the policy (each call under ``limits.policy_timeout``,
see server/policy_call.py). The body of the message being received lives here, not in the
session: the policy opens it, the shell writes the session's MessageData to it."""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import gevent
from gevent.socket import wait_read

from geomail.envelope import Envelope
from geomail.log import event
from geomail.proto import reply as R
from geomail.proto.reply import Close, Delay, Reply, StartTLS
from geomail.proto.sasl import Credentials
from geomail.proto.smtp import Output, SMTPSession
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
from geomail.server.connection import Connection, Service
from geomail.server.policy_call import call_durable, call_policy

log = logging.getLogger(__name__)
transcript = logging.getLogger("geomail.transcript")

RECV_SIZE = 65536
IDLE_STATES = (State.INITIAL, State.READY, State.REFUSED)
R421_LIFETIME = R.R421_TIMEOUT.with_text("Connection time limit reached, closing connection")
# The answers to a policy call that failed or ran out of time (transient: the client retries).
CHECK_FAILED: Reply | None = R.R451_LOCAL_ERROR
LOGIN_FAILED: str | Reply = Reply(454, "4.7.0", "Temporary authentication failure")  # RFC 4954 6
R554_EARLY_TALKER = Reply(554, "5.5.1", "Protocol error: talked before the greeting")


class BodySink(Protocol):
    """Where the shell writes the (LF-normalised) content of the message being received."""

    def write(self, data: bytes) -> None: ...

    def discard(self) -> None: ...


Sink = TypeVar("Sink", bound=BodySink)


class SMTPHandler(Protocol[Sink]):
    """The policy the shell asks on the session's behalf (geomail/policy/smtp.py); calls may
    block cooperatively (thread pool, disk)."""

    def check_client(self, info: SessionInfo) -> Reply | None:
        """Before the greeting: None greets the client; a Reply (554) is sent instead of the
        220 and the session then waits for QUIT (RFC 5321 3.1)."""

    def pregreet(self, info: SessionInfo) -> float | None:
        """The early-talker screen for this client (cheap, no I/O): None when it does not
        apply, else the greeting delay in seconds (0: only bytes already waiting count)."""

    def check_sender(self, info: SessionInfo, envelope: Envelope) -> Reply | None:
        """None accepts ``envelope.sender``; a Reply refuses it."""

    def check_recipient(self, info: SessionInfo, envelope: Envelope, address: str) -> Reply | None:
        """None accepts ``address``; a Reply refuses it."""

    def authenticate(self, info: SessionInfo, credentials: Credentials) -> str | Reply:
        """The canonical user on success; else the Reply to send (421 closes)."""

    def open_body(self, info: SessionInfo, envelope: Envelope) -> Sink:
        """A sink for the content about to be received (cheap: no I/O)."""

    def accept_message(self, info: SessionInfo, envelope: Envelope, body: Sink) -> Reply:
        """Make the message durable (250) or refuse it; owns ``body`` from now on."""


class SMTPService(Service[SMTPHandler[Any], SMTPSettings]):
    """What every connection of one SMTP listener shares."""

    __slots__ = ()

    def serve(self, sock: socket.socket, address: tuple[str, int],
              on_end: Callable[[Connection], None]) -> None:
        """Listener entry point: one call per accepted connection, in its own greenlet."""
        SMTPConnection(self, sock, address, on_end).run()


class SMTPConnection(Connection):
    """One client connection: feeds received bytes to the session and carries out its outputs."""

    __slots__ = ("_answered_early", "_body", "_greeted", "session")

    service: SMTPService

    goodbye_shutdown = R.R421_SHUTTING_DOWN.wire
    goodbye_timeout = R.R421_TIMEOUT.wire
    goodbye_lifetime = R421_LIFETIME.wire

    def __init__(self, service: SMTPService, sock: socket.socket, address: tuple[str, int],
                 on_end: Callable[[Connection], None]) -> None:
        super().__init__(service, sock, address, on_end)
        info = SessionInfo(self.session_id, address[0], address[1], service=service.kind)
        trace = self._trace if transcript.isEnabledFor(logging.DEBUG) else None
        self.session = SMTPSession(info, service.settings, trace)
        self._body: BodySink | None = None  # the message being received
        self._greeted = False
        self._answered_early = False  # the store's deadline passed: 451 already sent

    @property
    def timeout(self) -> float:
        # RFC 5321 4.5.3.2: a command line is due within command_timeout of our last reply; a
        # DATA body within data_timeout of the 354, a BDAT chunk within data_timeout of its
        # command (plus the min_data_rate credit, see server/connection.py).
        limits = self.service.limits
        return limits.data_timeout if self.session.reading_data else limits.command_timeout

    @property
    def in_transaction(self) -> bool:
        return self.session.state not in IDLE_STATES

    def finished(self, reason: str) -> None:
        self.service.tracker.unregister(self)
        self.session.abort()
        self._discard_body()
        self.maillog.disconnect(self.session_id, self.client, reason, self.session.accepted)

    def converse(self) -> str:
        """The command loop (re-entered after parking); returns why the conversation ended."""
        session, tracker = self.session, self.service.tracker
        if not self._greeted:
            if self.service.settings.implicit_tls:
                self._start_tls()
            if not self._greet():
                return "early-talker"
            self._greeted = True
            self.restart_deadline()
        rate = self.service.limits.min_data_rate
        while True:
            try:
                data = self.receive(RECV_SIZE)
            except TimeoutError:
                return self.say_timeout()
            reading_data = session.reading_data
            fed = self._step(session.feed, data)
            if fed is None:
                self.send_quietly(R.R451_LOCAL_ERROR.wire)
                return "internal-error"
            outputs = fed
            pending: list[bytes] = []
            replied = False
            while outputs:
                answered: list[Output] | None = []
                for output in outputs:
                    if isinstance(output, Reply):
                        replied = True
                        pending.append(output.wire)
                        if transcript.isEnabledFor(logging.DEBUG):
                            self._trace("<-", str(output))
                    elif isinstance(output, MessageData):
                        assert self._body is not None
                        self._body.write(output.data)
                    elif isinstance(output, MessageStart):
                        self._body = self.service.handler.open_body(session.info,
                                                                    output.envelope)
                    elif isinstance(output, MessageAborted):
                        self._discard_body()
                    elif isinstance(output, StartTLS):
                        self.send(b"".join(pending))
                        pending = []
                        self._start_tls()
                        session.tls_started(session.info.tls or "TLS")
                        self.restart_deadline()
                    elif isinstance(output, Delay):  # past the soft error limit: slow down
                        if pending:
                            self.send(b"".join(pending))
                            pending = []
                        gevent.sleep(output.seconds)
                    elif isinstance(output, Close):
                        self.send_quietly(b"".join(pending))
                        if session.too_many_errors:
                            return "too-many-errors"
                        return "quit" if data else "eof"
                    else:  # a request, always the last output: reading resumes on the answer
                        if pending and isinstance(output, MessageComplete):
                            self.send(b"".join(pending))  # before any reply to the message
                            pending = []
                        answered = self._step(session.answer, self._ask(output))
                        if answered is not None and self._answered_early:
                            self._answered_early = False
                            replied = True
                            answered = _without_first_reply(answered)
                        if answered is None:
                            self.send_quietly(b"".join(pending) + R.R451_LOCAL_ERROR.wire)
                            return "internal-error"
                outputs = answered or []
            if pending:
                self.send(b"".join(pending))
            # A reply (or the start of a BDAT chunk) makes a new record due: its deadline
            # starts once the replies are out. Otherwise the record in progress keeps its
            # deadline; message data earns its min_data_rate credit.
            if replied or session.reading_data != reading_data:
                self.restart_deadline()
            elif reading_data and rate:
                self.extend_deadline(len(data) / rate)
            if tracker.draining and session.state in IDLE_STATES:
                self.send_quietly(R.R421_SHUTTING_DOWN.wire)
                return "shutdown"

    def _greet(self) -> bool:
        """Screen the client, then send the greeting (554 instead of 220 for a refused client);
        False when the client talked before the greeting and was sent away."""
        handler, info = self.service.handler, self.session.info
        refusal = call_policy("check-client", self.session_id,
                              self.service.limits.policy_timeout, None, handler.check_client,
                              info)
        delay = handler.pregreet(info) if refusal is None else None
        if delay is not None and self._talks_early(delay):
            self.send_quietly(R554_EARLY_TALKER.wire)
            self.maillog.metrics.inc("geomail_early_talkers_total")
            event(self.maillog.log, logging.INFO, "early-talker", session=self.session_id,
                  client=self.client, delay=delay)
            return False
        self.send(self.session.greeting(refusal).wire)
        return True

    def _talks_early(self, delay: float) -> bool:
        """Postfix postscreen's pregreet test: did the client send anything before our
        greeting? With ``delay``, a first greeting line ("220-", RFC 5321 4.2.1) goes out and
        the client gets up to ``delay`` seconds to talk out of turn; without, only bytes that
        are already waiting count."""
        if delay > 0:
            self.send(f"220-{self.service.settings.hostname} ESMTP\r\n".encode())
            try:
                wait_read(self.sock.fileno(),
                          min(delay, max(self._end_of_life - time.monotonic(), 0.0)))
            except TimeoutError:
                return False
        self.sock.settimeout(0.0)
        self._short_timeout = True  # send() sets the send limit again
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except (BlockingIOError, InterruptedError):
            return False

    def _step(self, step: Callable[[Any], list[Output]], arg: Any) -> list[Output] | None:
        """``session.feed`` or ``session.answer``; None on a bug (the client gets 451)."""
        try:
            return step(arg)
        except Exception:  # a bug: never a traceback to the client (DESIGN, errors)
            event(log, logging.ERROR, "internal-error", exc_info=True,
                  where="smtp-session", session=self.session_id)
            return None

    def _ask(self, request: Request) -> Answer:
        """Answer the session's request with the policy, under the policy deadline."""
        handler, info = self.service.handler, self.session.info
        limit, sid = self.service.limits.policy_timeout, self.session_id
        if isinstance(request, MessageComplete):
            body, self._body = self._body, None
            # Never cut short (a store could still complete, never half-written): past the
            # deadline the client hears 451 from another greenlet while the store finishes.
            late = functools.partial(self.send_quietly, R.R451_LOCAL_ERROR.wire)
            reply, self._answered_early = call_durable(
                "accept-message", sid, limit, R.R451_LOCAL_ERROR, late,
                handler.accept_message, info, request.envelope, body)
            return reply
        if isinstance(request, CheckRecipient):
            return call_policy("check-recipient", sid, limit, CHECK_FAILED,
                               handler.check_recipient, info, request.envelope, request.address)
        if isinstance(request, CheckSender):
            return call_policy("check-sender", sid, limit, CHECK_FAILED,
                               handler.check_sender, info, request.envelope)
        assert isinstance(request, Authenticate)
        return call_policy("authenticate", sid, limit, LOGIN_FAILED,
                           handler.authenticate, info, request.credentials)

    def _discard_body(self) -> None:
        if self._body is not None:
            self._body.discard()
            self._body = None

    def _start_tls(self) -> None:
        self.session.info.tls = self.start_tls(self.service.tls, self.service.limits)

    def _trace(self, direction: str, text: str) -> None:
        event(transcript, logging.DEBUG, "transcript", session=self.session_id,
              dir=direction, line=text)


def _without_first_reply(outputs: list[Output]) -> list[Output]:
    """``outputs`` less its first Reply: the one a late store's 451 has already said."""
    for index, output in enumerate(outputs):
        if isinstance(output, Reply):
            return outputs[:index] + outputs[index + 1 :]
    return outputs
