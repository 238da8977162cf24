"""The DSN extension's MAIL and RCPT parameters (RFC 3461): xtext and the four keywords.

Pure functions: each returns the parsed value or raises ``DSNParamError`` whose text becomes
the ``501 5.5.4`` reply.
"""

from __future__ import annotations

import re

from geomail.proto.smtp_args import parse_mailbox

MAX_ENVID = 100  # RFC 3461 4.4: at most 100 characters (xtext, as sent)
MAX_ORCPT = 500  # RFC 3461 4.2: at most 500 characters (xtext, as sent)
NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")
_HEX = "0123456789ABCDEF"
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")  # RFC 3461 4: xchar | hexchar
_ADDR_TYPE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*)")  # RFC 3461 4.2: atom, in practice


class DSNParamError(ValueError):
    """A malformed DSN parameter; ``str(exc)`` is the reply text."""


def xtext_decode(text: str) -> str:
    """RFC 3461 4: ``+XX`` (upper-case hex) stands for one octet; '+' and '=' must be encoded,
    and only printable ASCII may appear. The result must be ASCII (UTF-8 for utf-8 ORCPTs)."""
    if not _XTEXT.fullmatch(text):
        raise DSNParamError("malformed xtext")
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "+":
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(text[i]))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DSNParamError("xtext is not valid UTF-8") from exc


def xtext_encode(text: str) -> str:
    """RFC 3461 4: every octet outside ``!``..``~``, and '+' and '=', as ``+XX``."""
    out = []
    for octet in text.encode("utf-8"):
        if 33 <= octet <= 126 and octet not in (0x2B, 0x3D):
            out.append(chr(octet))
        else:
            out.append("+" + _HEX[octet >> 4] + _HEX[octet & 15])
    return "".join(out)


def parse_ret(value: str | None) -> str:
    """RFC 3461 4.3: ``RET=FULL`` or ``RET=HDRS``."""
    if value is None or value.upper() not in ("FULL", "HDRS"):
        raise DSNParamError("RET must be FULL or HDRS")
    return value.upper()


def parse_envid(value: str | None) -> str:
    """RFC 3461 4.4: ``ENVID=xtext`` of at most 100 characters; returned decoded."""
    if not value:
        raise DSNParamError("ENVID needs a value")
    if len(value) > MAX_ENVID:
        raise DSNParamError(f"ENVID longer than {MAX_ENVID} characters")
    decoded = xtext_decode(value)
    if not decoded.isascii() or not decoded.isprintable():
        raise DSNParamError("ENVID must be printable ASCII")
    return decoded


def parse_notify(value: str | None) -> tuple[str, ...]:
    """RFC 3461 4.1: ``NEVER`` alone, or a comma list of SUCCESS, FAILURE, DELAY."""
    if not value:
        raise DSNParamError("NOTIFY needs a value")
    words = [w.upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return ("NEVER",)
    if "NEVER" in words:
        raise DSNParamError("NOTIFY=NEVER cannot be combined")
    if any(w not in NOTIFY_VALUES for w in words):
        raise DSNParamError("NOTIFY must be NEVER or SUCCESS, FAILURE, DELAY")
    if len(set(words)) != len(words):
        raise DSNParamError("NOTIFY lists a value twice")
    return tuple(w for w in NOTIFY_VALUES if w in words)


def parse_orcpt(value: str | None, smtputf8: bool) -> str:
    """RFC 3461 4.2: ``ORCPT=addr-type;xtext``; ``rfc822`` (and ``utf-8``, RFC 6533 3, when
    the transaction is SMTPUTF8). Returned decoded as ``type;address``, type lower-cased."""
    if not value or ";" not in value:
        raise DSNParamError("ORCPT must be addr-type;address")
    if len(value) > MAX_ORCPT:
        raise DSNParamError(f"ORCPT longer than {MAX_ORCPT} characters")
    addr_type, _, encoded = value.partition(";")
    kind = addr_type.lower()
    if not _ADDR_TYPE.fullmatch(addr_type):
        raise DSNParamError("ORCPT address type is malformed")
    if kind == "utf-8" and not smtputf8:
        raise DSNParamError("ORCPT utf-8 needs SMTPUTF8")
    if kind not in ("rfc822", "utf-8"):
        raise DSNParamError("ORCPT address type must be rfc822")
    address = xtext_decode(encoded)
    if not address or (kind == "rfc822" and not address.isascii()):
        raise DSNParamError("ORCPT address is malformed")
    try:
        parse_mailbox(address)
    except ValueError as exc:
        raise DSNParamError("ORCPT address is malformed") from exc
    return f"{kind};{address}"


def orcpt_param(orcpt: str) -> str:
    """The ``ORCPT=`` value to send on for a decoded ``type;address`` (RFC 3461 4.2)."""
    kind, _, address = orcpt.partition(";")
    return f"{kind};{xtext_encode(address)}"
