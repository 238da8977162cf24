"""DNS block- and allow-lists (RFC 5782): is a client address listed in any configured zone?

Every zone is asked at once (one greenlet each, over the App's cooperative resolver), so a
lookup takes as long as the slowest zone, at most the resolver's lifetime. A zone that times
out or fails counts as "not listed" (a dead list must not stop mail); so does an answer in
127.255.255.0/24, which the lists use for errors (Spamhaus answers 127.255.255.254 to queries
through public resolvers): such answers would otherwise list every client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.resolver
import gevent

from geomail.checks.dnsquery import DNSTempError, addresses
from geomail.clientnet import client_address
from geomail.config import DNSListConfig

ERROR_CODES = b"\x7f\xff\xff"  # 127.255.255.0/24: the lists' own error answers
LOOPBACK = b"\x7f"  # 127.0.0.0/8: RFC 5782 2.3, listings are answered in it


@dataclass(frozen=True, slots=True)
class Listing:
    """What a lookup found: the allow-list or block-list zone that listed the client and the
    answer it gave (``kind`` "allow", "block" or "" for none), and the zones that failed."""

    kind: str = ""
    zone: str = ""
    code: str = ""
    failed: tuple[str, ...] = ()  # "zone:reason" of each zone that could not say


def query_name(ip: str, zone: str) -> str:
    """The name to ask in ``zone`` for ``ip`` (RFC 5782 2.1: IPv4 octets reversed; 2.4: IPv6
    nibbles reversed); an IPv4-mapped IPv6 address is asked as IPv4."""
    address = client_address(ip)
    if isinstance(address, ipaddress.IPv4Address):
        labels = str(address).split(".")
    else:
        labels = list(address.exploded.replace(":", ""))
    return ".".join(reversed(labels)) + "." + zone


class DNSListChecker:
    """The configured DNSWL and DNSBL zones, asked through ``resolver``."""

    def __init__(self, resolver: dns.resolver.Resolver, dnsbl: tuple[DNSListConfig, ...],
                 dnswl: tuple[DNSListConfig, ...] = ()) -> None:
        self.resolver = resolver
        self.dnsbl = dnsbl
        self.dnswl = dnswl

    def check(self, ip: str) -> Listing:
        """Ask every zone at once: an allow-list match wins (the block-lists then do not
        count), else the first block-list (in config order) that lists ``ip``."""
        lists = [("allow", entry) for entry in self.dnswl] + [("block", e) for e in self.dnsbl]
        try:
            names = [query_name(ip, entry.zone) for _, entry in lists]
        except ValueError:
            return Listing()  # not an IP address (a Unix socket): nothing to ask
        jobs = [gevent.spawn(self._ask, name, entry) for name, (_, entry) in zip(names, lists,
                                                                                 strict=True)]
        gevent.joinall(jobs, timeout=self.resolver.lifetime + 1.0)
        failed: list[str] = []
        found: Listing | None = None
        for (kind, entry), job in zip(lists, jobs, strict=True):
            if not job.ready():
                job.kill(block=False)
                failed.append(f"{entry.zone}:timeout")
                continue
            code, problem = job.value if job.successful() else (None, "error")
            if problem:
                failed.append(f"{entry.zone}:{problem}")
            elif code is not None and found is None:
                found = Listing(kind, entry.zone, code)
        if found is None:
            return Listing(failed=tuple(failed))
        return Listing(found.kind, found.zone, found.code, tuple(failed))

    def _ask(self, name: str, entry: DNSListConfig) -> tuple[str | None, str]:
        """(the answer that lists the client or None, the problem if the zone failed)."""
        try:
            answers = addresses(self.resolver, name)
        except DNSTempError as exc:
            reason = str(exc).rsplit(": ", 1)[-1]
            return None, "timeout" if "Timeout" in reason else reason
        listed = [code for code in answers if _listed(code, entry.codes)]
        if listed:
            return listed[0], ""
        errors = [code for code in answers if _is_error(code)]
        return None, f"error-code-{errors[0]}" if errors else ""


def _packed(code: str) -> bytes:
    try:
        return ipaddress.IPv4Address(code).packed
    except ValueError:
        return b""


def _is_error(code: str) -> bool:
    return _packed(code).startswith(ERROR_CODES)


def _listed(code: str, codes: tuple[str, ...]) -> bool:
    """Does answer ``code`` list the client: one of ``codes``, or with none configured any
    127.0.0.0/8 answer outside the error range (RFC 5782 2.3)."""
    if codes:
        return code in codes
    packed = _packed(code)
    return packed.startswith(LOOPBACK) and not packed.startswith(ERROR_CODES)
