"""geomail.dkim: signatures dkimpy verifies (RFC 6376 3.5, 3.6.1, 5.4; RFC 8301 key size)."""

from __future__ import annotations

import os
import stat
import sys
import types

import dkim as dkimpy
import pytest

from geomail.config import DKIMConfig
from geomail.dkim import (
    SIGNED_HEADERS,
    DKIMError,
    DKIMSigner,
    dns_txt_record,
    keygen,
    split_txt,
)
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


# Messages whose signing exercises dkimpy's parsing, canonicalization and folding: CRLF and LF,
# folded and repeated fields, trailing white space and empty lines, an empty body, a long h=.
SAMPLES = [
    MESSAGE,
    MESSAGE.replace(b"\n", b"\r\n"),
    b"Received: from a\nFrom:  Alice\n  <alice@example.com> \nTo: a@example.org,\n\tb@example.org\n"
    b"To: c@example.org\nSubject: folded\n =?utf-8?q?caf=C3=A9?=\n\nline  with   spaces  \n\n\n",
    b"From: alice@example.com\nSubject: no body\n\n",
    b"From: alice@example.com\n" + b"".join(f"{name}: v\n".encode() for name in SIGNED_HEADERS)
    + b"\n" + b"x" * 3000 + b"\n",
]


def tag(header: bytes, name: bytes) -> bytes:
    """The value of tag ``name`` in a DKIM-Signature field, white space removed."""
    value = b"".join(header.split(b":", 1)[1].split())
    return next(t.split(b"=", 1)[1] for t in value.split(b";") if t.split(b"=", 1)[0] == name)


@pytest.mark.parametrize("message", SAMPLES, ids=range(len(SAMPLES)))
def test_signature_is_dkimpys_byte_for_byte(key: tuple[str, str], message: bytes) -> None:
    """RFC 6376 3.5 / RFC 8017 8.2.1 (RSASSA-PKCS1-v1_5 is deterministic): for the same key, time
    and signed fields, the header is byte for byte the one dkimpy's own ``dkim.sign`` makes, and
    dkimpy's ``dkim.verify`` accepts it (no patching of dkimpy)."""
    path, txt = key
    signer = DKIMSigner(DKIMConfig("geomail", {"example.com": path}))
    include = tag(signer.sign("example.com", message), b"h").split(b":")
    with open(path, "rb") as handle:
        pem = handle.read()
    theirs = dkimpy.sign(message, b"geomail", b"example.com", pem,
                         canonicalize=(b"relaxed", b"relaxed"), include_headers=include,
                         linesep=b"\n")
    ours = signer.sign("example.com", message, now=int(tag(theirs, b"t")))
    assert ours == theirs
    assert verify(ours + message, txt)
    assert verify((ours + message).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), txt)


def test_dkimpy_module_is_not_patched(key: tuple[str, str]) -> None:
    """Signing leaves dkimpy's module as dkimpy made it (its RSA function
    included), so other users of dkimpy in the process and dkimpy's own updates are unaffected."""
    from dkim import crypto

    path, _txt = key
    DKIMSigner(DKIMConfig("geomail", {"example.com": path})).sign("example.com", MESSAGE)
    assert dkimpy.RSASSA_PKCS1_v1_5_sign is crypto.RSASSA_PKCS1_v1_5_sign
    foreign = [name for name, value in vars(dkimpy).items()
               if callable(value) and getattr(value, "__module__", "").startswith("geomail")]
    assert foreign == []


def test_rsa_step_runs_in_openssl(key: tuple[str, str]) -> None:
    """The RSA step is OpenSSL's (``cryptography``, which releases the GIL), never dkimpy's
    pure-Python big-integer powers that held it ~8 ms a signature and stalled the hub even from
    the threadpool (DESIGN rule 2): no function of ``dkim.crypto`` runs while signing."""
    path, txt = key
    signer = DKIMSigner(DKIMConfig("geomail", {"example.com": path}))
    called: list[str] = []

    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_globals.get("__name__") == "dkim.crypto":
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        header = signer.sign("example.com", MESSAGE)
    finally:
        sys.setprofile(None)
    assert called == []
    assert verify(header + MESSAGE, txt)
