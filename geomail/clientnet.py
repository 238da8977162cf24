"""Which network counts as one client: an IPv4 address, an IPv6 /64 (one site's share)."""

from __future__ import annotations

import ipaddress

IPV4_PREFIX = 32
IPV6_PREFIX = 64  # RFC 6177: a site gets at least a /64, so one host can use a whole /64


def client_network(client_ip: str, ipv4_prefix: int = IPV4_PREFIX,
                   ipv6_prefix: int = IPV6_PREFIX) -> str:
    """The key per-client limits count under: ``a.b.c.d`` (or its ``/ipv4_prefix`` network),
    ``2001:db8::/64`` for IPv6; ``::ffff:a.b.c.d`` is IPv4. Unparsable text is its own key."""
    if ipv4_prefix >= 32 and ":" not in client_ip and client_ip.count(".") == 3:
        return client_ip  # the common case, as the socket gives it: no parsing
    try:
        ip = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return client_ip
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
        ip = ip.ipv4_mapped
    if ipv4_prefix >= 32:
        return str(ip)
    return str(ipaddress.IPv4Network((ip, ipv4_prefix), strict=False))


def client_address(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The client's address as the checks compare it: no IPv6 zone, ``::ffff:a.b.c.d`` as the
    IPv4 address it is. ValueError for text that is no address."""
    ip = ipaddress.ip_address(client_ip.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
