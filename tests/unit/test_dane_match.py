"""match_certificate: TLSA records against server chains made by trustme (RFC 6698, 7671, 7672)."""

from __future__ import annotations

import hashlib

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from geomail.courier.dane import TLSARecord, match_certificate, usable

MX = "mx.dane.test"


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def _spki(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def chain() -> list[bytes]:
    """leaf (mx.dane.test, *.wild.test), intermediate CA, root CA: DER, leaf first."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert(MX, "*.wild.test")
    return [_der(blob.bytes()) for blob in leaf.cert_chain_pems] + [_der(root.cert_pem.bytes())]


@pytest.fixture(scope="module")
def other_leaf() -> bytes:
    return _der(trustme.CA().issue_cert(MX).cert_chain_pems[0].bytes())


def test_ee_spki_sha256_matches(chain: list[bytes]) -> None:
    """RFC 7672 3.1.1: DANE-EE(3) SPKI(1) SHA2-256(1) matches the leaf's public key."""
    rec = TLSARecord(3, 1, 1, hashlib.sha256(_spki(chain[0])).digest())
    assert match_certificate([rec], chain, [MX]) is None


def test_ee_spki_sha256_not_matching(chain: list[bytes], other_leaf: bytes) -> None:
    """RFC 7672 3.1.1, RFC 6698 2.1: a 3 1 1 record of another key does not match."""
    rec = TLSARecord(3, 1, 1, hashlib.sha256(_spki(other_leaf)).digest())
    reason = match_certificate([rec], chain, [MX])
    assert reason is not None and "no TLSA record matches" in reason


def test_ee_ignores_names(chain: list[bytes]) -> None:
    """RFC 7672 3.1.1: with DANE-EE the certificate's names are not checked."""
    rec = TLSARecord(3, 1, 1, hashlib.sha256(_spki(chain[0])).digest())
    assert match_certificate([rec], chain, ["unrelated.example"]) is None


def test_ee_full_cert_sha256(chain: list[bytes]) -> None:
    """RFC 6698 2.1.2 selector 0: DANE-EE 3 0 1 over the full certificate."""
    assert match_certificate([TLSARecord(3, 0, 1, hashlib.sha256(chain[0]).digest())],
                             chain, [MX]) is None


def test_ee_spki_sha512(chain: list[bytes]) -> None:
    """RFC 6698 2.1.3 matching type 2 (SHA2-512): 3 1 2."""
    assert match_certificate([TLSARecord(3, 1, 2, hashlib.sha512(_spki(chain[0])).digest())],
                             chain, [MX]) is None


def test_ee_spki_exact(chain: list[bytes]) -> None:
    """RFC 6698 2.1.3 matching type 0 (exact): 3 1 0 holds the whole SPKI."""
    assert match_certificate([TLSARecord(3, 1, 0, _spki(chain[0]))], chain, [MX]) is None


def test_ee_does_not_match_issuer(chain: list[bytes]) -> None:
    """RFC 7672 3.1.1: DANE-EE is about the leaf only; the issuer's key does not do."""
    rec = TLSARecord(3, 1, 1, hashlib.sha256(_spki(chain[1])).digest())
    assert match_certificate([rec], chain, [MX]) is not None


def test_ta_intermediate_with_chain(chain: list[bytes]) -> None:
    """RFC 7672 3.1.2: DANE-TA(2) 2 0 1 on the intermediate; the chain verifies to the leaf,
    whose name is the MX host (RFC 7672 3.2.3)."""
    rec = TLSARecord(2, 0, 1, hashlib.sha256(chain[1]).digest())
    assert match_certificate([rec], chain, [MX]) is None


def test_ta_root_spki(chain: list[bytes]) -> None:
    """RFC 7672 3.1.2: DANE-TA 2 1 1 on the root's key, intermediate in between."""
    rec = TLSARecord(2, 1, 1, hashlib.sha256(_spki(chain[2])).digest())
    assert match_certificate([rec], chain, ["example.org", MX]) is None


def test_ta_wildcard_name(chain: list[bytes]) -> None:
    """RFC 7672 3.2.3, RFC 6125 6.4.3: a wildcard in the leaf's left-most label matches."""
    rec = TLSARecord(2, 0, 1, hashlib.sha256(chain[1]).digest())
    assert match_certificate([rec], chain, ["mx1.wild.test"]) is None
    assert match_certificate([rec], chain, ["a.b.wild.test"]) is not None


def test_ta_wrong_name(chain: list[bytes]) -> None:
    """RFC 7672 3.2.2: with DANE-TA the leaf must bear a reference name; here none."""
    rec = TLSARecord(2, 0, 1, hashlib.sha256(chain[1]).digest())
    reason = match_certificate([rec], chain, ["mx.other.test", "other.test"])
    assert reason is not None and "DANE-TA" in reason


def test_ta_not_in_chain(chain: list[bytes], other_leaf: bytes) -> None:
    """RFC 7672 3.1.2: a TA that is not in the presented chain does not match."""
    rec = TLSARecord(2, 0, 1, hashlib.sha256(other_leaf).digest())
    assert match_certificate([rec], chain, [MX]) is not None


def test_ta_broken_chain(chain: list[bytes]) -> None:
    """RFC 7672 3.1.2: the TA's certificate must actually sign its way down to the leaf."""
    stranger = _der(trustme.CA().cert_pem.bytes())
    rec = TLSARecord(2, 0, 1, hashlib.sha256(stranger).digest())
    assert match_certificate([rec], [chain[0], stranger], [MX]) is not None


def test_pkix_usages_unusable(chain: list[bytes]) -> None:
    """RFC 7672 3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP, even if they match."""
    spki_hash = hashlib.sha256(_spki(chain[0])).digest()
    records = [TLSARecord(0, 1, 1, hashlib.sha256(_spki(chain[2])).digest()),
               TLSARecord(1, 1, 1, spki_hash)]
    assert not any(usable(r) for r in records)
    assert match_certificate(records, chain, [MX]) is not None


def test_malformed_records_unusable() -> None:
    """RFC 7671 5.3 / RFC 7672 3.1.3: unknown selectors, matching types or digest lengths."""
    assert not usable(TLSARecord(3, 2, 1, b"\0" * 32))
    assert not usable(TLSARecord(3, 1, 3, b"\0" * 32))
    assert not usable(TLSARecord(3, 1, 1, b"\0" * 31))
    assert usable(TLSARecord(3, 1, 2, b"\0" * 64))


def test_one_of_several_records(chain: list[bytes], other_leaf: bytes) -> None:
    """RFC 7671 5: any one matching record of the RRset authenticates the server."""
    records = [TLSARecord(3, 1, 1, hashlib.sha256(_spki(other_leaf)).digest()),
               TLSARecord(3, 1, 1, hashlib.sha256(_spki(chain[0])).digest())]
    assert match_certificate(records, chain, [MX]) is None


def test_empty_chain() -> None:
    """RFC 7672 3: no certificate, no authentication."""
    assert match_certificate([TLSARecord(3, 1, 1, b"\0" * 32)], [], [MX]) is not None


def test_config_relay_dane() -> None:
    """RFC 7672 2.1: DANE is on only with a named validating resolver (relay.dane)."""
    from geomail.config import DANEConfig, parse_config
    from tests.unit.test_config import base, problems

    assert parse_config(base()).relay.dane is None
    assert parse_config(base(relay={"dane": {}})).relay.dane == DANEConfig()
    assert DANEConfig().nameservers == (("127.0.0.1", 53),)
    dane = parse_config(base(relay={"dane": {"nameservers": ["127.0.0.1:5353", "::1"]}})) \
        .relay.dane
    assert dane is not None and dane.nameservers == (("127.0.0.1", 5353), ("::1", 53))
    found = problems(base(relay={"dane": {"nameservers": ["resolver.example"], "x": 1}}))
    assert any(p.startswith("relay.dane.nameservers[0]") for p in found), found
    assert any("relay.dane" in p and "x" in p for p in found), found
