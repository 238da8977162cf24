"""Failed-login throttling per client network: after too many failures a client is refused
for a while, and no more parallel attempts are verified than could still succeed."""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gevent.event import Event

from geomail.clientnet import client_network
from geomail.config import Limits
from geomail.log import event

log = logging.getLogger("geomail.auth")  # the fail2ban filter and docs/logging.md name it

MAX_TRACKED_CLIENTS = 50_000  # clients tracked (bounded memory) before evicting the oldest
_PRUNE_EVERY = 1024  # sweep expired throttle entries after this many attempts


@dataclass(slots=True)
class ClientState:
    """Throttle state of one client (an IPv4 address or an IPv6 /64)."""

    failures: deque[float] = field(default_factory=deque)  # times of recent failures
    blocked_until: float = 0.0
    inflight: int = 0  # verifications running or waiting for a thread
    wakeup: Event | None = None  # set when an in-flight verification ends


class LoginThrottle:
    """The throttle table: clients by network key, bounded to ``max_tracked`` entries.
    Cooperative: call it from greenlets."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic, *,
                 max_tracked: int = MAX_TRACKED_CLIENTS) -> None:
        self._max_failures = limits.max_auth_failures
        self._block_time = limits.auth_block_time
        self.clock = clock
        self._max_tracked = max_tracked
        # Throttle per client network, the same key the connection limits count under.
        self.client_key = functools.partial(client_network, ipv4_prefix=limits.ipv4_prefix,
                                            ipv6_prefix=limits.ipv6_prefix)
        self._clients: OrderedDict[str, ClientState] = OrderedDict()
        self._attempts = 0

    @property
    def tracked_clients(self) -> int:
        """Entries in the throttle table (for metrics; at most ``max_tracked``)."""
        return len(self._clients)

    def is_blocked(self, client_ip: str) -> bool:
        """True while ``client_ip`` is refused for too many failed logins."""
        client = self._clients.get(self.client_key(client_ip))
        return client is not None and self._blocked(client, self.clock())

    def reserve(self, key: str) -> ClientState | None:
        """Count one more in-flight attempt, waiting while the attempts running could block the
        client anyway; None when it is blocked. So N parallel guesses get no more than
        ``max_auth_failures`` verified.
        """
        while True:
            client = self._touch(key)
            now = self.clock()
            if self._blocked(client, now):
                return None
            if self._recent_failures(client, now) + client.inflight < self._max_failures:
                client.inflight += 1
                return client
            if client.wakeup is None:
                client.wakeup = Event()
            client.wakeup.wait()

    @staticmethod
    def release(client: ClientState) -> None:
        """The in-flight attempt ``reserve`` counted is over; wake those waiting behind it."""
        client.inflight -= 1
        event, client.wakeup = client.wakeup, None
        if event is not None:
            event.set()

    def _blocked(self, client: ClientState, now: float) -> bool:
        if client.blocked_until and now >= client.blocked_until:
            client.blocked_until = 0.0
        return client.blocked_until > 0.0

    def _recent_failures(self, client: ClientState, now: float) -> int:
        # Failures older than the block time are forgotten.
        while client.failures and client.failures[0] <= now - self._block_time:
            client.failures.popleft()
        return len(client.failures)

    def record_success(self, client: ClientState) -> None:
        """A good login: the client's earlier failures no longer count."""
        client.failures.clear()

    def record_failure(self, client: ClientState, client_ip: str, now: float) -> None:
        """Count a failed login; block the client after ``max_auth_failures`` recent ones."""
        if self._blocked(client, now):
            return
        client.failures.append(now)
        if self._recent_failures(client, now) >= self._max_failures:
            client.blocked_until = now + self._block_time
            event(log, logging.WARNING, "auth-blocked", client=clip(client_ip, 64),
                  failures=len(client.failures), seconds=round(self._block_time))
            client.failures.clear()

    def _touch(self, key: str) -> ClientState:
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= self._max_tracked:
                self._evict()
            client = self._clients[key] = ClientState()
        else:
            self._clients.move_to_end(key)
        return client

    def maybe_prune(self, now: float) -> None:
        """Every ``_PRUNE_EVERY`` attempts, sweep out entries that no longer matter."""
        self._attempts += 1
        if self._attempts % _PRUNE_EVERY == 0:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget clients that are neither blocked, busy, nor have recent failures."""
        for key in [k for k, c in self._clients.items() if self._idle(c, now)]:
            del self._clients[key]

    def _idle(self, client: ClientState, now: float) -> bool:
        return (not client.inflight and not self._blocked(client, now)
                and not self._recent_failures(client, now))

    def _evict(self) -> None:
        """Make room for one more client: drop the least recently seen idle-or-not entry (O(1)
        amortised; a flood from more addresses than the table holds can end blocks early)."""
        for key, client in list(itertools.islice(self._clients.items(), 64)):
            if not client.inflight:
                del self._clients[key]
                return
        self._clients.popitem(last=False)


def clip(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters for the log (the log quotes and escapes it)."""
    return text[:limit] + ("..." if len(text) > limit else "")
