"""The gevent I/O shell around one POP3Session: reads, buffered writes, message streaming, TLS."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Protocol

from geomail.errors import StoreError
from geomail.log import event
from geomail.proto.dotwriter import DotWriter
from geomail.proto.pop3 import POP3Session, top_of_message
from geomail.proto.pop3_types import (
    Answer,
    Authenticate,
    CloseMaildrop,
    Commit,
    Committed,
    Listing,
    LoginRefused,
    MailboxInUse,
    OpenMaildrop,
    Output,
    POP3Settings,
    Request,
    Send,
    SendMessage,
    State,
    Unavailable,
)
from geomail.proto.reply import Close, StartTLS
from geomail.proto.sasl import Credentials
from geomail.server.connection import BufferedConnection, Connection, Service
from geomail.server.policy_call import call_policy
from geomail.store.base import Maildrop

log = logging.getLogger(__name__)

RECV_SIZE = 16384
BYE_SHUTDOWN = b"-ERR [SYS/TEMP] Server shutting down\r\n"
BYE_TIMEOUT = b"-ERR Autologout; idle for too long\r\n"
BYE_LIFETIME = b"-ERR Autologout; connection time limit reached\r\n"
ERR_UNREADABLE = b"-ERR [SYS/TEMP] Message cannot be read now\r\n"


class POP3Handler(Protocol):
    """What the shell asks the POP3 policy (``policy.pop3.POP3Policy``); cooperative calls."""

    def authenticate(self, client_ip: str, credentials: Credentials) -> str | LoginRefused:
        """The canonical user, or why not."""

    def open_maildrop(self, user: str) -> Maildrop | MailboxInUse | Unavailable:
        """The user's mailbox, locked and listed, or why not."""


class POP3Service(Service[POP3Handler, POP3Settings]):
    """What every connection of one POP3 listener shares."""

    __slots__ = ()

    def serve(self, sock: socket.socket, address: tuple[str, int],
              on_end: Callable[[Connection], None]) -> None:
        """Listener entry point: one call per accepted connection, in its own greenlet."""
        POP3Connection(self, sock, address, on_end).run()


class POP3Connection(BufferedConnection):
    """One client connection: feeds the session and carries out its outputs."""

    __slots__ = ("_greeted", "_maildrop", "session")

    service: POP3Service

    goodbye_shutdown = BYE_SHUTDOWN
    goodbye_timeout = BYE_TIMEOUT
    goodbye_lifetime = BYE_LIFETIME

    def __init__(self, service: POP3Service, sock: socket.socket, address: tuple[str, int],
                 on_end: Callable[[Connection], None]) -> None:
        super().__init__(service, sock, address, on_end)
        self.session = POP3Session(service.settings, tls_active=service.kind == "pop3s")
        self._maildrop: Maildrop | None = None  # opened for the session, owned here
        self._greeted = False

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
        self._close_maildrop()
        self.maillog.disconnect(self.session_id, self.client, reason)

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
                return self.say_timeout()
            try:
                outputs = self._advance(session.feed, data)
                responded = bool(outputs)  # a new command is due once the responses are out
                while outputs:
                    request: Request | None = None
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
                        elif isinstance(output, CloseMaildrop):
                            self._close_maildrop()
                        elif isinstance(output, Close):
                            self._flush()
                            return "quit" if data else "eof"
                        else:  # a request, always the last output of its batch
                            request = output
                    if request is not None:
                        outputs = self._advance(self._answer, request)
                    else:  # commands pipelined after a RETR
                        outputs = self._advance(session.resume)
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

    def _advance(self, step: Callable[..., list[Output]], *args: object) -> list[Output] | None:
        """``session.feed``, ``session.resume`` or ``self._answer``; None (after telling the
        client) on a bug."""
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
        maildrop = self._maildrop
        assert maildrop is not None  # SendMessage only comes in TRANSACTION
        chunks = iter(maildrop.read(output.index))
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

    # ---- requests -----------------------------------------------------------------------

    def _answer(self, request: Request) -> list[Output]:
        """Carry out a session's request within ``limits.policy_timeout`` (``call_policy``: a
        late or failed call is logged as slow-policy and answered ``Unavailable``, so the client
        gets -ERR [SYS/TEMP], RFC 3206 4); feed the answer back."""
        late: Answer = Unavailable("no answer in time")
        handler, session_id = self.service.handler, self.session_id
        limit = self.service.limits.policy_timeout
        result: Answer
        if isinstance(request, Authenticate):
            result = call_policy("authenticate", session_id, limit, late,
                                 handler.authenticate, self.client, request.credentials)
        elif isinstance(request, OpenMaildrop):
            no_maildrop: Maildrop | MailboxInUse | Unavailable = Unavailable("no answer in time")
            opened = call_policy("open-maildrop", session_id, limit, no_maildrop,
                                 handler.open_maildrop, request.user)
            if isinstance(opened, MailboxInUse | Unavailable):
                result = opened
            else:
                self._maildrop = opened
                result = Listing(opened.messages)
        else:
            # Detached: deletions and their fsync are not cut off at the deadline, and the
            # lock is released only once they are done (Commit ends the maildrop).
            maildrop, self._maildrop = self._maildrop, None
            assert maildrop is not None  # Commit only comes in TRANSACTION
            result = call_policy("commit", session_id, limit, late,
                                 self._commit, maildrop, request, detach=True)
        return self.session.answer(result)

    def _commit(self, maildrop: Maildrop, request: Commit) -> Answer:
        """UPDATE (RFC 1939 6), then release the lock."""
        try:
            maildrop.commit(set(request.deleted), set(request.retrieved))
        except StoreError as exc:  # the client only learns that some were not removed
            event(log, logging.ERROR, "pop3-commit-failed", user=self.session.user,
                  error=str(exc))
            return Unavailable(str(exc))
        finally:
            maildrop.close()
        return Committed()

    def _close_maildrop(self) -> None:
        if self._maildrop is not None:
            maildrop, self._maildrop = self._maildrop, None
            maildrop.close()

    def _start_tls(self) -> None:
        self.start_tls(self.service.tls, self.service.limits)

