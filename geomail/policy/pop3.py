"""POP3 policy: logins (shared throttling with SMTP) and the mailbox lock for fetching mail."""

from __future__ import annotations

import logging

from geomail.errors import MailboxBusy, StoreError
from geomail.log import event
from geomail.login import LoginChecker
from geomail.proto.pop3_types import LoginRefused, MailboxInUse, Unavailable
from geomail.proto.sasl import Credentials
from geomail.store.base import Maildrop, MessageStore

log = logging.getLogger(__name__)


class POP3Policy:
    """Implements ``server.pop3_conn.POP3Handler`` over the authenticator and the store: what
    the connection shell asks when the session requests ``Authenticate`` or ``OpenMaildrop``.
    Both calls are cooperative (argon2 and disk I/O run in the threadpool)."""

    def __init__(self, authenticator: LoginChecker, store: MessageStore) -> None:
        self.authenticator = authenticator
        self.store = store

    def authenticate(self, client_ip: str, credentials: Credentials) -> str | LoginRefused:
        """The canonical user, or why not."""
        outcome = self.authenticator.authenticate(credentials.username, credentials.password,
                                                  client_ip)
        if not outcome.ok or not outcome.user:
            return LoginRefused(blocked=outcome.blocked)
        return outcome.user

    def open_maildrop(self, user: str) -> Maildrop | MailboxInUse | Unavailable:
        """The user's mailbox, locked and listed, or why not."""
        try:
            return self.store.open_maildrop(user)
        except MailboxBusy:
            return MailboxInUse()
        except StoreError as exc:
            event(log, logging.ERROR, "pop3-open-failed", user=user, error=str(exc))
            return Unavailable(str(exc))
