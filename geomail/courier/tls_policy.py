"""Which TLS each MX host of a destination domain must give: opportunistic, MTA-STS (RFC 8461)
or DANE (RFC 7672; ``courier/dane``), and the outcomes counted for TLS reporting (RFC 8460).

Precedence (RFC 8461 2): DANE where the MX RRset and the host's TLSA records are DNSSEC-secure;
else the domain's MTA-STS policy; else opportunistic STARTTLS as before (RFC 7435).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import dns.resolver

from geomail.config import RelayConfig
from geomail.log import event

from .mtasts import MTASTS, STSPolicy

if TYPE_CHECKING:
    from geomail.metrics import Metrics

    from .tlsrpt import TLSReports

log = logging.getLogger(__name__)

OPPORTUNISTIC = "opportunistic"
STS_ENFORCE = "sts-enforce"
STS_TESTING = "sts-testing"
DANE = "dane"


class _TLSA(Protocol):
    usage: int
    selector: int
    mtype: int
    data: bytes


class _TLSALookup(Protocol):
    status: str
    records: Sequence[_TLSA]
    unusable: int
    names: Sequence[str]


class DANEResolverLike(Protocol):
    """What ``courier/dane.DANEResolver`` offers (the DANE helper's module)."""

    def mx_is_secure(self, domain: str) -> bool: ...
    def lookup(self, host: str, port: int = 25) -> _TLSALookup: ...


@dataclass(frozen=True, slots=True)
class HostTLS:
    """How to secure the session with one MX host of ``domain``."""

    mode: str  # OPPORTUNISTIC, STS_ENFORCE, STS_TESTING or DANE
    domain: str
    policy: STSPolicy | None = None
    tlsa: tuple[_TLSA, ...] = ()  # DANE without records: all unusable, TLS unauthenticated
    names: tuple[str, ...] = ()  # DANE: CNAME-expanded reference names (RFC 7672 3.2.2)
    skip: str = ""  # non-empty: do not connect, for this reason (transient)
    counted: bool = False  # the session's outcome is already reported (testing-mode mismatch)

    @property
    def verify(self) -> bool:
        """The certificate is checked (PKIX for MTA-STS, TLSA for DANE)."""
        return self.mode != OPPORTUNISTIC and not self.counted

    @property
    def authenticated(self) -> bool:
        """False for DANE whose TLSA records are all unusable: TLS is mandatory, but the
        certificate is not checked (RFC 7672 2.2, 3.1.3)."""
        return self.mode != DANE or bool(self.tlsa)

    @property
    def required(self) -> bool:
        """TLS must succeed (and be verified) or the host is not used."""
        return self.mode in (STS_ENFORCE, DANE)

    @property
    def policy_type(self) -> str:
        return {STS_ENFORCE: "sts", STS_TESTING: "sts", DANE: "tlsa"}.get(self.mode,
                                                                         "no-policy-found")

    def describe(self, reason: str) -> str:
        """An error text naming the policy (for the queue, the log and the bounce)."""
        if self.mode == DANE and not self.tlsa:
            return f"DANE (RFC 7672 2.2: TLSA records all unusable, TLS required without " \
                   f"authentication) for {self.domain}: {reason}"
        if self.mode == DANE:
            return f"DANE (RFC 7672) for {self.domain}: {reason}"
        return f"MTA-STS policy of {self.domain} (mode {self.policy.mode if self.policy else '?'},"\
               f" RFC 8461): {reason}"


def classify(exc: BaseException) -> str:
    """The RFC 8460 4.3 result type of a failed verified handshake."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        code = cause.verify_code
        if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            return "certificate-host-mismatch"
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return "certificate-expired"
        if code in (2, 18, 19, 20, 21, 27):  # issuer unknown, self-signed, untrusted
            return "certificate-not-trusted"
    return "validation-failure"


class TLSPolicy:
    """Decides per destination domain and host; records outcomes (TLS-RPT, metrics, log)."""

    def __init__(self, mta_sts: MTASTS | None, verified: ssl.SSLContext,
                 reports: TLSReports | None = None, dane: DANEResolverLike | None = None,
                 metrics: Metrics | None = None, port: int = 25) -> None:
        self.mta_sts = mta_sts
        self.verified = verified  # PKIX: system CAs + relay.tls_ca_file, host name checked
        self.reports = reports
        self.dane = dane
        self.metrics = metrics
        self.port = port

    def for_domain(self, domain: str) -> DomainTLS:
        """The domain-wide facts: is the MX secure for DANE, which MTA-STS policy applies."""
        dane_ok = False
        if self.dane is not None:
            try:
                dane_ok = self.dane.mx_is_secure(domain)
            except Exception as exc:
                event(log, logging.WARNING, "dane-mx-check-failed", domain=domain,
                      error=str(exc))
        policy: STSPolicy | None = None
        if self.mta_sts is not None:
            found = self.mta_sts.lookup(domain)
            policy = found.policy
            if found.failure and self.reports is not None:
                self.reports.record(domain, "sts", policy.policy_strings() if policy else [],
                                    [], found.failure, reason=found.reason)
            if policy is not None and policy.mode == "none":
                policy = None
        return DomainTLS(self, domain, dane_ok, policy)

    def outcome(self, tls: HostTLS, host: str, address: str, result: str | None,
                reason: str = "") -> None:
        """One session's TLS outcome (``result`` None: success; else an RFC 8460 type)."""
        if self.metrics is not None:
            self.metrics.inc("geomail_outbound_tls_total", policy=tls.mode,
                             result="ok" if result is None else "failed")
        if result is not None and tls.mode != OPPORTUNISTIC:
            event(log, logging.WARNING, "mx-tls-policy-failed", domain=tls.domain, host=host,
                  address=address, policy=tls.mode, result=result, error=reason)
        if self.reports is None or tls.counted:
            return
        strings = tls.policy.policy_strings() if tls.policy and tls.mode != DANE else []
        mx = list(tls.policy.mx) if tls.policy and tls.mode != DANE else []
        self.reports.record(tls.domain, tls.policy_type, strings, mx, result,
                            receiving_mx=host, receiving_ip=address, reason=reason)


@dataclass(frozen=True, slots=True)
class DomainTLS:
    """The TLS requirements of one destination domain's hosts."""

    owner: TLSPolicy
    domain: str
    dane_secure: bool
    policy: STSPolicy | None

    def host(self, name: str) -> HostTLS:
        """What ``name`` (an MX host of the domain) must give."""
        if self.dane_secure and self.owner.dane is not None:
            found = self.owner.dane.lookup(name, self.owner.port)
            if found.status == "error":
                tls = HostTLS(DANE, self.domain, skip="TLSA lookup failed on a signed zone")
                self.owner.outcome(tls, name, "", "dnssec-invalid", tls.skip)
                return tls
            if found.status == "secure" and found.records:
                return HostTLS(DANE, self.domain, tlsa=tuple(found.records),
                               names=tuple(found.names))
            if found.status == "secure" and found.unusable:
                # RFC 7672 2.2, 3.1.3: a validated RRset of unusable records still makes TLS
                # mandatory (no plain text, no MTA-STS instead), unauthenticated.
                return HostTLS(DANE, self.domain, names=tuple(found.names))
        policy = self.policy
        if policy is None:
            return HostTLS(OPPORTUNISTIC, self.domain)
        mode = STS_ENFORCE if policy.mode == "enforce" else STS_TESTING
        tls = HostTLS(mode, self.domain, policy)
        if not policy.matches(name):
            reason = f"MX host {name} does not match the policy's mx patterns " \
                     f"({', '.join(policy.mx)})"
            self.owner.outcome(tls, name, "", "validation-failure", reason)
            if mode == STS_ENFORCE:
                return HostTLS(mode, self.domain, policy, skip=reason)
            # testing: reported, then delivered as without a policy (RFC 8461 5)
            return HostTLS(mode, self.domain, policy, counted=True)
        return tls


def build_tls_policy(relay: RelayConfig, hostname: str, data_dir: str,
                     resolver: dns.resolver.Resolver, metrics: Metrics | None,
                     contact: str) -> TLSPolicy:
    """The App's TLS policy: MTA-STS (``relay.mta_sts``), DANE (``relay.dane``), TLS reports
    (``relay.tls_reports``), PKIX with the system CAs plus ``relay.tls_ca_file``."""
    import time

    from .mtasts import MTASTS
    from .tlsrpt import TLSReports

    verified = ssl.create_default_context()
    if relay.tls_ca_file:
        verified.load_verify_locations(cafile=relay.tls_ca_file)
    mta_sts = MTASTS(resolver, os.path.join(data_dir, "mta-sts"), verified,
                     port=relay.mta_sts_port, timeout=min(relay.command_timeout, 60.0)
                     ) if relay.mta_sts else None
    cfg = relay.tls_reports
    reports = TLSReports(os.path.join(data_dir, "tlsrpt"), cfg.organization or hostname,
                         cfg.contact or contact, time.time) if cfg.enabled else None
    dane: DANEResolverLike | None = None
    if relay.dane is not None:
        from .dane import DANEResolver

        dane = DANEResolver(relay.dane, relay.dns_timeout)  # type: ignore[assignment]
    return TLSPolicy(mta_sts, verified, reports, dane, metrics, relay.mx_port)
