"""Unique identifiers for sessions, messages and queue items (logs, Received ``id``, file names)."""

from __future__ import annotations

import itertools
import os
import time

# Milliseconds first, so ids sort by age; then a random per-process prefix and a counter, so
# ids are unique without a system call each (unlike os.urandom per id). Process-wide on
# purpose: uniqueness is per process, whichever App (or CLI command) makes the id; a counter
# per App would give two Apps in one process the same ids. Nothing reads it back.
_PROCESS = os.urandom(2).hex()
_COUNTER = itertools.count(1)


def new_id(now: float | None = None) -> str:
    """22 lower-case hex digits: 12 of milliseconds since the epoch, 10 unique to this id."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{_PROCESS}{next(_COUNTER) & 0xFFFFFF:06x}"
