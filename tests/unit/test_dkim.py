"""geomail.dkim: signatures dkimpy verifies (RFC 6376 3.5, 3.6.1, 5.4; RFC 8301 key size)."""

from __future__ import annotations

import os
import stat

import dkim as dkimpy
import pytest

from geomail.config import DKIMConfig
from geomail.dkim import DKIMError, DKIMSigner, dns_txt_record, keygen, split_txt
from geomail.errors import ConfigError

MESSAGE = (b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: Hello\n"
           b"Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <1@example.com>\n"
           b"X-Other: not signed\n\nHi Bob,\n.leading dot\n\n\n")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = str(tmp_path_factory.mktemp("dkim") / "example.com.key")
    return path, keygen(path)


def verify(message: bytes, txt: str) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"geomail._domainkey.example.com."
        return txt.encode()
    return bool(dkimpy.verify(message, dnsfunc=dnsfunc))


def test_keygen_writes_private_key_and_returns_record(key: tuple[str, str]) -> None:
    """RFC 6376 3.6.1 / RFC 8301 3.2: a 2048-bit RSA key, private file mode 0600, and the
    'v=DKIM1; k=rsa; p=...' value to publish."""
    path, txt = key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert txt.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # SPKI of a 2048-bit key
    assert dns_txt_record(path) == txt
    with pytest.raises(FileExistsError):
        keygen(path)
    assert "".join(split_txt(txt)) == txt and all(len(s) <= 255 for s in split_txt(txt))


def test_sign_verifies_on_the_wire(key: tuple[str, str]) -> None:
    """RFC 6376 3.4.2/3.4.4 relaxed/relaxed, rsa-sha256: signed with LF, verified as sent (CRLF)."""
    path, txt = key
    signer = DKIMSigner(DKIMConfig("geomail", {"example.com": path}))
    header = signer.sign("example.com", MESSAGE)
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\n")
    assert b"\r" not in header
    assert b"a=rsa-sha256" in header and b"c=relaxed/relaxed" in header
    assert verify((header + MESSAGE).replace(b"\n", b"\r\n"), txt)
    assert verify(header + MESSAGE, txt)


def test_signed_headers_and_from_oversigned(key: tuple[str, str]) -> None:
    """RFC 6376 5.4 / 8.15: the important fields present are signed, From once more than it
    appears, so a second From cannot be added; other fields are left out."""
    path, txt = key
    signer = DKIMSigner(DKIMConfig("geomail", {"example.com": path}))
    header = signer.sign("example.com", MESSAGE)
    h_tag = b"".join(header.split()).split(b"h=")[1].split(b";")[0]
    names = h_tag.decode().split(":")
    assert names.count("from") == 2
    assert {"to", "subject", "date", "message-id"} <= set(names)
    assert "x-other" not in names
    forged = header + b"From: mallory@evil.example\n" + MESSAGE
    assert not verify(forged, txt)


def test_tampering_is_detected(key: tuple[str, str]) -> None:
    """RFC 6376 3.7: a changed body or signed header fails verification."""
    path, txt = key
    signer = DKIMSigner(DKIMConfig("geomail", {"example.com": path}))
    header = signer.sign("example.com", MESSAGE)
    assert not verify(header + MESSAGE.replace(b"Hi Bob", b"Hi Eve"), txt)
    assert not verify(header + MESSAGE.replace(b"Hello", b"Hullo"), txt)


def test_errors(key: tuple[str, str], tmp_path) -> None:
    """RFC 6376 5.4: From is required; unknown domains and unusable keys are reported."""
    path, _ = key
    signer = DKIMSigner(DKIMConfig("geomail", {"example.com": path}))
    assert signer.can_sign("EXAMPLE.com") and not signer.can_sign("other.org")
    with pytest.raises(DKIMError):
        signer.sign("other.org", MESSAGE)
    with pytest.raises(DKIMError):
        signer.sign("example.com", b"Subject: no from\n\nbody\n")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match=r"dkim\.keys\.example\.com"):
        DKIMSigner(DKIMConfig("geomail", {"example.com": str(bad)}))
    with pytest.raises(ConfigError):
        DKIMSigner(DKIMConfig("geomail", {"example.com": str(tmp_path / "missing.key")}))


def test_rsa_step_runs_in_openssl_with_dkimpys_result(key: tuple[str, str], monkeypatch) -> None:
    """RFC 8017 8.2.1 (RSASSA-PKCS1-v1_5, deterministic): for a key the signer loaded, the RSA
    step is OpenSSL's (which releases the GIL), and its signature is byte for byte the one
    dkimpy's own pure-Python RSA makes; a key loaded elsewhere still gets dkimpy's."""
    import hashlib

    from dkim.crypto import parse_pem_private_key

    from geomail import dkim as geomail_dkim

    path, _txt = key
    DKIMSigner(DKIMConfig("geomail", {"example.com": path}))
    with open(path, "rb") as handle:
        parsed = parse_pem_private_key(handle.read())
    digest = hashlib.sha256(b"canonicalized header fields")
    assert parsed["modulus"] in geomail_dkim._OPENSSL_KEYS
    assert dkimpy.RSASSA_PKCS1_v1_5_sign is geomail_dkim._rsa_sign
    openssl = geomail_dkim._rsa_sign(digest, parsed)
    assert openssl == geomail_dkim._dkimpy_rsa_sign(digest, parsed)
    monkeypatch.setattr(geomail_dkim, "_OPENSSL_KEYS", {})  # a key this module did not load
    assert geomail_dkim._rsa_sign(digest, parsed) == openssl
