"""Outbound connection slots, bounded in total and per destination, with idle connections kept
for reuse by the next message to the same destination."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import gevent
from gevent.event import Event

from geomail.log import event

log = logging.getLogger(__name__)


class Closable(Protocol):
    """What the pool needs of a connection."""

    usable: bool

    def close(self, send_quit: bool = True) -> None: ...


class Lease:
    """The right to hold one connection to ``key``; ``conn`` is an idle one handed over (or
    None). Set ``conn`` to the connection to give back when done; an unusable one is closed."""

    __slots__ = ("conn", "key")

    def __init__(self, key: str, conn: Closable | None) -> None:
        self.key = key
        self.conn = conn


class ConnectionPool:
    """Slots for open connections: at most ``max_total`` overall and ``max_per_key`` per key
    (a destination domain, or the smarthost). A slot counts from the moment it is leased until
    its connection is closed, idle time included; when all slots are taken by idle connections
    of other keys, the oldest idle one is closed to make room. Cooperative (gevent)."""

    def __init__(self, max_total: int, max_per_key: int, idle_timeout: float = 5.0) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self.idle_timeout = idle_timeout
        self._open: dict[str, int] = {}  # key -> slots taken (busy or idle)
        self._total = 0
        self._idle: OrderedDict[int, tuple[str, Closable]] = OrderedDict()  # oldest first
        self._next_token = 0
        # Waiters per key, FIFO; keys in round-robin order for slots that any key may take.
        # Woken one at a time: thousands of queued messages must not all wake on each release.
        self._waiting: OrderedDict[str, deque[Event]] = OrderedDict()
        self._closed = False

    @property
    def total(self) -> int:
        """Slots taken now."""
        return self._total

    def open_for(self, key: str) -> int:
        """Slots ``key`` holds now."""
        return self._open.get(key, 0)

    @contextmanager
    def lease(self, key: str) -> Iterator[Lease]:
        """Wait for a slot for ``key``; give it back (keeping a usable connection idle) on exit."""
        lease = self._acquire(key)
        try:
            yield lease
        except BaseException:
            self._release(lease, keep=False)
            raise
        self._release(lease, keep=True)

    def _acquire(self, key: str) -> Lease:
        while True:
            conn = self._take_idle(key)
            if conn is not None:
                return Lease(key, conn)
            if self._open.get(key, 0) < self.max_per_key:
                if self._total >= self.max_total:
                    self._evict_oldest()
                if self._total < self.max_total:
                    self._open[key] = self._open.get(key, 0) + 1
                    self._total += 1
                    return Lease(key, None)
            waiter = Event()
            self._waiting.setdefault(key, deque()).append(waiter)
            try:
                waiter.wait()
            except BaseException:
                queue = self._waiting.get(key)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._waiting[key]
                if waiter.is_set():
                    self._wake(key)  # pass on the wake-up this greenlet will not use
                raise

    def _release(self, lease: Lease, keep: bool) -> None:
        conn, lease.conn = lease.conn, None
        if conn is not None and keep and conn.usable and not self._closed:
            token = self._next_token = self._next_token + 1
            self._idle[token] = (lease.key, conn)
            gevent.spawn_later(self.idle_timeout, self._expire, token)
        else:
            if conn is not None:
                conn.close(send_quit=conn.usable)
            self._free(lease.key)
        self._wake(lease.key)

    def _take_idle(self, key: str) -> Closable | None:
        for token in reversed(self._idle):  # most recently used first: likeliest still open
            if self._idle[token][0] == key:
                return self._idle.pop(token)[1]
        return None

    def _evict_oldest(self) -> None:
        if not self._idle:
            return
        _, (key, conn) = self._idle.popitem(last=False)
        self._free(key)
        gevent.spawn(conn.close)
        self._wake(key)

    def _expire(self, token: int) -> None:
        entry = self._idle.pop(token, None)
        if entry is None:
            return
        key, conn = entry
        event(log, logging.DEBUG, "mx-idle-closed", key=key)
        self._free(key)
        conn.close()
        self._wake(key)

    def _free(self, key: str) -> None:
        self._total -= 1
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)

    def _wake(self, key: str) -> None:
        """A slot or an idle connection of ``key`` became available: a waiter for ``key`` gets
        the first chance (its connection can be reused); otherwise the next key in round-robin
        order that is under its own limit."""
        if self._wake_first(key):
            return
        for other in list(self._waiting):
            if self._open.get(other, 0) < self.max_per_key and self._wake_first(other):
                if other in self._waiting:
                    self._waiting.move_to_end(other)  # round robin between destinations
                return

    def _wake_first(self, key: str) -> bool:
        queue = self._waiting.get(key)
        if not queue:
            return False
        queue.popleft().set()
        if not queue:
            del self._waiting[key]
        return True

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when given back."""
        self._closed = True
        while self._idle:
            _, (key, conn) = self._idle.popitem(last=False)
            self._free(key)
            conn.close()
        for queue in self._waiting.values():
            for waiter in queue:
                waiter.set()
        self._waiting.clear()
