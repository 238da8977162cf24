"""Password hashing (argon2id): hashing and verifying in a pool of lower-priority threads, and
the ``geomail passwd`` prompt."""

from __future__ import annotations

import contextlib
import getpass
import hmac
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerifyMismatchError

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


def run_hash(fn: Callable[..., T], *args: Any) -> T:
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


def verify(password_hash: str, password: str | bytes) -> bool:
    """Constant-time argon2 check (blocking); a malformed hash raises InvalidHashError."""
    try:
        return _hasher.verify(password_hash, password)
    except VerifyMismatchError:
        return False


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
