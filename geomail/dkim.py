"""DKIM (RFC 6376): signing mail with dkimpy, key generation, the DNS record to publish."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from typing import Any, cast

import dkim as dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

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


class DKIMError(GeomailError):
    """A message could not be signed (malformed header section) or a key is unusable."""


# dkimpy builds, canonicalizes and hashes; its RSA step, though, is pure Python: two ~4 ms
# big-integer powers that hold the GIL, so a signature stalls the hub even from the threadpool
# (100 signatures in 4 threads: the hub got a turn every 16 ms instead of every 0.5 ms).
# For the keys loaded here that one step is done by OpenSSL through `cryptography`, which
# releases the GIL; anything else still goes to dkimpy's own function.
_OPENSSL_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # modulus -> key
_PREHASHED = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}
_dkimpy_rsa_sign = dkimpy.RSASSA_PKCS1_v1_5_sign


def _rsa_sign(digest: Any, private_key: Mapping[str, int]) -> bytes:
    """``dkim.RSASSA_PKCS1_v1_5_sign`` (RFC 8017 8.2.1), the same result, off the GIL."""
    key = _OPENSSL_KEYS.get(private_key["modulus"])
    algorithm = _PREHASHED.get(digest.name.lower())
    if key is None or algorithm is None:
        return cast(bytes, _dkimpy_rsa_sign(digest, private_key))
    return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(algorithm))


dkimpy.RSASSA_PKCS1_v1_5_sign = _rsa_sign


class DKIMSigner:
    """Signs messages of the local domains with their keys (rsa-sha256, relaxed/relaxed).

    Keys are read and checked once, when the signer is built (at start-up or reload).
    """

    def __init__(self, config: DKIMConfig) -> None:
        self.selector = config.selector
        self._keys: dict[str, bytes] = {}
        cache: dict[str, bytes] = {}
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

    def sign(self, domain: str, message: bytes) -> bytes:
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
            signature: bytes = dkimpy.sign(
                message, self.selector.encode("ascii"), domain.encode("ascii"), key,
                canonicalize=(b"relaxed", b"relaxed"), include_headers=[
                    h.encode("ascii") for h in include], linesep=b"\n")
        except dkimpy.DKIMException as exc:
            raise DKIMError(f"cannot sign for {domain}: {exc}") from exc
        return signature


def _load_key(path: str, key_path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            pem = handle.read()
        parse_pem_private_key(pem)  # what dkimpy will read it as
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA key")
        _OPENSSL_KEYS[key.private_numbers().public_numbers.n] = key
    except OSError as exc:
        raise ConfigError(f"{key_path}: cannot read {path}: {exc.strerror}") from exc
    except (UnparsableKeyError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{key_path}: {path} is not a PEM RSA private key") from exc
    return pem


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
