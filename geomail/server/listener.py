"""Listening sockets: a gevent StreamServer per address, connection limits, and graceful drain."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Protocol

import gevent
from gevent.baseserver import BaseServer
from gevent.pool import Pool
from gevent.server import StreamServer

from geomail import maillog
from geomail.config import ListenerConfig

log = logging.getLogger(__name__)


class ShuttingDown(Exception):
    """Raised into idle connections when the server stops."""


class Connection(Protocol):
    """What the tracker needs of a live connection."""

    @property
    def idle(self) -> bool:
        """Waiting for a command with no transaction in progress: safe to interrupt."""

    def interrupt(self) -> None:
        """Make the connection say goodbye (421 / -ERR) and close, from another greenlet."""


class ConnectionTracker:
    """Counts open connections in total and per client IP, and finds them again to drain."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.accepted = 0  # since start, for metrics
        self._per_ip: dict[str, int] = {}
        self._live: set[Connection] = set()
        self.draining = False

    def admit(self, ip: str) -> str | None:
        """Count a new connection, or say why it must be refused."""
        if self.draining:
            return "shutting-down"
        if self.total >= self.max_total:
            return "too-many-connections"
        count = self._per_ip.get(ip, 0)
        if count >= self.max_per_ip:
            return "too-many-from-ip"
        self._per_ip[ip] = count + 1
        self.total += 1
        self.accepted += 1
        return None

    def release(self, ip: str) -> None:
        """A connection admitted from ``ip`` has ended."""
        self.total -= 1
        count = self._per_ip.get(ip, 1) - 1
        if count:
            self._per_ip[ip] = count
        else:
            self._per_ip.pop(ip, None)

    def register(self, conn: Connection) -> None:
        self._live.add(conn)

    def unregister(self, conn: Connection) -> None:
        self._live.discard(conn)

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

    def __init__(self, config: ListenerConfig) -> None:
        self.config = config
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
        maillog.listening(self.config.kind, self.address)

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
    """One mail listening address: accepts, applies the connection limits, spawns ``serve``."""

    def __init__(self, config: ListenerConfig, serve: Handler, tracker: ConnectionTracker,
                 refusals: dict[str, bytes], pool: Pool) -> None:
        super().__init__(config)
        self._serve = serve
        self._tracker = tracker
        self._refusals = refusals
        self._pool = pool
        self.open = 0  # connections open on this listener now (metrics)

    def _make_server(self, sock: socket.socket) -> BaseServer:
        return _OwnSocketServer(sock, self._handle, spawn=self._pool)

    def _handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        ip = _plain_ip(address[0])
        reason = self._tracker.admit(ip)
        if reason is not None:
            maillog.refused(self.config.kind, ip, reason)
            with contextlib.suppress(OSError):
                sock.sendall(self._refusals.get(reason, b""))
            sock.close()
            return
        self.open += 1
        released = False

        def ended(_connection: object) -> None:
            nonlocal released
            if not released:
                released = True
                self.open -= 1
                self._tracker.release(ip)

        try:
            self._serve(sock, (ip, address[1]), ended)
        except gevent.GreenletExit:
            sock.close()
            ended(None)
        except Exception:
            log.exception("bug in connection service=%s client=%s", self.config.kind, ip)
            sock.close()
            ended(None)


class _OwnSocketServer(StreamServer):
    """A StreamServer that leaves closing to the connection: a connection owns its socket and
    may outlive the greenlet that started it (parked while idle, see server/connection.py)."""

    def do_close(self, sock: socket.socket, *args: object) -> None:
        pass


def _plain_ip(host: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4`` (IPv4 clients of a dual-stack socket)."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host
