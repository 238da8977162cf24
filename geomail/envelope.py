"""The SMTP envelope of one transaction and the Body every part reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from geomail.units import KiB

CHUNK_SIZE = 256 * KiB  # what a Body yields at a time unless asked otherwise


@dataclass(frozen=True, slots=True)
class RecipientDSN:
    """A recipient's DSN request (RFC 3461 4.1, 4.2): NOTIFY and ORCPT, as given on RCPT."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or some of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # decoded "rfc822;bob@example.org"


@dataclass(frozen=True, slots=True)
class MessageDSN:
    """A message's DSN request as couriers pass it on (RFC 3461 4.3, 4.4, 5.2)."""

    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None  # decoded ENVID
    recipients: dict[str, RecipientDSN] = field(default_factory=dict)  # by final address


@dataclass(slots=True)
class Envelope:
    """Sender, recipients and parameters of one mail transaction (reset by RSET, EHLO, STARTTLS)."""

    sender: str | None = None  # "" is the null reverse-path <>; None: no MAIL yet
    recipients: list[str] = field(default_factory=list)
    declared_size: int | None = None  # MAIL FROM SIZE= (RFC 1870)
    body_type: str = "7BIT"  # MAIL FROM BODY= (RFC 6152): 7BIT or 8BITMIME
    smtputf8: bool = False  # MAIL FROM SMTPUTF8 (RFC 6531)
    ret: str | None = None  # MAIL FROM RET= (RFC 3461 4.3)
    envid: str | None = None  # MAIL FROM ENVID= (RFC 3461 4.4), decoded
    dsn: dict[str, RecipientDSN] = field(default_factory=dict)  # RCPT NOTIFY/ORCPT by address


class Body(Protocol):
    """A message body that stores and couriers can read (LF line endings)."""

    @property
    def size(self) -> int:
        """Octets as stored (LF line endings)."""

    @property
    def crlf_size(self) -> int:
        """Octets as transmitted (CRLF line endings): what SIZE and POP3 LIST count."""

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The content, in order (blocking: read it in the threadpool)."""
