"""DNS questions the inbound checks ask, over the App's dnspython resolver (cooperative under
gevent): TXT strings, addresses and reverse names, with "no such data" told apart from "could
not find out" (RFC 8601 2.7: none/permerror versus temperror)."""

from __future__ import annotations

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from geomail.errors import GeomailError


class DNSTempError(GeomailError):
    """The question could not be answered now (timeout, SERVFAIL, no server): try again later."""


def _answer(resolver: dns.resolver.Resolver, name: str, rdtype: str,
            lifetime: float | None = None) -> dns.resolver.Answer | None:
    """The answer, or None when the name or the data does not exist."""
    try:
        return resolver.resolve(name, rdtype, search=False, lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except (dns.resolver.NoNameservers, dns.exception.Timeout,
            dns.resolver.LifetimeTimeout) as exc:
        raise DNSTempError(f"{name}/{rdtype}: {type(exc).__name__}") from exc
    except dns.exception.DNSException as exc:  # a malformed name or answer: it does not exist
        if isinstance(exc, dns.name.LabelTooLong | dns.name.NameTooLong | dns.name.EmptyLabel):
            return None
        raise DNSTempError(f"{name}/{rdtype}: {type(exc).__name__}") from exc


def txt(resolver: dns.resolver.Resolver, name: str, lifetime: float | None = None) -> list[bytes]:
    """The TXT records at ``name``, each one's strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
    answer = _answer(resolver, name, "TXT", lifetime)
    return [b"".join(rdata.strings) for rdata in answer] if answer is not None else []


def addresses(resolver: dns.resolver.Resolver, name: str, rdtype: str = "A",
              lifetime: float | None = None) -> list[str]:
    """The A or AAAA addresses of ``name``."""
    answer = _answer(resolver, name, rdtype, lifetime)
    return [rdata.address for rdata in answer] if answer is not None else []


def reverse_names(resolver: dns.resolver.Resolver, ip: str,
                  lifetime: float | None = None) -> list[str]:
    """The PTR names of ``ip``, without the final dot."""
    answer = _answer(resolver, str(dns.reversename.from_address(ip)), "PTR", lifetime)
    return [rdata.target.to_text(omit_final_dot=True) for rdata in answer] if answer else []


def raw(resolver: dns.resolver.Resolver, name: str, rdtype: str,
        lifetime: float | None = None) -> dns.resolver.Answer | None:
    """The answer itself (for callers that need more than the above), None when empty."""
    return _answer(resolver, name, rdtype, lifetime)
