"""A small cache of check results, each kept for a fixed time: mail from one sender tends to
come in runs (a newsletter, a busy correspondent), and its SPF verdict, the client's reverse
DNS and the From domain's DMARC record do not change from one message to the next."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

RESULT_TTL = 60.0  # seconds a result is reused: well under the usual DNS TTLs of such records


class TTLCache(Generic[V]):
    """Values by key for ``ttl`` seconds, at most ``size`` of them (then it starts afresh)."""

    def __init__(self, ttl: float = RESULT_TTL, size: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._size = size
        self._clock = clock
        self._values: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable) -> V | None:
        found = self._values.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._values[key]
            return None
        return found[1]

    def put(self, key: Hashable, value: V) -> None:
        if len(self._values) >= self._size:
            self._values.clear()
        self._values[key] = (self._clock() + self.ttl, value)
