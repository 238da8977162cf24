"""DANE for outbound SMTP (RFC 7672): TLSA records of an MX host, trusted only when the
validating resolver named in ``relay.dane`` says the answer is DNSSEC-validated (the AD bit),
and the check of a server's certificate chain against them.

The AD bit means something only when it comes from a validating resolver we trust over a
trusted path (RFC 6698 4.1, RFC 7672 2.1): so these questions go only to the resolvers the
operator named, never to the system's."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification

from geomail.config import DANEConfig
from geomail.dnsresolver import CachingResolver

DANE_TA = 2
DANE_EE = 3
SELECTORS = (0, 1)  # full certificate, SubjectPublicKeyInfo
DIGEST_SIZES = {1: 32, 2: 64}  # SHA2-256, SHA2-512; matching type 0 is the full data
EDNS_PAYLOAD = 1232


@dataclass(frozen=True, slots=True)
class TLSARecord:
    """One TLSA record (RFC 6698 2.1): certificate usage, selector, matching type, data."""

    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TLSALookup:
    """The TLSA RRset of one MX host, as DANE sees it.

    ``status``: "secure" (validated; ``records`` may be empty: secure denial or NODATA),
    "insecure" (not validated: DANE does not apply), "error" (the lookup failed, e.g.
    SERVFAIL for a bogus answer: the host must be deferred, RFC 7672 2.2).
    ``records`` holds only usable DANE-TA(2)/DANE-EE(3) records (RFC 7672 3.1.3);
    ``unusable`` counts the others of a secure RRset (all unusable: TLS is still mandatory
    but unauthenticated, RFC 7672 2.2). ``names``: see ``DANEResolver.lookup``."""

    status: str
    records: tuple[TLSARecord, ...] = ()
    unusable: int = 0
    names: tuple[str, ...] = ()  # extra reference names for DANE-TA (a CNAME-expanded host)


def usable(record: TLSARecord) -> bool:
    """DANE-TA or DANE-EE with a known selector and matching type of the right length."""
    if record.usage not in (DANE_TA, DANE_EE) or record.selector not in SELECTORS:
        return False
    if record.mtype == 0:
        return bool(record.data)
    return DIGEST_SIZES.get(record.mtype) == len(record.data)


class DANEResolver:
    """Asks the validating resolvers of ``relay.dane`` with the DO bit and keeps the answers
    for their TTL (``CachingResolver``); the AD bit of each answer decides "secure"."""

    def __init__(self, config: DANEConfig, timeout: float = 10.0) -> None:
        resolver = CachingResolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                for host, port in config.nameservers]
        resolver.lifetime = timeout
        resolver.timeout = min(timeout, 3.0)
        resolver.use_edns(0, dns.flags.DO, EDNS_PAYLOAD)
        resolver.flags = dns.flags.RD | dns.flags.AD  # RFC 6840 5.7: ask for the AD bit
        resolver.cache = dns.resolver.LRUCache(4096)
        self._resolver = resolver

    def _ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> tuple[str, dns.resolver.Answer
                                                                         | None]:
        """("secure"|"insecure", answer or None for NXDOMAIN), or ("error", None)."""
        try:
            answer = self._resolver.resolve(name, rdtype, raise_on_no_answer=False,
                                            search=False)
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs["responses"]
            secure = bool(responses) and all(bool(r.flags & dns.flags.AD)
                                             for r in responses.values())
            return ("secure" if secure else "insecure"), None
        except (dns.exception.DNSException, OSError):
            return "error", None
        secure = bool(answer.response.flags & dns.flags.AD)
        return ("secure" if secure else "insecure"), answer

    def mx_is_secure(self, domain: str) -> bool:
        """True when the MX RRset of ``domain`` (or its denial) was validated (RFC 7672 2.2.1)."""
        status, _ = self._ask(domain, dns.rdatatype.MX)
        return status == "secure"

    def lookup(self, host: str, port: int = 25) -> TLSALookup:
        """The TLSA records of ``host`` (RFC 6698 3: ``_<port>._tcp.<host>``). A host whose
        address records are not validated gets no TLSA lookup: "insecure" (RFC 7672 2.2.2).
        When ``host`` is a secure CNAME, the expanded name's records come first, then the
        original's (RFC 7672 2.2.3); ``names`` then holds the expanded name, a reference
        identifier besides the MX host name (RFC 7672 3.2.2)."""
        host = host.rstrip(".").lower()
        status, answer = self._ask(host + ".", dns.rdatatype.A)
        if status == "insecure":
            return TLSALookup("insecure")
        expanded = None
        if status == "secure" and answer is not None:
            target = answer.canonical_name.to_text().rstrip(".").lower()
            expanded = target if target != host else None
        if expanded is not None:
            found = self._tlsa(expanded, port)
            if found.status == "error" or found.records or found.unusable:
                return TLSALookup(found.status, found.records, found.unusable, (expanded,))
        return self._tlsa(host, port)

    def _tlsa(self, host: str, port: int) -> TLSALookup:
        status, answer = self._ask(f"_{port}._tcp.{host}.", dns.rdatatype.TLSA)
        if status != "secure" or answer is None or answer.rrset is None:
            return TLSALookup(status)
        records = [TLSARecord(int(rd.usage), int(rd.selector), int(rd.mtype), bytes(rd.cert))
                   for rd in answer.rrset]
        good = tuple(r for r in records if usable(r))
        return TLSALookup("secure", good, len(records) - len(good))


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == 0:
        return der
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _matches(record: TLSARecord, cert: x509.Certificate, der: bytes) -> bool:
    """RFC 6698 2.1.2/2.1.3: the selected part, exactly or by its SHA-256/SHA-512 digest."""
    data = _selected(cert, der, record.selector)
    if record.mtype == 1:
        data = hashlib.sha256(data).digest()
    elif record.mtype == 2:
        data = hashlib.sha512(data).digest()
    return data == record.data


def _ee_policy() -> verification.ExtensionPolicy:
    """The Web PKI's rules for leaf extensions (EKU, critical SAN, ...) are not DANE's: RFC 7672
    3.1.2 asks for a chain that verifies and a matching name, which the SAN carries."""
    return verification.ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)


def _verify_to_anchor(anchor: x509.Certificate, leaf: x509.Certificate,
                      intermediates: list[x509.Certificate], names: Sequence[str]) -> str | None:
    """The chain from ``anchor`` to ``leaf`` verifies and the leaf bears one of ``names``
    (RFC 7672 3.1.2, 3.2.2; RFC 6125 6.4 for wildcards, as cryptography's verifier does)."""
    store = verification.Store([anchor])
    reason = "no reference name"
    for name in names:
        try:
            subject = x509.DNSName(name.rstrip(".").lower())
        except ValueError:
            continue
        verifier = (verification.PolicyBuilder().store(store)
                    .time(datetime.datetime.now(datetime.UTC))
                    .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=_ee_policy())
                    .build_server_verifier(subject))
        try:
            verifier.verify(leaf, intermediates)
            return None
        except verification.VerificationError as exc:
            reason = f"DANE-TA chain does not verify for {name}: {exc}"
    return reason


def match_certificate(records: Sequence[TLSARecord], chain_der: Sequence[bytes],
                      names: Sequence[str]) -> str | None:
    """None when the server's chain (leaf first) satisfies one of ``records``, else a short
    reason. DANE-EE(3): the leaf alone, no name or expiry check (RFC 7672 3.1.1). DANE-TA(2):
    a certificate of the chain matches and is the trust anchor of a chain that verifies to
    the leaf, whose names must include one of ``names`` (RFC 7672 3.1.2, 3.2)."""
    if not chain_der:
        return "no server certificate"
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError:
        return "unparsable server certificate"
    leaf = certs[0]
    reason = "no TLSA record matches the server certificate"
    for record in records:
        if not usable(record):
            continue
        if record.usage == DANE_EE:
            if _matches(record, leaf, chain_der[0]):
                return None
            continue
        for index, (cert, der) in enumerate(zip(certs, chain_der, strict=True)):
            if not _matches(record, cert, der):
                continue
            if index == 0:
                # The leaf itself published as trust anchor: only its names need checking.
                if _leaf_has_name(leaf, names):
                    return None
                reason = "DANE-TA matches the leaf but its names do not match"
                continue
            failure = _verify_to_anchor(cert, leaf, certs[1:index], names)
            if failure is None:
                return None
            reason = failure
    return reason


def _leaf_has_name(leaf: x509.Certificate, names: Sequence[str]) -> bool:
    """The leaf's DNS names (SAN, else the CN) include one of ``names`` (RFC 6125 6.4)."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        presented = [str(n).lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        presented = [str(a.value).lower() for a in
                     leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    for name in names:
        wanted = name.rstrip(".").lower()
        for pattern in presented:
            if pattern == wanted:
                return True
            if pattern.startswith("*.") and "." in wanted:
                first, rest = wanted.split(".", 1)
                if first and rest == pattern[2:]:
                    return True
    return False


def probe_validation(config: DANEConfig, name: str = ".", timeout: float = 3.0) -> str | None:
    """None when the first resolver of ``config`` sets the AD bit on ``name``'s SOA (a name
    known to be signed: the root by default), else why DANE cannot work (``geomail check``)."""
    host, port = config.nameservers[0]
    query = dns.message.make_query(name, dns.rdatatype.SOA, want_dnssec=True)
    query.flags |= dns.flags.AD
    try:
        response = dns.query.udp(query, host, timeout=timeout, port=port)
    except (dns.exception.DNSException, OSError) as exc:
        return f"relay.dane resolver {host}:{port} does not answer ({exc.__class__.__name__})"
    if response.rcode() != dns.rcode.NOERROR:
        return f"relay.dane resolver {host}:{port} answers {dns.rcode.to_text(response.rcode())}" \
               f" for {name} SOA"
    if not response.flags & dns.flags.AD:
        return f"relay.dane resolver {host}:{port} does not validate DNSSEC (no AD bit for " \
               f"{name} SOA): DANE records will never be trusted"
    return None
