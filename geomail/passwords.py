"""Password hashing (argon2id), blocking (the App runs checks in its ``Workers.hash`` pool of
lower-priority threads), and the ``geomail passwd`` prompt."""

from __future__ import annotations

import getpass
import hmac
import sys
from typing import TextIO

import argon2
from argon2.exceptions import InvalidHashError, VerifyMismatchError

# argon2id (RFC 9106) with OWASP's first recommended set: 19 MiB, 2 passes, 1 lane: cheap
# enough for tens of logins a second on a small VPS. 64 MiB (RFC 9106's second option) is
# several times slower per verify; parallelism > 1 adds no throughput once several logins run
# at once, it only multiplies threads. Figures: bench/README.md, "Where the figures went".
TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1

_hasher = argon2.PasswordHasher(
    time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM,
    hash_len=32, salt_len=16, type=argon2.Type.ID,
)


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (``$argon2id$v=19$m=19456,t=2,p=1$...``), blocking.

    19 MiB, t=2, p=1 (see TIME_COST).
    """
    return _hasher.hash(password)


def needs_rehash(password_hash: str) -> bool:
    """True when ``password_hash`` was made with other parameters than ``hash_password`` uses."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


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
