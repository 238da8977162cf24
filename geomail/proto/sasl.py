"""SASL PLAIN (RFC 4616) and LOGIN exchanges for SMTP AUTH (RFC 4954) and POP3 AUTH (RFC 5034)."""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass

MECHANISMS = ("PLAIN", "LOGIN")
MAX_RESPONSE = 12288  # RFC 4954 4: an AUTH line may be up to 12288 octets


class SASLError(enum.Enum):
    """Why an exchange ended without credentials."""

    CANCELLED = "cancelled"  # the client sent "*"
    BAD_BASE64 = "bad base64"
    MALFORMED = "malformed"  # decoded, but not the mechanism's shape


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client claims: who it is and its password."""

    username: str
    password: str


def _decode(text: str) -> str | SASLError:
    if text.strip() == "*":
        return SASLError.CANCELLED
    if text.strip() == "=":  # RFC 4954 4: "=" is an empty initial response
        return ""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return SASLError.BAD_BASE64
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return SASLError.MALFORMED


class SASLExchange:
    """One AUTH exchange. ``start`` then ``step`` until it yields credentials or an error.

    Each call returns a challenge (text to send base64-encoded after ``334 ``/``+ ``), the
    ``Credentials``, or a ``SASLError``.
    """

    __slots__ = ("_mechanism", "_username")

    def __init__(self, mechanism: str) -> None:
        self._mechanism = mechanism.upper()
        self._username: str | None = None

    def start(self, initial: str | None) -> str | Credentials | SASLError:
        """Begin, with the optional initial response from the AUTH command line."""
        if initial is None:
            return "" if self._mechanism == "PLAIN" else "Username:"
        return self.step(initial)

    def step(self, response: str) -> str | Credentials | SASLError:
        """Take the client's next (base64) line."""
        decoded = _decode(response)
        if isinstance(decoded, SASLError):
            return decoded
        if self._mechanism == "PLAIN":
            return _parse_plain(decoded)
        if self._username is None:
            self._username = decoded
            return "Password:"
        return Credentials(self._username, decoded)


def _parse_plain(message: str) -> Credentials | SASLError:
    # RFC 4616 2: [authzid] NUL authcid NUL passwd; we only act as ourselves.
    parts = message.split("\0")
    if len(parts) != 3 or not parts[1]:
        return SASLError.MALFORMED
    authzid, authcid, password = parts
    if authzid and authzid.lower() != authcid.lower():
        return SASLError.MALFORMED
    return Credentials(authcid, password)


def encode_challenge(text: str) -> str:
    """A challenge as it goes on the wire (base64, empty for an empty challenge)."""
    return base64.b64encode(text.encode()).decode() if text else ""
