"""What ``geomail check`` says about ``tls.acme``: what ACME needs, and what can be checked."""

from __future__ import annotations

import time

import dns.exception
import dns.resolver

from geomail.certs.store import lineage_names, lineage_paths, read_info
from geomail.config import Config


def _addresses(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            found += [r.to_text() for r in resolver.resolve(name, rdtype)]
        except (dns.exception.DNSException, OSError):
            continue
    return found


def acme_report(config: Config, resolver: dns.resolver.Resolver | None = None,
                now: float | None = None) -> tuple[list[str], list[str]]:
    """``(lines, warnings)`` for ``tls.acme``; empty without it. Looks names up in DNS."""
    if config.tls is None or config.tls.acme is None:
        return [], []
    acme = config.tls.acme
    now = time.time() if now is None else now
    lines = [f"acme       {acme.directory} as {acme.email}, renewing "
             f"{acme.renew_before / 86400:g} days before expiry",
             "acme       needs: each name below in public DNS (A/AAAA) pointing at this "
             "server, and port 80 reachable from the internet on listen.web (http-01)"]
    warnings: list[str] = []
    web = config.listeners_of("web")
    if not any(lst.port == 80 for lst in web):
        warnings.append("tls.acme: no listen.web on port 80; the CA connects to port 80 "
                        "(forward it there if geomail listens elsewhere)")
    resolver = resolver or dns.resolver.Resolver()
    resolver.lifetime = 3.0
    lineages = lineage_names(config.hostname, config.domains, bool(config.listeners_of("webs")))
    for lineage, names in lineages.items():
        for name in names:
            addresses = _addresses(resolver, name)
            if addresses:
                lines.append(f"acme       {lineage:<5} {name}: {', '.join(addresses)}")
            else:
                warnings.append(f"tls.acme: {name} ({lineage} certificate) has no A/AAAA "
                                "record; the CA cannot validate it")
        info = read_info(lineage_paths(config.data_dir, lineage)[0])
        if info is None:
            state = "none yet (obtained at first start)"
        elif info.self_signed:
            state = "self-signed placeholder"
        else:
            days = (info.not_after - now) / 86400
            expiry = time.strftime("%Y-%m-%d", time.gmtime(info.not_after))
            state = f"issued by {info.issuer}, expires {expiry} ({days:.0f} days left)"
        lines.append(f"acme       {lineage:<5} certificate: {state}")
    return lines, warnings
