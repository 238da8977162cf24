"""The gevent I/O shell around one SMTPSession: socket reads and writes, timeouts, TLS."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import gevent

from geomail import maillog
from geomail.config import Limits
from geomail.ids import new_id
from geomail.log import event
from geomail.proto import reply as R
from geomail.proto.reply import Close, Delay, Reply, StartTLS
from geomail.proto.smtp import SMTPSession, State
from geomail.proto.smtp_types import SessionInfo, SMTPHandler, SMTPSettings
from geomail.server.connection import Connection
from geomail.server.listener import ConnectionTracker
from geomail.server.tls import TLSContextHolder, TLSHandshakeError, tls_description, wrap_server

log = logging.getLogger(__name__)
transcript = logging.getLogger("geomail.transcript")

RECV_SIZE = 65536
IDLE_STATES = (State.INITIAL, State.READY)
R421_LIFETIME = R.R421_TIMEOUT.with_text("Connection time limit reached, closing connection")


@dataclass(frozen=True, slots=True)
class SMTPService:
    """What every connection of one SMTP listener shares."""

    kind: str  # smtp, submission or submissions
    handler: SMTPHandler
    settings: SMTPSettings
    limits: Limits
    tracker: ConnectionTracker
    tls: TLSContextHolder | None = None

    def serve(self, sock: socket.socket, address: tuple[str, int],
              on_end: Callable[[Connection], None]) -> None:
        """Listener entry point: one call per accepted connection, in its own greenlet."""
        SMTPConnection(self, sock, address, on_end).run()


class SMTPConnection(Connection):
    """One client connection: feeds received bytes to the session and carries out its outputs."""

    __slots__ = ("_greeted", "service", "session")

    goodbye_shutdown = R.R421_SHUTTING_DOWN.wire
    goodbye_timeout = R.R421_TIMEOUT.wire
    goodbye_lifetime = R421_LIFETIME.wire

    def __init__(self, service: SMTPService, sock: socket.socket, address: tuple[str, int],
                 on_end: Callable[[Connection], None]) -> None:
        super().__init__(sock, address[0], new_id(), on_end,
                         service.limits.max_connection_time)
        self.service = service
        info = SessionInfo(self.session_id, address[0], address[1], service.kind)
        trace = self._trace if transcript.isEnabledFor(logging.DEBUG) else None
        self.session = SMTPSession(service.handler, info, service.settings, trace)
        self._greeted = False
        service.tracker.register(self)
        maillog.connect(self.session_id, service.kind, self.client)

    @property
    def service_kind(self) -> str:
        return self.service.kind

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
        maillog.disconnect(self.session_id, self.client, reason, self.session.accepted)

    def converse(self) -> str:
        """The command loop (re-entered after parking); returns why the conversation ended."""
        session, tracker = self.session, self.service.tracker
        if not self._greeted:
            if self.service.kind == "submissions":
                self._start_tls()
            self.send(session.greeting().wire)
            self._greeted = True
            self.restart_deadline()
        rate = self.service.limits.min_data_rate
        while True:
            try:
                data = self.receive(RECV_SIZE)
            except TimeoutError:
                lifetime = self.lifetime_over
                self.send_quietly(self.timeout_goodbye())
                return "lifetime" if lifetime else "timeout"
            reading_data = session.reading_data
            try:
                outputs = session.feed(data)
            except Exception:  # a bug: never a traceback to the client (DESIGN, errors)
                event(log, logging.ERROR, "internal-error", exc_info=True,
                      where="smtp-session", session=self.session_id)
                self.send_quietly(R.R451_LOCAL_ERROR.wire)
                return "internal-error"
            # A reply (or the start of a BDAT chunk) makes a new record due: its deadline
            # starts once the replies are out. Otherwise the record in progress keeps its
            # deadline; message data earns its min_data_rate credit.
            record_due = bool(outputs) or session.reading_data != reading_data
            if not record_due and reading_data and rate:
                self.extend_deadline(len(data) / rate)
            pending: list[bytes] = []
            for output in outputs:
                if isinstance(output, Reply):
                    pending.append(output.wire)
                    if transcript.isEnabledFor(logging.DEBUG):
                        self._trace("<-", str(output))
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
            if pending:
                self.send(b"".join(pending))
            if record_due:
                self.restart_deadline()
            if tracker.draining and session.state in IDLE_STATES:
                self.send_quietly(R.R421_SHUTTING_DOWN.wire)
                return "shutdown"

    def _start_tls(self) -> None:
        holder = self.service.tls
        if holder is None:  # config validation prevents this
            raise TLSHandshakeError("no certificate configured")
        limits = self.service.limits
        self.sock = wrap_server(self.sock, holder.context, limits.tls_handshake_timeout)
        maillog.tls_ok(self.service.kind)
        self.session.info.tls = tls_description(self.sock)

    def _trace(self, direction: str, text: str) -> None:
        event(transcript, logging.DEBUG, "transcript", session=self.session_id,
              dir=direction, line=text)
