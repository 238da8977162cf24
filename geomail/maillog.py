"""The operator's mail log: one method per event, each a stable ``key=value`` line.

Events: listening, connect, disconnect, refused, rejected, accepted, delivered, deferred, bounced,
tls-failed. docs/logging.md lists their fields; tests assert on them. Most also count in the
App's ``Metrics``.
"""

from __future__ import annotations

import logging

from geomail.log import event
from geomail.metrics import Metrics


class MailLog:
    """One App's mail log: writes to the ``geomail.mail`` logger and counts in ``metrics``.
    Without a registry (components built alone, in tests) it counts in one of its own."""

    def __init__(self, metrics: Metrics | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.log = logger or logging.getLogger("geomail.mail")

    def listening(self, kind: str, address: str) -> None:
        event(self.log, logging.INFO, "listening", service=kind, address=address)

    def connect(self, session: str, service: str, client: str) -> None:
        self.metrics.inc("geomail_connections_total", service=service)
        event(self.log, logging.INFO, "connect", session=session, service=service, client=client)

    def disconnect(self, session: str, client: str, reason: str = "quit",
                   messages: int | None = None) -> None:
        event(self.log, logging.INFO, "disconnect", session=session, client=client,
              reason=reason, messages=messages)

    def refused(self, service: str, client: str, reason: str, limit: str | None = None,
                network: str | None = None) -> None:
        """A connection turned away before any session (limits, shutdown); ``limit`` is the
        config key that was reached, ``network`` the client network counted when not the
        address itself."""
        self.metrics.inc("geomail_connections_refused_total", service=service, reason=reason)
        event(self.log, logging.WARNING, "refused", service=service, client=client,
              reason=reason, limit=limit, network=network)

    def rejected(self, session: str, client: str, stage: str, reply: str,
                 sender: str | None = None, recipient: str | None = None,
                 user: str | None = None) -> None:
        """A command refused for policy (unknown user, relay, size, a From not the user's...),
        not a syntax error; ``stage``: mail, rcpt or data (the message, after its end)."""
        self.metrics.inc("geomail_messages_rejected_total", stage=stage)
        event(self.log, logging.INFO, "rejected", session=session, client=client, stage=stage,
              from_=_path(sender), to=_path(recipient), reply=reply, user=user)

    def accepted(self, msgid: str, session: str, client: str, sender: str,
                 recipients: list[str], size: int, route: str, user: str | None = None) -> None:
        self.metrics.inc("geomail_messages_accepted_total", route=route)
        event(self.log, logging.INFO, "accepted", id=msgid, session=session, client=client,
              from_=_path(sender), to=",".join(recipients), size=size, route=route, user=user)

    def delivered(self, msgid: str, recipient: str, relay: str, reply: str | None = None,
                  attempts: int = 1, tls: str | None = None) -> None:
        self.metrics.inc("geomail_deliveries_total", result="delivered")
        event(self.log, logging.INFO, "delivered", id=msgid, to=recipient, relay=relay,
              attempts=attempts, tls=tls, reply=reply)

    def deferred(self, msgid: str, recipient: str, reason: str, attempts: int,
                 next_attempt: str) -> None:
        self.metrics.inc("geomail_deliveries_total", result="deferred")
        event(self.log, logging.WARNING, "deferred", id=msgid, to=recipient, attempts=attempts,
              next=next_attempt, reason=reason)

    def bounced(self, msgid: str, recipient: str, reason: str, dsn_to: str | None) -> None:
        self.metrics.inc("geomail_deliveries_total", result="bounced")
        event(self.log, logging.WARNING, "bounced", id=msgid, to=recipient, reason=reason,
              dsn_to=_path(dsn_to) if dsn_to is not None else "none")

    def tls_failed(self, service: str, client: str, reason: str) -> None:
        """A server-side TLS handshake failed (plaintext on 465/995, old clients, timeouts)."""
        self.metrics.inc("geomail_tls_handshakes_total", result="failed")
        event(self.log, logging.INFO, "tls-failed", service=service, client=client,
              reason=reason)

    def tls_ok(self, service: str) -> None:
        """A server-side TLS handshake completed (counted, not logged: the connect line
        suffices)."""
        self.metrics.inc("geomail_tls_handshakes_total", result="ok")


def _path(address: str | None) -> str | None:
    return None if address is None else f"<{address}>"
