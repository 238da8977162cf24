"""DANEResolver against a real validating resolver (unbound) and a real signed zone (knot):
the AD bit decides whether TLSA records are trusted (RFC 7672 2.1, RFC 6698 4.1)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from geomail.config import DANEConfig
from geomail.courier.dane import DANEResolver, TLSARecord
from tests.support import free_port
from tests.support.dnssec import BOGUS, PLAIN, SIGNED, SignedDNS
from tests.support.geomail import base_config, write_config

EE_DATA = bytes(range(32))
TA_DATA = bytes(range(32, 64))


@pytest.fixture(scope="module")
def dnssec() -> Iterator[SignedDNS]:
    with SignedDNS({
        SIGNED: ["@ MX 10 mx", "mx A 127.0.0.1",
                 f"_25._tcp.mx TLSA 3 1 1 {EE_DATA.hex()}",
                 f"_25._tcp.mx TLSA 2 0 1 {TA_DATA.hex()}",
                 f"_25._tcp.mx TLSA 1 1 1 {EE_DATA.hex()}",   # PKIX-EE: unusable
                 f"_465._tcp.mx TLSA 3 1 2 {(EE_DATA * 2).hex()}",
                 "nodata A 127.0.0.1", '_25._tcp.nodata TXT "not a TLSA"',
                 "alias CNAME mx", "alias2 CNAME nodata",
                 f"_25._tcp.alias2 TLSA 3 1 1 {TA_DATA.hex()}"],
        PLAIN: ["@ MX 10 mx", "mx A 127.0.0.1", f"_25._tcp.mx TLSA 3 1 1 {EE_DATA.hex()}"],
        BOGUS: ["@ MX 10 mx", "mx A 127.0.0.1", f"_25._tcp.mx TLSA 3 1 1 {EE_DATA.hex()}"],
    }) as servers:
        yield servers


@pytest.fixture()
def resolver(dnssec: SignedDNS) -> DANEResolver:
    return DANEResolver(DANEConfig((("127.0.0.1", dnssec.port),)), timeout=5.0)


def test_secure_tlsa(resolver: DANEResolver) -> None:
    """RFC 7672 2.2, 3.1.3: a validated TLSA RRset is "secure", with only the DANE-TA(2) and
    DANE-EE(3) records kept; the PKIX-EE one is counted as unusable."""
    found = resolver.lookup("mx.dane.test")
    assert found.status == "secure"
    assert set(found.records) == {TLSARecord(3, 1, 1, EE_DATA), TLSARecord(2, 0, 1, TA_DATA)}
    assert found.unusable == 1


def test_port_in_name(resolver: DANEResolver) -> None:
    """RFC 6698 3: the TLSA owner name is _<port>._tcp.<host>."""
    found = resolver.lookup("mx.dane.test", 465)
    assert found.status == "secure"
    assert found.records == (TLSARecord(3, 1, 2, EE_DATA * 2),)


def test_secure_nodata(resolver: DANEResolver) -> None:
    """RFC 7672 2.2: a validated denial (NODATA) is "secure" with no records: no DANE."""
    found = resolver.lookup("nodata.dane.test")
    assert (found.status, found.records) == ("secure", ())


def test_secure_nxdomain(resolver: DANEResolver) -> None:
    """RFC 7672 2.2: a validated NXDOMAIN is a secure denial too."""
    found = resolver.lookup("absent.dane.test")
    assert (found.status, found.records) == ("secure", ())


def test_unsigned_zone_not_trusted(resolver: DANEResolver) -> None:
    """RFC 7672 2.1, 2.2.2, RFC 6698 4.1: TLSA records from an unsigned zone (no AD bit) must
    not be used: "insecure", and no records at all are handed out."""
    found = resolver.lookup("mx.plain.test")
    assert (found.status, found.records) == ("insecure", ())


def test_bogus_zone_is_error(resolver: DANEResolver) -> None:
    """RFC 7672 2.1.1: a lookup that fails validation (SERVFAIL from the validator) is an
    error: the host is deferred, never treated as having no TLSA records."""
    assert resolver.lookup("mx.bogus.test").status == "error"


def test_mx_is_secure(resolver: DANEResolver) -> None:
    """RFC 7672 2.2.1: DANE applies only when the MX RRset itself was validated."""
    assert resolver.mx_is_secure(SIGNED)
    assert not resolver.mx_is_secure(PLAIN)
    assert not resolver.mx_is_secure(BOGUS)


def test_resolver_down_is_error(dnssec: SignedDNS) -> None:
    """RFC 7672 2.1.1: no answer from the validating resolver is a failure, not "insecure"."""
    dead = DANEResolver(DANEConfig((("127.0.0.1", free_port(kind=socket.SOCK_DGRAM)),)),
                        timeout=0.5)
    assert dead.lookup("mx.dane.test").status == "error"
    assert not dead.mx_is_secure(SIGNED)


def test_probe_validation(dnssec: SignedDNS) -> None:
    """RFC 6698 4.1: ``geomail check`` warns when the named resolver does not validate: knot
    (authoritative, no validation) sets no AD bit; unbound does for the anchored zone."""
    from geomail.courier.dane import probe_validation

    assert probe_validation(DANEConfig((("127.0.0.1", dnssec.port),)), SIGNED) is None
    warning = probe_validation(DANEConfig((("127.0.0.1", dnssec.knot_port),)), SIGNED)
    assert warning is not None and "does not validate" in warning


def test_cname_expanded_first(resolver: DANEResolver) -> None:
    """RFC 7672 2.2.3: for a secure CNAME, the TLSA records of the expanded name are used, and
    the expanded name becomes a reference identifier (RFC 7672 3.2.2)."""
    found = resolver.lookup("alias.dane.test")
    assert found.status == "secure" and TLSARecord(3, 1, 1, EE_DATA) in found.records
    assert found.names == ("mx.dane.test",)


def test_cname_falls_back_to_original(resolver: DANEResolver) -> None:
    """RFC 7672 2.2.3: no TLSA records at the expanded name: those of the original name."""
    found = resolver.lookup("alias2.dane.test")
    assert (found.status, found.records, found.names) == \
        ("secure", (TLSARecord(3, 1, 1, TA_DATA),), ())


def test_geomail_check_warns_without_validation(dnssec: SignedDNS, tmp_path: Path) -> None:
    """RFC 7672 2.1: ``geomail check`` warns when relay.dane names a resolver that sets no AD
    bit (here knot, authoritative only, asked for the root it does not serve)."""
    raw = base_config(tmp_path)
    raw["relay"] = {"dane": {"nameservers": [f"127.0.0.1:{dnssec.knot_port}"]}}
    result = subprocess.run([sys.executable, "-m", "geomail", "check", "-c",
                             str(write_config(tmp_path / "g.yaml", raw))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"dane       on, validating resolver 127.0.0.1:{dnssec.knot_port}" in result.stdout
    assert "warning    relay.dane resolver" in result.stdout
