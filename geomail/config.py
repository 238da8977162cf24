"""The YAML configuration: parsed once into frozen, typed objects; faults name their key path."""

from __future__ import annotations

import ipaddress
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from geomail.errors import ConfigError

T = TypeVar("T")

KiB = 1024
MiB = 1024 * KiB

LISTENER_KINDS = ("smtp", "submission", "submissions", "pop3", "pop3s", "http")
STORE_FORMATS = ("maildir", "mbox")


# --------------------------------------------------------------------------------------------
# Config objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listening socket: what it serves and where."""

    kind: str  # one of LISTENER_KINDS
    host: str  # an IP literal ("127.0.0.1", "::1", "0.0.0.0", "::")
    port: int  # 0 asks the kernel for a free port (tests)
    allow_plaintext_auth: bool = False  # AUTH/USER/PASS without TLS (127.0.0.1 set-ups only)

    @property
    def implicit_tls(self) -> bool:
        """True for the ports that speak TLS from the first byte (RFC 8314)."""
        return self.kind in ("submissions", "pop3s")

    @property
    def address(self) -> str:
        """``host:port`` as written in the config (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound on what a client may make the server do; RFC 5321 4.5.3 for the SMTP ones."""

    max_message_size: int = 25 * MiB  # SIZE (RFC 1870), enforced while reading
    max_recipients: int = 100  # RFC 5321 4.5.3.1.8: at least 100 must be accepted
    max_connections: int = 2000  # across all listeners
    max_connections_per_ip: int = 20
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2.7: server timeout 5 minutes
    data_timeout: float = 600.0  # wait for each block of message data
    max_line_length: int = 1000  # text line incl. CRLF, RFC 5321 4.5.3.1.6
    max_command_length: int = 512  # command line incl. CRLF, RFC 5321 4.5.3.1.4
    max_bad_commands: int = 10  # unknown/out-of-sequence commands before 421 and close
    max_auth_failures: int = 5  # failed logins per client IP before it is blocked
    auth_block_time: float = 900.0  # how long a blocked IP stays blocked
    tls_handshake_timeout: float = 30.0
    shutdown_grace: float = 30.0  # SIGTERM: time in-flight sessions get to finish
    pop3_timeout: float = 600.0  # RFC 1939 3: autologout timer of at least 10 minutes


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where and how mailboxes are kept."""

    format: str = "maildir"
    path: str = ""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """PEM certificate chain and private key for STARTTLS/STLS and the implicit-TLS ports."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class SmarthostConfig:
    """One relay host that takes all remote mail instead of MX delivery."""

    host: str
    port: int = 587
    tls: str = "starttls"  # "starttls" or "implicit"; TLS is always required
    username: str | None = None
    password: str | None = None
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Outbound delivery: DNS, retries, bounces, who may relay."""

    nameservers: tuple[tuple[str, int], ...] = ()  # empty: the system resolver
    mx_port: int = 25
    smarthost: SmarthostConfig | None = None
    retry: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    max_queue_time: float = 5 * 86400.0  # RFC 5321 4.5.4.1: give up after 4-5 days
    delay_warning: float = 4 * 3600.0  # 0 turns the delay notice off
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_connections: int = 50
    max_connections_per_domain: int = 5
    max_mx_hosts: int = 5
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2
    data_timeout: float = 600.0  # RFC 5321 4.5.3.2.6: end of data
    dns_timeout: float = 10.0
    verify_tls: bool = False  # opportunistic STARTTLS to MX hosts is not verified


@dataclass(frozen=True, slots=True)
class DKIMConfig:
    """DKIM signing keys: one per local domain (the same file may serve several)."""

    selector: str
    keys: Mapping[str, str]  # domain -> PEM private key path


@dataclass(frozen=True, slots=True)
class SendmailConfig:
    """The account ``geomail sendmail`` logs in with (else it relies on relay.allow_networks)."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Log level and format of the lines on stderr."""

    level: str = "info"
    format: str = "text"  # "text" (key=value) or "json"


@dataclass(frozen=True, slots=True)
class UserConfig:
    """A local mailbox; without a password it receives mail but cannot log in."""

    address: str  # canonical: lower case
    password_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, as loaded from one YAML file."""

    hostname: str
    domains: tuple[str, ...]
    data_dir: str
    store: StoreConfig
    user: str | None = None
    users: Mapping[str, UserConfig] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    suffix_separator: str = "+"
    listeners: tuple[ListenerConfig, ...] = ()
    tls: TLSConfig | None = None
    relay: RelayConfig = field(default_factory=RelayConfig)
    dkim: DKIMConfig | None = None
    limits: Limits = field(default_factory=Limits)
    log: LogConfig = field(default_factory=LogConfig)
    http_allow_remote: bool = False
    sendmail: SendmailConfig | None = None
    source: str = ""  # the file it came from, for messages

    @property
    def queue_dir(self) -> str:
        """Where the outbound queue keeps its items."""
        return os.path.join(self.data_dir, "queue")

    def listeners_of(self, *kinds: str) -> tuple[ListenerConfig, ...]:
        """The listeners serving any of ``kinds``."""
        return tuple(lst for lst in self.listeners if lst.kind in kinds)


# --------------------------------------------------------------------------------------------
# Value parsers: each raises ValueError with a message that completes "KEY: ..."
# --------------------------------------------------------------------------------------------

_SIZE_UNITS = {
    "": 1, "b": 1, "k": KiB, "kb": 1000, "kib": KiB, "m": MiB, "mb": 1000**2, "mib": MiB,
    "g": 1024 * MiB, "gb": 1000**3, "gib": 1024 * MiB,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|)\s*$")
_LABEL_RE = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL_RE}(\.{_LABEL_RE})*$")


def parse_size(value: object) -> int:
    """``25MiB``, ``10MB``, ``512KiB`` or a plain number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '25MiB', got {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    match = _SIZE_RE.match(str(value)) if isinstance(value, str) else None
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size like '25MiB' or '512KiB', got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(value: object) -> float:
    """``90s``, ``5m``, ``2h``, ``5d``, ``500ms`` or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '5m', got {value!r}")
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a duration like '90s', '5m', '2h' or '5d', got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_hostport(value: object, default_port: int | None = None) -> tuple[str, int]:
    """``127.0.0.1:25``, ``[::1]:25`` (or a bare host when ``default_port`` is given)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected 'host:port', got {value!r}")
    text = value.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{value!r} has an unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r} is not 'host:port'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ValueError(f"{value!r}: write IPv6 addresses as '[::1]:port'")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{value!r} has no port; write 'host:port'")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r} is not a valid port")
    return host, int(port_text)


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, internationalised names as A-labels (RFC 5890)."""
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"{domain!r} is not a valid domain name") from exc
    return domain


def normalize_address(address: str) -> str:
    """``Local@Domain`` -> ``local@domain`` (geomail compares local parts case-insensitively)."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep or not local or not domain:
        raise ValueError(f"{address!r} is not an address like 'user@example.com'")
    return f"{local.lower()}@{normalize_domain(domain)}"


def _parse_domain(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a domain name, got {value!r}")
    domain = normalize_domain(value)
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"{value!r} is not a valid domain name")
    return domain


def _parse_mailbox_address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an address, got {value!r}")
    address = normalize_address(value)
    local = address.rpartition("@")[0]
    # The local part becomes a directory name in the store: keep it to one safe path element.
    if "/" in local or "\0" in local or local.startswith(".") or any(c.isspace() for c in local):
        raise ValueError(f"{value!r}: the local part may not contain '/', spaces or start with '.'")
    _parse_domain(address.rpartition("@")[2])
    return address


# --------------------------------------------------------------------------------------------
# The walker: reads a mapping, records every problem with its key path, rejects unknown keys
# --------------------------------------------------------------------------------------------


class _Section:
    """A view of one YAML mapping at ``path`` that collects problems instead of stopping."""

    def __init__(self, raw: object, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem(None, f"expected a mapping, got {type(raw).__name__}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def key_path(self, key: str | None) -> str:
        if key is None:
            return self.path or "(top level)"
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str | None, message: str) -> None:
        self.problems.append(f"{self.key_path(key)}: {message}")

    def get(self, key: str, parse: Callable[[Any], T], default: T) -> T:
        self.seen.add(key)
        if key not in self.raw or self.raw[key] is None:
            return default
        try:
            return parse(self.raw[key])
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def section(self, key: str) -> _Section:
        self.seen.add(key)
        return _Section(self.raw.get(key), self.key_path(key), self.problems)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def finish(self) -> None:
        for key in self.raw:
            if key not in self.seen:
                self.problem(str(key), "unknown key")


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _int_range(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    return parse


def _positive_size(value: object) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be greater than zero")
    return size


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def _list(section: _Section, key: str) -> list[tuple[str, Any]]:
    """The items of a YAML list as (key path, value) pairs; a scalar counts as a one-item list."""
    section.seen.add(key)
    raw = section.raw.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raw = [raw]
    return [(f"{section.key_path(key)}[{i}]", item) for i, item in enumerate(raw)]


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _parse_limits(sec: _Section) -> Limits:
    d = Limits()
    limits = Limits(
        max_message_size=sec.get("max_message_size", _positive_size, d.max_message_size),
        max_recipients=sec.get("max_recipients", _int_range(1, 100_000), d.max_recipients),
        max_connections=sec.get("max_connections", _int_range(1, 1_000_000), d.max_connections),
        max_connections_per_ip=sec.get(
            "max_connections_per_ip", _int_range(1, 1_000_000), d.max_connections_per_ip
        ),
        command_timeout=sec.get("command_timeout", _positive_duration, d.command_timeout),
        data_timeout=sec.get("data_timeout", _positive_duration, d.data_timeout),
        max_line_length=sec.get("max_line_length", _int_range(1000, 1_000_000), d.max_line_length),
        max_command_length=sec.get(
            "max_command_length", _int_range(512, 65536), d.max_command_length
        ),
        max_bad_commands=sec.get("max_bad_commands", _int_range(1, 10_000), d.max_bad_commands),
        max_auth_failures=sec.get("max_auth_failures", _int_range(1, 10_000), d.max_auth_failures),
        auth_block_time=sec.get("auth_block_time", _positive_duration, d.auth_block_time),
        tls_handshake_timeout=sec.get(
            "tls_handshake_timeout", _positive_duration, d.tls_handshake_timeout
        ),
        shutdown_grace=sec.get("shutdown_grace", parse_duration, d.shutdown_grace),
        pop3_timeout=sec.get("pop3_timeout", _positive_duration, d.pop3_timeout),
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
                if allow_plain and kind not in ("submission", "submissions", "pop3", "pop3s"):
                    sec.problems.append(
                        f"{path}.allow_plaintext_auth: only submission and pop3 listeners log in"
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


def _parse_tls(sec: _Section) -> TLSConfig | None:
    cert = sec.get("cert", _str, "")
    key = sec.get("key", _str, "")
    sec.finish()
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
    relay = RelayConfig(
        nameservers=tuple(nameservers),
        mx_port=sec.get("mx_port", _int_range(1, 65535), d.mx_port),
        smarthost=smarthost,
        retry=tuple(retry) or d.retry,
        max_queue_time=sec.get("max_queue_time", _positive_duration, d.max_queue_time),
        delay_warning=sec.get("delay_warning", parse_duration, d.delay_warning),
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


def _parse_users(sec: _Section, domains: tuple[str, ...]) -> dict[str, UserConfig]:
    users: dict[str, UserConfig] = {}
    for raw_address, spec in sec.raw.items():
        sec.seen.add(raw_address)
        path = sec.key_path(str(raw_address))
        try:
            address = _parse_mailbox_address(raw_address)
        except ValueError as exc:
            sec.problems.append(f"{path}: {exc}")
            continue
        if address.rpartition("@")[2] not in domains:
            sec.problems.append(f"{path}: the domain is not one of the local 'domains'")
        if address in users:
            sec.problems.append(f"{path}: duplicate user (addresses ignore case)")
        user = _Section(spec, path, sec.problems)
        password = user.get("password", _parse_password, None)
        user.finish()
        users[address] = UserConfig(address, password)
    return users


def _parse_aliases(sec: _Section, domains: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    aliases: dict[str, tuple[str, ...]] = {}
    for raw_key, targets in sec.raw.items():
        sec.seen.add(raw_key)
        path = sec.key_path(str(raw_key))
        key = str(raw_key).strip()
        try:
            if key.startswith("@"):
                key = "@" + _parse_domain(key[1:])
            else:
                key = _parse_mailbox_address(key)
        except ValueError as exc:
            sec.problems.append(f"{path}: {exc}")
            continue
        if key.rpartition("@")[2] not in domains:
            sec.problems.append(f"{path}: aliases are for the local 'domains' only")
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
            domain = target.rpartition("@")[2]
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
    tls = _parse_tls(top.section("tls"))
    relay = _parse_relay(top.section("relay"))
    dkim = _parse_dkim(top.section("dkim"), domain_tuple) if top.has("dkim") else None
    top.seen.add("dkim")
    limits = _parse_limits(top.section("limits"))
    log_sec = top.section("log")
    log = LogConfig(
        level=log_sec.get("level", _choice("debug", "info", "warning", "error"), "info"),
        format=log_sec.get("format", _choice("text", "json"), "text"),
    )
    log_sec.finish()
    http_allow_remote = top.get("http_allow_remote", _bool, False)
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

    if tls is None:
        for lst in listeners:
            if lst.implicit_tls:
                problems.append(f"listen.{lst.kind}: {lst.address} needs a 'tls' certificate")
    for lst in listeners:
        remote = not ipaddress.ip_address(lst.host).is_loopback
        if lst.kind == "http" and remote and not http_allow_remote:
            problems.append(
                f"listen.http: {lst.address} is not a loopback address; "
                "set 'http_allow_remote: true' to expose health and metrics"
            )
    if not any(lst.kind != "http" for lst in listeners):
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
        relay=relay, dkim=dkim, limits=limits, log=log, http_allow_remote=http_allow_remote,
        sendmail=sendmail, source=source,
    )


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str) -> Config:
    """Read and parse the YAML file at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.load(handle, Loader=_StrictLoader)  # a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    return parse_config(raw, source=path)


def check_files(config: Config) -> list[str]:
    """Problems with the files the config names (certificate, key, DKIM keys)."""
    problems = []
    wanted: list[tuple[str, str]] = []
    if config.tls:
        wanted += [("tls.cert", config.tls.cert), ("tls.key", config.tls.key)]
    if config.dkim:
        wanted += [(f"dkim.keys.{d}", p) for d, p in config.dkim.keys.items()]
    for key, path in wanted:
        if not os.path.isfile(path):
            problems.append(f"{key}: file {path} does not exist")
        elif not os.access(path, os.R_OK):
            problems.append(f"{key}: file {path} is not readable")
    return problems
