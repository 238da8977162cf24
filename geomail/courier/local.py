"""Local delivery of queued mail: into the message store, one copy per local mailbox."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from geomail.delivery import Attempt, DeliveryError, Outcome, Outcomes
from geomail.envelope import Body, MessageDSN
from geomail.errors import StoreError
from geomail.log import event
from geomail.store.base import Copy, MessageStore

log = logging.getLogger(__name__)


def delivery_prefix(sender: str, mailbox: str) -> bytes:
    """The ``Return-Path:`` (RFC 5321 4.4) and ``Delivered-To:`` lines put before a local copy."""
    return f"Return-Path: <{sender}>\nDelivered-To: {mailbox}\n".encode()


class LocalCourier:
    """Delivers to local mailboxes (``delivery.Courier``); recipients are canonical mailbox
    addresses. The store writes every copy or none, so a failure defers all recipients of
    the call: a store problem (disk full, permissions) is the operator's to fix, not a bounce."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store

    def deliver(self, sender: str, recipients: Sequence[str], body: Body,
                dsn: MessageDSN | None = None, *, tls_report: bool = False) -> Outcomes:
        """Store one copy per recipient; each recipient's outcome. The DSN request is ours
        to honour (the queue reports ``delivered``, RFC 3461 6.2), nothing to pass on."""
        mailboxes = list(dict.fromkeys(recipients))
        copies = [Copy(m, delivery_prefix(sender, m)) for m in mailboxes]
        error: DeliveryError | None = None
        try:
            self.store.deliver(copies, body)
        except StoreError as exc:
            event(log, logging.WARNING, "local-delivery-failed", to=",".join(mailboxes),
                  error=str(exc))
            error = DeliveryError(f"mailbox unavailable: {exc}", False, 451, "4.2.0")
        except Exception:  # a bug in the store: keep the mail and retry later
            event(log, logging.ERROR, "internal-error", exc_info=True,
                  where="local-delivery", to=",".join(mailboxes))
            error = DeliveryError("internal error during local delivery", False, 451, "4.3.0")
        outcomes = {mailbox: Outcome(error, Attempt(None, None)) for mailbox in mailboxes}
        if error is None:
            event(log, logging.DEBUG, "local-delivered", to=",".join(mailboxes))
        return outcomes
