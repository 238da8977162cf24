"""Listening sockets: a gevent StreamServer per address, connection limits, and graceful drain."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

import gevent
from gevent.baseserver import BaseServer
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from geomail.clientnet import client_network
from geomail.config import ListenerConfig
from geomail.log import event
from geomail.maillog import MailLog

log = logging.getLogger(__name__)


class ShuttingDown(Exception):
    """Raised into idle connections when the server stops."""


class Drainable(Protocol):
    """What the tracker needs of a live connection."""

    @property
    def idle(self) -> bool:
        """Waiting for a command with no transaction in progress: safe to interrupt."""

    def interrupt(self) -> None:
        """Make the connection say goodbye (421 / -ERR) and close, from another greenlet."""


class Refusal(NamedTuple):
    """Why a connection is turned away: the reason, and the config key whose limit it hit."""

    reason: str  # too-many-connections, too-many-from-ip, shutting-down
    limit: str | None = None  # e.g. "limits.max_connections_per_ip"


class ConnectionBudget:
    """One class of service's share of connections: at most ``max_total`` open, and at most
    ``max_per_client`` from one client network (``network`` maps an address to its key, e.g. an
    IPv6 /64). ``keys`` names the two config keys, for the refusal log line."""

    def __init__(self, max_total: int, max_per_client: int,
                 network: Callable[[str], str] = client_network,
                 keys: tuple[str, str] = ("max_connections", "max_connections_per_ip")) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.network = network
        self._full = Refusal("too-many-connections", f"limits.{keys[0]}")
        self._client_full = Refusal("too-many-from-ip", f"limits.{keys[1]}")
        self.total = 0
        self.accepted = 0  # since start, for metrics
        self._per_client: dict[str, int] = {}

    def admit(self, key: str) -> Refusal | None:
        """Count a new connection from the client network ``key``, or say why it must be
        refused."""
        if self.total >= self.max_total:
            return self._full
        count = self._per_client.get(key, 0)
        if count >= self.max_per_client:
            return self._client_full
        self._per_client[key] = count + 1
        self.total += 1
        self.accepted += 1
        return None

    def release(self, key: str) -> None:
        """A connection admitted under ``key`` has ended."""
        self.total -= 1
        count = self._per_client.get(key, 1) - 1
        if count:
            self._per_client[key] = count
        else:
            self._per_client.pop(key, None)


class ConnectionTracker:
    """Knows every live connection (to drain them) and the budgets listeners admit against."""

    def __init__(self, budgets: Iterable[ConnectionBudget]) -> None:
        self.budgets = tuple(budgets)
        self._live: set[Drainable] = set()
        self._none_live = Event()  # set while no connection is registered
        self._none_live.set()
        self.draining = False

    @property
    def total(self) -> int:
        """Connections open now, in every budget."""
        return sum(budget.total for budget in self.budgets)

    @property
    def accepted(self) -> int:
        return sum(budget.accepted for budget in self.budgets)

    def register(self, conn: Drainable) -> None:
        self._live.add(conn)
        self._none_live.clear()

    def unregister(self, conn: Drainable) -> None:
        self._live.discard(conn)
        if not self._live:
            self._none_live.set()

    def wait_all_ended(self, timeout: float) -> bool:
        """Wait until every registered connection has ended, whatever greenlet serves it (a
        parked connection is woken in a fresh one, outside the listeners' pool); False if some
        are still open after ``timeout`` seconds."""
        return bool(self._none_live.wait(max(timeout, 0.0)))

    def interrupt_idle(self) -> int:
        """Start draining: interrupt every idle connection; busy ones finish their transaction
        and then see ``draining``. Returns how many were interrupted."""
        self.draining = True
        idle = [conn for conn in self._live if conn.idle]
        for conn in idle:
            conn.interrupt()
        return len(idle)

    def interrupt_all(self) -> None:
        for conn in list(self._live):
            conn.interrupt()


Handler = Callable[[socket.socket, tuple[str, int], Callable[[object], None]], None]


class BoundServer:
    """A gevent server on one configured address: bound early (as root, before privileges are
    dropped), started later. IPv6 sockets are IPv6-only, so ``0.0.0.0:25`` and ``[::]:25``
    can both be listed."""

    def __init__(self, config: ListenerConfig, maillog: MailLog | None = None) -> None:
        self.config = config
        self.maillog = maillog or MailLog()  # the App's
        self._server: BaseServer | None = None

    def _make_server(self, sock: socket.socket) -> BaseServer:
        raise NotImplementedError

    def bind(self) -> None:
        """Open the listening socket."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.create_server((self.config.host, self.config.port), family=family,
                                    backlog=1024)
        self._server = self._make_server(sock)

    def start(self) -> None:
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._server.start()
        self.maillog.listening(self.config.kind, self.address)

    @property
    def port(self) -> int:
        return int(self._server.server_port) if self._server else self.config.port

    @property
    def address(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._server is not None and bool(self._server.started)

    def stop(self) -> None:
        """Stop accepting; connections already open are left to the tracker's drain."""
        if self._server is not None:
            self._server.close()


class Listener(BoundServer):
    """One mail listening address: accepts, admits against its budget, spawns ``serve``.

    ``refusals`` maps a refusal reason to the bytes sent before closing; an implicit-TLS
    listener gets none, so an over-limit client there is closed without a plaintext byte."""

    def __init__(self, config: ListenerConfig, serve: Handler, tracker: ConnectionTracker,
                 budget: ConnectionBudget, refusals: dict[str, bytes], pool: Pool,
                 maillog: MailLog | None = None) -> None:
        super().__init__(config, maillog)
        self._serve = serve
        self._tracker = tracker
        self._budget = budget
        self._refusals = refusals
        self._pool = pool
        self.open = 0  # connections open on this listener now (metrics)

    def _make_server(self, sock: socket.socket) -> BaseServer:
        return _OwnSocketServer(sock, self._handle, spawn=self._pool)

    def _handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        ip = _plain_ip(address[0])
        budget = self._budget
        key = budget.network(ip)
        refusal = Refusal("shutting-down") if self._tracker.draining else budget.admit(key)
        if refusal is not None:
            self.maillog.refused(self.config.kind, ip, refusal.reason, limit=refusal.limit,
                            network=key if key != ip else None)
            text = self._refusals.get(refusal.reason)
            if text:
                with contextlib.suppress(OSError):
                    sock.sendall(text)
            sock.close()
            return
        self.open += 1
        released = False

        def ended(_connection: object) -> None:
            nonlocal released
            if not released:
                released = True
                self.open -= 1
                budget.release(key)

        try:
            self._serve(sock, (ip, address[1]), ended)
        except gevent.GreenletExit:
            sock.close()
            ended(None)
        except Exception:
            event(log, logging.ERROR, "internal-error", exc_info=True, where="listener",
                  service=self.config.kind, client=ip)
            sock.close()
            ended(None)


class _OwnSocketServer(StreamServer):  # type: ignore[misc]  # gevent ships no stubs
    """A StreamServer that leaves closing to the connection: a connection owns its socket and
    may outlive the greenlet that started it (parked while idle, see server/connection.py)."""

    def do_close(self, sock: socket.socket, *args: object) -> None:
        pass


def _plain_ip(host: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4`` (IPv4 clients of a dual-stack socket)."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host
