"""Where an address goes: local mailboxes (users, aliases, suffixes, catch-alls) or elsewhere."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from geomail.address import domain_part, local_and_domain, normalize_address, normalize_domain
from geomail.srs import SRS, SRSError, is_srs

MAX_ALIAS_DEPTH = 10


@dataclass(frozen=True, slots=True)
class Resolution:
    """The final destinations of one recipient address."""

    mailboxes: tuple[str, ...] = ()  # canonical local users
    remote: tuple[str, ...] = ()  # addresses at other domains (forwarding or relaying)


class Router:
    """Resolves recipient addresses against the configured domains, users and aliases.

    Local parts and domains compare case-insensitively. For a local address the order is:
    the exact user or alias, then without its ``+suffix``, then the domain's catch-all
    (``@example.com``), then ``postmaster`` (RFC 5321 4.5.1), which always exists. With
    ``srs``, a valid SRS0/SRS1 address in a local domain stands for the address it reverses to
    (a bounce of forwarded mail going home); a forged or expired one exists for nobody.
    """

    def __init__(self, domains: Iterable[str], users: Iterable[str],
                 aliases: Mapping[str, tuple[str, ...]], suffix_separator: str = "+",
                 srs: SRS | None = None) -> None:
        self.srs = srs
        self.domains = tuple(domains)
        self._domain_set = frozenset(self.domains)
        self._users = frozenset(users)
        self._aliases = dict(aliases)
        self._separators = suffix_separator
        self._postmaster_fallback = next(iter(sorted(self._users)), None)

    def is_local_domain(self, domain: str) -> bool:
        """True for the domains geomail receives mail for."""
        try:
            return normalize_domain(domain) in self._domain_set
        except ValueError:
            return False

    def canonical(self, address: str) -> str:
        """``Alice@Example.COM`` -> ``alice@example.com``; bare ``postmaster`` gets our domain."""
        if address.lower() == "postmaster" and self.domains:
            return f"postmaster@{self.domains[0]}"
        try:
            return normalize_address(address)
        except ValueError:
            return address

    def resolve(self, address: str) -> Resolution | None:
        """Destinations of ``address``; None when it is in a local domain but nobody has it."""
        canonical = self.canonical(address)
        domain = domain_part(canonical)
        if domain not in self._domain_set:
            return Resolution(remote=(address,))
        if self.srs is not None and is_srs(address):
            return self._reverse(address)
        mailboxes: dict[str, None] = {}
        remote: dict[str, None] = {}
        if not self._expand(canonical, mailboxes, remote, 0, set()):
            return None
        if not mailboxes and not remote:  # an alias chain too deep: refuse, never drop mail
            return None
        return Resolution(tuple(mailboxes), tuple(remote))

    def _reverse(self, address: str) -> Resolution | None:
        """Where a bounce to our SRS ``address`` goes (each reversal makes it shorter)."""
        assert self.srs is not None
        try:
            return self.resolve(self.srs.reverse(address))
        except SRSError:
            return None

    def srs_refusal(self, address: str) -> str | None:
        """Why ``address`` (SRS-looking, in a local domain) is refused; None if it is valid."""
        if self.srs is None or not is_srs(address):
            return None
        try:
            self.srs.reverse(address)
        except SRSError as exc:
            return f"{type(exc).__name__.lower()}: {exc}"
        return None

    def _expand(self, address: str, mailboxes: dict[str, None], remote: dict[str, None],
                depth: int, seen: set[str]) -> bool:
        if address in seen or depth > MAX_ALIAS_DEPTH:
            return True  # a loop (config checks forbid them) or a chain too deep: stop here
        seen.add(address)
        local, domain = local_and_domain(address)
        if domain not in self._domain_set:
            remote[address] = None
            return True
        for candidate in self._candidates(local, domain):
            if candidate in self._users:
                mailboxes[candidate] = None
                return True
            targets = self._aliases.get(candidate)
            if targets is not None:
                for target in targets:
                    self._expand(target, mailboxes, remote, depth + 1, seen)
                return True
        if local == "postmaster":
            mailboxes[self._postmaster_fallback or address] = None
            return True
        return False

    def _candidates(self, local: str, domain: str) -> list[str]:
        """The keys to try for ``local@domain``, most specific first."""
        candidates = [f"{local}@{domain}"]
        base = self._strip_suffix(local)
        if base != local:
            candidates.append(f"{base}@{domain}")
        candidates.append(f"@{domain}")
        return candidates

    def _strip_suffix(self, local: str) -> str:
        cut = min((i for i in (local.find(s) for s in self._separators) if i > 0), default=-1)
        return local[:cut] if cut > 0 else local

    def owns(self, user: str, address: str) -> bool:
        """May ``user`` send as ``address``? Their own address (with any suffix) and aliases
        that reach only them; never a catch-all, never another user's address."""
        canonical = self.canonical(address)
        local, domain = local_and_domain(canonical)
        if domain not in self._domain_set:
            return False
        for candidate in (canonical, f"{self._strip_suffix(local)}@{domain}"):
            if candidate == user:
                return True
            if candidate in self._users:
                return False
            if candidate in self._aliases:
                found = self.resolve(candidate)
                return found is not None and found.mailboxes == (user,) and not found.remote
        return False
