"""What the SMTP and POP3 connection shells share: what a listener's connections share
(``Service``), owning the socket, deadlines, graceful drain, parking idle connections, and
starting TLS.

Time limits are deadlines, not idle timers (RFC 5321 4.5.3.2; Postfix's
``smtpd_per_record_deadline``): each record the client owes (a command line, a DATA body, a BDAT
chunk, a POP3 command) must arrive whole by an absolute time set when the server started waiting
for it, so a client trickling one byte at a time gains nothing. Message data earns a little
extra time per octet received (``limits.min_data_rate``, as Postfix's ``smtpd_min_data_rate``),
so a large message sent at a normal pace is never cut. Every connection also has a total
lifetime (``limits.max_connection_time``).

A connection runs in a greenlet while it has something to do. When its client has been silent
for ``PARK_AFTER`` seconds, it parks: the greenlet ends and an I/O watcher plus a timer wait
for the next byte or the timeout instead. A sleeping greenlet keeps its saved C stack and
Python frames; a watcher is far smaller, so thousands of idle clients cost little (figures:
bench/README.md). The first byte spawns a fresh greenlet that carries on where the last
one stopped: all conversation state lives in the connection object, not on the stack.
``nudge`` wakes a waiting or parked connection for a reason of the server's (IMAP IDLE: the
folder changed), so an idling client costs no more than any other silent one.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import gevent

from geomail.config import Limits
from geomail.ids import new_id
from geomail.log import event
from geomail.maillog import MailLog
from geomail.server.listener import ConnectionTracker, ShuttingDown
from geomail.server.tls import (
    TLSContextHolder,
    TLSHandshakeError,
    tls_description,
    wrap_server,
)

log = logging.getLogger(__name__)

PARK_AFTER = 1.0  # seconds of silence before an idle connection gives its greenlet back


Handler = TypeVar("Handler")
Settings = TypeVar("Settings")


@dataclass(frozen=True, slots=True)
class Service(Generic[Handler, Settings]):
    """What every connection of one listener shares; subclasses add ``serve``, the listener's
    entry point (one call per accepted connection, in its own greenlet)."""

    kind: str  # the listener's config kind: logs and metrics only
    handler: Handler  # the policy the shell asks
    settings: Settings  # the session's knobs
    limits: Limits
    tracker: ConnectionTracker
    tls: TLSContextHolder | None = None
    maillog: MailLog = field(default_factory=MailLog)  # the App's


class Parked(Exception):
    """Raised by ``receive``: the conversation now waits on a watcher; the greenlet may end."""


class Nudged(Exception):
    """Raised by ``receive``: ``nudge`` was called while (or before) it waited."""


class Connection:
    """Base of the protocol shells. Subclasses implement ``converse`` (the read loop, calling
    ``receive`` and ``restart_deadline``), ``timeout`` (the time the client has for what it
    owes now), ``idle`` (no transaction in progress) and the goodbye lines; ``serve`` runs the
    first greenlet."""

    __slots__ = ("_deadline", "_end_of_life", "_greenlet", "_nudged", "_on_end", "_parked",
                 "_readable", "_short_timeout", "_waiting", "_watchers", "client", "service",
                 "session_id", "sock")

    goodbye_shutdown = b""
    goodbye_timeout = b""
    goodbye_lifetime = b""

    service: Service[Any, Any]

    def __init__(self, service: Service[Any, Any], sock: socket.socket,
                 address: tuple[str, int], on_end: Callable[[Connection], None]) -> None:
        self.service = service
        self.sock = sock
        self.client = address[0]
        self.session_id = new_id()
        self._on_end = on_end
        self._greenlet: gevent.Greenlet | None = None
        self._waiting = False
        self._parked = False
        self._nudged = False
        self._readable = False  # the last park ended because the client sent something
        self._short_timeout = False  # the socket timeout is receive's, not the send limit
        self._watchers: tuple[Any, Any] | None = None
        now = time.monotonic()
        self._end_of_life = now + service.limits.max_connection_time
        self._deadline = self._end_of_life  # set by restart_deadline once the greeting is out
        service.tracker.register(self)
        service.maillog.connect(self.session_id, service.kind, self.client)

    # ---- for subclasses ---------------------------------------------------------------------

    def converse(self) -> str:
        """Serve until the conversation ends; return why. May raise Parked (from receive)."""
        raise NotImplementedError

    @property
    def timeout(self) -> float:
        """How long the client has, from now, for the record it owes next."""
        raise NotImplementedError

    @property
    def in_transaction(self) -> bool:
        """True while the client is in the middle of something a drain should let finish."""
        raise NotImplementedError

    def finished(self, reason: str) -> None:
        """The conversation ended (the socket is still open): release state, log."""

    # ---- life cycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Converse in the current greenlet until the end or until parked."""
        self._greenlet = gevent.getcurrent()
        try:
            reason = self.converse()
        except Parked:
            return
        except ShuttingDown:
            reason = "shutdown"
            self.send_quietly(self.goodbye_shutdown)
        except TLSHandshakeError as exc:
            reason = f"tls-failed ({exc.reason})"
            self.maillog.tls_failed(self.service_kind, self.client, exc.reason)
        except OSError as exc:
            reason = f"error ({exc.strerror or type(exc).__name__})"
        except Exception:
            event(log, logging.ERROR, "internal-error", exc_info=True, where="connection",
                  session=self.session_id, client=self.client)
            reason = "internal-error"
        self.end(reason)

    @property
    def service_kind(self) -> str:
        return self.service.kind

    @property
    def maillog(self) -> MailLog:
        return self.service.maillog

    def end(self, reason: str) -> None:
        """Close for good (once)."""
        if self._on_end is None:
            return
        self._unpark()
        try:
            self.finished(reason)
        finally:
            self.sock.close()
            on_end, self._on_end = self._on_end, None  # type: ignore[assignment]
            on_end(self)

    # ---- deadlines -------------------------------------------------------------------------

    def restart_deadline(self) -> None:
        """The server has answered: the client owes a new record, due ``timeout`` from now."""
        self._deadline = min(time.monotonic() + self.timeout, self._end_of_life)

    def extend_deadline(self, seconds: float) -> None:
        """Credit for message data received: later by ``seconds``, but never more than
        ``timeout`` from now (a burst does not buy a long silence afterwards)."""
        now = time.monotonic()
        self._deadline = min(self._deadline + seconds, now + self.timeout, self._end_of_life)

    @property
    def lifetime_over(self) -> bool:
        return time.monotonic() >= self._end_of_life

    def timeout_goodbye(self) -> bytes:
        """What to say when a deadline passed: the lifetime limit or the record's."""
        return self.goodbye_lifetime if self.lifetime_over else self.goodbye_timeout

    def receive(self, size: int, park_now: bool = False, poll: float | None = None) -> bytes:
        """The next bytes from the client (b"" at end of stream). Raises TimeoutError when the
        deadline passes first, Parked when the wait moves to a watcher (after ``PARK_AFTER``
        seconds, or at once with ``park_now``), Nudged when ``nudge`` was called (or a parked
        wait lasted ``poll`` seconds). The deadline is not moved by what arrives: only
        ``restart_deadline`` and ``extend_deadline`` move it."""
        if self._nudged:
            self._nudged = False
            raise Nudged
        deadline = self._deadline
        limit = deadline - time.monotonic()
        if limit <= 0:
            raise TimeoutError("deadline passed")
        parkable = limit > PARK_AFTER and not _tls_pending(self.sock)
        readable, self._readable = self._readable, False
        if parkable and park_now and not readable:
            self._park(limit, poll)
            raise Parked
        self.sock.settimeout(PARK_AFTER if parkable else limit)
        self._short_timeout = True
        self._waiting = True
        try:
            return self.sock.recv(size)
        except TimeoutError:
            if not parkable:
                raise
            self._park(max(deadline - time.monotonic(), 0.0), poll)
            raise Parked from None
        finally:
            self._waiting = False

    def nudge(self) -> None:
        """Wake the conversation for a reason of the server's: ``receive`` raises Nudged in
        a fresh greenlet if parked, else at its next call (a greenlet waiting in ``receive``
        is not interrupted: callers that expect nudges park at once). On the hub."""
        self._nudged = True
        if self._parked:
            self._unpark()
            gevent.spawn(self.run)

    # ---- parking ----------------------------------------------------------------------------

    def _park(self, remaining: float, poll: float | None = None) -> None:
        loop = gevent.get_hub().loop
        readable = loop.io(self.sock.fileno(), 1)
        polling = poll is not None and poll < remaining
        timer = loop.timer(poll if polling else remaining)
        self._watchers = (readable, timer)
        self._parked = True
        self._greenlet = None
        readable.start(self._wake, False)
        if polling:
            timer.start(self.nudge)
        else:
            timer.start(self._wake, True)

    def _unpark(self) -> None:
        if self._watchers is not None:
            for watcher in self._watchers:
                watcher.stop()
                watcher.close()
            self._watchers = None
        self._parked = False

    def _wake(self, timed_out: bool) -> None:
        # Runs in the hub: hand the work to a fresh greenlet at once.
        self._unpark()
        self._readable = not timed_out
        gevent.spawn(self._expire if timed_out else self.run)

    def _expire(self) -> None:
        self.end(self.say_timeout())

    def say_timeout(self) -> str:
        """A deadline passed: say goodbye (the lifetime's or the record's); return the reason."""
        lifetime = self.lifetime_over
        self.send_quietly(self.timeout_goodbye())
        return "lifetime" if lifetime else "timeout"

    # ---- drain ------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Waiting for the client with nothing in progress: safe to interrupt at a drain."""
        return (self._parked or self._waiting) and not self.in_transaction

    def interrupt(self) -> None:
        """Say goodbye (421 / -ERR) and close, from another greenlet."""
        if self._parked:
            self._unpark()
            gevent.spawn(self._drained)
        elif self._greenlet is not None:
            gevent.kill(self._greenlet, ShuttingDown)

    def _drained(self) -> None:
        self.send_quietly(self.goodbye_shutdown)
        self.end("shutdown")

    def send(self, data: bytes) -> None:
        """Send all of ``data`` within the current limit. One send(2) does for a short reply
        (gevent's sendall also asks the kernel for its buffer size on every call)."""
        if self._short_timeout:  # a client slow to read gets the whole limit, not what is
            # left of the receive deadline (nor PARK_AFTER)
            remaining = self._end_of_life - time.monotonic()
            self.sock.settimeout(max(min(self.timeout, remaining), 0.001))
            self._short_timeout = False
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])

    def send_quietly(self, data: bytes) -> None:
        """Send, ignoring a client that is already gone."""
        if data:
            with contextlib.suppress(OSError):
                self.send(data)

    def start_tls(self, holder: TLSContextHolder | None, limits: Limits) -> str:
        """Server side of a TLS handshake (STARTTLS, or implicit TLS before the greeting)
        within ``limits.tls_handshake_timeout``; returns the description for Received."""
        if holder is None:  # config validation prevents this
            raise TLSHandshakeError("no certificate configured")
        self.sock = sock = wrap_server(self.sock, holder.context, limits.tls_handshake_timeout)
        self.maillog.tls_ok(self.service_kind)
        return tls_description(sock)


class BufferedConnection(Connection):
    """A shell that gathers its responses and sends them in large writes (pipelined POP3
    RETRs, big IMAP FETCH responses): ``queue`` them, ``flush`` before waiting for input."""

    __slots__ = ("_out", "_out_size")

    flush_at = 256 * 1024  # send once this much output is buffered

    def __init__(self, service: Service[Any, Any], sock: socket.socket,
                 address: tuple[str, int], on_end: Callable[[Connection], None]) -> None:
        super().__init__(service, sock, address, on_end)
        self._out: list[bytes] = []
        self._out_size = 0

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= self.flush_at:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            self.send(data)

    def send_quietly(self, data: bytes) -> None:
        """Send what is queued, then ``data``; ignore a client that is already gone."""
        try:
            self._flush()
        except OSError:
            return
        super().send_quietly(data)


def _tls_pending(sock: socket.socket) -> bool:
    """Decrypted bytes already inside the TLS layer: the socket will not poll readable."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
