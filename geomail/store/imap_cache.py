"""What every IMAP session of the process shares about Maildir folders, so that the hundredth
SELECT of an unchanged 10,000-message folder costs a directory listing, not a re-parse:

- the last **scan** of each folder (its ``FolderState`` and the ``FolderView`` the sessions
  get), reused only when a fresh listing of ``new/`` and ``cur/`` finds exactly the same file
  names and the files that hold UIDs, modseqs and keywords have the same content (they are
  read each time, parsed only when they changed). Nothing is trusted that was not looked
  at: no mtimes, so changes made by delivery, POP3, mutt or Dovecot are always seen;
- each message's **size and INTERNALDATE** (a Maildir file never changes once named);
- each message's rendered **ENVELOPE and BODYSTRUCTURE** (the initial sync of a client asks
  for them for every message; parsing costs far more than reading them back).

Bounded by ``limits.imap_cache_messages`` (messages across all cached folders, and as many
message summaries). Calls come from the pool's threads at once: every operation is a single
dict operation (atomic under the GIL) on immutable values, and a lost race only costs a miss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from geomail.proto.imap_fetch import Summary
from geomail.safeio import read_file

T = TypeVar("T")
MAX_FILES = 512  # parsed uidlist/modseq files kept
MAX_FILE_SIZE = 4 << 20  # a larger one is parsed each time (it would fill the cache)


@dataclass(frozen=True, slots=True)
class Scan:
    """One folder as last scanned: the listing it came from and what was made of it."""

    present: dict[str, str]  # base name -> "cur/<file name>" (never mutated once kept)
    sources: tuple[object, ...]  # what ``parsed`` gave for the folder's files at the time
    state: Any  # store.imap_maildir.FolderState
    by_uid: dict[int, Any]  # uid -> Message (never mutated once kept)
    uid_of: dict[str, int]  # base name -> uid (never mutated once kept)
    position: dict[int, int]  # uid -> index in state.messages (never mutated once kept)


class IMAPCache:
    """The process's folder scans, message metadata and summaries (see the module)."""

    def __init__(self, max_messages: int = 50_000) -> None:
        self.max_messages = max_messages
        self._scans: dict[str, Scan] = {}
        self._views: dict[str, tuple[Any, Any]] = {}  # folder path -> (state, FolderView)
        self._meta: dict[str, tuple[int, float]] = {}  # message path (base) -> size, mtime
        self._summaries: dict[str, Summary] = {}  # message path (base) -> its summary
        self._files: dict[str, tuple[bytes, Any]] = {}  # path -> (content, parsed)

    # -- folder scans --

    def scan(self, folder: str, present: dict[str, str],
             sources: tuple[object, ...]) -> Scan | None:
        """The kept scan of ``folder`` if nothing changed since: the same listing, and the
        same ``parsed`` objects for its files (the same content)."""
        kept = self._scans.get(folder)
        if kept is None or kept.present != present or len(kept.sources) != len(sources) \
                or any(a is not b for a, b in zip(kept.sources, sources, strict=True)):
            return None
        return kept

    def keep_scan(self, folder: str, scan: Scan) -> None:
        if len(scan.present) > self.max_messages:
            return  # a folder larger than the whole cache is scanned each time
        self._scans.pop(folder, None)  # re-inserted: the newest
        self._scans[folder] = scan
        self._trim(self._scans, lambda kept: len(kept.present))

    def view(self, folder: str, state: object, make: Callable[[], Any]) -> Any:
        """The ``FolderView`` of ``state`` (made once per state by ``make``)."""
        kept = self._views.get(folder)
        if kept is not None and kept[0] is state:
            return kept[1]
        view = make()
        scan = self._scans.get(folder)
        if scan is not None and scan.state is state:  # bounded with the scans
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

    # -- files --

    def parsed(self, path: str, parse: Callable[[bytes], T]) -> T | None:
        """``parse`` of the file at ``path`` (None when there is none), reused while its
        content is the same: the file is read each time (cheap), parsed only when it changed
        (a uidlist of 10,000 lines takes ~40 ms). The result is shared, and the same object
        while the content is: callers copy before they change it."""
        try:
            data = read_file(path)
        except FileNotFoundError:
            return None
        kept = self._files.get(path)
        if kept is not None and kept[0] == data:
            return cast(T, kept[1])
        value = parse(data)
        if self.max_messages > 0 and len(data) <= MAX_FILE_SIZE:
            if len(self._files) >= MAX_FILES:
                with contextlib.suppress(RuntimeError):
                    for old in list(self._files)[: MAX_FILES // 2]:
                        self._files.pop(old, None)
            self._files[path] = (data, value)
        return value

    def seed(self, path: str, data: bytes, value: object) -> None:
        """We just wrote ``data`` to ``path``: its parse is ``value`` (never changed after)."""
        if self.max_messages > 0 and len(data) <= MAX_FILE_SIZE:
            self._files[path] = (data, value)

    def last_scan(self, folder: str) -> Scan | None:
        """The kept scan of ``folder``, current or not: a new scan reuses what it can."""
        return self._scans.get(folder)

    def last_view(self, folder: str) -> tuple[Any, Any] | None:
        """(state, view) last made for ``folder``."""
        return self._views.get(folder)

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
