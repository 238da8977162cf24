"""Folder change notices for IDLE (RFC 9051 6.3.13): one inotify instance for the whole
process, read by the hub, fanned out to the connections idling on each folder.

One instance per IDLE client would hit the kernel's ``fs.inotify.max_user_instances`` (128 by
default) long before a few thousand phones are idling; watches are cheaper
(``max_user_watches``) and shared: two per folder (``new/`` and ``cur/``), however many
clients idle on it. The files are written by delivery, POP3 and other IMAP sessions, in this
process or any other, so the filesystem is the one source of change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import gevent

from geomail.log import event
from geomail.store.inotify import IN_IGNORED, Inotify, InotifyUnavailable

log = logging.getLogger(__name__)


class Subscription:
    """One idling client's interest in a folder: ``wake`` is called (in the hub) when the
    folder's files change; ``close()`` ends it (idempotent)."""

    __slots__ = ("_notifier", "wake", "wds")

    def __init__(self, notifier: FolderNotifier, wds: tuple[int, ...],
                 wake: Callable[[], None]) -> None:
        self._notifier: FolderNotifier | None = notifier
        self.wds = wds
        self.wake = wake

    def close(self) -> None:
        if self._notifier is not None:
            notifier, self._notifier = self._notifier, None
            notifier.unsubscribe(self)


class FolderNotifier:
    """The process's inotify instance (opened at the first subscription) and who waits on
    which watch. All calls on the hub's thread."""

    def __init__(self) -> None:
        self._inotify: Inotify | None = None
        self._reader: Any = None  # the hub's I/O watcher on the instance
        self._unavailable = False
        self._waiting: dict[int, set[Subscription]] = {}  # wd -> subscriptions

    def subscribe(self, directories: Sequence[str],
                  wake: Callable[[], None]) -> Subscription | None:
        """Call ``wake`` whenever a file in ``directories`` appears, is renamed or goes.
        None when they cannot be watched (no inotify, a kernel limit, a directory gone):
        the caller polls instead."""
        inotify = self._instance()
        if inotify is None:
            return None
        wds: list[int] = []
        try:
            for directory in directories:
                wds.append(inotify.add_watch(directory))
        except InotifyUnavailable as exc:
            self._drop_unwatched(wds)
            event(log, logging.WARNING, "idle-unwatched", path=directory, error=exc.strerror)
            return None
        subscription = Subscription(self, tuple(wds), wake)
        for wd in wds:
            self._waiting.setdefault(wd, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription``; a watch nobody waits on any more is removed."""
        for wd in subscription.wds:
            waiting = self._waiting.get(wd)
            if waiting is None:
                continue
            waiting.discard(subscription)
            if not waiting:
                del self._waiting[wd]
                if self._inotify is not None:
                    self._inotify.remove_watch(wd)

    @property
    def watches(self) -> int:
        """Watch descriptors in use (for tests and metrics)."""
        return len(self._waiting)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader.close()
            self._reader = None
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._waiting.clear()

    # -- internals --

    def _instance(self) -> Inotify | None:
        if self._inotify is None and not self._unavailable:
            try:
                self._inotify = Inotify()
            except InotifyUnavailable as exc:
                self._unavailable = True  # never again: polling it is
                event(log, logging.WARNING, "idle-unwatched", path="-", error=str(exc))
                return None
            self._reader = gevent.get_hub().loop.io(self._inotify.fileno(), 1)
            self._reader.start(self._dispatch)
        return self._inotify

    def _drop_unwatched(self, wds: list[int]) -> None:
        for wd in wds:
            if wd not in self._waiting and self._inotify is not None:
                self._inotify.remove_watch(wd)

    def _dispatch(self) -> None:
        # Runs in the hub, so it must not block or raise: one non-blocking read, then wake
        # each subscriber once however many of its files changed.
        if self._inotify is None:
            return
        try:
            events = self._inotify.read()
        except OSError:
            event(log, logging.ERROR, "internal-error", exc_info=True, where="folder-notify")
            return
        woken: set[Subscription] = set()
        for wd, mask in events.items():
            woken.update(self._waiting.get(wd, ()))
            if mask & IN_IGNORED:  # the directory went: the kernel dropped the watch
                self._waiting.pop(wd, None)
        for subscription in woken:
            try:
                subscription.wake()
            except Exception:
                event(log, logging.ERROR, "internal-error", exc_info=True,
                      where="folder-notify")
