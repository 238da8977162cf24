"""SPF (RFC 7208) for the MAIL FROM identity, or the HELO identity when MAIL FROM is ``<>``
(RFC 7208 2.4), with pyspf doing the evaluation (its limits: 10 DNS-querying terms, 2 void
lookups, RFC 7208 4.6.4) and the App's resolver answering its DNS questions."""

from __future__ import annotations

import ipaddress
import types
from dataclasses import dataclass
from typing import Any

import dns.resolver
import spf as pyspf

from geomail.address import domain_part
from geomail.checks import dnsquery
from geomail.checks.dnsquery import DNSTempError
from geomail.checks.ttlcache import TTLCache

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


@dataclass(frozen=True, slots=True)
class SPFResult:
    """An SPF verdict (RFC 7208 2.6) for one identity."""

    result: str  # one of RESULTS
    scope: str  # "mailfrom" or "helo"
    identity: str  # the address (mailfrom) or the HELO name checked
    domain: str  # its domain: the one DMARC aligns (RFC 7489 3.1.2)
    reason: str = ""  # pyspf's explanation

    @property
    def passed(self) -> bool:
        return self.result == "pass"


class SPFChecker:
    """Evaluates SPF with pyspf, its DNS questions answered by one resolver.

    pyspf asks DNS through its module-level ``DNSLookup`` function and has no per-query hook.
    Rather than replace that function for the whole process, each checker runs pyspf's own
    ``query.dns`` code with a namespace of its own in which ``DNSLookup`` is this checker's
    lookup: pyspf's logic (caching, CNAMEs, the void-lookup count) unchanged, no state shared
    between Apps. ``tests/unit/test_spf_checker.py`` fails if pyspf stops looking the name up
    there."""

    def __init__(self, resolver: dns.resolver.Resolver,
                 cache: TTLCache[SPFResult] | None = None) -> None:
        self._resolver = resolver
        self._results = cache if cache is not None else TTLCache()
        namespace = dict(vars(pyspf), DNSLookup=self._lookup)
        self._dns = types.FunctionType(pyspf.query.dns.__code__, namespace, "dns",
                                       pyspf.query.dns.__defaults__)

    def _lookup(self, name: str, qtype: str, strict: object = True,
                timeout: float = 20) -> list[tuple[tuple[str, str], Any]]:
        """pyspf's DNSLookup contract: ((name, type), value) pairs, TempError on failure.
        CNAMEs are followed by the resolver, so no CNAME pairs are returned."""
        lifetime = min(float(timeout), self._resolver.lifetime)
        try:
            answer = dnsquery.raw(self._resolver, name, qtype, lifetime)
        except DNSTempError as exc:
            raise pyspf.TempError(f"DNS {exc}") from exc
        pairs: list[tuple[tuple[str, str], Any]] = []
        for rdata in answer or ():
            if qtype in ("A", "AAAA"):
                pairs.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                pairs.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                pairs.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                pairs.append(((name, qtype), rdata.strings))
        return pairs

    def cached(self, client_ip: str, sender: str, helo: str | None) -> SPFResult | None:
        """The result ``check`` would give from its cache, None when it would have to ask."""
        helo_name = (helo or "").strip("[]")
        return self._results.get((client_ip, (sender or helo_name).lower(), helo_name.lower()))

    def check(self, client_ip: str, sender: str, helo: str | None,
              receiver: str) -> SPFResult:
        """Evaluate SPF for ``sender`` (or ``helo`` when the sender is ``<>``, RFC 7208 2.3)
        from ``client_ip``; cooperative, never raises for DNS or record faults."""
        helo_name = (helo or "").strip("[]")
        if sender:
            scope, identity, domain = "mailfrom", sender, domain_part(sender)
        else:
            scope, identity, domain = "helo", helo_name, helo_name
        if not domain or "." not in domain or _is_address(domain):
            return SPFResult("none", scope, identity, domain, "no domain to check")
        key = (client_ip, identity.lower(), helo_name.lower())
        cached = self._results.get(key)
        if cached is not None:
            return cached
        result = self._evaluate(client_ip, sender, helo_name, receiver, scope, identity, domain)
        if result.result != "temperror":
            self._results.put(key, result)
        return result

    def _evaluate(self, client_ip: str, sender: str, helo_name: str, receiver: str,
                  scope: str, identity: str, domain: str) -> SPFResult:
        lifetime = self._resolver.lifetime
        try:
            query = pyspf.query(i=client_ip, s=sender, h=helo_name, receiver=receiver,
                                timeout=lifetime, querytime=lifetime)
            query.dns = types.MethodType(self._dns, query)
            result, _code, explanation = query.check()
        except pyspf.TempError as exc:
            result, explanation = "temperror", str(exc)
        except pyspf.PermError as exc:
            result, explanation = "permerror", str(exc)
        result = result if result in RESULTS else "permerror"
        return SPFResult(result, scope, identity, domain, str(explanation or ""))


def _is_address(text: str) -> bool:
    """An address literal (a HELO of ``[192.0.2.1]``) names no domain to check."""
    try:
        ipaddress.ip_address(text.removeprefix("IPv6:"))
    except ValueError:
        return False
    return True
