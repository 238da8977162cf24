"""What geomail adds to mail its own users send: Date and Message-ID when missing (RFC 6409 8.2,
8.3) and a DKIM signature for the local domains (RFC 6376)."""

from __future__ import annotations

import email.errors
import email.policy
import email.utils
import logging
import re
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser

from geomail.address import domain_of, normalize_domain
from geomail.dkim import DKIMError, DKIMSigner
from geomail.log import event
from geomail.safeio import run_blocking
from geomail.spool import Spool
from geomail.units import KiB

log = logging.getLogger(__name__)

HEADER_SCAN = 256 * KiB  # a header section longer than this is not looked at


def header_section(body: Spool) -> bytes:
    """The message's header section (up to the blank line), from memory or the spool file."""
    data = body.getvalue()[:HEADER_SCAN] if body.in_memory else run_blocking(_first_chunk, body)
    end = data.find(b"\n\n")
    return data if end < 0 else data[: end + 1]


def _first_chunk(body: Spool) -> bytes:
    """The first HEADER_SCAN octets of a spooled body, without reading the rest."""
    return next(iter(body.chunks(HEADER_SCAN)), b"")


def parse_header(head: bytes) -> Message:
    """The header section as the stdlib parses it (once per message, for the fields below)."""
    return BytesHeaderParser().parsebytes(head)


def missing_fields(parsed: Message, hostname: str) -> bytes:
    """``Date:`` and ``Message-ID:`` lines for a message whose header lacks them (RFC 6409 8)."""
    added = b""
    if parsed.get("Date") is None:
        added += f"Date: {email.utils.formatdate(localtime=True)}\n".encode()
    if parsed.get("Message-ID") is None:
        added += f"Message-ID: {email.utils.make_msgid(domain=hostname)}\n".encode()
    return added


_FOLD = re.compile(r"\r?\n")
_AUTHOR_FIELDS = ("From", "Sender")


def author_addresses(head: bytes) -> list[str] | None:
    """Every address in the From and Sender fields (RFC 5322 3.6.2: the authors, and the one
    who sent it for them), as written: ``local@domain``, or a bare local part. None when a field
    is malformed: Python's two address parsers (``email.headerregistry`` and
    ``email.utils.getaddresses``) must find the same addresses, so that no reader can be shown
    another address than the one checked. No field at all: []."""
    parsed = HeaderParser().parsestr(head.decode("utf-8", "replace"))
    found: list[str] = []
    for name in _AUTHOR_FIELDS:
        for raw in parsed.get_all(name, []):
            value = _FOLD.sub("", str(raw))
            try:
                field = email.policy.default.header_factory(name, value)
                registry = [address.addr_spec for address in field.addresses]
            except (email.errors.MessageError, ValueError, IndexError, TypeError):
                return None
            plain = [address for _, address in email.utils.getaddresses([value]) if address]
            if any(isinstance(d, email.errors.NonPrintableDefect) for d in field.defects) or \
                    sorted(registry) != sorted(plain):
                return None
            found += registry
    return found


def signing_domain(parsed: Message, sender: str, signer: DKIMSigner) -> str | None:
    """The domain to sign for: the From header's (DMARC alignment), else the envelope sender's,
    when geomail has a key for it."""
    _, from_address = email.utils.parseaddr(str(parsed.get("From", "")))
    for candidate in map(_a_labels, (domain_of(from_address), domain_of(sender))):
        if candidate and signer.can_sign(candidate):
            return candidate
    return None


def _a_labels(domain: str) -> str:
    """``domain`` as the config keys DKIM keys (A-labels); "" when it is not a valid name."""
    try:
        return normalize_domain(domain) if domain else ""
    except ValueError:
        return ""


def dkim_signature(signer: DKIMSigner, domain: str, added: bytes, body: Spool) -> bytes:
    """The ``DKIM-Signature:`` field for ``added`` + ``body`` (computed in the threadpool);
    empty when the message cannot be signed (it is then sent unsigned, and logged)."""
    def sign() -> bytes:
        return signer.sign(domain, b"".join([added, *body.chunks()]))  # one copy, not two

    try:
        return run_blocking(sign)
    except DKIMError as exc:
        event(log, logging.WARNING, "dkim-not-signed", domain=domain, reason=str(exc))
        return b""
