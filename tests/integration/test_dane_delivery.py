"""Outbound delivery under DANE (RFC 7672): the courier resolves MX hosts and TLSA records
through a real validating unbound in front of a knot-signed zone, and delivers to a real SMTP
peer (aiosmtpd) whose certificate does or does not match the published TLSA records."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from geomail.config import DANEConfig, RelayConfig
from geomail.courier.mx import MXResolver
from geomail.courier.smtp import SMTPCourier
from geomail.courier.tls_policy import build_tls_policy
from geomail.delivery import Outcome
from geomail.dnsresolver import make_resolver
from geomail.spool import BytesBody
from tests.support import free_port, free_port_on
from tests.support.dnssec import BOGUS, PLAIN, SIGNED, SignedDNS
from tests.support.https_server import HTTPSServer
from tests.support.mta import SmtpdPeer

MESSAGE = b"From: alice@example.com\nSubject: dane\n\nhello\n"
CA = trustme.CA()
# One peer serves every MX name below (all on 127.0.0.1); its leaf covers them by wildcard.
LEAF = CA.issue_cert("*.dane.test", "mx.plain.test")
CLEAR_IP = "127.0.0.73"  # a second MX, without STARTTLS


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def _spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    return hashlib.sha256(key.public_bytes(Encoding.DER,
                                           PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@pytest.fixture(scope="module")
def mx_port() -> int:
    return free_port_on(["127.0.0.1", CLEAR_IP])


@pytest.fixture(scope="module")
def dnssec(mx_port: int) -> Iterator[SignedDNS]:
    leaf = _der(LEAF.cert_chain_pems[0].bytes())
    stranger = _der(trustme.CA().issue_cert("*.dane.test").cert_chain_pems[0].bytes())
    ca = _der(CA.cert_pem.bytes())
    tlsa = f"_{mx_port}._tcp"
    with SignedDNS({
        SIGNED: [
            "good MX 10 mx-good", "mx-good A 127.0.0.1",
            f"{tlsa}.mx-good TLSA 3 1 1 {_spki_sha256(leaf)}",
            "bad MX 10 mx-bad", "mx-bad A 127.0.0.1",
            f"{tlsa}.mx-bad TLSA 3 1 1 {_spki_sha256(stranger)}",
            "ta MX 10 mx-ta", "mx-ta A 127.0.0.1",
            f"{tlsa}.mx-ta TLSA 2 0 1 {hashlib.sha256(ca).hexdigest()}",
            "none MX 10 mx-none", "mx-none A 127.0.0.1",
            "broken MX 10 mx.bogus.test.",
            # MTA-STS (enforce) names another MX: only DANE's precedence lets mail through.
            "sts MX 10 mx-sts", "mx-sts A 127.0.0.1",
            f"{tlsa}.mx-sts TLSA 3 1 1 {_spki_sha256(leaf)}",
            '_mta-sts.sts TXT "v=STSv1; id=20260101"', "mta-sts.sts A 127.0.0.1",
            # Only unusable records (PKIX-EE, and a DANE-EE of unknown selector): TLS is
            # mandatory, unauthenticated (RFC 7672 2.2, 3.1.3).
            "unusable MX 10 mx-unusable", "mx-unusable A 127.0.0.1",
            '_mta-sts.unusable TXT "v=STSv1; id=20260101"', "mta-sts.unusable A 127.0.0.1",
            f"{tlsa}.mx-unusable TLSA 1 1 1 {_spki_sha256(stranger)}",
            f"{tlsa}.mx-unusable TLSA 3 7 1 {_spki_sha256(stranger)}",
            "clear MX 10 mx-clear", f"mx-clear A {CLEAR_IP}",
            f"{tlsa}.mx-clear TLSA 1 1 1 {_spki_sha256(stranger)}",
            # The MX host is a CNAME; only the expanded name is in the certificate (the
            # leaf's wildcard covers neither d.sub.dane.test nor mx.sub.dane.test).
            "d.sub MX 10 mx.sub", "mx.sub CNAME mx-real", "mx-real A 127.0.0.1",
            f"{tlsa}.mx-real TLSA 2 0 1 {hashlib.sha256(ca).hexdigest()}",
        ],
        PLAIN: ["@ MX 10 mx", "mx A 127.0.0.1",
                f"{tlsa}.mx TLSA 3 1 1 {_spki_sha256(stranger)}"],
        BOGUS: ["mx A 127.0.0.1", f"{tlsa}.mx TLSA 3 1 1 {_spki_sha256(leaf)}"],
    }) as servers:
        yield servers


@pytest.fixture(scope="module")
def peer(mx_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpdPeer]:
    """The MX: STARTTLS with the leaf and the CA's certificate in its chain (RFC 7672 3.1.2:
    a DANE-TA server must send its trust anchor)."""
    path = str(tmp_path_factory.mktemp("dane-tls") / "server.pem")
    with open(path, "wb") as handle:
        handle.write(LEAF.private_key_pem.bytes())
        for blob in LEAF.cert_chain_pems:
            handle.write(blob.bytes())
        handle.write(CA.cert_pem.bytes())
    with SmtpdPeer("127.0.0.1", mx_port, tls="starttls", cert=path, key=path) as server:
        yield server


@pytest.fixture(scope="module")
def clear_peer(mx_port: int) -> Iterator[SmtpdPeer]:
    """An MX that does not offer STARTTLS."""
    with SmtpdPeer(CLEAR_IP, mx_port) as server:
        yield server


def _courier(dnssec: SignedDNS, mx_port: int, data_dir: Path, mx_nameserver: int,
             **settings: Any) -> SMTPCourier:
    relay = RelayConfig(nameservers=(("127.0.0.1", mx_nameserver),), mx_port=mx_port,
                        dane=DANEConfig((("127.0.0.1", dnssec.port),)),
                        connect_timeout=2.0, command_timeout=5.0, data_timeout=5.0,
                        dns_timeout=3.0, **{"mta_sts": False, **settings})
    dns_resolver = make_resolver(relay)
    policy = build_tls_policy(relay, "mail.example.com", str(data_dir), dns_resolver, None,
                              "postmaster@example.com")
    return SMTPCourier(relay, "mail.example.com", MXResolver(dns_resolver, port=mx_port),
                       tls_policy=policy)


def _send(courier: SMTPCourier, domain: str) -> Outcome:
    rcpt = f"bob@{domain}"
    return courier.deliver("alice@example.com", [rcpt], BytesBody(MESSAGE))[rcpt]


@pytest.fixture()
def deliver(dnssec: SignedDNS, peer: SmtpdPeer, mx_port: int,
            tmp_path: Path) -> Iterator[Callable[[str], Outcome]]:
    """Delivery with relay.nameservers and relay.dane both the validating unbound."""
    courier = _courier(dnssec, mx_port, tmp_path, dnssec.port)
    yield lambda domain: _send(courier, domain)
    courier.close()


def _tls(out: Outcome) -> str:
    assert out.attempt is not None
    return str(out.attempt.tls)


def _received(peer: SmtpdPeer, domain: str) -> int:
    return sum(1 for m in peer.messages() if m.rcpt_tos == [f"bob@{domain}"])


def test_matching_ee_record_delivers(deliver: Callable[[str], Outcome],
                                     peer: SmtpdPeer) -> None:
    """RFC 7672 2.2, 3.1.1: secure MX, secure TLSA 3 1 1 matching the server's key: delivered
    over TLS authenticated by DANE."""
    out = deliver("good.dane.test")
    assert out.error is None
    assert "dane-verified" in _tls(out)
    assert _received(peer, "good.dane.test") == 1


def test_matching_ta_record_delivers(deliver: Callable[[str], Outcome],
                                     peer: SmtpdPeer) -> None:
    """RFC 7672 3.1.2, 3.2.3: DANE-TA 2 0 1 on the issuing CA; the chain verifies and the
    leaf's wildcard covers the MX host name."""
    out = deliver("ta.dane.test")
    assert out.error is None and "dane-verified" in _tls(out)
    assert _received(peer, "ta.dane.test") == 1


def test_non_matching_record_defers(deliver: Callable[[str], Outcome],
                                    peer: SmtpdPeer) -> None:
    """RFC 7672 2.2 / 3: secure TLSA records none of which matches: the host is not used and
    the message is deferred (temporary failure) with the reason, never sent in clear."""
    out = deliver("bad.dane.test")
    assert out.error is not None and not out.error.permanent
    assert "DANE" in out.error.message and "TLSA" in out.error.message
    assert _received(peer, "bad.dane.test") == 0


def test_unsigned_tlsa_is_ignored(deliver: Callable[[str], Outcome],
                                  peer: SmtpdPeer) -> None:
    """RFC 7672 2.1, 2.2.1: a TLSA record (not matching) in an unsigned zone is not trusted:
    delivery is opportunistic, as without DANE."""
    out = deliver("plain.test")
    assert out.error is None
    assert _tls(out).startswith("TLSv1.") and "dane" not in _tls(out)
    assert _received(peer, "plain.test") == 1


def test_secure_without_tlsa_is_opportunistic(deliver: Callable[[str], Outcome],
                                              peer: SmtpdPeer) -> None:
    """RFC 7672 2.2: a validated denial of TLSA records means no DANE for that host."""
    out = deliver("none.dane.test")
    assert out.error is None and "dane" not in _tls(out)
    assert _received(peer, "none.dane.test") == 1


def test_bogus_tlsa_defers(dnssec: SignedDNS, peer: SmtpdPeer, mx_port: int,
                           tmp_path: Path) -> None:
    """RFC 7672 2.1.1: a secure MX whose host's TLSA lookup fails validation (bogus zone:
    SERVFAIL) is deferred, not downgraded to unauthenticated delivery. The host's address
    comes straight from knot here (relay.nameservers), so only the TLSA lookup fails."""
    courier = _courier(dnssec, mx_port, tmp_path, dnssec.knot_port)
    try:
        out = _send(courier, "broken.dane.test")
    finally:
        courier.close()
    assert out.error is not None and not out.error.permanent
    assert "TLSA lookup failed" in out.error.message
    assert _received(peer, "broken.dane.test") == 0


def _send_beside_enforce_policy(dnssec: SignedDNS, mx_port: int, tmp_path: Path,
                                domain: str) -> Outcome:
    """Send to ``domain`` while a real HTTPS host serves it an MTA-STS policy in enforce mode
    that names another MX host (so MTA-STS alone would defer)."""
    ca_path = str(tmp_path / "ca.pem")
    CA.cert_pem.write_to_path(ca_path)
    https_cert = str(tmp_path / "https.pem")
    CA.issue_cert(f"mta-sts.{domain}").private_key_and_cert_chain_pem.write_to_path(https_cert)
    www = tmp_path / "www"
    www.mkdir()
    with HTTPSServer(www, https_cert, "127.0.0.1", free_port("127.0.0.1")) as https:
        https.policy(f"mta-sts.{domain}",
                     "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n")
        courier = _courier(dnssec, mx_port, tmp_path / "data", dnssec.port, mta_sts=True,
                           mta_sts_port=https.port, tls_ca_file=ca_path)
        try:
            assert courier.tls_policy is not None and courier.tls_policy.mta_sts is not None
            policy = courier.tls_policy.mta_sts.lookup(domain).policy
            assert policy is not None and policy.mode == "enforce"  # the policy is there
            return _send(courier, domain)
        finally:
            courier.close()


def test_dane_takes_precedence_over_mta_sts(dnssec: SignedDNS, peer: SmtpdPeer, mx_port: int,
                                           tmp_path: Path) -> None:
    """RFC 8461 2 and RFC 7672 2.2: where the MX host has secure TLSA records, DANE applies and
    the domain's MTA-STS policy (enforce, naming another MX host, so it alone would defer)
    does not."""
    out = _send_beside_enforce_policy(dnssec, mx_port, tmp_path, "sts.dane.test")
    assert out.error is None and "dane-verified" in _tls(out)
    assert _received(peer, "sts.dane.test") == 1


def test_unusable_records_require_unauthenticated_tls(deliver: Callable[[str], Outcome],
                                                      peer: SmtpdPeer) -> None:
    """RFC 7672 2.2 and 3.1.3: a validated TLSA RRset whose records are all unusable (here
    PKIX-EE, usage 1, and an unknown selector) still makes TLS mandatory, but the certificate
    is not checked (the peer's CA is not trusted here): delivered over unauthenticated TLS."""
    out = deliver("unusable.dane.test")
    assert out.error is None
    assert _tls(out).startswith("TLSv1.") and "dane-unauthenticated" in _tls(out)
    assert "dane-verified" not in _tls(out)
    assert _received(peer, "unusable.dane.test") == 1


def test_unusable_records_without_starttls_defer(deliver: Callable[[str], Outcome],
                                                 clear_peer: SmtpdPeer) -> None:
    """RFC 7672 2.2: with only unusable TLSA records TLS is still mandatory: a host that does
    not offer STARTTLS is not used (no plain-text fallback) and the message is deferred with
    the reason."""
    out = deliver("clear.dane.test")
    assert out.error is not None and not out.error.permanent
    assert out.error.enhanced == "4.7.5"
    assert "DANE" in out.error.message and "unusable" in out.error.message
    assert "STARTTLS" in out.error.message
    assert _received(clear_peer, "clear.dane.test") == 0


def test_unusable_records_do_not_fall_back_to_mta_sts(dnssec: SignedDNS, peer: SmtpdPeer,
                                                      mx_port: int, tmp_path: Path) -> None:
    """RFC 7672 2.2 and RFC 8461 2: a secure TLSA RRset, even of unusable records only, means
    DANE applies (TLS mandatory, unauthenticated), not the domain's MTA-STS policy (enforce,
    naming another MX: it alone would defer)."""
    out = _send_beside_enforce_policy(dnssec, mx_port, tmp_path, "unusable.dane.test")
    assert out.error is None and "dane-unauthenticated" in _tls(out)


def test_ta_name_check_accepts_cname_expanded_host(deliver: Callable[[str], Outcome],
                                                   peer: SmtpdPeer) -> None:
    """RFC 7672 3.2.2 (and 2.2.3): for DANE-TA the reference names include the CNAME-expanded
    MX host name the TLSA records were found at; here the certificate names only that one."""
    out = deliver("d.sub.dane.test")
    assert out.error is None, out.error
    assert "dane-verified" in _tls(out)
    assert _received(peer, "d.sub.dane.test") == 1
