"""Greylisting (RFC 6647): a (client network, sender, recipient) triplet seen for the first time
is refused with a temporary error; a real MTA retries and, once ``delay`` has passed (within
``retry_window``), gets through. A passed triplet stays good for ``pass_lifetime`` after it
was last used; a client network with ``auto_whitelist`` passes skips greylisting (RFC 6647
2.2, 6.4).

The triplets live in ``DATA_DIR/greylist.sqlite`` so a restart does not greylist every sender
again. sqlite blocks, so every call runs in one thread of its own (``ThreadRunner(1)``): the
hub never waits on the disk and the one connection is used by one thread at a time.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from geomail.clientnet import client_network
from geomail.config import GreylistConfig
from geomail.safeio import ThreadRunner

T = TypeVar("T")
Runner = Callable[..., Any]

PRUNE_EVERY = 3600.0  # seconds between removals of expired rows
IPV4_PREFIX = 24  # RFC 6647 4.1: a sender's retries may come from another host of its /24
IPV6_PREFIX = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS triplets (
    network TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    first_seen REAL NOT NULL, passed INTEGER NOT NULL DEFAULT 0, expires REAL NOT NULL,
    PRIMARY KEY (network, sender, recipient)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clients (
    network TEXT PRIMARY KEY NOT NULL, passes INTEGER NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS triplets_expires ON triplets (expires);
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decision: ``result`` is "greylisted" (retry in ``retry`` seconds), "passed" (a retry
    after the delay, or a triplet that passed before) or "whitelisted" (the client network has
    ``passes`` passes); ``network`` is the client network the triplet counts under."""

    result: str
    network: str
    retry: int = 0
    passes: int = 0
    first_pass: bool = False  # this retry is the one that got the triplet through


class Greylist:
    """The triplet store. ``open()`` before use (at start, after the privilege drop), then
    ``check`` per recipient, ``close()`` at stop."""

    def __init__(self, path: str, config: GreylistConfig,
                 clock: Callable[[], float] = time.time, runner: Runner | None = None) -> None:
        self.path = path
        self.config = config
        self.clock = clock
        self._runner = runner or ThreadRunner(1)
        self._db: sqlite3.Connection | None = None
        self._pruned = 0.0

    def open(self) -> None:
        """Open (or create) the database."""
        self._run(self._open)

    def close(self) -> None:
        """Close the database and the thread."""
        if self._db is not None:
            self._run(self._db.close)
            self._db = None
        if isinstance(self._runner, ThreadRunner):
            self._runner.close()

    def check(self, client_ip: str, sender: str, recipient: str) -> Verdict:
        """The decision for one recipient of a message from ``client_ip``; ``sender`` is the
        MAIL FROM address ("" for ``<>``)."""
        network = client_network(client_ip, IPV4_PREFIX, IPV6_PREFIX)
        result: Verdict = self._run(self._check, network, sender.lower(), recipient.lower())
        return result

    # ---- in the store's thread -------------------------------------------------------------

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        result: T = self._runner(fn, *args)
        return result

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10, check_same_thread=False,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._db = db

    def _check(self, network: str, sender: str, recipient: str) -> Verdict:
        if self._db is None:
            self._open()
        db = self._db
        assert db is not None
        config, now = self.config, self.clock()
        if now - self._pruned >= PRUNE_EVERY:
            self._prune(db, now)
        with db:  # one transaction
            db.execute("BEGIN IMMEDIATE")
            if config.auto_whitelist:
                row = db.execute("SELECT passes FROM clients WHERE network = ? AND expires > ?",
                                 (network, now)).fetchone()
                if row is not None and row[0] >= config.auto_whitelist:
                    db.execute("UPDATE clients SET expires = ? WHERE network = ?",
                               (now + config.pass_lifetime, network))
                    return Verdict("whitelisted", network, passes=row[0])
            key = (network, sender, recipient)
            row = db.execute("SELECT first_seen, passed, expires FROM triplets WHERE "
                             "network = ? AND sender = ? AND recipient = ?", key).fetchone()
            if row is not None and row[2] > now:
                first_seen, passed, _ = row
                if passed:
                    db.execute("UPDATE triplets SET expires = ? WHERE network = ? AND "
                               "sender = ? AND recipient = ?", (now + config.pass_lifetime, *key))
                    return Verdict("passed", network)
                waited = now - first_seen
                if waited < config.delay:
                    return Verdict("greylisted", network,
                                   retry=max(1, math.ceil(config.delay - waited)))
                db.execute("UPDATE triplets SET passed = 1, expires = ? WHERE network = ? AND "
                           "sender = ? AND recipient = ?", (now + config.pass_lifetime, *key))
                passes = self._count_pass(db, network, now)
                return Verdict("passed", network, passes=passes, first_pass=True)
            # New, or forgotten (not retried within retry_window, or a pass that lapsed).
            db.execute("INSERT OR REPLACE INTO triplets (network, sender, recipient, "
                       "first_seen, passed, expires) VALUES (?, ?, ?, ?, 0, ?)",
                       (*key, now, now + config.retry_window))
            return Verdict("greylisted", network, retry=max(1, math.ceil(config.delay)))

    def _count_pass(self, db: sqlite3.Connection, network: str, now: float) -> int:
        expires = now + self.config.pass_lifetime
        db.execute("INSERT INTO clients (network, passes, expires) VALUES (?, 1, ?) "
                   "ON CONFLICT (network) DO UPDATE SET passes = CASE WHEN expires > ? "
                   "THEN passes + 1 ELSE 1 END, expires = excluded.expires",
                   (network, expires, now))
        row = db.execute("SELECT passes FROM clients WHERE network = ?", (network,)).fetchone()
        return int(row[0])

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        """Forget expired triplets and clients (RFC 6647 2.2: the store must not grow forever)."""
        self._pruned = now
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM triplets WHERE expires <= ?", (now,))
            db.execute("DELETE FROM clients WHERE expires <= ?", (now,))

    def count(self) -> tuple[int, int]:
        """(triplets, clients) stored, expired ones included (for tests and operators)."""
        def counts() -> tuple[int, int]:
            if self._db is None:
                self._open()
            assert self._db is not None
            return (self._db.execute("SELECT COUNT(*) FROM triplets").fetchone()[0],
                    self._db.execute("SELECT COUNT(*) FROM clients").fetchone()[0])
        return self._run(counts)
