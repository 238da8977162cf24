"""Where to deliver a domain's mail: MX lookup over dnspython (RFC 5321 5.1, RFC 7505 null MX)."""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from geomail.address import normalize_domain
from geomail.config import RelayConfig
from geomail.delivery import DeliveryError
from geomail.dnsresolver import make_resolver
from geomail.log import event

log = logging.getLogger(__name__)

# RFC 1035 2.3.1 / RFC 5321 4.1.2 (plus '_', seen in the wild): labels of at most 63 octets.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
                       r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$")

@dataclass(frozen=True, slots=True)
class MXHost:
    """One host to try, with the addresses it resolved to (IPv4 first, then IPv6)."""

    name: str  # A-label form, no trailing dot
    preference: int
    addresses: tuple[str, ...]


class MXResolver:
    """Finds the hosts to try for a domain, in order, or raises ``DeliveryError``.

    - MX records sorted by preference, equal preferences shuffled (RFC 5321 5.1);
    - no MX record: the domain's own A/AAAA as an implicit MX of preference 0;
    - a null MX ``0 .`` (RFC 7505): permanent ``556 5.1.10`` without trying anything;
    - NXDOMAIN: permanent; SERVFAIL, REFUSED or timeout: temporary;
    - CNAMEs are followed by dnspython; internationalised names are sent as A-labels;
    - at most ``max_hosts`` hosts; hosts that resolve to one of our own listening addresses, and
      every host not more preferred than them, are dropped (RFC 5321 5.1); when nothing is left
      the mail would loop back to us: permanent ``5.4.6``.

    Blocking only the calling greenlet: dnspython's sockets are cooperative under gevent.
    """

    def __init__(self, resolver: dns.resolver.Resolver, max_hosts: int = 5,
                 own_addresses: Collection[tuple[str, int]] = (), port: int = 25,
                 rng: random.Random | None = None) -> None:
        self._resolver = resolver
        self._max_hosts = max_hosts
        self._own = {(str(ipaddress.ip_address(host)), p) for host, p in own_addresses}
        self._port = port
        self._random = rng or random.Random()

    @classmethod
    def from_config(cls, relay: RelayConfig,
                    own_addresses: Collection[tuple[str, int]] = ()) -> MXResolver:
        """The resolver ``relay`` describes; ``own_addresses``: our listening (ip, port) pairs."""
        return cls(make_resolver(relay), relay.max_mx_hosts, own_addresses, relay.mx_port)

    def resolve(self, domain: str) -> list[MXHost]:
        """The hosts to try for ``domain``, best first, each with at least one address."""
        try:
            name = normalize_domain(domain)
            if not _HOSTNAME.match(name):
                raise ValueError("not a host name (RFC 1035 2.3.1)")
        except ValueError as exc:  # e.g. not valid IDNA 2008 (normalize_domain says why)
            raise DeliveryError(f"invalid domain {domain!r}: {exc}", True, 553, "5.1.2") from exc
        records = self._query(name, "MX")
        if records is None:
            addresses = self.addresses(name, implicit=True)
            if not addresses:
                raise DeliveryError(f"{name} has no MX and no address records", True, 550,
                                    "5.1.2")
            hosts = [MXHost(name, 0, addresses)]
        else:
            hosts = self._from_mx(name, records)
        return self._drop_self(name, hosts)

    def _from_mx(self, domain: str, records: Iterable[object]) -> list[MXHost]:
        by_pref: dict[int, list[str]] = {}
        for record in records:
            exchange = record.exchange  # type: ignore[attr-defined]
            by_pref.setdefault(record.preference, []).append(  # type: ignore[attr-defined]
                "" if exchange == dns.name.root else exchange.to_text(omit_final_dot=True).lower())
        if all(name == "" for names in by_pref.values() for name in names):
            raise DeliveryError(f"{domain} does not accept mail (null MX, RFC 7505)", True, 556,
                                "5.1.10")
        ordered: list[tuple[int, str]] = []
        for pref in sorted(by_pref):
            names = [n for n in dict.fromkeys(by_pref[pref]) if n]
            self._random.shuffle(names)
            ordered += [(pref, n) for n in names]
        hosts: list[MXHost] = []
        temporary: DeliveryError | None = None
        for pref, host in ordered[: self._max_hosts]:
            try:
                addresses = self.addresses(host)
            except DeliveryError as exc:
                temporary = exc
                continue
            if addresses:
                hosts.append(MXHost(host, pref, addresses))
            else:
                event(log, logging.INFO, "mx-no-address", domain=domain, mx=host)
        if not hosts:
            # The MX hosts exist in DNS but not as addresses (yet): the domain's problem, which
            # it may fix; retry rather than bounce.
            raise temporary or DeliveryError(
                f"no MX host of {domain} has an address", False, 451, "4.4.4")
        return hosts

    def addresses(self, host: str, implicit: bool = False) -> tuple[str, ...]:
        """A and AAAA addresses of ``host``; () when it has none (or, for an MX host, does not
        exist); temporary ``DeliveryError`` when DNS fails."""
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            # An MX host that does not exist is not the whole domain failing: no addresses.
            answer = self._query(host, rdtype, nxdomain_permanent=implicit)
            found += [r.to_text() for r in answer or ()]  # type: ignore[attr-defined]
        return tuple(found)

    def _query(self, name: str, rdtype: str,
               nxdomain_permanent: bool = True) -> list[object] | None:
        """The records of ``name``; None when it exists without records of that type."""
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            if not nxdomain_permanent:
                return None
            raise DeliveryError(f"domain {name} does not exist", True, 550, "5.1.2") from exc
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NoNameservers as exc:
            raise DeliveryError(f"DNS lookup of {name} {rdtype} failed (server error)", False,
                                451, "4.4.3") from exc
        except dns.exception.Timeout as exc:
            raise DeliveryError(f"DNS lookup of {name} {rdtype} timed out", False, 451,
                                "4.4.3") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DeliveryError(f"DNS lookup of {name} {rdtype} failed: {exc}", False, 451,
                                "4.4.3") from exc
        return list(answer)

    def _drop_self(self, domain: str, hosts: list[MXHost]) -> list[MXHost]:
        mine = [h.preference for h in hosts if any(self.is_own(a) for a in h.addresses)]
        if not mine:
            return hosts
        kept = [h for h in hosts if h.preference < min(mine)]
        if not kept:
            raise DeliveryError(f"mail for {domain} loops back to myself", True, 554, "5.4.6")
        return kept

    def is_own(self, address: str) -> bool:
        """True when ``address`` at the MX port is one of our own listening sockets."""
        if (address, self._port) in self._own:
            return True
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        if (wildcard, self._port) not in self._own and ("::", self._port) not in self._own:
            return False
        return _is_local_address(address, family)


def _is_local_address(address: str, family: int) -> bool:
    """True when ``address`` belongs to this machine: only then can a socket bind to it."""
    if ipaddress.ip_address(address).is_loopback:
        return True
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((address, 0))
    except OSError:
        return False
    finally:
        sock.close()
    return True
