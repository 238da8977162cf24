"""DKIM (RFC 6376): signing mail, key generation, the DNS record to publish."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Sequence

import dkim as dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from geomail.config import DKIMConfig
from geomail.errors import ConfigError, GeomailError
from geomail.safeio import write_atomic

# RFC 6376 5.4.1: the fields worth protecting, when present.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version",
    "content-type", "content-transfer-encoding", "content-id", "content-description",
    "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe",
    "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive",
)
_HEADER_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+):", re.MULTILINE)
_FIELD = b"DKIM-Signature"
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


class DKIMError(GeomailError):
    """A message could not be signed (malformed header section) or a key is unusable."""


def dkim_signature(message: bytes, selector: bytes, domain: bytes, key: rsa.RSAPrivateKey,
                   include: Sequence[bytes], now: int | None = None) -> bytes:
    """The ``DKIM-Signature:`` field (LF line endings) for ``message``, rsa-sha256 and
    relaxed/relaxed (RFC 6376 3.4.2, 3.4.4, 3.5), signing the fields named in ``include``
    (lowercase) at time ``now`` (default: the clock).

    Byte for byte what ``dkim.sign(message, selector, domain, <key's PEM>, canonicalize=(relaxed,
    relaxed), include_headers=include, linesep=b"\\n")`` returns (tests/unit/test_dkim.py checks
    it): the same tags in the same order, parsed, canonicalized, hashed and folded by dkimpy's
    own functions. Only the RSA step (RFC 8017 8.2.1) differs: OpenSSL's, through
    ``cryptography``, which releases the GIL, where dkimpy's two pure-Python big-integer
    powers held it and stalled the hub even from the threadpool. dkimpy's module is not patched.
    Raises ``dkim.DKIMException`` for a malformed header section."""
    headers, body = dkimpy.rfc822_parse(message)
    body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
    fields = [
        (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", _RELAXED.to_c_value()), (b"d", domain),
        (b"i", b"@" + domain), (b"q", b"dns/txt"), (b"s", selector),
        (b"t", str(int(time.time()) if now is None else now).encode("ascii")),
        (b"h", b" : ".join(include)), (b"bh", body_hash),
        (b"b", b"0" * 60),  # as dkimpy: a placeholder long enough to fold b= onto its own line
    ]
    # RFC 6376 3.7: the signed fields, then this field with an empty b= and no final CRLF.
    unsigned = dkimpy.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_FIELD))
    hasher = hashlib.sha256()
    dkimpy.hash_headers(hasher, _RELAXED, _RELAXED.canonicalize_headers(headers), list(include),
                        (_FIELD, b" " + unsigned), dict(fields))
    signature = key.sign(hasher.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    fields[-1] = (b"b", base64.b64encode(signature))
    value = b"; ".join(b"=".join(f) for f in fields) + b"\n"
    folded: bytes = dkimpy.fold(value, namelen=len(_FIELD), linesep=b"\n")
    return _FIELD + b": " + folded


class DKIMSigner:
    """Signs messages of the local domains with their keys (rsa-sha256, relaxed/relaxed).

    Keys are read and checked once, when the signer is built (at start-up or reload).
    """

    def __init__(self, config: DKIMConfig) -> None:
        self.selector = config.selector
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        cache: dict[str, rsa.RSAPrivateKey] = {}
        for domain, path in config.keys.items():
            if path not in cache:
                cache[path] = _load_key(path, f"dkim.keys.{domain}")
            self._keys[domain.lower()] = cache[path]

    @property
    def domains(self) -> frozenset[str]:
        """The domains this signer has a key for."""
        return frozenset(self._keys)

    def can_sign(self, domain: str) -> bool:
        """True when ``domain`` has a key."""
        return domain.lower().rstrip(".") in self._keys

    def sign(self, domain: str, message: bytes, now: int | None = None) -> bytes:
        """The ``DKIM-Signature:`` header field for ``message`` (LF or CRLF line endings), with
        LF line endings, to put in front of it. CPU-bound and proportional to the message size:
        blocking, so call it in the threadpool (``safeio.run_blocking``). Raises ``DKIMError``
        (no key for ``domain``, or a malformed header section)."""
        domain = domain.lower().rstrip(".")
        key = self._keys.get(domain)
        if key is None:
            raise DKIMError(f"no DKIM key for {domain}")
        header_end = message.find(b"\n\n")
        if header_end < 0:
            header_end = message.find(b"\r\n\r\n")
        head = message if header_end < 0 else message[:header_end]
        present = {m.group(1).decode("ascii").lower() for m in _HEADER_NAME.finditer(head)}
        include = [h for h in SIGNED_HEADERS if h in present]
        if "from" not in include:
            raise DKIMError("the message has no From header field (RFC 6376 5.4)")
        include.append("from")  # signed once more than present: no From can be added later
        try:
            return dkim_signature(message, self.selector.encode("ascii"), domain.encode("ascii"),
                                  key, [h.encode("ascii") for h in include], now)
        except dkimpy.DKIMException as exc:
            raise DKIMError(f"cannot sign for {domain}: {exc}") from exc


def _load_key(path: str, key_path: str) -> rsa.RSAPrivateKey:
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA key")
    except OSError as exc:
        raise ConfigError(f"{key_path}: cannot read {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{key_path}: {path} is not a PEM RSA private key") from exc
    return key


# ---------------------------------------------------------------------- keys and DNS


def dns_txt_record(key_path: str) -> str:
    """The TXT value to publish at ``<selector>._domainkey.<domain>`` for the key in
    ``key_path``: ``v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>`` (RFC 6376 3.6.1)."""
    with open(key_path, "rb") as handle:
        try:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        except (ValueError, TypeError) as exc:
            raise DKIMError(f"{key_path} is not a PEM RSA private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DKIMError(f"{key_path} is not an RSA key (geomail signs with rsa-sha256)")
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"


def split_txt(value: str, size: int = 255) -> list[str]:
    """``value`` as the character-strings of one TXT record (at most 255 octets each)."""
    return [value[i:i + size] for i in range(0, len(value), size)] or [""]


def keygen(path: str, bits: int = 2048, overwrite: bool = False) -> str:
    """Write a new RSA private key (PKCS#1 PEM, mode 0600) to ``path``; return the TXT value to
    publish. RFC 8301 3.2: at least 1024 bits, 2048 recommended."""
    if bits < 1024:
        raise ValueError("bits must be at least 1024 (RFC 8301 3.2; 2048 recommended)")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; remove it first to make a new key")
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    write_atomic(path, pem, mode=0o600)
    return dns_txt_record(path)
