"""The one dnspython resolver of an App (``relay.nameservers`` or the system's), used by MX
lookups and by the inbound checks (SPF, DKIM, DMARC, iprev, DNS lists). Under gevent's
monkey-patching its sockets are cooperative: a lookup waits without blocking the hub."""

from __future__ import annotations

import dns.nameserver
import dns.resolver

from geomail.config import RelayConfig


def make_resolver(relay: RelayConfig) -> dns.resolver.Resolver:
    """A dnspython resolver for ``relay.nameservers`` (or the system's), with ``dns_timeout``."""
    if relay.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                for host, port in relay.nameservers]
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = relay.dns_timeout
    resolver.timeout = min(relay.dns_timeout, 3.0)  # per server try, so a dead one is skipped
    resolver.cache = dns.resolver.LRUCache(4096)  # honours each answer's TTL
    return resolver
