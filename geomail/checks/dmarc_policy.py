"""DMARC (RFC 7489): find the From domain's policy record, check that SPF or DKIM passed for an
aligned domain, and say what the policy asks for. Records are parsed and alignment is judged
by the ``dmarc`` package; organisational domains come from the Public Suffix List that the
``publicsuffixlist`` package ships."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dmarc
import dns.resolver
from publicsuffixlist import PublicSuffixList

from geomail.checks import dnsquery
from geomail.checks.dkim_verify import DKIMResult
from geomail.checks.dnsquery import DNSTempError
from geomail.checks.spf import SPFResult
from geomail.checks.ttlcache import TTLCache

DISPOSITIONS = ("none", "quarantine", "reject")  # ordered: the strictest wins
_SOFTER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@dataclass(frozen=True, slots=True)
class DMARCResult:
    """The DMARC verdict for one From domain (RFC 8601 2.7 result names)."""

    result: str  # pass, fail, none (no policy), temperror, permerror
    domain: str  # the RFC5322.From domain
    policy: str = ""  # the published p (or sp) value, "" without a record
    disposition: str = "none"  # what the policy asks for this message, after pct
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.result == "fail"


class _OrgDomains:
    """The interface ``dmarc.DMARC`` wants for relaxed alignment: the organisational domain."""

    def __init__(self, psl: PublicSuffixList) -> None:
        self._psl = psl

    def get_public_suffix(self, domain: str) -> str:
        return organizational_domain(self._psl, domain)


def organizational_domain(psl: PublicSuffixList, domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (the domain itself when it is one)."""
    found: str | None = psl.privatesuffix(domain.lower().rstrip("."))
    return found or domain.lower().rstrip(".")


class DMARCEvaluator:
    """Evaluates DMARC with the App's resolver and one loaded Public Suffix List."""

    def __init__(self, resolver: dns.resolver.Resolver, psl: PublicSuffixList | None = None,
                 sample: Callable[[], float] = random.random) -> None:
        self._resolver = resolver
        self._psl = psl or PublicSuffixList()
        self._dmarc = dmarc.DMARC(publicsuffix=_OrgDomains(self._psl))
        self._sample = sample  # pct sampling (RFC 7489 6.6.4); tests pass a fixed value
        # (found,): a 1-tuple, so that "no record" is cached too (get's None: not cached)
        self._records: TTLCache[tuple[tuple[str, str | None] | None]] = TTLCache()

    def organizational_domain(self, domain: str) -> str:
        return organizational_domain(self._psl, domain)

    def evaluate(self, from_domain: str, spf: SPFResult | None,
                 dkim: Sequence[DKIMResult]) -> DMARCResult:
        """RFC 7489 6.6.2-6.6.4 for one From domain; cooperative (DNS), never raises."""
        domain = from_domain.lower().rstrip(".")
        try:
            found = self._find_record(domain)
        except DNSTempError as exc:
            return DMARCResult("temperror", domain, reason=str(exc))
        if found is None:
            return DMARCResult("none", domain, reason="no policy published")
        record, org_domain = found
        try:
            policy = self._dmarc.parse_record(record, domain, org_domain, strict=False)
        except dmarc.Error as exc:
            return DMARCResult("permerror", domain, reason=f"bad record: {exc}"[:200])
        outcome = self._dmarc.get_result(policy, auth_results=_auth_results(spf, dkim))
        applies = (policy.sp if org_domain and policy.sp is not dmarc.DMARCDisposition.UNSPECIFIED
                   else policy.p)
        published = applies.value or "none"
        if outcome.result is dmarc.DMARCResult.PASS:
            return DMARCResult("pass", domain, published, "none", _passed_by(outcome))
        disposition = published
        if disposition != "none" and self._sample() * 100 >= policy.pct:
            disposition = _SOFTER[disposition]  # sampled out: one step softer (6.6.4)
        return DMARCResult("fail", domain, published, disposition,
                           "no aligned SPF or DKIM pass")

    def _find_record(self, domain: str) -> tuple[str, str | None] | None:
        """RFC 7489 6.6.3: ``_dmarc.<From domain>``, else ``_dmarc.<organisational domain>``;
        the record and, when it came from the latter, that domain (its ``sp`` applies).
        Reused for a minute (``ttlcache``); DNS trouble is not remembered."""
        cached = self._records.get(domain)
        if cached is not None:
            return cached[0]
        found = self._discover(domain)
        self._records.put(domain, (found,))
        return found

    def _discover(self, domain: str) -> tuple[str, str | None] | None:
        record = self._record_at(domain)
        if record is not None:
            return record, None
        org = self.organizational_domain(domain)
        if org == domain:
            return None
        record = self._record_at(org)
        return (record, org) if record is not None else None

    def _record_at(self, domain: str) -> str | None:
        texts = [t for t in dnsquery.txt(self._resolver, f"_dmarc.{domain}")
                 if t[:8].upper() == b"V=DMARC1"]
        if len(texts) != 1:  # none, or several: no policy (6.6.3 step 2)
            return None
        return texts[0].decode("ascii", "replace")


def strictest(results: Sequence[DMARCResult]) -> DMARCResult:
    """Of several From domains' results, the one whose disposition is strictest (6.6.1)."""
    return max(results, key=lambda r: (DISPOSITIONS.index(r.disposition), r.failed))


def _auth_results(spf: SPFResult | None, dkim: Sequence[DKIMResult]) -> dmarc.AuthResults:
    spf_result = None
    if spf is not None and spf.domain:
        spf_result = dmarc.SPF(spf.domain, dmarc.SPFResult(spf.result))
    signatures = [dmarc.DKIM(d.domain, dmarc.DKIMResult(d.result), d.selector)
                  for d in dkim if d.domain and d.result in _DKIM_RESULTS]
    return dmarc.AuthResults(spf=spf_result, dkim=signatures or None)


_DKIM_RESULTS = {r.value for r in dmarc.DKIMResult}


def _passed_by(outcome: dmarc.Result) -> str:
    how = [name for name, value in (("spf", outcome.spf), ("dkim", outcome.dkim))
           if value is dmarc.DMARCResult.PASS]
    return "aligned " + " and ".join(how)
