"""IMAP policy: logins exactly as POP3's (shared throttling), then the user's Maildir folders;
store requests run off the hub, reads in the read pool, changes in the I/O pool."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from gevent.monkey import get_original

from geomail.login import LoginChecker
from geomail.policy.folder_notify import FolderNotifier, Subscription
from geomail.proto.imap import LoginRefused
from geomail.proto.imap_mailbox import (
    FetchMessage,
    ListFolders,
    MailboxError,
    MailStore,
    StoreRequest,
    StoreResult,
    ViewFolder,
    perform,
)
from geomail.proto.sasl import Credentials
from geomail.safeio import Runner, run_blocking
from geomail.store.imap_cache import IMAPCache
from geomail.store.imap_maildir import MaildirMailStore

READS = (ListFolders, ViewFolder, FetchMessage)


class IMAPPolicy:
    """Implements ``server.imap_conn.IMAPHandler``: every call is cooperative."""

    def __init__(self, authenticator: LoginChecker, maildir_of: Callable[[str], str],
                 hostname: str, reader: Runner = run_blocking,
                 writer: Runner = run_blocking, notifier: FolderNotifier | None = None,
                 cache: IMAPCache | None = None) -> None:
        self.authenticator = authenticator
        self.notifier = notifier if notifier is not None else FolderNotifier()
        self.cache = cache if cache is not None else IMAPCache()  # every session's
        self.maildir_of = maildir_of  # the store's path of a user's maildir (store/maildir)
        self.hostname = hostname
        self.reader = reader
        self.writer = writer
        # One request at a time per store: a call cut at policy_timeout goes on in its
        # thread, and the session's next request must not run beside it.
        # (a native lock: it is taken in the pool's threads, never on the hub)
        self._locks: weakref.WeakKeyDictionary[MailStore, Any] = weakref.WeakKeyDictionary()
        self._new_lock = get_original("_thread", "allocate_lock")

    def authenticate(self, client_ip: str, credentials: Credentials) -> str | LoginRefused:
        """The canonical user (argon2 in the niced pool, failures throttled), or why not."""
        outcome = self.authenticator.authenticate(credentials.username, credentials.password,
                                                  client_ip)  # as POP3Policy.authenticate
        if not outcome.ok or not outcome.user:
            return LoginRefused(blocked=outcome.blocked)
        return outcome.user

    def open_store(self, user: str) -> MaildirMailStore:
        """The user's folders (no I/O until the first request)."""
        return MaildirMailStore(self.maildir_of(user), self.hostname, self.cache)

    def perform(self, store: MailStore, request: StoreRequest) -> StoreResult:
        """Carry out one request of the session in a thread."""
        runner = self.reader if isinstance(request, READS) else self.writer
        lock = self._locks.setdefault(store, self._new_lock())
        result: StoreResult = runner(_one_at_a_time, lock, store, request)
        return result

    def watch(self, store: MaildirMailStore, name: str,
              wake: Callable[[], None]) -> Subscription | None:
        """IDLE's subscription to folder ``name`` (the process's one inotify instance), set
        up on the hub (a few quick system calls). None (the shell then polls) when the
        folder is gone or cannot be watched."""
        try:
            directories = store.watch_paths(name)
        except MailboxError:
            return None
        return self.notifier.subscribe(directories, wake)


def _one_at_a_time(lock: Any, store: MailStore, request: StoreRequest) -> StoreResult:
    with lock:
        return perform(store, request)
