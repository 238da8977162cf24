"""The gevent I/O shell around one IMAPSession: reads, buffered writes, store requests off the
hub, STARTTLS, IDLE (RFC 9051 6.3.13), deadlines.

IDLE parks at once (no greenlet while the client idles: thousands of phones cost little) and
is woken by the client's bytes, its deadline, or a ``nudge`` from the folder's subscription
(``policy/folder_notify``); without a subscription it looks every ``POLL_INTERVAL`` seconds.

Deadlines: before login each command is due within ``limits.pop3_timeout`` (RFC 9051 5.4 lets
the server log out an unauthenticated client sooner); logged in, and while idling, within
``limits.imap_idle_timeout`` (at least 30 minutes, RFC 9051 5.4). Changes reported during IDLE
do not move the deadline: only what the client sends does. ``limits.max_connection_time``
bounds the whole connection, IDLE included (clients reconnect).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Protocol

from geomail.log import event
from geomail.proto.imap import (
    Authenticate,
    IdleStart,
    IdleStop,
    IMAPSession,
    IMAPSettings,
    LoginRefused,
    Output,
    Request,
    Send,
    State,
    Unavailable,
)
from geomail.proto.imap_mailbox import (
    FetchMessage,
    ListFolders,
    StoreRequest,
    StoreResult,
    ViewFolder,
)
from geomail.proto.reply import Close, StartTLS
from geomail.proto.sasl import Credentials
from geomail.server.connection import BufferedConnection, Connection, Nudged, Service
from geomail.server.policy_call import call_policy
from geomail.store.imap_maildir import MaildirMailStore

log = logging.getLogger(__name__)

RECV_SIZE = 16384
POLL_INTERVAL = 2.0  # IDLE without a folder subscription: look this often
BYE_SHUTDOWN = b"* BYE [UNAVAILABLE] Server shutting down\r\n"
BYE_TIMEOUT = b"* BYE Autologout; idle for too long\r\n"
BYE_LIFETIME = b"* BYE Autologout; connection time limit reached\r\n"
BYE_BUG = b"* BYE [SERVERBUG] Internal error\r\n"
READS = (ListFolders, ViewFolder, FetchMessage)


class IMAPHandler(Protocol):
    """What the shell asks the IMAP policy (``policy.imap.IMAPPolicy``); cooperative calls."""

    def authenticate(self, client_ip: str, credentials: Credentials) -> str | LoginRefused:
        """The canonical user, or why not."""

    def open_store(self, user: str) -> MaildirMailStore:
        """The user's folders."""

    def perform(self, store: MaildirMailStore, request: StoreRequest) -> StoreResult:
        """One request of the session, carried out in a thread."""

    def watch(self, store: MaildirMailStore, name: str,
              wake: Callable[[], None]) -> Closable | None:
        """Call ``wake`` (on the hub) when folder ``name`` changes, until the result is
        closed; None: poll instead."""


class Closable(Protocol):
    def close(self) -> None: ...


class IMAPService(Service[IMAPHandler, IMAPSettings]):
    """What every connection of one IMAP listener shares."""

    __slots__ = ()

    def serve(self, sock: socket.socket, address: tuple[str, int],
              on_end: Callable[[Connection], None]) -> None:
        """Listener entry point: one call per accepted connection, in its own greenlet."""
        IMAPConnection(self, sock, address, on_end).run()


class IMAPConnection(BufferedConnection):
    """One client connection: feeds the session and carries out its outputs."""

    __slots__ = ("_greeted", "_idling", "_look", "_store", "_watch", "session")

    service: IMAPService

    goodbye_shutdown = BYE_SHUTDOWN
    goodbye_timeout = BYE_TIMEOUT
    goodbye_lifetime = BYE_LIFETIME

    def __init__(self, service: IMAPService, sock: socket.socket, address: tuple[str, int],
                 on_end: Callable[[Connection], None]) -> None:
        super().__init__(service, sock, address, on_end)
        self.session = IMAPSession(service.settings, tls_active=service.kind == "imaps")
        self._store: MaildirMailStore | None = None
        self._watch: Closable | None = None
        self._idling = False
        self._look = False  # look for changes once the IDLE watch is set up
        self._greeted = False

    @property
    def timeout(self) -> float:
        limits = self.service.limits
        if self._idling or self.session.state in (State.AUTHENTICATED, State.SELECTED):
            return limits.imap_idle_timeout
        return limits.pop3_timeout

    @property
    def in_transaction(self) -> bool:
        # Waiting for the client, an IMAP session can always be cut: every change is durable
        # when its command completes.
        return False

    def finished(self, reason: str) -> None:
        self.service.tracker.unregister(self)
        self._stop_idle()
        self.maillog.disconnect(self.session_id, self.client, reason)

    def converse(self) -> str:
        """The command loop (re-entered after parking); returns why the conversation ended."""
        session, tracker = self.session, self.service.tracker
        if not self._greeted:
            if self.service.kind == "imaps":
                self._start_tls()
            self.send(session.greeting())
            self._greeted = True
            self.restart_deadline()
        while True:
            data: bytes | None
            try:
                if self._idling:
                    poll = POLL_INTERVAL if self._watch is None else None
                    data = self.receive(RECV_SIZE, park_now=True, poll=poll)
                else:
                    data = self.receive(RECV_SIZE)
            except TimeoutError:
                return self.say_timeout()
            except Nudged:
                data = None
            if data is None:  # IDLE: the folder may have changed
                outputs = self._advance(session.changed)
            else:
                outputs = self._advance(session.feed, data)
            if outputs is None:
                return "internal-error"
            ended = self._carry_out(outputs, data)
            if ended is not None:
                return ended
            if self._look and self._idling:  # a change between SELECT and IDLE
                self._look = False
                outputs = self._advance(session.changed)
                if outputs is None:
                    return "internal-error"
                ended = self._carry_out(outputs, None)
                if ended is not None:
                    return ended
            if tracker.draining and session.state is not State.LOGOUT:
                self.send_quietly(BYE_SHUTDOWN)
                return "shutdown"

    def _carry_out(self, outputs: list[Output], data: bytes | None) -> str | None:
        """Carry out a batch and the batches its requests' answers give; why it ended, if."""
        responded = bool(outputs) and bool(data)
        while outputs:
            request: Request | None = None
            for output in outputs:
                if isinstance(output, Send):
                    self._queue(output.data)
                elif isinstance(output, StartTLS):
                    self._flush()
                    self._start_tls()
                    self.restart_deadline()
                elif isinstance(output, IdleStart):
                    self._flush()
                    self._start_idle(output.mailbox)
                elif isinstance(output, IdleStop):
                    self._stop_idle()
                elif isinstance(output, Close):
                    self._flush()
                    return "logout" if data else "eof"
                else:  # a request, always the last output of its batch
                    request = output
            if request is None:
                break
            answered = self._advance(self._answer, request)
            if answered is None:
                return "internal-error"
            outputs = answered
        self._flush()
        if responded:
            self.restart_deadline()
        return None

    def _advance(self, step: Callable[..., list[Output]], *args: object) -> list[Output] | None:
        """A session step; None (after telling the client) on a bug."""
        try:
            return step(*args)
        except Exception:  # a bug: never a traceback to the client
            event(log, logging.ERROR, "internal-error", exc_info=True, where="imap-session",
                  client=self.client)
            self.send_quietly(BYE_BUG)
            return None

    # ---- requests -----------------------------------------------------------------------

    def _answer(self, request: Request) -> list[Output]:
        """Carry out a request within ``limits.policy_timeout`` (late or failed: logged as
        slow-policy and answered ``Unavailable``, so the client gets NO [UNAVAILABLE]).
        Changes (APPEND, STORE, COPY, EXPUNGE...) are detached: never cut in the middle."""
        handler, session_id = self.service.handler, self.session_id
        limit = self.service.limits.policy_timeout
        late = Unavailable("no answer in time")
        result: object
        if isinstance(request, Authenticate):
            refused: str | LoginRefused | Unavailable = late
            user = call_policy("authenticate", session_id, limit, refused,
                               handler.authenticate, self.client, request.credentials)
            result = user
            if isinstance(user, str):
                no_store: MaildirMailStore | None = None
                self._store = call_policy("imap-open", session_id, limit, no_store,
                                          handler.open_store, user)
                if self._store is None:  # a user name the store refuses: logged
                    result = late
        else:
            store = self._store
            assert store is not None  # store requests only come once logged in
            fallback: StoreResult | Unavailable = late
            result = call_policy("imap-store", session_id, limit, fallback, handler.perform,
                                 store, request, detach=not isinstance(request, READS))
        return self.session.answer(result)

    # ---- IDLE ---------------------------------------------------------------------------

    def _start_idle(self, mailbox: str) -> None:
        self._idling = True
        self._look = True
        self.restart_deadline()
        if mailbox and self._store is not None:
            fallback: Closable | None = None
            self._watch = call_policy("imap-watch", self.session_id,
                                      self.service.limits.policy_timeout, fallback,
                                      self.service.handler.watch, self._store, mailbox,
                                      self.nudge)

    def _stop_idle(self) -> None:
        self._idling = False
        self._look = False
        if self._watch is not None:
            watch, self._watch = self._watch, None
            watch.close()

    # ---- output -------------------------------------------------------------------------

    def _start_tls(self) -> None:
        self.start_tls(self.service.tls, self.service.limits)

