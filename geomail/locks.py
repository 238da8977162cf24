"""Exclusive, non-blocking flock locks on lock files (the queue owner, a POP3 session)."""

from __future__ import annotations

import fcntl
import os


def try_lock(path: str) -> int | None:
    """Open (creating it, mode 0600) and flock ``path``; the open descriptor, which holds the
    lock until closed, or None when someone else holds it (blocking: a file open).

    flock locks belong to the open file, so a second holder in this process is refused too,
    and the kernel drops the lock when the process dies, even by SIGKILL.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
