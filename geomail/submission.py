"""What geomail adds to mail its own users send: Date and Message-ID when missing (RFC 6409 8.2,
8.3) and a DKIM signature for the local domains (RFC 6376)."""

from __future__ import annotations

import email.utils
import logging
from email.parser import BytesHeaderParser

from geomail.dkim import DKIMError, DKIMSigner
from geomail.envelope import domain_of
from geomail.safeio import run_blocking
from geomail.spool import Spool

log = logging.getLogger(__name__)

HEADER_SCAN = 256 * 1024  # a header section longer than this is not looked at


def header_section(body: Spool) -> bytes:
    """The message's header section (up to the blank line), from memory or the spool file."""
    data = body.getvalue()[:HEADER_SCAN] if body.in_memory else run_blocking(_first_chunk, body)
    end = data.find(b"\n\n")
    return data if end < 0 else data[: end + 1]


def _first_chunk(body: Spool) -> bytes:
    """The first HEADER_SCAN octets of a spooled body, without reading the rest."""
    return next(iter(body.chunks(HEADER_SCAN)), b"")


def missing_fields(head: bytes, hostname: str) -> bytes:
    """``Date:`` and ``Message-ID:`` lines for a message whose header lacks them (RFC 6409 8)."""
    parsed = BytesHeaderParser().parsebytes(head)
    added = b""
    if parsed.get("Date") is None:
        added += f"Date: {email.utils.formatdate(localtime=True)}\n".encode()
    if parsed.get("Message-ID") is None:
        added += f"Message-ID: {email.utils.make_msgid(domain=hostname)}\n".encode()
    return added


def signing_domain(head: bytes, sender: str, signer: DKIMSigner) -> str | None:
    """The domain to sign for: the From header's (DMARC alignment), else the envelope sender's,
    when geomail has a key for it."""
    parsed = BytesHeaderParser().parsebytes(head)
    _, from_address = email.utils.parseaddr(str(parsed.get("From", "")))
    for candidate in (domain_of(from_address), domain_of(sender)):
        if candidate and signer.can_sign(candidate):
            return candidate
    return None


def dkim_signature(signer: DKIMSigner, domain: str, added: bytes, body: Spool) -> bytes:
    """The ``DKIM-Signature:`` field for ``added`` + ``body`` (computed in the threadpool);
    empty when the message cannot be signed (it is then sent unsigned, and logged)."""
    def sign() -> bytes:
        return signer.sign(domain, added + b"".join(body.chunks()))

    try:
        return run_blocking(sign)
    except DKIMError as exc:
        log.warning("dkim-not-signed domain=%s reason=%r", domain, str(exc))
        return b""
