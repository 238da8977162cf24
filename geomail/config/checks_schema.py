"""The ``checks:`` (sender authentication) and ``spam:`` (spam defences) sections."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from geomail.config.objects import (
    SPF_FAIL_ACTIONS,
    ChecksConfig,
    DNSListConfig,
    GreylistConfig,
    Network,
    RspamdConfig,
    SpamConfig,
)
from geomail.config.values import (
    _bool,
    _choice,
    _int_range,
    _list,
    _parse_domain,
    _positive_duration,
    _Section,
    _str,
    parse_duration,
)


def _networks(sec: _Section, key: str) -> tuple[Network, ...]:
    networks = []
    for path, item in _list(sec, key):
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            sec.problems.append(f"{path}: {item!r} is not a network like '192.0.2.0/24'")
    return tuple(networks)


def _domains(sec: _Section, key: str) -> tuple[str, ...]:
    domains = []
    for path, item in _list(sec, key):
        try:
            domains.append(_parse_domain(item))
        except ValueError as exc:
            sec.problems.append(f"{path}: {exc}")
    return tuple(domains)


def parse_checks(sec: _Section) -> ChecksConfig:
    """``checks:``: every verification on by default (as maddy), each can be turned off."""
    d = ChecksConfig()
    checks = ChecksConfig(
        spf=sec.get("spf", _bool, d.spf),
        dkim=sec.get("dkim", _bool, d.dkim),
        arc=sec.get("arc", _bool, d.arc),
        dmarc=sec.get("dmarc", _bool, d.dmarc),
        enforce_dmarc=sec.get("enforce_dmarc", _bool, d.enforce_dmarc),
        iprev=sec.get("iprev", _bool, d.iprev),
        authentication_results=sec.get("authentication_results", _bool,
                                       d.authentication_results),
        spf_fail=sec.get("spf_fail", _choice(*SPF_FAIL_ACTIONS), d.spf_fail),
        reject_forged_local=sec.get("reject_forged_local", _bool, d.reject_forged_local),
        skip_domains=_domains(sec, "skip_domains"),
        skip_networks=(_networks(sec, "skip_networks") if "skip_networks" in sec.raw
                       else d.skip_networks),
    )
    if checks.enforce_dmarc and sec.raw.get("enforce_dmarc") and not checks.dmarc:
        sec.problem("enforce_dmarc", "needs 'dmarc: true' (nothing to enforce)")
    sec.finish()
    return checks


def _url(value: object) -> str:
    url = _str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return url.rstrip("/")


def _parse_rspamd(sec: _Section) -> RspamdConfig | None:
    url = sec.get("url", _url, "")
    if not sec.has("url"):
        sec.problem("url", "required: the address of rspamd's normal worker, e.g. "
                           "http://127.0.0.1:11333")
    config = RspamdConfig(
        url=url,
        timeout=sec.get("timeout", _positive_duration, 20.0),
        fail_open=sec.get("fail", _choice("open", "closed"), "open") == "open",
    )
    sec.finish()
    return config if url else None


def _dns_lists(sec: _Section, key: str) -> tuple[DNSListConfig, ...]:
    """A list of zones, each a name or ``{zone: name, codes: [127.0.0.2, ...]}``."""
    lists = []
    for path, item in _list(sec, key):
        if isinstance(item, str):
            item = {"zone": item}
        entry = _Section(item, path, sec.problems)
        zone = entry.get("zone", _parse_domain, "")
        codes = []
        for code_path, code in _list(entry, "codes"):
            try:
                if not ipaddress.ip_address(str(code)).is_loopback:
                    raise ValueError
                codes.append(str(code))
            except ValueError:
                sec.problems.append(f"{code_path}: {code!r} is not an answer code like "
                                    "'127.0.0.2'")
        entry.finish()
        if not zone:
            entry.problem("zone", "required: the list's DNS zone")
            continue
        lists.append(DNSListConfig(zone, tuple(codes)))
    return tuple(lists)


def _parse_greylist(sec: _Section) -> GreylistConfig | None:
    d = GreylistConfig()
    enabled = sec.get("enabled", _bool, True)
    config = GreylistConfig(
        delay=sec.get("delay", parse_duration, d.delay),
        retry_window=sec.get("retry_window", _positive_duration, d.retry_window),
        pass_lifetime=sec.get("pass_lifetime", _positive_duration, d.pass_lifetime),
        auto_whitelist=sec.get("auto_whitelist", _int_range(0, 1_000_000), d.auto_whitelist),
    )
    if config.delay >= config.retry_window:
        sec.problem("delay", "must be shorter than 'retry_window'")
    sec.finish()
    return config if enabled else None


def _greet_delay(value: object) -> float:
    seconds = parse_duration(value)
    if seconds > 60:
        raise ValueError(f"expected at most 60s (clients wait 5 minutes for a greeting, "
                         f"RFC 5321 4.5.3.2.1, but a long delay costs every sender), got "
                         f"{value!r}")
    return seconds


def parse_spam(sec: _Section) -> SpamConfig:
    """``spam:``: rspamd, DNS lists and greylisting are off until configured."""
    rspamd = _parse_rspamd(sec.section("rspamd")) if sec.has("rspamd") else None
    greylist = _parse_greylist(sec.section("greylist")) if sec.has("greylist") else None
    sec.seen.update(("rspamd", "greylist"))
    spam = SpamConfig(
        rspamd=rspamd,
        dnsbl=_dns_lists(sec, "dnsbl"),
        dnswl=_dns_lists(sec, "dnswl"),
        greylist=greylist,
        early_talker=sec.get("early_talker", _bool, True),
        greet_delay=sec.get("greet_delay", _greet_delay, 0.0),
    )
    sec.finish()
    return spam
