"""Counters and gauges of one App, rendered in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import NamedTuple

Labels = tuple[tuple[str, str], ...]
GaugeSource = Callable[[], Iterable[tuple[str, Labels, float]]]


class Family(NamedTuple):
    """A metric's name, type ("counter" or "gauge"), help line and the values each label is
    known to take: a counter is exported at 0 for every combination from the start, so a
    Prometheus ``rate()`` or alert sees the series before its first event. A ``service`` label
    with no values takes the listener kinds the registry is created with."""

    name: str
    kind: str
    help: str
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()


REFUSAL_REASONS = ("too-many-connections", "too-many-from-ip", "shutting-down")
REJECTION_STAGES = ("mail", "rcpt", "data")
DMARC_RESULTS = ("pass", "fail", "none", "temperror", "permerror")
SPAM_ACTIONS = ("no action", "greylist", "add header", "rewrite subject", "soft reject",
                "reject", "error")

FAMILIES = (
    Family("geomail_connections_total", "counter", "Connections accepted, per listener kind.",
           (("service", ()),)),
    Family("geomail_connections_refused_total", "counter", "Connections refused by limits.",
           (("service", ()), ("reason", REFUSAL_REASONS))),
    Family("geomail_connections_open", "gauge", "Connections open now, per listener kind."),
    Family("geomail_messages_accepted_total", "counter", "Messages answered 250, by route.",
           (("route", ("local", "queue")),)),
    Family("geomail_messages_rejected_total", "counter", "Refused MAIL/RCPT/DATA, by stage.",
           (("stage", REJECTION_STAGES),)),
    Family("geomail_deliveries_total", "counter", "Delivery attempts per recipient, by result.",
           (("result", ("delivered", "deferred", "bounced")),)),
    Family("geomail_auth_failures_total", "counter", "Failed logins."),
    Family("geomail_tls_handshakes_total", "counter", "Server TLS handshakes, by result.",
           (("result", ("ok", "failed")),)),
    Family("geomail_queue_messages", "gauge", "Messages in the outbound queue."),
    Family("geomail_queue_oldest_seconds", "gauge", "Age of the oldest queued message."),
    Family("geomail_queue_held", "gauge", "Messages set aside in queue/hold/ after repeated "
           "internal errors (never sent, never deleted)."),
    Family("geomail_queue_item_errors_total", "counter", "Internal errors while handling a "
           "queued message."),
    Family("geomail_dnsbl_total", "counter", "Port-25 clients checked against the DNS lists "
           "at connect, by result.", (("result", ("listed", "allowed", "clean")),)),
    Family("geomail_greylist_total", "counter", "Greylisting decisions per recipient, by "
           "result.", (("result", ("greylisted", "passed", "whitelisted")),)),
    Family("geomail_early_talkers_total", "counter", "Port-25 clients sent away for talking "
           "before the greeting."),
    Family("geomail_dmarc_total", "counter", "DMARC results of outsiders' messages (the "
           "strictest From domain's).", (("result", DMARC_RESULTS),)),
    Family("geomail_inbound_checks_total", "counter", "Outsiders' messages after sender "
           "authentication and spam checks, by action.",
           (("action", ("accept", "junk", "reject")),)),
    Family("geomail_outbound_tls_total", "counter", "Outbound TLS sessions with MX hosts, by "
           "policy (opportunistic, sts-enforce, sts-testing, dane) and result.",
           (("policy", ("opportunistic", "sts-enforce", "sts-testing", "dane")),
            ("result", ("ok", "failed")))),
    Family("geomail_spam_checks_total", "counter", "rspamd scans, by its action ('error': "
           "rspamd failed).", (("action", SPAM_ACTIONS),)),
    Family("geomail_acme_orders_total", "counter", "ACME certificate orders (first issuance "
           "and renewals), by lineage and result.",
           (("lineage", ("mail", "web")), ("result", ("success", "failure")))),
    Family("geomail_certificate_expiry_seconds", "gauge", "Seconds until the ACME-managed "
           "certificate of each lineage expires."),
)


class Metrics:
    """One App's registry: counters it is told about and gauges read at each scrape.

    Every known counter series (``FAMILIES``) starts at 0; ``services`` are the listener kinds
    configured (the values of the ``service`` label)."""

    def __init__(self, services: Iterable[str] = (),
                 families: Iterable[Family] = FAMILIES) -> None:
        self._families = {family.name: family for family in families}
        self._counters: dict[tuple[str, Labels], float] = {}
        self._gauges: list[GaugeSource] = []
        kinds = tuple(sorted(set(services)))
        for family in self._families.values():
            if family.kind != "counter":
                continue
            names = sorted(label for label, _ in family.labels)
            known = dict(family.labels)
            values = [known[label] or (kinds if label == "service" else ()) for label in names]
            for combination in itertools.product(*values):
                self._counters[(family.name, tuple(zip(names, combination, strict=True)))] = 0

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add to a counter (created at zero on first use)."""
        key = (name, tuple(sorted(labels.items())))
        self._counters[key] = self._counters.get(key, 0) + amount

    def add_gauges(self, source: GaugeSource) -> None:
        """Register a callable read at each scrape: it yields (name, labels, value). Samples
        with the same name and labels (two listeners of one kind) are added up into one."""
        self._gauges.append(source)

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value (0 if never incremented)."""
        return self._counters.get((name, tuple(sorted(labels.items()))), 0)

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format."""
        gauges: dict[tuple[str, Labels], float] = {}
        for source in self._gauges:
            for name, labels, number in source():
                key = (name, tuple(sorted(labels)))
                gauges[key] = gauges.get(key, 0) + number
        samples: dict[str, list[str]] = {}
        for (name, labels), number in [*sorted(self._counters.items()), *sorted(gauges.items())]:
            samples.setdefault(name, []).append(_sample(name, labels, number))
        lines = []
        for name in sorted(set(samples) | set(self._families)):
            family = self._families.get(name)
            kind, help_text = (family.kind, family.help) if family else ("untyped", "")
            if help_text:
                lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples.get(name, []))
        return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Labels, number: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    shown = int(number) if float(number).is_integer() else number
    return f"{name}{{{inner}}} {shown}" if inner else f"{name} {shown}"
