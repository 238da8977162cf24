"""The operator's mail log: one function per event, each a stable ``key=value`` line.

Events: listening, connect, disconnect, refused, rejected, accepted, delivered, deferred, bounced,
expired. docs/logging.md lists their fields; tests assert on them.
"""

from __future__ import annotations

import logging

from geomail.log import event

log = logging.getLogger("geomail.mail")


def listening(kind: str, address: str) -> None:
    event(log, logging.INFO, "listening", service=kind, address=address)


def connect(session: str, service: str, client: str) -> None:
    event(log, logging.INFO, "connect", session=session, service=service, client=client)


def disconnect(session: str, client: str, reason: str = "quit",
               messages: int | None = None) -> None:
    event(log, logging.INFO, "disconnect", session=session, client=client, reason=reason,
          messages=messages)


def refused(service: str, client: str, reason: str) -> None:
    """A connection turned away before any session (limits, TLS failure)."""
    event(log, logging.WARNING, "refused", service=service, client=client, reason=reason)


def rejected(session: str, client: str, stage: str, reply: str, sender: str | None = None,
             recipient: str | None = None) -> None:
    """A command refused for policy (unknown user, relay, size...), not a syntax error."""
    event(log, logging.INFO, "rejected", session=session, client=client, stage=stage,
          from_=_path(sender), to=_path(recipient), reply=reply)


def accepted(msgid: str, session: str, client: str, sender: str, recipients: list[str],
             size: int, route: str, user: str | None = None) -> None:
    event(log, logging.INFO, "accepted", id=msgid, session=session, client=client,
          from_=_path(sender), to=",".join(recipients), size=size, route=route, user=user)


def delivered(msgid: str, recipient: str, relay: str, reply: str = "", attempts: int = 1,
              tls: str | None = None) -> None:
    event(log, logging.INFO, "delivered", id=msgid, to=recipient, relay=relay,
          attempts=attempts, tls=tls, reply=reply)


def deferred(msgid: str, recipient: str, reason: str, attempts: int, next_attempt: str) -> None:
    event(log, logging.WARNING, "deferred", id=msgid, to=recipient, attempts=attempts,
          next=next_attempt, reason=reason)


def bounced(msgid: str, recipient: str, reason: str, dsn_to: str | None) -> None:
    event(log, logging.WARNING, "bounced", id=msgid, to=recipient, reason=reason,
          dsn_to=_path(dsn_to) if dsn_to is not None else "none")


def _path(address: str | None) -> str | None:
    return None if address is None else f"<{address}>"
