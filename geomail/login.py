"""Login checks: the user table, the password hashes and the throttle put together, logged in
a way fail2ban sees. SMTP AUTH and POP3 share one ``Authenticator``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from argon2.exceptions import InvalidHashError, VerificationError
from gevent.lock import BoundedSemaphore

from geomail import passwords
from geomail.config import Limits
from geomail.log import event
from geomail.metrics import Metrics
from geomail.safeio import HASH_NICE, Runner, ThreadRunner
from geomail.throttle import MAX_TRACKED_CLIENTS, LoginThrottle, clip
from geomail.userdb import UserDB

log = logging.getLogger("geomail.auth")  # the fail2ban filter and docs/logging.md name it


class AuthOutcome(Protocol):
    """What a login checker says about one login attempt."""

    @property
    def ok(self) -> bool: ...

    @property
    def user(self) -> str | None: ...

    @property
    def blocked(self) -> bool: ...


class LoginChecker(Protocol):
    """What the SMTP and POP3 policies need to check a login (``Authenticator`` is one)."""

    def authenticate(self, username: str, password: str, client_ip: str) -> AuthOutcome: ...


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of one login; ``reason`` is for logs only, never for the client."""

    ok: bool
    user: str | None  # canonical address when ok
    blocked: bool = False  # the client IP is throttled: answer 454/421 4.7.0, not 535
    reason: str = ""  # ok, bad-password, unknown-user, no-password, bad-username, bad-hash, blocked


class Authenticator:
    """Checks usernames and passwords off the hub and throttles clients that fail too often.

    Build one per process and share it (SMTP and POP3): the throttle table and the bound on
    parallel argon2 runs (one per CPU, so hashing never takes every threadpool worker) are
    per instance. Cooperative: call ``authenticate`` from greenlets.
    """

    def __init__(self, userdb: UserDB, limits: Limits,
                 clock: Callable[[], float] = time.monotonic, *,
                 max_parallel: int | None = None,
                 max_tracked: int = MAX_TRACKED_CLIENTS,
                 hashing: Runner | None = None, metrics: Metrics | None = None) -> None:
        self._userdb = userdb
        # The App passes its Workers.hash pool and registry; alone (tests), it has its own.
        self._hashing = hashing or ThreadRunner(2, nice=HASH_NICE)
        self._metrics = metrics if metrics is not None else Metrics()
        self._throttle = LoginThrottle(limits, clock, max_tracked=max_tracked)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self._cpu = BoundedSemaphore(max_parallel or cpus or 2)
        # Unknown users are checked against this, so they cost what a wrong password costs.
        self._dummy_hash = passwords.hash_password(os.urandom(16).hex())

    def reload(self, userdb: UserDB) -> None:
        """Use ``userdb`` from now on (SIGHUP); throttle state is kept."""
        self._userdb = userdb

    @property
    def tracked_clients(self) -> int:
        """Entries in the throttle table (for metrics; at most ``max_tracked``)."""
        return self._throttle.tracked_clients

    def is_blocked(self, client_ip: str) -> bool:
        """True while ``client_ip`` is refused for too many failed logins."""
        return self._throttle.is_blocked(client_ip)

    def authenticate(self, username: str, password: str | bytes, client_ip: str) -> AuthResult:
        """Check a login (RFC 4954 AUTH, RFC 1939 USER/PASS); usernames are full addresses."""
        throttle = self._throttle
        key = throttle.client_key(client_ip)
        client = throttle.reserve(key)
        if client is None:
            self._log_failure(client_ip, username, "blocked")
            return AuthResult(False, None, True, "blocked")
        try:
            result = self._check(username, password)
            now = throttle.clock()
            if result.ok:
                throttle.record_success(client)
                event(log, logging.INFO, "auth-ok", client=clip(client_ip, 64),
                      user=result.user)
            else:
                self._log_failure(client_ip, username, result.reason)
                throttle.record_failure(client, client_ip, now)
        finally:  # counted before waiters look again, so they see this failure
            throttle.release(client)
        throttle.maybe_prune(now)
        return result

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
                ok = self._hashing(passwords.verify, stored, password)
            except (InvalidHashError, VerificationError):
                # same cost as a real check
                self._hashing(passwords.verify, self._dummy_hash, password)
                ok, reason = False, "bad-hash"
                event(log, logging.ERROR, "auth-config-error", user=clip(username),
                      problem="malformed-password-hash")
        if ok and stored is not self._dummy_hash and user is not None:
            return AuthResult(True, user.address, False, "ok")
        return AuthResult(False, None, False, reason)

    def _log_failure(self, client_ip: str, username: str, reason: str) -> None:
        # One line per failure for fail2ban (conf/fail2ban/filter.d/geomail.conf); client
        # first, so nothing a client sends comes before the part the filter matches.
        self._metrics.inc("geomail_auth_failures_total")
        event(log, logging.WARNING, "auth-failed",
              client=clip(client_ip, 64), user=clip(username), reason=reason)
