"""Parsing configuration values (sizes, durations, addresses) and the section walker that
records every problem with its key path instead of stopping at the first."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from geomail.address import domain_part, local_part, normalize_address, normalize_domain
from geomail.units import GiB, KiB, MiB

T = TypeVar("T")

_SIZE_UNITS = {
    "": 1, "b": 1, "k": KiB, "kb": 1000, "kib": KiB, "m": MiB, "mb": 1000**2, "mib": MiB,
    "g": GiB, "gb": 1000**3, "gib": GiB,
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
    local = local_part(address)
    # The local part becomes a directory name in the store: keep it to one safe path element.
    if "/" in local or "\0" in local or local.startswith(".") or any(c.isspace() for c in local):
        raise ValueError(f"{value!r}: the local part may not contain '/', spaces or start with '.'")
    _parse_domain(domain_part(address))
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


def _size_range(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        size = parse_size(value)
        if not low <= size <= high:
            raise ValueError(f"expected a size from {low} to {high} octets, got {value!r}")
        return size

    return parse


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
