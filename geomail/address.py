"""Addresses and domains: the one home for splitting, normalising and comparing them."""

from __future__ import annotations

import idna


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, internationalised names as A-labels: IDNA 2008 (RFC 5891)
    after the UTS 46 mapping, non-transitional, so ``faß.de`` is ``xn--fa-hia.de`` (the stdlib
    codec, IDNA 2003, makes it ``fass.de``: another domain). The one place domains are
    normalised (config, routing, MX lookup, addresses on the wire); ValueError if invalid."""
    domain = domain.strip()
    if domain.isascii():
        return domain.rstrip(".").lower()
    try:
        mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False).rstrip(".")
        labels = [label if label.isascii() else idna.alabel(label).decode("ascii")
                  for label in mapped.split(".")]
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"{domain!r} is not a valid internationalised domain name "
                         f"(IDNA 2008: {exc})") from exc
    return ".".join(labels)


def normalize_address(address: str) -> str:
    """``Local@Domain`` -> ``local@domain`` (geomail compares local parts case-insensitively)."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep or not local or not domain:
        raise ValueError(f"{address!r} is not an address like 'user@example.com'")
    return f"{local.lower()}@{normalize_domain(domain)}"


def split_address(address: str) -> tuple[str, str]:
    """``local@domain`` -> (local, domain); an address without '@' has an empty domain."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address, ""
    return local, domain


def domain_of(address: str) -> str:
    """The domain of ``address``, lower case, without a trailing dot."""
    return split_address(address)[1].rstrip(".").lower()


def domain_part(address: str) -> str:
    """The text after the last '@', as written; the whole string when there is no '@'
    (``postmaster``: the caller then asks about the name itself)."""
    return address.rpartition("@")[2]


def local_part(address: str) -> str:
    """The text before the last '@', as written; "" when there is no '@'."""
    return address.rpartition("@")[0]


def local_and_domain(address: str) -> tuple[str, str]:
    """(``local_part``, ``domain_part``) of ``address``, with their meaning when '@' is missing."""
    return local_part(address), domain_part(address)
