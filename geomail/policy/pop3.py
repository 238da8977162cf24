"""POP3 policy: logins (shared throttling with SMTP) and the mailbox lock for fetching mail."""

from __future__ import annotations

import logging

from geomail.errors import MailboxBusy, StoreError
from geomail.log import event
from geomail.login import LoginChecker
from geomail.proto.pop3 import LoginRefused, MailboxInUse, MaildropUnavailable
from geomail.proto.sasl import Credentials
from geomail.store.base import Maildrop, MessageStore

log = logging.getLogger(__name__)


class POP3Policy:
    """Implements ``proto.pop3.POP3Handler`` over the authenticator and the store."""

    def __init__(self, authenticator: LoginChecker, store: MessageStore) -> None:
        self.authenticator = authenticator
        self.store = store

    def authenticate(self, client_ip: str, credentials: Credentials) -> str:
        outcome = self.authenticator.authenticate(credentials.username, credentials.password,
                                                  client_ip)
        if not outcome.ok or not outcome.user:
            raise LoginRefused(blocked=outcome.blocked)
        return outcome.user

    def open_maildrop(self, user: str) -> Maildrop:
        try:
            return self.store.open_maildrop(user)
        except MailboxBusy as exc:
            raise MailboxInUse(user) from exc
        except StoreError as exc:
            event(log, logging.ERROR, "pop3-open-failed", user=user, error=str(exc))
            raise MaildropUnavailable(user) from exc
