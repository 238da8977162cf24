"""geomail's use of dkimpy for verification (RFC 6376 6.1, RFC 8463): the names it replaces
in dkimpy's own code still exist, results equal dkimpy's own ``dkim.verify``, and results of
SPF/iprev/DMARC lookups are kept only for their time (``checks/ttlcache``)."""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from geomail.checks.dkim_verify import DKIMVerifier, Keys
from geomail.checks.ttlcache import TTLCache


def test_dkimpy_still_calls_the_names_the_verifier_replaces() -> None:
    """DKIMVerifier runs dkimpy's ``verify_sig``/``verify_sig_process`` with its own RSA step
    and key loader; if dkimpy stopped calling them by these names, the swap would silently do
    nothing (and the hub would pay dkimpy's pure-Python RSA again)."""
    assert "load_pk_from_dns" in dkim.DomainSigner.verify_sig.__code__.co_names
    assert "RSASSA_PKCS1_v1_5_verify" in dkim.DomainSigner.verify_sig_process.__code__.co_names


def _rsa() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_verdicts_equal_dkimpys_own() -> None:
    """RSA (RFC 6376 3.3.1) and Ed25519 (RFC 8463) signatures, intact and tampered: the
    verifier (OpenSSL's RSA) agrees with ``dkim.verify`` (dkimpy's) on every one."""
    pem, rsa_record = _rsa()
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = base64.b64encode(ed.private_bytes(serialization.Encoding.Raw,
                                             serialization.PrivateFormat.Raw,
                                             serialization.NoEncryption()))
    ed_record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    records = {b"r._domainkey.v.test": rsa_record, b"e._domainkey.v.test": ed_record}
    message = b"From: a@v.test\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    signed = (dkim.sign(message, b"r", b"v.test", pem)
              + dkim.sign(message, b"e", b"v.test", seed, signature_algorithm=b"ed25519-sha256")
              + message)

    def dns(name: bytes, timeout: float = 5) -> bytes:
        return records.get(name.rstrip(b"."), b"")

    def theirs(candidate: bytes, index: int) -> bool:
        try:
            return bool(dkim.DKIM(candidate).verify(idx=index, dnsfunc=dns))
        except dkim.DKIMException:  # dkimpy raises for a body hash mismatch
            return False

    verifier = DKIMVerifier()
    for candidate in (signed, signed.replace(b"body", b"bodx"),
                      signed.replace(b"Subject: x", b"Subject: y")):  # the RSA step decides
        ours = [r.result == "pass" for r in verifier.verify(candidate, Keys(records))[0]]
        assert ours == [theirs(candidate, 0), theirs(candidate, 1)]
    assert [r.result for r in verifier.verify(signed, Keys(records))[0]] == ["pass", "pass"]


def test_ttl_cache_forgets_after_its_time() -> None:
    """A result is reused within its TTL and never after (a changed record is seen again)."""
    now = [100.0]
    cache: TTLCache[str] = TTLCache(ttl=60, size=2, clock=lambda: now[0])
    cache.put("a", "pass")
    assert cache.get("a") == "pass"
    now[0] += 59.9
    assert cache.get("a") == "pass"
    now[0] += 0.2
    assert cache.get("a") is None
    cache.put("a", "x")
    cache.put("b", "y")
    cache.put("c", "z")  # over its size: starts afresh, bounded
    assert cache.get("a") is None and cache.get("c") == "z"


def test_warm_up_exercises_both_algorithms() -> None:
    """A verify worker's warm-up (before it gives up root) really verifies an RSA and an
    Ed25519 signature: every module those paths load is loaded then (RFC 8463)."""
    from geomail.checks.dkim_verify import warm_up

    results = warm_up(DKIMVerifier())
    assert [(r.result, r.algorithm) for r in results] == [("pass", "rsa-sha256"),
                                                         ("pass", "ed25519-sha256")]
