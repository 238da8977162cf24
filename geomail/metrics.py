"""Process-wide counters and gauges, rendered in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

Labels = tuple[tuple[str, str], ...]

_HELP: dict[str, tuple[str, str]] = {}  # metric name -> (type, help text)
_KNOWN: dict[str, dict[str, tuple[str, ...]]] = {}  # metric name -> label -> known values
_counters: dict[tuple[str, Labels], float] = {}
_gauges: list[Callable[[], Iterable[tuple[str, Labels, float]]]] = []


def describe(name: str, kind: str, help_text: str, **labels: Sequence[str]) -> None:
    """Declare a metric's type ("counter" or "gauge"), help line and the values each label is
    known to take: a counter is exported at 0 for every combination from the start, so a
    Prometheus ``rate()`` or alert sees the series before its first event. A ``service`` label
    declared with no values takes the listener kinds given to ``reset``."""
    _HELP[name] = (kind, help_text)
    _KNOWN[name] = {label: tuple(values) for label, values in labels.items()}


def inc(name: str, amount: float = 1, **labels: str) -> None:
    """Add to a counter (created at zero on first use)."""
    key = (name, tuple(sorted(labels.items())))
    _counters[key] = _counters.get(key, 0) + amount


def add_gauges(source: Callable[[], Iterable[tuple[str, Labels, float]]]) -> None:
    """Register a callable read at each scrape: it yields (name, labels, value). Samples with
    the same name and labels (two listeners of one kind) are added up into one series."""
    _gauges.append(source)


def reset(services: Iterable[str] = ()) -> None:
    """Forget every counter and gauge source (tests, and a fresh App), then set every known
    counter series to 0; ``services``: the listener kinds configured (the ``service`` label)."""
    _counters.clear()
    _gauges.clear()
    kinds = tuple(sorted(set(services)))
    for name, known in _KNOWN.items():
        if _HELP[name][0] != "counter":
            continue
        labels = sorted(known)
        values = [known[label] or (kinds if label == "service" else ()) for label in labels]
        for combination in itertools.product(*values):
            _counters[(name, tuple(zip(labels, combination, strict=True)))] = 0


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
    gauges: dict[tuple[str, Labels], float] = {}
    for source in _gauges:
        for name, labels, number in source():
            key = (name, tuple(sorted(labels)))
            gauges[key] = gauges.get(key, 0) + number
    samples: dict[str, list[str]] = {}
    for (name, labels), number in [*sorted(_counters.items()), *sorted(gauges.items())]:
        samples.setdefault(name, []).append(_sample(name, labels, number))
    lines = []
    for name in sorted(set(samples) | set(_HELP)):
        kind, help_text = _HELP.get(name, ("untyped", ""))
        if help_text:
            lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples.get(name, []))
    return "\n".join(lines) + "\n"


# Known label values: every combination is a series from the start (counters at 0).
REFUSAL_REASONS = ("too-many-connections", "too-many-from-ip", "shutting-down")
REJECTION_STAGES = ("mail", "rcpt", "data")

describe("geomail_connections_total", "counter", "Connections accepted, per listener kind.",
         service=())
describe("geomail_connections_refused_total", "counter", "Connections refused by limits.",
         service=(), reason=REFUSAL_REASONS)
describe("geomail_connections_open", "gauge", "Connections open now, per listener kind.")
describe("geomail_messages_accepted_total", "counter", "Messages answered 250, by route.",
         route=("local", "queue"))
describe("geomail_messages_rejected_total", "counter", "Refused MAIL/RCPT/DATA, by stage.",
         stage=REJECTION_STAGES)
describe("geomail_deliveries_total", "counter", "Delivery attempts per recipient, by result.",
         result=("delivered", "deferred", "bounced"))
describe("geomail_auth_failures_total", "counter", "Failed logins.")
describe("geomail_tls_handshakes_total", "counter", "Server TLS handshakes, by result.",
         result=("ok", "failed"))
describe("geomail_queue_messages", "gauge", "Messages in the outbound queue.")
describe("geomail_queue_oldest_seconds", "gauge", "Age of the oldest queued message.")
describe("geomail_queue_held", "gauge", "Queue items set aside after repeated errors.")
describe("geomail_queue_item_errors_total", "counter",
         "Turns of queue item handling that raised (the item keeps its schedule).")
describe("geomail_queue_held", "gauge", "Messages set aside in queue/hold/ after repeated "
         "internal errors (never sent, never deleted).")
describe("geomail_queue_item_errors_total", "counter", "Internal errors while handling a "
         "queued message.")
