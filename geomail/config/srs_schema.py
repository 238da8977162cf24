"""The ``srs:`` section: the Sender Rewriting Scheme for aliases that forward
(docs/forwarding.md)."""

from __future__ import annotations

from geomail.config.objects import SRSConfig
from geomail.config.values import _bool, _int_range, _parse_domain, _Section


def parse_srs(sec: _Section, domains: tuple[str, ...]) -> SRSConfig:
    """``srs:``: on by default; the domain of the rewritten senders is the first of ``domains``
    unless set (it must be one of them: bounces to it have to come back here)."""
    d = SRSConfig()
    enabled = sec.get("enabled", _bool, d.enabled)
    domain = sec.get("domain", _parse_domain, domains[0] if domains else "")
    max_age = sec.get("max_age", _int_range(1, 1023), d.max_age)
    sec.finish()
    if domains and domain not in domains:
        sec.problem("domain", f"{domain!r} is not one of the local 'domains'")
    return SRSConfig(enabled=enabled, domain=domain, max_age=max_age)
