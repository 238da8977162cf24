"""Run the permission-sensitive part of a test as an unprivileged user, also when the suite runs
as root (CI does): root's CAP_DAC_OVERRIDE reads and writes any file whatever its mode, so a
permission failure cannot happen to it and such tests would prove nothing.

``unprivileged()`` switches the real and effective user and group of the whole test process
(every thread: glibc applies set*id calls to all of them, gevent's threadpool included) to
``nobody`` for the length of a ``with`` block, with no supplementary groups; the kernel then
checks file access as for that user (``os.access`` too, which asks for the real user), and root's
capabilities are out of the effective set. The saved user id stays 0, which is what allows the
way back. A child process dropping to ``nobody`` was
the other choice, but the interpreter may live where ``nobody`` cannot reach it (pyenv under
/root, mode 0700), and forking a gevent process that has threads risks deadlocks.

Inside the block, touch only files under ``owned_tempdir()`` and import nothing new: the
repository and the interpreter's library may not be readable by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "nobody"


def running_as_root() -> bool:
    return os.geteuid() == 0


def _ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(USER)
        return entry.pw_uid, entry.pw_gid
    except KeyError:  # no such entry: the traditional overflow ids
        return 65534, 65534


@contextmanager
def unprivileged() -> Iterator[None]:
    """Within the block the process acts as ``nobody`` (a no-op when not root)."""
    if not running_as_root():
        yield
        return
    uid, gid = _ids()
    groups = os.getgroups()
    os.setgroups([])
    os.setresgid(gid, gid, 0)
    os.setresuid(uid, uid, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)  # first: the group calls below need root's capabilities back
        os.setresgid(0, 0, 0)
        os.setgroups(groups)


@contextmanager
def owned_tempdir() -> Iterator[Path]:
    """A fresh directory (mode 0700) owned by the user ``unprivileged()`` switches to, in a
    parent that user can traverse; removed afterwards, as root, whatever modes the test left."""
    root = running_as_root()
    path = Path(tempfile.mkdtemp(prefix="geomail-unprivileged-", dir="/tmp" if root else None))
    try:
        if root:
            os.chown(path, *_ids())
        yield path
    finally:
        if not root:  # root ignores modes; an ordinary user must restore them to delete
            os.chmod(path, 0o700)
            for directory, subdirectories, _ in os.walk(path):
                for name in subdirectories:  # before os.walk lists them
                    os.chmod(os.path.join(directory, name), 0o700)
        shutil.rmtree(path, ignore_errors=True)
