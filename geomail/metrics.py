"""Process-wide counters and gauges, rendered in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]

_HELP: dict[str, tuple[str, str]] = {}  # metric name -> (type, help text)
_counters: dict[tuple[str, Labels], float] = {}
_gauges: list[Callable[[], Iterable[tuple[str, Labels, float]]]] = []


def describe(name: str, kind: str, help_text: str) -> None:
    """Declare a metric's type ("counter" or "gauge") and help line."""
    _HELP[name] = (kind, help_text)


def inc(name: str, amount: float = 1, **labels: str) -> None:
    """Add to a counter (created at zero on first use)."""
    key = (name, tuple(sorted(labels.items())))
    _counters[key] = _counters.get(key, 0) + amount


def add_gauges(source: Callable[[], Iterable[tuple[str, Labels, float]]]) -> None:
    """Register a callable read at each scrape: it yields (name, labels, value)."""
    _gauges.append(source)


def reset() -> None:
    """Forget every counter and gauge source (tests, and a fresh App)."""
    _counters.clear()
    _gauges.clear()


def value(name: str, **labels: str) -> float:
    """A counter's current value (0 if never incremented)."""
    return _counters.get((name, tuple(sorted(labels.items()))), 0)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Labels, number: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    shown = int(number) if float(number).is_integer() else number
    return f"{name}{{{inner}}} {shown}" if inner else f"{name} {shown}"


def render() -> str:
    """Every metric in the Prometheus text exposition format."""
    samples: dict[str, list[str]] = {}
    for (name, labels), number in sorted(_counters.items()):
        samples.setdefault(name, []).append(_sample(name, labels, number))
    for source in _gauges:
        for name, labels, number in source():
            samples.setdefault(name, []).append(_sample(name, labels, number))
    lines = []
    for name in sorted(set(samples) | set(_HELP)):
        kind, help_text = _HELP.get(name, ("untyped", ""))
        if help_text:
            lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples.get(name, []))
    return "\n".join(lines) + "\n"


describe("geomail_connections_total", "counter", "Connections accepted, per listener.")
describe("geomail_connections_refused_total", "counter", "Connections refused by limits.")
describe("geomail_connections_open", "gauge", "Connections open now, per listener.")
describe("geomail_messages_accepted_total", "counter", "Messages answered 250, by route.")
describe("geomail_messages_rejected_total", "counter", "Refused MAIL/RCPT/DATA, by stage.")
describe("geomail_deliveries_total", "counter", "Delivery attempts per recipient, by result.")
describe("geomail_auth_failures_total", "counter", "Failed logins.")
describe("geomail_tls_handshakes_total", "counter", "Server TLS handshakes, by result.")
describe("geomail_queue_messages", "gauge", "Messages in the outbound queue.")
describe("geomail_queue_oldest_seconds", "gauge", "Age of the oldest queued message.")
