"""iprev (RFC 8601 3, 2.7.3): the client's reverse DNS name, confirmed by a forward lookup."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.resolver

from geomail.checks import dnsquery
from geomail.checks.dnsquery import DNSTempError

MAX_NAMES = 10  # PTR names followed forward, as most verifiers do


@dataclass(frozen=True, slots=True)
class IprevResult:
    """pass (a PTR name resolves back to the address), fail (none does), permerror (no PTR
    data), temperror (DNS trouble)."""

    result: str
    ip: str
    name: str = ""  # the confirmed name (pass), for logs and rspamd's Hostname


def check_iprev(resolver: dns.resolver.Resolver, ip: str) -> IprevResult:
    """Forward-confirmed reverse DNS of ``ip``; cooperative, never raises."""
    address = ipaddress.ip_address(ip)
    rdtype = "A" if address.version == 4 else "AAAA"
    try:
        names = dnsquery.reverse_names(resolver, ip)
        if not names:
            return IprevResult("permerror", ip)
        for name in names[:MAX_NAMES]:
            forward = dnsquery.addresses(resolver, name, rdtype)
            if any(ipaddress.ip_address(a) == address for a in forward):
                return IprevResult("pass", ip, name.lower())
    except DNSTempError:
        return IprevResult("temperror", ip)
    return IprevResult("fail", ip)
