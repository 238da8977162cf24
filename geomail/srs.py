"""The Sender Rewriting Scheme (SRS) for mail an alias forwards to another domain.

The scheme is Shevek's ("Sender Rewriting Scheme", libsrs2 and its documentation, which the
Postfix companion postsrsd follows); SPF (RFC 7208 section 1.2, "forwarding") is why it is
needed. A forwarder sends the copy with an envelope sender (RFC 5321 4.1.1.2, 3.9.1) of its own
domain, so the receiver's SPF check passes and a bounce comes back to us:

    SRS0=HHHH=TT=origin.example=alice@forwarder.example
    SRS1=HHHH=first.example==HHHH=TT=origin.example=alice@forwarder.example

``HHHH``: the first 4 characters of base64(HMAC-SHA1(key, lower-cased fields)), compared
case-insensitively (some MTAs change the case of local parts); ``TT``: the day number modulo
1024 in base32 (10 bits, wrapping about every 2.8 years), accepted for ``max_age`` days. An
SRS0 address forwarded again becomes SRS1 (pointing back at the first forwarder, not at us);
reversal gives the original sender (SRS0) or the first forwarder's SRS0 address (SRS1).

No I/O except ``load_keys``, which reads (or has written) the key file at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Sequence

HASH_LENGTH = 4
DAY = 86400
SLOTS = 1024  # 2 base32 characters
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SEPARATORS = "=+-"  # accepted after the tag on reversal (libsrs2 does the same)
MAX_ADDRESS = 1000  # longer input is refused unparsed
KEY_FILE = "srs.key"


class SRSError(ValueError):
    """An address that is not a valid SRS address of ours."""


class Forged(SRSError):
    """Malformed, or the hash does not match any of our keys."""


class Expired(SRSError):
    """The hash is right but the timestamp is older than ``max_age`` days (or in the future)."""


def is_srs(address: str) -> bool:
    """Does the local part of ``address`` look like SRS0/SRS1 (any case)?"""
    head = address[:5].upper()
    return len(head) == 5 and head[:4] in ("SRS0", "SRS1") and head[4] in SEPARATORS


class SRS:
    """Forward and reverse addresses with ``keys`` (the first signs, all verify) at ``domain``."""

    def __init__(self, keys: Sequence[bytes], domain: str, max_age: int = 21,
                 clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("SRS needs at least one key")
        self.keys = tuple(keys)
        self.domain = domain
        self.max_age = max_age
        self._clock = clock

    def forward(self, sender: str) -> str:
        """The SRS address of ``sender`` at our domain (SRS1 for an SRS address of others)."""
        local, at, domain = sender.rpartition("@")
        if not at or not local or not domain:
            raise SRSError(f"not an address: {sender!r}")
        if is_srs(local) and local[:4].upper() == "SRS1":
            host, sep, rest = local[5:].partition("==")  # SRS1=HHHH=host==rest: keep host, rest
            host = host.partition("=")[2]
            if not sep or not host:
                raise SRSError(f"malformed SRS1 address: {sender!r}")
            rest = "=" + rest
        elif is_srs(local):  # SRS0 of another forwarder: point back at it
            host, rest = domain, "=" + local[5:]
        else:
            stamp = self._stamp(self._today())
            digest = self._hash(self.keys[0], stamp, domain, local)
            return f"SRS0={digest}={stamp}={domain}={local}@{self.domain}"
        return f"SRS1={self._hash(self.keys[0], host, rest)}={host}={rest}@{self.domain}"

    def reverse(self, address: str) -> str:
        """The address ``address`` (SRS0 or SRS1, at any of our domains) stands for; raises
        ``Forged`` or ``Expired``."""
        if len(address) > MAX_ADDRESS:
            raise Forged("address too long")
        local = address.rpartition("@")[0] or address
        if not is_srs(local):
            raise Forged("not an SRS address")
        tag, body = local[:4].upper(), local[5:]
        if tag == "SRS1":
            digest, _, tail = body.partition("=")
            host, sep, rest = tail.partition("==")
            if not sep or not host or not rest:
                raise Forged("malformed SRS1 address")
            self._check(digest, host, "=" + rest)
            return f"SRS0={rest}@{host}"
        parts = body.split("=", 3)
        if len(parts) != 4 or not all(parts):
            raise Forged("malformed SRS0 address")
        digest, stamp, domain, original = parts
        self._check(digest, stamp, domain, original)
        self._check_stamp(stamp)
        return f"{original}@{domain}"

    def _check(self, digest: str, *fields: str) -> None:
        if len(digest) != HASH_LENGTH:
            raise Forged("bad hash")
        given = digest.lower().encode("utf-8", "surrogateescape")
        for key in self.keys:  # every key compared: no early exit on which one matched
            good = self._hash(key, *fields).lower().encode()
            if hmac.compare_digest(given, good):
                return
        raise Forged("bad hash")

    def _check_stamp(self, stamp: str) -> None:
        stamp = stamp.upper()
        if len(stamp) != 2 or any(c not in B32 for c in stamp):
            raise Forged("bad timestamp")
        then = B32.index(stamp[0]) * 32 + B32.index(stamp[1])
        now = self._today() % SLOTS
        age = (now - then) % SLOTS  # the 10-bit wrap: a stamp "after" today is from long ago
        if age > self.max_age:
            raise Expired(f"timestamp {age} days old (max_age {self.max_age})")

    def _today(self) -> int:
        return int(self._clock() // DAY)

    @staticmethod
    def _stamp(day: int) -> str:
        day %= SLOTS
        return B32[day >> 5] + B32[day & 31]

    @staticmethod
    def _hash(key: bytes, *fields: str) -> str:
        mac = hmac.new(key, digestmod=hashlib.sha1)
        for field in fields:  # lower-cased as libsrs2 does: the hash survives case changes
            mac.update(field.encode("utf-8", "surrogateescape").lower())
        return base64.b64encode(mac.digest()).decode()[:HASH_LENGTH]


def load_keys(data_dir: str, write: Callable[[str, bytes], object]) -> list[bytes]:
    """The keys in ``data_dir/srs.key`` (one hex key per line; the first signs, all verify),
    made with 32 random bytes when the file does not exist and stored by ``write`` (the App
    passes ``safeio.write_atomic``: mode 0600, durable)."""
    path = os.path.join(data_dir, KEY_FILE)
    try:
        with open(path, encoding="ascii") as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        write(path, key.hex().encode() + b"\n")
        return [key]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the SRS key: {exc}") from exc
    try:
        keys = [bytes.fromhex(line) for line in lines]
    except ValueError:
        raise ValueError(f"{path}: an SRS key is not hex") from None
    if not keys or any(len(k) < 16 for k in keys):
        raise ValueError(f"{path}: no SRS key, or one shorter than 16 bytes")
    return keys
