"""Certificate lineages on disk: ``data_dir/acme/<lineage>/{cert.pem,key.pem}``, written durably.

Blocking functions (file I/O, key generation): call them through a thread from the hub.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from geomail.safeio import fsync_dir, write_atomic

MAIL_LINEAGE = "mail"
WEB_LINEAGE = "web"
WEB_PREFIXES = ("mta-sts", "autoconfig", "autodiscover")


def acme_dir(data_dir: str) -> str:
    """Where the account and the lineages live."""
    return os.path.join(data_dir, "acme")


def lineage_paths(data_dir: str, lineage: str) -> tuple[str, str]:
    """``(cert.pem, key.pem)`` of ``lineage``."""
    base = os.path.join(acme_dir(data_dir), lineage)
    return os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")


def lineage_names(hostname: str, domains: tuple[str, ...], web: bool) -> dict[str, list[str]]:
    """The names of each lineage: ``mail`` = the hostname (every mail listener); ``web`` = the
    MTA-STS and autoconfiguration names of every domain, only with a webs listener. Separate, so
    that a web name failing validation never holds up the mail certificate."""
    found = {MAIL_LINEAGE: [hostname]}
    if web:
        names = [f"{prefix}.{domain}" for domain in domains for prefix in WEB_PREFIXES]
        found[WEB_LINEAGE] = [n for n in dict.fromkeys(names) if n != hostname]
    return found


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the manager and ``geomail check`` need to know about a stored certificate."""

    not_before: float  # Unix time
    not_after: float
    serial: int
    issuer: str
    names: tuple[str, ...]
    self_signed: bool


def read_info(cert_path: str) -> CertInfo | None:
    """The leaf certificate of ``cert_path``, or None if missing or unreadable (blocking)."""
    try:
        with open(cert_path, "rb") as handle:
            data = handle.read(1 << 20)
        cert = x509.load_pem_x509_certificates(data)[0]
    except (OSError, ValueError, IndexError):
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(),
                    cert.serial_number, cert.issuer.rfc4514_string(), names,
                    cert.issuer == cert.subject)


def new_key_pem() -> bytes:
    """A fresh ECDSA P-256 private key (fast to make; every current client speaks ECDSA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def self_signed(names: list[str], days: int = 90) -> tuple[bytes, bytes]:
    """``(cert_pem, key_pem)``: a placeholder served until the CA's certificate arrives."""
    key_pem = new_key_pem()
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def save_lineage(data_dir: str, lineage: str, cert_pem: bytes, key_pem: bytes) -> None:
    """Write key then certificate durably (temp, fsync, rename, dir fsync; key mode 0600).

    The key goes first: a crash between the two renames leaves a new key with the old
    certificate, which fails to load, so the holder keeps serving what it has in memory and the
    manager, seeing an unloadable pair, orders again."""
    cert_path, key_path = lineage_paths(data_dir, lineage)
    directory = os.path.dirname(cert_path)
    ensure_dir(directory)
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, cert_pem, mode=0o644)


def ensure_dir(path: str) -> None:
    """Create ``path`` (and ``acme/``) mode 0700, fsyncing the parent of each new directory."""
    if os.path.isdir(path):
        return
    ensure_dir(os.path.dirname(path))
    os.mkdir(path, 0o700)
    fsync_dir(os.path.dirname(path))


def pair_loads(cert_path: str, key_path: str) -> bool:
    """True if the certificate and key exist and belong together (blocking)."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError):
        return False
    return True
