"""Linux inotify through ``ctypes`` (gevent has no inotify watcher, the stdlib none either): one
non-blocking instance whose descriptor the caller waits on, watches on directories, and the
watch descriptors that saw events. No gevent here: ``policy/folder_notify`` waits on it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct

# <sys/inotify.h>
IN_ATTRIB = 0x004
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_IGNORED = 0x8000  # the watch is gone (its directory was removed, or rm_watch)
# A Maildir changes by create, rename and unlink: new/ gains a file, a flag change renames in
# cur/, an expunge unlinks. Writes into tmp/ are not watched.
MAILDIR_MASK = IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len octets of name)


class InotifyUnavailable(OSError):
    """No inotify here (not Linux), or a kernel limit (``fs.inotify.max_user_*``) reached."""


class Inotify:
    """One inotify instance. ``fileno()`` becomes readable when events are pending;
    ``read()`` returns what happened, per watch descriptor. Raises ``InotifyUnavailable``."""

    def __init__(self) -> None:
        try:
            # The running process's own symbols (libc among them): unlike find_library this
            # runs no ldconfig subprocess.
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailable(f"no inotify: {exc}") from None
        if fd < 0:
            raise InotifyUnavailable(ctypes.get_errno(), "inotify_init1 failed")
        self._fd: int | None = fd

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("inotify instance closed")
        return self._fd

    def add_watch(self, directory: str, mask: int = MAILDIR_MASK) -> int:
        """A watch descriptor for ``directory``; the same one when it is already watched."""
        wd = self._libc.inotify_add_watch(self.fileno(), os.fsencode(directory), mask)
        if wd < 0:
            raise InotifyUnavailable(ctypes.get_errno(), f"cannot watch {directory}")
        return int(wd)

    def remove_watch(self, wd: int) -> None:
        """Stop watching (quietly: the kernel may have dropped it already)."""
        self._libc.inotify_rm_watch(self.fileno(), wd)

    def read(self) -> dict[int, int]:
        """Every pending event, without blocking: watch descriptor -> the OR of its masks."""
        seen: dict[int, int] = {}
        while True:
            try:
                data = os.read(self.fileno(), 65536)
            except BlockingIOError:
                return seen
            if not data:
                return seen
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                seen[wd] = seen.get(wd, 0) | mask
                offset += _HEADER.size + length

    def close(self) -> None:
        """Idempotent."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
