"""Password hashing (argon2id) and login checks, throttled per client in a way fail2ban sees."""

from __future__ import annotations

import contextlib
import functools
import getpass
import hmac
import itertools
import logging
import os
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from geomail import metrics
from geomail.clientnet import client_network
from geomail.config import Limits
from geomail.log import event
from geomail.userdb import UserDB

log = logging.getLogger("geomail.auth")
T = TypeVar("T")

# argon2id (RFC 9106) with OWASP's first recommended set: 19 MiB, 2 passes, 1 lane. On the
# 2-core dev VPS (AMD EPYC, argon2-cffi 25.1) one verify takes 23-29 ms of CPU; bench/auth.py
# measured 42-48 full logins/s (TLS handshake + AUTH PLAIN) at concurrency 50. 64 MiB (RFC
# 9106's second option) costs 125 ms per verify here, too slow for that; parallelism > 1 adds
# no throughput once several logins run at once, it only multiplies threads.
TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1

_hasher = argon2.PasswordHasher(
    time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM,
    hash_len=32, salt_len=16, type=argon2.Type.ID,
)

MAX_TRACKED_CLIENTS = 50_000  # throttle table entries (~300 bytes each) before evicting the oldest
_PRUNE_EVERY = 1024  # sweep expired throttle entries after this many attempts


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (``$argon2id$v=19$m=19456,t=2,p=1$...``), blocking.

    19 MiB, t=2, p=1: ~23 ms per hash or verify on a small 2-core VPS (see TIME_COST).
    """
    return _hasher.hash(password)


def needs_rehash(password_hash: str) -> bool:
    """True when ``password_hash`` was made with other parameters than ``hash_password`` uses."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


HASH_NICE = 10  # hashing threads yield the CPU to the hub, so other sessions stay prompt
_hash_pool: Any = None


def _run_hash(fn: Callable[..., T], *args: Any) -> T:
    """Run a password check in the hashing pool: its own threads, at a lower CPU priority.

    A login costs ~25 ms of CPU; on a small VPS the hub would otherwise wait behind it for a
    core and every other session's replies would slow down (bench/auth.py measured NOOP p99
    rising from 1.6 to ~10 ms during 50 parallel logins at normal priority)."""
    global _hash_pool
    if _hash_pool is None:
        from gevent.threadpool import ThreadPool

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
        _hash_pool = ThreadPool(max(cpus, 1))
    result: T = _hash_pool.apply(_niced, (fn, *args))
    return result


def _niced(fn: Callable[..., T], *args: Any) -> T:
    # On Linux, PRIO_PROCESS with who=0 sets the calling thread's nice value only.
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, 0) < HASH_NICE:
            os.setpriority(os.PRIO_PROCESS, 0, HASH_NICE)
    return fn(*args)


def _verify(password_hash: str, password: str | bytes) -> bool:
    """Constant-time argon2 check (blocking); a malformed hash raises InvalidHashError."""
    try:
        return _hasher.verify(password_hash, password)
    except VerifyMismatchError:
        return False


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of one login; ``reason`` is for logs only, never for the client."""

    ok: bool
    user: str | None  # canonical address when ok
    blocked: bool = False  # the client IP is throttled: answer 454/421 4.7.0, not 535
    reason: str = ""  # ok, bad-password, unknown-user, no-password, bad-username, bad-hash, blocked


@dataclass(slots=True)
class _Client:
    """Throttle state of one client (an IPv4 address or an IPv6 /64)."""

    failures: deque[float] = field(default_factory=deque)  # times of recent failures
    blocked_until: float = 0.0
    inflight: int = 0  # verifications running or waiting for a thread
    wakeup: Event | None = None  # set when an in-flight verification ends


class Authenticator:
    """Checks usernames and passwords off the hub and throttles clients that fail too often.

    Build one per process and share it (SMTP and POP3): the throttle table and the bound on
    parallel argon2 runs (one per CPU, so hashing never takes every threadpool worker) are
    per instance. Cooperative: call ``authenticate`` from greenlets.
    """

    def __init__(self, userdb: UserDB, limits: Limits,
                 clock: Callable[[], float] = time.monotonic, *,
                 max_parallel: int | None = None,
                 max_tracked: int = MAX_TRACKED_CLIENTS) -> None:
        self._userdb = userdb
        self._max_failures = limits.max_auth_failures
        self._block_time = limits.auth_block_time
        self._window = limits.auth_block_time  # failures older than this are forgotten
        self._clock = clock
        self._max_tracked = max_tracked
        # Throttle per client network, the same key the connection limits count under.
        self._client_key = functools.partial(client_network, ipv4_prefix=limits.ipv4_prefix,
                                             ipv6_prefix=limits.ipv6_prefix)
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._attempts = 0
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self._cpu = BoundedSemaphore(max_parallel or cpus or 2)
        # Unknown users are checked against this, so they cost what a wrong password costs.
        self._dummy_hash = hash_password(os.urandom(16).hex())

    def reload(self, userdb: UserDB) -> None:
        """Use ``userdb`` from now on (SIGHUP); throttle state is kept."""
        self._userdb = userdb

    @property
    def tracked_clients(self) -> int:
        """Entries in the throttle table (for metrics; at most ``max_tracked``)."""
        return len(self._clients)

    def is_blocked(self, client_ip: str) -> bool:
        """True while ``client_ip`` is refused for too many failed logins."""
        client = self._clients.get(self._client_key(client_ip))
        return client is not None and self._blocked(client, self._clock())

    def authenticate(self, username: str, password: str | bytes, client_ip: str) -> AuthResult:
        """Check a login (RFC 4954 AUTH, RFC 1939 USER/PASS); usernames are full addresses."""
        key = self._client_key(client_ip)
        client = self._reserve(key)
        if client is None:
            _log_failure(client_ip, username, "blocked")
            return AuthResult(False, None, True, "blocked")
        try:
            result = self._check(username, password)
            now = self._clock()
            if result.ok:
                client.failures.clear()
                event(log, logging.INFO, "auth-ok", client=_clip(client_ip, 64),
                      user=result.user)
            else:
                _log_failure(client_ip, username, result.reason)
                self._record_failure(client, client_ip, now)
        finally:  # counted before waiters look again, so they see this failure
            client.inflight -= 1
            self._wake(client)
        self._maybe_prune(now)
        return result

    # -- verification ----------------------------------------------------------------------

    def _check(self, username: str, password: str | bytes) -> AuthResult:
        user = self._userdb.lookup(username) if "@" in username else None
        if user is not None and user.password_hash:
            stored, reason = user.password_hash, "bad-password"
        else:
            reason = "no-password" if user else ("unknown-user" if "@" in username
                                                  else "bad-username")
            stored = self._dummy_hash
        with self._cpu:
            try:
                ok = _run_hash(_verify, stored, password)
            except (InvalidHashError, VerificationError):
                _run_hash(_verify, self._dummy_hash, password)  # same cost as a real check
                ok, reason = False, "bad-hash"
                event(log, logging.ERROR, "auth-config-error", user=_clip(username),
                      problem="malformed-password-hash")
        if ok and stored is not self._dummy_hash and user is not None:
            return AuthResult(True, user.address, False, "ok")
        return AuthResult(False, None, False, reason)

    # -- throttling --------------------------------------------------------------------------

    def _reserve(self, key: str) -> _Client | None:
        """Count one more in-flight attempt, waiting while the attempts running could block the
        client anyway; None when it is blocked. So N parallel guesses get no more than
        ``max_auth_failures`` verified.
        """
        while True:
            client = self._touch(key)
            now = self._clock()
            if self._blocked(client, now):
                return None
            if self._recent_failures(client, now) + client.inflight < self._max_failures:
                client.inflight += 1
                return client
            if client.wakeup is None:
                client.wakeup = Event()
            client.wakeup.wait()

    @staticmethod
    def _wake(client: _Client) -> None:
        event, client.wakeup = client.wakeup, None
        if event is not None:
            event.set()

    def _blocked(self, client: _Client, now: float) -> bool:
        if client.blocked_until and now >= client.blocked_until:
            client.blocked_until = 0.0
        return client.blocked_until > 0.0

    def _recent_failures(self, client: _Client, now: float) -> int:
        while client.failures and client.failures[0] <= now - self._window:
            client.failures.popleft()
        return len(client.failures)

    def _record_failure(self, client: _Client, client_ip: str, now: float) -> None:
        if self._blocked(client, now):
            return
        client.failures.append(now)
        if self._recent_failures(client, now) >= self._max_failures:
            client.blocked_until = now + self._block_time
            event(log, logging.WARNING, "auth-blocked", client=_clip(client_ip, 64),
                  failures=len(client.failures), seconds=round(self._block_time))
            client.failures.clear()

    def _touch(self, key: str) -> _Client:
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= self._max_tracked:
                self._evict()
            client = self._clients[key] = _Client()
        else:
            self._clients.move_to_end(key)
        return client

    def _maybe_prune(self, now: float) -> None:
        self._attempts += 1
        if self._attempts % _PRUNE_EVERY == 0:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget clients that are neither blocked, busy, nor have recent failures."""
        for key in [k for k, c in self._clients.items() if self._idle(c, now)]:
            del self._clients[key]

    def _idle(self, client: _Client, now: float) -> bool:
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


def _clip(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters for the log (the log quotes and escapes it)."""
    return text[:limit] + ("..." if len(text) > limit else "")


def _log_failure(client_ip: str, username: str, reason: str) -> None:
    # One line per failure for fail2ban (conf/fail2ban/filter.d/geomail.conf); client first,
    # so nothing a client sends comes before the part the filter matches.
    metrics.inc("geomail_auth_failures_total")
    event(log, logging.WARNING, "auth-failed", client=_clip(client_ip, 64),
          user=_clip(username), reason=reason)


# -- geomail passwd ----------------------------------------------------------------------------


class PasswordInputError(Exception):
    """The password typed or piped to ``geomail passwd`` is unusable."""


def read_password_for_cli(stdin: TextIO | None = None, stderr: TextIO | None = None) -> str:
    """Read a new password: twice without echo on a terminal, else one line from ``stdin``."""
    stdin = stdin or sys.stdin
    stderr = stderr or sys.stderr
    if stdin.isatty():
        first = getpass.getpass("Password: ", stream=stderr)
        second = getpass.getpass("Repeat password: ", stream=stderr)
        if not hmac.compare_digest(first.encode(errors="surrogateescape"),
                                   second.encode(errors="surrogateescape")):
            raise PasswordInputError("the passwords do not match")
        password = first
    else:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise PasswordInputError("the password is empty")
    return password


def passwd_command(stdin: TextIO | None = None, stdout: TextIO | None = None,
                   stderr: TextIO | None = None) -> int:
    """``geomail passwd``: print the hash of a password read by ``read_password_for_cli``."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        password = read_password_for_cli(stdin, stderr)
    except PasswordInputError as exc:
        print(f"geomail passwd: {exc}", file=stderr)
        return 1
    except EOFError:
        print("\ngeomail passwd: no password given", file=stderr)
        return 1
    except UnicodeError:
        print("geomail passwd: the password is not valid UTF-8", file=stderr)
        return 1
    except KeyboardInterrupt:
        print(file=stderr)
        return 130
    print(hash_password(password), file=stdout)
    return 0
