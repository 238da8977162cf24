"""The YAML schema: each section read into its config object, cross-checked, every fault kept."""

from __future__ import annotations

import ipaddress
import os
import platform
import re
from collections.abc import Callable, Iterator, Mapping

from geomail.address import domain_part, normalize_address, normalize_domain
from geomail.config.checks_schema import parse_checks, parse_spam
from geomail.config.objects import (
    LETSENCRYPT,
    LETSENCRYPT_STAGING,
    LISTENER_KINDS,
    STORE_FORMATS,
    WEB_KINDS,
    ACMEConfig,
    Config,
    DANEConfig,
    DKIMConfig,
    Limits,
    ListenerConfig,
    LogConfig,
    RelayConfig,
    SendmailConfig,
    SmarthostConfig,
    StoreConfig,
    TLSConfig,
    UserConfig,
)
from geomail.config.outbound_tls_schema import parse_outbound_tls
from geomail.config.srs_schema import parse_srs
from geomail.config.values import (
    _bool,
    _choice,
    _int_range,
    _list,
    _parse_domain,
    _parse_mailbox_address,
    _positive_duration,
    _positive_size,
    _Section,
    _size_range,
    _str,
    parse_duration,
    parse_hostport,
)
from geomail.config.web_schema import parse_web
from geomail.errors import ConfigError
from geomail.units import KiB, MiB


def _line_limit(value: object) -> int:
    """``limits.max_line_length``: 0 (no bound but the message size) or at least RFC 5321's."""
    number = _int_range(0, 1 << 40)(value)
    if 0 < number < 1000:
        raise ValueError(f"expected 0 (no limit) or at least 1000 (RFC 5321 4.5.3.1.6), "
                         f"got {number}")
    return number


def _sleep_time(value: object) -> float:
    """``limits.error_sleep_time``: a pause per reply, so at most a minute."""
    seconds = parse_duration(value)
    if seconds > 60:
        raise ValueError(f"expected a duration of at most 60s, got {value!r}")
    return seconds


def _parse_limits(sec: _Section) -> Limits:
    d = Limits()
    limits = Limits(
        max_message_size=sec.get("max_message_size", _positive_size, d.max_message_size),
        max_recipients=sec.get("max_recipients", _int_range(1, 100_000), d.max_recipients),
        max_connections=sec.get("max_connections", _int_range(1, 1_000_000), d.max_connections),
        max_connections_per_ip=(per_ip := sec.get(
            "max_connections_per_ip", _int_range(1, 1_000_000), d.max_connections_per_ip
        )),
        max_user_connections=sec.get(
            "max_user_connections", _int_range(1, 1_000_000), d.max_user_connections
        ),
        max_user_connections_per_ip=sec.get(
            "max_user_connections_per_ip", _int_range(1, 1_000_000), per_ip
        ),
        ipv4_prefix=sec.get("ipv4_prefix", _int_range(8, 32), d.ipv4_prefix),
        ipv6_prefix=sec.get("ipv6_prefix", _int_range(16, 128), d.ipv6_prefix),
        command_timeout=sec.get("command_timeout", _positive_duration, d.command_timeout),
        data_timeout=sec.get("data_timeout", _positive_duration, d.data_timeout),
        max_line_length=sec.get("max_line_length", _line_limit, d.max_line_length),
        max_command_length=sec.get(
            "max_command_length", _int_range(512, 65536), d.max_command_length
        ),
        max_bad_commands=sec.get("max_bad_commands", _int_range(1, 10_000), d.max_bad_commands),
        soft_error_limit=sec.get("soft_error_limit", _int_range(0, 1_000_000), d.soft_error_limit),
        hard_error_limit=sec.get("hard_error_limit", _int_range(1, 1_000_000), d.hard_error_limit),
        error_sleep_time=sec.get("error_sleep_time", _sleep_time, d.error_sleep_time),
        junk_command_limit=sec.get(
            "junk_command_limit", _int_range(0, 1_000_000), d.junk_command_limit
        ),
        max_received_headers=sec.get(
            "max_received_headers", _int_range(1, 10_000), d.max_received_headers
        ),
        max_auth_failures=sec.get("max_auth_failures", _int_range(1, 10_000), d.max_auth_failures),
        auth_block_time=sec.get("auth_block_time", _positive_duration, d.auth_block_time),
        tls_handshake_timeout=sec.get(
            "tls_handshake_timeout", _positive_duration, d.tls_handshake_timeout
        ),
        policy_timeout=sec.get("policy_timeout", _positive_duration, d.policy_timeout),
        shutdown_grace=sec.get("shutdown_grace", parse_duration, d.shutdown_grace),
        pop3_timeout=sec.get("pop3_timeout", _positive_duration, d.pop3_timeout),
        imap_idle_timeout=sec.get("imap_idle_timeout", _positive_duration, d.imap_idle_timeout),
        imap_max_line=sec.get("imap_max_line", _size_range(1024, MiB), d.imap_max_line),
        imap_max_literal=sec.get("imap_max_literal", _size_range(1024, 64 * MiB),
                                 d.imap_max_literal),
        imap_max_command=sec.get("imap_max_command", _size_range(8 * KiB, 64 * MiB),
                                 d.imap_max_command),
        imap_cache_messages=sec.get("imap_cache_messages", _int_range(0, 100_000_000),
                                    d.imap_cache_messages),
        max_connection_time=sec.get(
            "max_connection_time", _positive_duration, d.max_connection_time
        ),
        min_data_rate=sec.get("min_data_rate", _int_range(0, 1_000_000_000), d.min_data_rate),
        spool_memory=sec.get("spool_memory", _positive_size, d.spool_memory),
        io_threads=sec.get("io_threads", _int_range(1, 1024), d.io_threads),
        read_threads=sec.get("read_threads", _int_range(1, 256), d.read_threads),
        password_threads=sec.get("password_threads", _int_range(1, 256), d.password_threads),
        verify_threads=sec.get("verify_threads", _int_range(1, 256), d.verify_threads),
        verify_processes=sec.get("verify_processes", _int_range(0, 64), d.verify_processes),
    )
    sec.finish()
    return limits


def _parse_listeners(sec: _Section) -> tuple[ListenerConfig, ...]:
    listeners: list[ListenerConfig] = []
    for kind in LISTENER_KINDS:
        for path, item in _list(sec, kind):
            allow_plain = False
            if isinstance(item, dict):
                sub = _Section(item, path, sec.problems)
                address = sub.get("address", _str, "")
                allow_plain = sub.get("allow_plaintext_auth", _bool, False)
                sub.finish()
                if not address:
                    sec.problems.append(f"{path}.address: missing")
                    continue
                if allow_plain and kind not in ("submission", "submissions", "pop3", "pop3s",
                                                "imap", "imaps"):
                    sec.problems.append(
                        f"{path}.allow_plaintext_auth: only submission, pop3 and imap listeners "
                        "log in"
                    )
            else:
                address = item
            try:
                host, port = parse_hostport(address)
            except ValueError as exc:
                sec.problems.append(f"{path}: {exc}")
                continue
            host = "127.0.0.1" if host == "localhost" else host
            try:
                ipaddress.ip_address(host)
            except ValueError:
                sec.problems.append(f"{path}: {host!r} is not an IP address to listen on")
                continue
            listeners.append(ListenerConfig(kind, host, port, allow_plain))
    sec.finish()
    return tuple(listeners)


def _parse_store(sec: _Section, data_dir: str) -> StoreConfig:
    fmt = sec.get("format", _choice(*STORE_FORMATS), "maildir")
    path = sec.get("path", _str, os.path.join(data_dir, "mail"))
    sec.finish()
    return StoreConfig(fmt, os.path.abspath(path))


def _acme_directory(value: object) -> str:
    """``tls.acme.directory``: an https URL, or ``letsencrypt`` / ``letsencrypt-staging``."""
    text = _str(value).strip()
    shortcuts = {"letsencrypt": LETSENCRYPT, "letsencrypt-staging": LETSENCRYPT_STAGING}
    if text.lower() in shortcuts:
        return shortcuts[text.lower()]
    if not text.startswith("https://"):
        raise ValueError(f"expected an https:// URL, 'letsencrypt' or 'letsencrypt-staging', "
                         f"got {text!r}")
    return text


def _parse_acme(sec: _Section) -> ACMEConfig | None:
    email = sec.get("email", _parse_mailbox_address, "")
    directory = sec.get("directory", _acme_directory, LETSENCRYPT)
    renew_before = sec.get("renew_before", _positive_duration, 30 * 86400.0)
    ca_file = sec.get("ca_file", _str, None)
    sec.finish()
    if not email:
        sec.problem("email", "required: the CA's contact for expiry and account notices")
        return None
    return ACMEConfig(email, directory, renew_before,
                      os.path.abspath(ca_file) if ca_file else None)


def _parse_tls(sec: _Section, data_dir: str) -> TLSConfig | None:
    cert = sec.get("cert", _str, "")
    key = sec.get("key", _str, "")
    acme = _parse_acme(sec.section("acme")) if sec.has("acme") else None
    sec.seen.add("acme")
    sec.finish()
    if acme is not None:
        if cert or key:
            sec.problem(None, "'cert'/'key' and 'acme' exclude each other: tls.acme obtains "
                              "the certificate itself; remove tls.cert and tls.key, or tls.acme")
            return None
        acme_cert, acme_key = (os.path.join(data_dir, "acme", "mail", name)
                               for name in ("cert.pem", "key.pem"))
        return TLSConfig(acme_cert, acme_key, acme)
    if not cert and not key:
        return None
    if not cert or not key:
        sec.problem(None, "needs both 'cert' and 'key'")
        return None
    return TLSConfig(os.path.abspath(cert), os.path.abspath(key))


def _parse_smarthost(sec: _Section) -> SmarthostConfig | None:
    hostport = sec.get("host", lambda v: parse_hostport(v, 587), ("", 0))
    tls = sec.get("tls", _choice("starttls", "implicit"), "")
    username = sec.get("username", _str, None)
    password = sec.get("password", _str, None)
    verify = sec.get("verify_tls", _bool, True)
    sec.finish()
    if not hostport[0]:
        sec.problem("host", "missing (write 'smtp.provider.net:587')")
        return None
    if (username is None) != (password is None):
        sec.problem(None, "needs both 'username' and 'password', or neither")
    if not tls:
        tls = "implicit" if hostport[1] == 465 else "starttls"
    return SmarthostConfig(hostport[0], hostport[1], tls, username, password, verify)


def _parse_dane(sec: _Section) -> DANEConfig:
    nameservers: list[tuple[str, int]] = []
    for path, item in _list(sec, "nameservers"):
        try:
            bare_ipv6 = isinstance(item, str) and item.count(":") > 1 and "[" not in item
            host, port = (item, 53) if bare_ipv6 else parse_hostport(item, 53)
            ipaddress.ip_address(host)
            nameservers.append((host, port))
        except ValueError:
            sec.problems.append(f"{path}: {item!r} is not an IP address (with an optional :port)")
    sec.finish()
    return DANEConfig(tuple(nameservers)) if nameservers else DANEConfig()


def _parse_relay(sec: _Section) -> RelayConfig:
    d = RelayConfig()
    nameservers: list[tuple[str, int]] = []
    for path, item in _list(sec, "nameservers"):
        try:
            bare_ipv6 = isinstance(item, str) and ":" in item and "[" not in item \
                and item.count(":") > 1
            host, port = (item, 53) if bare_ipv6 else parse_hostport(item, 53)
            ipaddress.ip_address(host)
            nameservers.append((host, port))
        except ValueError:
            sec.problems.append(f"{path}: {item!r} is not an IP address (with an optional :port)")
    networks = []
    for path, item in _list(sec, "allow_networks"):
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            sec.problems.append(f"{path}: {item!r} is not a network like '10.0.0.0/8'")
    retry: list[float] = []
    for path, item in _list(sec, "retry"):
        try:
            retry.append(_positive_duration(item))
        except ValueError as exc:
            sec.problems.append(f"{path}: {exc}")
    smarthost = _parse_smarthost(sec.section("smarthost")) if sec.has("smarthost") else None
    sec.seen.add("smarthost")
    dane = _parse_dane(sec.section("dane")) if sec.has("dane") else None
    sec.seen.add("dane")
    relay = RelayConfig(
        nameservers=tuple(nameservers),
        mx_port=sec.get("mx_port", _int_range(1, 65535), d.mx_port),
        smarthost=smarthost,
        retry=tuple(retry) or d.retry,
        max_queue_time=sec.get("max_queue_time", _positive_duration, d.max_queue_time),
        delay_warning=sec.get("delay_warning", parse_duration, d.delay_warning),
        bounce_size_limit=sec.get("bounce_size_limit", _positive_size, d.bounce_size_limit),
        allow_networks=tuple(networks),
        max_connections=sec.get("max_connections", _int_range(1, 10_000), d.max_connections),
        max_connections_per_domain=sec.get(
            "max_connections_per_domain", _int_range(1, 1000), d.max_connections_per_domain
        ),
        max_mx_hosts=sec.get("max_mx_hosts", _int_range(1, 50), d.max_mx_hosts),
        connect_timeout=sec.get("connect_timeout", _positive_duration, d.connect_timeout),
        command_timeout=sec.get("command_timeout", _positive_duration, d.command_timeout),
        data_timeout=sec.get("data_timeout", _positive_duration, d.data_timeout),
        dns_timeout=sec.get("dns_timeout", _positive_duration, d.dns_timeout),
        verify_tls=sec.get("verify_tls", _bool, d.verify_tls),
        max_item_errors=sec.get("max_item_errors", _int_range(1, 1000), d.max_item_errors),
        dane=dane,
        **parse_outbound_tls(sec),
    )
    sec.finish()
    return relay


def _parse_dkim(sec: _Section, domains: tuple[str, ...]) -> DKIMConfig | None:
    selector = sec.get("selector", _str, "geomail")
    single = sec.get("key", _str, "")
    keys: dict[str, str] = {}
    per_domain = sec.section("keys")
    for domain in per_domain.raw:
        try:
            name = _parse_domain(domain)
        except ValueError as exc:
            per_domain.problem(str(domain), str(exc))
            continue
        path = per_domain.get(domain, _str, "")
        if name not in domains:
            per_domain.problem(str(domain), "is not one of the local 'domains'")
        elif path:
            keys[name] = os.path.abspath(path)
    sec.finish()
    if single:
        for domain in domains:
            keys.setdefault(domain, os.path.abspath(single))
    if not keys:
        sec.problem(None, "needs 'key' (one key for every domain) or 'keys' (per domain)")
        return None
    if not re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", selector):
        sec.problem("selector", f"{selector!r} is not a valid DNS label")
    return DKIMConfig(selector, keys)


def _parse_password(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected the hash printed by 'geomail passwd'")
    if not value.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        raise ValueError(
            "looks like a plain-text password; run 'geomail passwd' and paste the hash it prints"
        )
    return value


def _local_keys(sec: _Section, parse: Callable[[object], str], domains: tuple[str, ...],
                outside: str) -> Iterator[tuple[str, str, object]]:
    """(key path, parsed key, value) for each key of ``sec``; a key ``parse`` refuses is
    reported and skipped, one outside the local ``domains`` reported as ``outside``."""
    for raw_key, value in sec.raw.items():
        sec.seen.add(raw_key)
        path = sec.key_path(str(raw_key))
        try:
            key = parse(raw_key)
        except ValueError as exc:
            sec.problems.append(f"{path}: {exc}")
            continue
        if domain_part(key) not in domains:
            sec.problems.append(f"{path}: {outside}")
        yield path, key, value


def _parse_users(sec: _Section, domains: tuple[str, ...]) -> dict[str, UserConfig]:
    users: dict[str, UserConfig] = {}
    for path, address, spec in _local_keys(sec, _parse_mailbox_address, domains,
                                           "the domain is not one of the local 'domains'"):
        if address in users:
            sec.problems.append(f"{path}: duplicate user (addresses ignore case)")
        user = _Section(spec, path, sec.problems)
        password = user.get("password", _parse_password, None)
        user.finish()
        users[address] = UserConfig(address, password)
    return users


def _parse_alias_key(raw: object) -> str:
    """An alias key: an address, or ``@domain`` (a catch-all)."""
    key = str(raw).strip()
    if key.startswith("@"):
        return "@" + _parse_domain(key[1:])
    return _parse_mailbox_address(key)


def _parse_aliases(sec: _Section, domains: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    aliases: dict[str, tuple[str, ...]] = {}
    for path, key, targets in _local_keys(sec, _parse_alias_key, domains,
                                          "aliases are for the local 'domains' only"):
        items = targets if isinstance(targets, list) else [targets]
        expanded = []
        for i, target in enumerate(items):
            try:
                expanded.append(normalize_address(_str(target)))
            except ValueError as exc:
                where = f"{path}[{i}]" if isinstance(targets, list) else path
                sec.problems.append(f"{where}: {exc}")
        if not expanded:
            sec.problems.append(f"{path}: needs at least one target address")
        aliases[key] = tuple(expanded)
    return aliases


def _check_alias_targets(
    aliases: Mapping[str, tuple[str, ...]], users: Mapping[str, UserConfig],
    domains: tuple[str, ...], problems: list[str],
) -> None:
    """Local targets must exist; alias chains may not loop."""
    for key, targets in aliases.items():
        for target in targets:
            domain = domain_part(target)
            if domain in domains and target not in users and target not in aliases:
                problems.append(f"aliases.{key}: target {target!r} is neither a user nor an alias")

    def walk(address: str, trail: tuple[str, ...]) -> None:
        for target in aliases.get(address, ()):
            if target in trail:
                chain = " -> ".join((*trail, target))
                problems.append(f"aliases.{trail[0]}: alias loop {chain}")
                return
            walk(target, (*trail, target))

    for key in aliases:
        walk(key, (key,))


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def parse_config(raw: object, source: str = "") -> Config:
    """Turn the YAML document ``raw`` into a ``Config``; raises ``ConfigError`` with every fault."""
    problems: list[str] = []
    top = _Section(raw, "", problems)
    hostname = top.get("hostname", _parse_domain, normalize_domain(platform.node() or "localhost"))
    domains: list[str] = []
    for path, item in _list(top, "domains"):
        try:
            domain = _parse_domain(item)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if domain in domains:
            problems.append(f"{path}: duplicate domain {domain!r}")
        domains.append(domain)
    if not domains:
        problems.append("domains: list at least one domain to receive mail for")
    domain_tuple = tuple(domains)
    data_dir = os.path.abspath(top.get("data_dir", _str, "/var/lib/geomail"))
    user = top.get("user", _str, None)
    store = _parse_store(top.section("store"), data_dir)
    users = _parse_users(top.section("users"), domain_tuple)
    aliases = _parse_aliases(top.section("aliases"), domain_tuple)
    _check_alias_targets(aliases, users, domain_tuple, problems)
    separator = top.get("suffix_separator", lambda v: "" if v == "" else _str(v), "+")
    if any(c in separator for c in "@ \t"):
        problems.append("suffix_separator: may not contain '@' or spaces")
    listeners = _parse_listeners(top.section("listen"))
    tls = _parse_tls(top.section("tls"), data_dir)
    relay = _parse_relay(top.section("relay"))
    dkim = _parse_dkim(top.section("dkim"), domain_tuple) if top.has("dkim") else None
    top.seen.add("dkim")
    limits = _parse_limits(top.section("limits"))
    checks = parse_checks(top.section("checks"))
    spam = parse_spam(top.section("spam"))
    log_sec = top.section("log")
    log = LogConfig(
        level=log_sec.get("level", _choice("debug", "info", "warning", "error"), "info"),
        format=log_sec.get("format", _choice("text", "json"), "text"),
    )
    log_sec.finish()
    http_allow_remote = top.get("http_allow_remote", _bool, False)
    web = parse_web(top.section("web"), top.section("mta_sts"))
    srs = parse_srs(top.section("srs"), domain_tuple)
    sendmail = None
    if top.has("sendmail"):
        sec = top.section("sendmail")
        username, password = sec.get("username", _str, ""), sec.get("password", _str, "")
        sec.finish()
        if username and password:
            sendmail = SendmailConfig(username, password)
        else:
            sec.problem(None, "needs both 'username' and 'password'")
    top.seen.add("sendmail")
    top.finish()

    if tls is not None and tls.acme is not None and not any(
            lst.kind == "web" for lst in listeners):
        problems.append("tls.acme: needs a 'listen.web' listener on port 80: the CA validates "
                        "each name over HTTP there (http-01, RFC 8555 8.3)")
    if tls is None:
        for lst in listeners:
            if lst.implicit_tls or lst.kind == "webs":
                problems.append(f"listen.{lst.kind}: {lst.address} needs a 'tls' certificate")
    for lst in listeners:
        remote = not ipaddress.ip_address(lst.host).is_loopback
        if lst.kind == "http" and remote and not http_allow_remote:
            problems.append(
                f"listen.http: {lst.address} is not a loopback address; "
                "set 'http_allow_remote: true' to expose health and metrics"
            )
    if store.format != "maildir":
        for lst in listeners:
            if lst.kind in ("imap", "imaps"):
                problems.append(f"listen.{lst.kind}: IMAP needs store.format: maildir")
                break
    if not any(lst.kind not in ("http", *WEB_KINDS) for lst in listeners):
        problems.append("listen: no smtp, submission or pop3 listener configured")
    seen_addresses: dict[tuple[str, int], str] = {}
    for lst in listeners:
        if lst.port and (lst.host, lst.port) in seen_addresses:
            problems.append(
                f"listen.{lst.kind}: {lst.address} is already used by "
                f"listen.{seen_addresses[(lst.host, lst.port)]}"
            )
        seen_addresses[(lst.host, lst.port)] = lst.kind
    if problems:
        raise ConfigError(problems)
    return Config(
        hostname=hostname, domains=domain_tuple, data_dir=data_dir, store=store, user=user,
        users=users, aliases=aliases, suffix_separator=separator, listeners=listeners, tls=tls,
        relay=relay, dkim=dkim, limits=limits, checks=checks, spam=spam, log=log,
        http_allow_remote=http_allow_remote, sendmail=sendmail, web=web, srs=srs, source=source,
    )
