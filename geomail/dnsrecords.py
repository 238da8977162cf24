"""``geomail dns``: the DNS records a domain needs to send and receive mail, and a check of them."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.resolver
import dns.reversename

from geomail.config import Config
from geomail.dkim import DKIMError, dns_txt_record
from geomail.web import mta_sts
from geomail.web.clients import client_services


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish: ``name TYPE value``; ``note`` says why, in plain words."""

    name: str
    type: str
    value: str
    note: str


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


def public_addresses(config: Config) -> list[str]:
    """The specific (non-wildcard, non-loopback) addresses geomail listens on, if any."""
    found: list[str] = []
    for listener in config.listeners:
        ip = ipaddress.ip_address(listener.host)
        if not (ip.is_unspecified or ip.is_loopback) and listener.host not in found:
            found.append(listener.host)
    return found


def records(config: Config, addresses: list[str] | None = None) -> list[Record]:
    """Every record to publish for the config's domains and hostname; ``addresses`` are the
    server's public addresses (default: the specific ones it listens on)."""
    host = _fqdn(config.hostname)
    out: list[Record] = []
    addresses = addresses or public_addresses(config)
    for address in addresses or ["<the VPS's IPv4 address>"]:
        kind = "AAAA" if ":" in address else "A"
        out.append(Record(host, kind, address, "the mail server's own name"))
    for domain in config.domains:
        name = _fqdn(domain)
        out.append(Record(name, "MX", f"10 {host}", "where mail for the domain is delivered"))
        out.append(Record(name, "TXT", "v=spf1 mx -all",
                          "SPF: only the MX hosts send mail for the domain (RFC 7208)"))
        if config.dkim and domain in config.dkim.keys:
            try:
                value = dns_txt_record(config.dkim.keys[domain])
            except (OSError, DKIMError):
                value = "<run 'geomail dkim keygen' first>"
            out.append(Record(_fqdn(f"{config.dkim.selector}._domainkey.{domain}"), "TXT",
                              value, "DKIM public key (RFC 6376 3.6.2)"))
        out.append(_dmarc_record(domain, signed=bool(config.dkim and
                                                     domain in config.dkim.keys)))
        out.extend(web_records(config, domain))
    for address in addresses or ["<the VPS's IPv4 address>"]:
        ptr = dns.reversename.from_address(address).to_text() if addresses else \
            "<reverse name of the VPS address>"
        out.append(Record(ptr, "PTR", host, "reverse DNS: set it in your VPS provider's panel"))
    return out


def _dmarc_record(domain: str, signed: bool) -> Record:
    """DMARC that protects the domain (RFC 7489 6.3): ``p=reject`` once the domain's mail is
    DKIM-signed (with SPF, both aligned for mail geomail sends), so forged From addresses
    are refused by receivers that enforce DMARC, as geomail does; ``p=quarantine`` until a
    DKIM key is configured (SPF alone breaks on forwarding)."""
    policy = "reject" if signed else "quarantine"
    why = ("DMARC: receivers refuse mail that forges the domain (RFC 7489)" if signed else
           "DMARC: forged mail goes to spam; after 'geomail dkim keygen', publish p=reject")
    return Record(_fqdn(f"_dmarc.{domain}"), "TXT",
                  f"v=DMARC1; p={policy}; rua=mailto:postmaster@{domain}", why)


def web_records(config: Config, domain: str) -> list[Record]:
    """MTA-STS (RFC 8461 3.1) and autoconfiguration names when a ``webs`` listener serves
    them, TLS-RPT (RFC 8460 3), and the RFC 6186 SRV records of the mail services."""
    host = _fqdn(config.hostname)
    out: list[Record] = []
    if config.listeners_of("webs"):
        out.append(Record(_fqdn(f"_mta-sts.{domain}"), "TXT", mta_sts.txt_record(config),
                          f"MTA-STS (RFC 8461 3.1): mode {config.web.mta_sts_mode}; the id "
                          "changes whenever the policy does"))
        for prefix, why in (("mta-sts", "serves the MTA-STS policy over HTTPS (RFC 8461 3.3)"),
                            ("autoconfig", "Thunderbird's autoconfiguration (docs/web.md)"),
                            ("autodiscover", "Outlook's Autodiscover (docs/web.md)")):
            out.append(Record(_fqdn(f"{prefix}.{domain}"), "CNAME", host,
                              f"{why}; or A/AAAA records of the server; the certificate "
                              "must name it"))
    rua = config.web.tls_report_address or f"postmaster@{domain}"
    out.append(Record(_fqdn(f"_smtp._tls.{domain}"), "TXT", f"v=TLSRPTv1; rua=mailto:{rua}",
                      "TLS-RPT: where senders report TLS failures to us (RFC 8460 3)"))
    # RFC 6186 3.1 / RFC 8314 5.1: implicit TLS gets the lower (preferred) priority.
    for service, kind, priority in (("_submissions", "submissions", 0),
                                    ("_submission", "submission", 10),
                                    ("_imaps", "imaps", 0), ("_imap", "imap", 10),
                                    ("_pop3s", "pop3s", 0), ("_pop3", "pop3", 10)):
        found = client_services(config, (kind,))
        name = _fqdn(f"{service}._tcp.{domain}")
        if found:
            out.append(Record(name, "SRV", f"{priority} 1 {found[0].port} {host}",
                              f"client discovery of {kind} (RFC 6186 3.1, RFC 8314 5.1)"))
        else:
            out.append(Record(name, "SRV", "0 0 0 .",
                              f"{kind} is not offered here (RFC 6186 3.4)"))
    return out


def format_zone(items: list[Record]) -> str:
    """The records as zone-file lines, each after a comment saying what it is for."""
    width = max(len(r.name) for r in items)
    lines = []
    for record in items:
        value = f'"{record.value}"' if record.type == "TXT" else record.value
        if record.type == "TXT" and len(record.value) > 255:  # RFC 1035 3.3: 255-octet strings
            value = " ".join(f'"{record.value[i:i + 255]}"'
                             for i in range(0, len(record.value), 255))
        lines.append(f"; {record.note}")
        lines.append(f"{record.name:<{width}}  IN {record.type:<4} {value}")
    return "\n".join(lines) + "\n"


Lookup = Callable[[str, str], list[str]]


def resolver_lookup(resolver: dns.resolver.Resolver) -> Lookup:
    """A lookup function over dnspython: the answers as text (TXT strings joined)."""
    def lookup(name: str, rdtype: str) -> list[str]:
        try:
            answer = resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return [r.to_text() for r in answer]
    return lookup


def check(items: list[Record], lookup: Lookup) -> list[tuple[Record, str, str]]:
    """Each record with ``ok``, ``missing`` or ``wrong`` and what DNS actually has."""
    results = []
    for record in items:
        if record.value.startswith("<") or record.name.startswith("<"):
            results.append((record, "unknown", "fill in the address first"))
            continue
        try:
            found = lookup(record.name, record.type)
        except dns.exception.DNSException as exc:
            results.append((record, "error", type(exc).__name__))
            continue
        results.append((record, _verdict(record, found), "; ".join(found) or "-"))
    return results


def _verdict(record: Record, found: list[str]) -> str:
    if not found:
        return "missing"
    if record.type == "MX":
        hosts = {f.split()[-1].lower() for f in found}
        return "ok" if record.value.split()[-1].lower() in hosts else "wrong"
    if record.type == "TXT":
        prefix = record.value.split(";")[0].split()[0]  # v=spf1, v=DKIM1, v=DMARC1
        mine = [f for f in found if f.startswith(prefix)]
        if not mine:
            return "missing"
        if prefix == "v=DMARC1" and any("p=none" in f.replace(" ", "") for f in mine):
            return "weak"  # published, but asks receivers to do nothing with forgeries
        if prefix == "v=STSv1":  # a stale id makes senders keep an old policy
            return "ok" if any(record.value.split("id=")[1] in f for f in mine) else "wrong"
        if prefix == "v=DKIM1":
            key = record.value.rsplit("p=", 1)[-1]
            return "ok" if any(f.replace(" ", "").endswith("p=" + key) for f in mine) else "wrong"
        return "ok"
    if record.type in ("A", "AAAA"):
        return "ok" if record.value in found else "wrong"
    if record.type == "SRV" and record.value.endswith(" ."):
        # RFC 2782: target "." means "not available", whatever the numbers (RFC 6186 3.4)
        return "ok" if any(f.endswith(" .") for f in found) else "wrong"
    if record.type in ("CNAME", "SRV"):
        return "ok" if record.value.lower() in (f.lower() for f in found) else "wrong"
    if record.type == "PTR":
        return "ok" if record.value.lower() in (f.lower() for f in found) else "wrong"
    return "ok"


def format_check(results: list[tuple[Record, str, str]]) -> str:
    """One line per record: verdict, type, name, and what DNS has."""
    return "".join(f"{verdict:<8} {record.type:<4} {record.name}  (found: {found})\n"
                   for record, verdict, found in results)
