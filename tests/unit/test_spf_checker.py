"""geomail's use of pyspf (RFC 7208): the DNS hook it relies on still exists, and results for
identities that name no domain."""

from __future__ import annotations

import dns.resolver
import spf as pyspf

from geomail.checks.spf import SPFChecker


def test_pyspf_still_asks_dns_through_the_name_we_replace() -> None:
    """SPFChecker runs pyspf's ``query.dns`` with its own ``DNSLookup``; if a pyspf release
    stopped calling that name there, every check would silently ask the system resolver."""
    assert "DNSLookup" in pyspf.query.dns.__code__.co_names


def test_checker_lookups_go_to_its_own_resolver() -> None:
    """Two checkers, two resolvers: each query's DNS is answered by its checker's resolver
    (no process-wide patch of pyspf), here one with no servers at all: temperror, at once."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = []
    resolver.lifetime = 1.0
    result = SPFChecker(resolver).check("192.0.2.1", "a@example.org", "mx.example.org", "mx")
    assert result.result == "temperror"
    assert pyspf.DNSLookup is not None  # untouched


def test_address_literal_helo_with_null_sender_is_none() -> None:
    """RFC 7208 2.3: the HELO identity is checked only when it is a domain name; an address
    literal gives ``none`` (and no DNS question)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = []
    checker = SPFChecker(resolver)
    for helo in ("[192.0.2.1]", "[IPv6:2001:db8::1]", "localhost", None):
        result = checker.check("192.0.2.1", "", helo, "mx")
        assert result.result == "none" and result.scope == "helo"
