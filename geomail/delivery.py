"""What the queue knows of couriers: the Courier protocol and the DeliveryError they raise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from geomail.envelope import Body, MessageDSN
from geomail.errors import GeomailError


class DeliveryError(GeomailError):
    """A delivery attempt failed; ``permanent`` failures bounce, the others are retried."""

    def __init__(self, message: str, permanent: bool, code: int | None = None,
                 enhanced: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code or (550 if permanent else 451)
        self.enhanced = enhanced or ("5.0.0" if permanent else "4.0.0")

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.message}"


class Courier(Protocol):
    """Delivers one message to some recipients (all in one domain, or all local)."""

    def deliver(self, sender: str, recipients: Sequence[str], body: Body,
                dsn: MessageDSN | None = None, *, tls_report: bool = False) -> Outcomes:
        """Try once; return each recipient's ``Outcome``. Cooperative (blocks the calling
        greenlet only). Raises nothing but bugs: failures are DeliveryErrors in the outcomes.
        ``dsn`` is the message's DSN request, to pass on where the next hop offers DSN;
        ``tls_report``: the message is a TLS report (RFC 8460 5.3: sent despite TLS failures).
        The queue passes both only when set."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """Where one recipient's delivery attempt went: for the queue's records and DSN Remote-MTA."""

    remote_mta: str | None = None  # "mx.example.org [192.0.2.1]:25"
    tls: str | None = None  # "TLSv1.3", "TLSv1.3 verified", "none"; None when not SMTP
    dsn: bool = False  # NOTIFY/ORCPT were passed on to a next hop offering DSN (RFC 3461 5.2)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recipient's result of a delivery attempt: ``error`` None means delivered;
    ``attempt`` is where it went (None when it never got as far as a host)."""

    error: DeliveryError | None
    attempt: Attempt | None = None


Outcomes: TypeAlias = dict[str, Outcome]
"""A courier's answer: recipient -> ``Outcome``."""
