"""The gevent I/O shell around one POP3Session: reads, buffered writes, message streaming, TLS."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from geomail import maillog
from geomail.config import Limits
from geomail.errors import StoreError
from geomail.ids import new_id
from geomail.log import event
from geomail.proto.dotwriter import DotWriter
from geomail.proto.pop3 import (
    Output,
    POP3Handler,
    POP3Session,
    POP3Settings,
    Send,
    SendMessage,
    State,
    top_of_message,
)
from geomail.proto.reply import Close, StartTLS
from geomail.server.connection import Connection
from geomail.server.listener import ConnectionTracker
from geomail.server.tls import TLSContextHolder, TLSHandshakeError, wrap_server

log = logging.getLogger(__name__)

RECV_SIZE = 16384
FLUSH_AT = 256 * 1024  # send once this much output is buffered (pipelined RETRs)
BYE_SHUTDOWN = b"-ERR [SYS/TEMP] Server shutting down\r\n"
BYE_TIMEOUT = b"-ERR Autologout; idle for too long\r\n"
BYE_LIFETIME = b"-ERR Autologout; connection time limit reached\r\n"
ERR_UNREADABLE = b"-ERR [SYS/TEMP] Message cannot be read now\r\n"


@dataclass(frozen=True, slots=True)
class POP3Service:
    """What every connection of one POP3 listener shares."""

    kind: str  # pop3 or pop3s
    handler: POP3Handler
    settings: POP3Settings
    limits: Limits
    tracker: ConnectionTracker
    tls: TLSContextHolder | None = None

    def serve(self, sock: socket.socket, address: tuple[str, int],
              on_end: Callable[[Connection], None]) -> None:
        """Listener entry point: one call per accepted connection, in its own greenlet."""
        POP3Connection(self, sock, address, on_end).run()


class POP3Connection(Connection):
    """One client connection: feeds the session and carries out its outputs."""

    __slots__ = ("_greeted", "_out", "_out_size", "service", "session")

    goodbye_shutdown = BYE_SHUTDOWN
    goodbye_timeout = BYE_TIMEOUT
    goodbye_lifetime = BYE_LIFETIME

    def __init__(self, service: POP3Service, sock: socket.socket, address: tuple[str, int],
                 on_end: Callable[[Connection], None]) -> None:
        super().__init__(sock, address[0], new_id(), on_end,
                         service.limits.max_connection_time)
        self.service = service
        self.session = POP3Session(service.handler, address[0], service.settings,
                                   tls_active=service.kind == "pop3s")
        self._greeted = False
        self._out: list[bytes] = []
        self._out_size = 0
        service.tracker.register(self)
        maillog.connect(self.session_id, service.kind, self.client)

    @property
    def service_kind(self) -> str:
        return self.service.kind

    @property
    def timeout(self) -> float:
        # RFC 1939 3, the autologout timer, kept as a deadline: each command line is due
        # within pop3_timeout of the server's last response.
        return self.service.limits.pop3_timeout

    @property
    def in_transaction(self) -> bool:
        # A POP3 session can always be cut: without QUIT nothing is deleted (RFC 1939 6).
        return False

    def finished(self, reason: str) -> None:
        self.service.tracker.unregister(self)
        self.session.abort()
        maillog.disconnect(self.session_id, self.client, reason)

    def converse(self) -> str:
        """The command loop (re-entered after parking); returns why the conversation ended."""
        session, tracker = self.session, self.service.tracker
        if not self._greeted:
            if self.service.kind == "pop3s":
                self._start_tls()
            self.send(session.greeting())
            self._greeted = True
            self.restart_deadline()
        while True:
            try:
                data = self.receive(RECV_SIZE)
            except TimeoutError:
                lifetime = self.lifetime_over
                self.send_quietly(self.timeout_goodbye())
                return "lifetime" if lifetime else "timeout"
            try:
                outputs = self._advance(session.feed, data)
                responded = bool(outputs)  # a new command is due once the responses are out
                while outputs:
                    for output in outputs:
                        if isinstance(output, Send):
                            self._queue(output.data)
                        elif isinstance(output, SendMessage):
                            self._stream(output)
                        elif isinstance(output, StartTLS):
                            self._flush()
                            self._start_tls()
                            session.tls_started()
                            self.restart_deadline()
                        elif isinstance(output, Close):
                            self._flush()
                            if session.commit_error is not None:
                                event(log, logging.ERROR, "pop3-commit-failed",
                                      user=session.user, error=str(session.commit_error))
                            return "quit" if data else "eof"
                    outputs = self._advance(session.resume)  # commands pipelined after a RETR
            except StoreError as exc:  # in the middle of a message: the client sees no "."
                event(log, logging.ERROR, "pop3-read-failed", user=session.user,
                      error=str(exc))
                return "store-error"
            if outputs is None:
                return "internal-error"
            self._flush()
            if responded:
                self.restart_deadline()
            if tracker.draining and session.state is not State.CLOSED:
                self.send_quietly(BYE_SHUTDOWN)
                return "shutdown"

    def _advance(self, step: Callable[..., list[Output]], *args: bytes) -> list[Output] | None:
        """``session.feed`` or ``session.resume``; None (after telling the client) on a bug."""
        try:
            return step(*args)
        except Exception:  # a bug: never a traceback to the client
            event(log, logging.ERROR, "internal-error", exc_info=True, where="pop3-session",
                  client=self.client)
            self.send_quietly(b"-ERR [SYS/TEMP] Internal error\r\n")
            return None

    def _stream(self, output: SendMessage) -> None:
        """RETR/TOP: the +OK line, then the message dot-stuffed with CRLF, then ``.``.

        A message that cannot be read at all (removed by another program) gets -ERR; a fault
        after the +OK line went out raises StoreError, which ends the connection.
        """
        maildrop = self.session.maildrop
        assert maildrop is not None
        chunks = iter(maildrop.read(output.index))  # type: ignore[attr-defined]
        if output.body_lines is not None:
            chunks = top_of_message(chunks, output.body_lines)
        try:
            first = next(chunks, b"")
        except StoreError as exc:
            event(log, logging.WARNING, "pop3-read-failed", user=self.session.user,
                  message=output.index + 1, error=str(exc))
            self._queue(ERR_UNREADABLE)
            return
        self._queue(output.header)
        writer = DotWriter()
        self._queue(writer.feed(first))
        for chunk in chunks:
            self._queue(writer.feed(chunk))
        self._queue(writer.finish())

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            self.send(data)

    def _start_tls(self) -> None:
        holder = self.service.tls
        if holder is None:
            raise TLSHandshakeError("no certificate configured")
        limits = self.service.limits
        self.sock = wrap_server(self.sock, holder.context, limits.tls_handshake_timeout)
        maillog.tls_ok(self.service.kind)

    def send_quietly(self, data: bytes) -> None:
        """Send what is queued, then ``data``; ignore a client that is already gone."""
        try:
            self._flush()
        except OSError:
            return
        super().send_quietly(data)
