"""The gevent I/O shell around one SMTPSession: socket reads and writes, timeouts, TLS."""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass

import gevent

from geomail import maillog
from geomail.config import Limits
from geomail.ids import new_id
from geomail.log import event
from geomail.proto import reply as R
from geomail.proto.reply import Close, Reply, StartTLS
from geomail.proto.smtp import SMTPSession, State
from geomail.proto.smtp_policy import SessionInfo, SMTPHandler, SMTPSettings
from geomail.server.listener import ConnectionTracker, ShuttingDown
from geomail.server.tls import TLSContextHolder, TLSHandshakeError, tls_description, wrap_server

log = logging.getLogger(__name__)
transcript = logging.getLogger("geomail.transcript")

RECV_SIZE = 65536
IDLE_STATES = (State.INITIAL, State.READY)


@dataclass(frozen=True, slots=True)
class SMTPService:
    """What every connection of one SMTP listener shares."""

    kind: str  # smtp, submission or submissions
    handler: SMTPHandler
    settings: SMTPSettings
    limits: Limits
    tracker: ConnectionTracker
    tls: TLSContextHolder | None = None

    def serve(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """Listener entry point: one call per accepted connection, in its own greenlet."""
        SMTPConnection(self, sock, address).serve()


class SMTPConnection:
    """One client connection: feeds received bytes to the session and carries out its outputs."""

    __slots__ = ("_greenlet", "_waiting", "service", "session", "sock")

    def __init__(self, service: SMTPService, sock: socket.socket,
                 address: tuple[str, int]) -> None:
        self.service = service
        self.sock = sock
        info = SessionInfo(new_id(), address[0], address[1], service.kind)
        trace = self._trace if transcript.isEnabledFor(logging.DEBUG) else None
        self.session = SMTPSession(service.handler, info, service.settings, trace)
        self._greenlet = gevent.getcurrent()
        self._waiting = False

    @property
    def idle(self) -> bool:
        return self._waiting and self.session.state in IDLE_STATES

    def interrupt(self) -> None:
        gevent.kill(self._greenlet, ShuttingDown)  # asynchronous: never waits

    def serve(self) -> None:
        service, info = self.service, self.session.info
        reason = "quit"
        service.tracker.register(self)
        maillog.connect(info.session_id, service.kind, info.peer_ip)
        try:
            if service.kind == "submissions":
                self._start_tls()
            self._send(self.session.greeting().wire)
            reason = self._converse()
        except ShuttingDown:
            reason = "shutdown"
            self._send_quietly(R.R421_SHUTTING_DOWN.wire)
        except TLSHandshakeError as exc:
            reason = f"tls-failed ({exc.reason})"
            maillog.tls_failed(service.kind, info.peer_ip, exc.reason)
        except OSError as exc:
            reason = f"error ({exc.strerror or type(exc).__name__})"
        finally:
            service.tracker.unregister(self)
            self.session.abort()
            self.sock.close()
            maillog.disconnect(info.session_id, info.peer_ip, reason, self.session.accepted)

    def _converse(self) -> str:
        """The command loop; returns why the conversation ended."""
        session, limits, tracker = self.session, self.service.limits, self.service.tracker
        timeout = 0.0
        while True:
            wanted = limits.data_timeout if session.reading_data else limits.command_timeout
            if wanted != timeout:  # RFC 5321 4.5.3.2: one timeout per command, another for data
                timeout = wanted
                self.sock.settimeout(timeout)
            self._waiting = True
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                self._send_quietly(R.R421_TIMEOUT.wire)
                return "timeout"
            finally:
                self._waiting = False
            pending: list[bytes] = []
            try:
                outputs = session.feed(data)
            except Exception:  # a bug: never a traceback to the client (DESIGN, errors)
                log.exception("bug in session session=%s", session.info.session_id)
                self._send_quietly(R.R451_LOCAL_ERROR.wire)
                return "internal-error"
            for output in outputs:
                if isinstance(output, Reply):
                    pending.append(output.wire)
                    if self._trace_enabled:
                        self._trace("<-", str(output))
                elif isinstance(output, StartTLS):
                    self._send(b"".join(pending))
                    pending = []
                    self._start_tls()
                    session.tls_started(session.info.tls or "TLS")
                elif isinstance(output, Close):
                    self._send_quietly(b"".join(pending))
                    return "quit" if data else "eof"
            if pending:
                self._send(b"".join(pending))
            if tracker.draining and session.state in IDLE_STATES:
                self._send_quietly(R.R421_SHUTTING_DOWN.wire)
                return "shutdown"

    @property
    def _trace_enabled(self) -> bool:
        return transcript.isEnabledFor(logging.DEBUG)

    def _start_tls(self) -> None:
        holder = self.service.tls
        if holder is None:  # config validation prevents this
            raise TLSHandshakeError("no certificate configured")
        limits = self.service.limits
        self.sock = wrap_server(self.sock, holder.context, limits.tls_handshake_timeout)
        maillog.tls_ok(self.service.kind)
        self.session.info.tls = tls_description(self.sock)  # type: ignore[arg-type]

    def _send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self._send(data)

    def _trace(self, direction: str, text: str) -> None:
        event(transcript, logging.DEBUG, "transcript", session=self.session.info.session_id,
              dir=direction, line=text)
