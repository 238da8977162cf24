"""The one dnspython resolver of an App (``relay.nameservers`` or the system's), used by MX
lookups and by the inbound checks (SPF, DKIM, DMARC, iprev, DNS lists). Under gevent's
monkey-patching its sockets are cooperative: a lookup waits without blocking the hub."""

from __future__ import annotations

import time
from typing import Any

import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from geomail.config import RelayConfig

MAX_ANSWERS = 4096


class CachingResolver(dns.resolver.Resolver):
    """A dnspython resolver with a front cache of answers by (name, type), each kept until its
    TTL runs out. dnspython's own cache saves the round trip, but every ``resolve`` still
    builds a query, names and a resolution (tens of microseconds of hub time, several times
    per inbound message); a hit here costs one dict lookup."""

    def __init__(self, configure: bool = True) -> None:
        super().__init__(configure=configure)
        self._answers: dict[tuple[str, int], dns.resolver.Answer] = {}

    def resolve(self, qname: dns.name.Name | str,
                rdtype: dns.rdatatype.RdataType | str = dns.rdatatype.A,
                *args: Any, **kwargs: Any) -> dns.resolver.Answer:
        key = (str(qname).lower().rstrip("."), int(dns.rdatatype.RdataType.make(rdtype)))
        answer = self._answers.get(key)
        if answer is not None and answer.expiration > time.time():
            return answer
        answer = super().resolve(qname, rdtype, *args, **kwargs)
        if len(self._answers) >= MAX_ANSWERS:
            self._answers.clear()  # simple and bounded; dnspython's LRU cache still holds them
        self._answers[key] = answer
        return answer


def make_resolver(relay: RelayConfig) -> dns.resolver.Resolver:
    """A dnspython resolver for ``relay.nameservers`` (or the system's), with ``dns_timeout``."""
    if relay.nameservers:
        resolver = CachingResolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                for host, port in relay.nameservers]
    else:
        resolver = CachingResolver()
    resolver.lifetime = relay.dns_timeout
    resolver.timeout = min(relay.dns_timeout, 3.0)  # per server try, so a dead one is skipped
    resolver.cache = dns.resolver.LRUCache(4096)  # honours each answer's TTL
    return resolver
