"""What every IMAP session of the process shares about Maildir folders, so that the hundredth
SELECT of an unchanged 10,000-message folder costs a directory listing, not a re-parse:

- the last **scan** of each folder (its ``FolderState`` and the ``FolderView`` the sessions
  get), reused only when a fresh listing of ``new/`` and ``cur/`` finds exactly the same file
  names and the files that hold UIDs, modseqs and keywords are the same files (inode, size,
  mtime: they are only ever replaced by rename). Nothing is trusted that was not looked at:
  directory mtimes are not used, so changes made by delivery, POP3, mutt or Dovecot are
  always seen;
- each message's **size and INTERNALDATE** (a Maildir file never changes once named);
- each message's rendered **ENVELOPE and BODYSTRUCTURE** (the initial sync of a client asks
  for them for every message; parsing costs far more than reading them back).

Bounded by ``limits.imap_cache_messages`` (messages across all cached folders, and as many
message summaries). Calls come from the pool's threads at once: every operation is a single
dict operation (atomic under the GIL) on immutable values, and a lost race only costs a miss.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from geomail.proto.imap_fetch import Summary

FileId = tuple[int, int, int] | None  # (inode, size, mtime ns) of a file, None if missing


def file_id(path: str) -> FileId:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Scan:
    """One folder as last scanned: the listing it came from and what was made of it."""

    present: dict[str, str]  # base name -> "cur/<file name>" (never mutated once kept)
    files: tuple[FileId, ...]
    state: Any  # store.imap_maildir.FolderState
    by_uid: dict[int, Any]  # uid -> Message (never mutated once kept)


class IMAPCache:
    """The process's folder scans, message metadata and summaries (see the module)."""

    def __init__(self, max_messages: int = 200_000) -> None:
        self.max_messages = max_messages
        self._scans: dict[str, Scan] = {}
        self._views: dict[str, tuple[Any, Any]] = {}  # folder path -> (state, FolderView)
        self._meta: dict[str, tuple[int, float]] = {}  # message path (base) -> size, mtime
        self._summaries: dict[str, Summary] = {}  # message path (base) -> its summary

    # -- folder scans --

    def scan(self, folder: str, present: dict[str, str], files: tuple[FileId, ...]) -> Scan | None:
        """The kept scan of ``folder`` if nothing changed since: the same listing, the same
        files."""
        kept = self._scans.get(folder)
        if kept is None or kept.files != files or kept.present != present:
            return None
        return kept

    def keep_scan(self, folder: str, scan: Scan) -> None:
        if len(scan.present) > self.max_messages // 2:
            return  # a folder this large would push everything else out
        self._scans.pop(folder, None)  # re-inserted: the newest
        self._scans[folder] = scan
        self._trim(self._scans, lambda kept: len(kept.present))

    def view(self, folder: str, state: object, make: Callable[[], Any]) -> Any:
        """The ``FolderView`` of ``state`` (made once per state by ``make``)."""
        kept = self._views.get(folder)
        if kept is not None and kept[0] is state:
            return kept[1]
        view = make()
        if folder in self._scans and self._scans[folder].state is state:
            self._views[folder] = (state, view)
        return view

    def by_uid(self, folder: str, state: Any) -> dict[int, Any]:
        """``state.by_uid()``, made once per kept scan (shared: never mutate it)."""
        kept = self._scans.get(folder)
        if kept is not None and kept.state is state:
            return kept.by_uid
        result: dict[int, Any] = state.by_uid()
        return result

    def forget(self, folder: str) -> None:
        """A folder deleted or renamed."""
        self._scans.pop(folder, None)
        self._views.pop(folder, None)

    # -- per message --

    def meta(self, message: str, make: Callable[[], tuple[int, float]]) -> tuple[int, float]:
        """(RFC822.SIZE, INTERNALDATE) of the message at base path ``message``."""
        known = self._meta.get(message)
        if known is None:
            known = make()
            if self._bound(self._meta):
                self._meta[message] = known
        return known

    def summary(self, message: str) -> Summary | None:
        """The ENVELOPE, BODYSTRUCTURE and BODY of the message at base path ``message``."""
        return self._summaries.get(message)

    def keep_summary(self, message: str, summary: Summary) -> None:
        if self._bound(self._summaries):
            self._summaries[message] = summary

    # -- internals --

    def _bound(self, table: dict[str, Any]) -> bool:
        """Room for one more entry in ``table``? (False: caching is off.)"""
        if self.max_messages <= 0:
            return False
        if len(table) >= self.max_messages:
            # The oldest half goes (dicts keep insertion order): cheap, and a rescan or a
            # re-parse is all a miss costs.
            with contextlib.suppress(RuntimeError):
                for key in list(table)[: max(1, len(table) // 2)]:
                    table.pop(key, None)
        return True

    def _trim(self, table: dict[str, Scan], size: Callable[[Scan], int]) -> None:
        with contextlib.suppress(RuntimeError):
            while sum(size(kept) for kept in list(table.values())) > self.max_messages \
                    and len(table) > 1:
                oldest = next(iter(table))
                table.pop(oldest, None)
                self._views.pop(oldest, None)
