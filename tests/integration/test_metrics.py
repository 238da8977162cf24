"""/metrics a Prometheus user can trust (text format 0.0.4): one series per name and label set,
however many listeners of a kind; every known counter series exported at 0 from the start.
The exposition is parsed strictly, as the text format 0.0.4 defines it."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

from tests.support import wait_for
from tests.support.dialog import Dialog
from tests.support.geomail import base_config, running_app
from tests.support.smtp import send

SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? "
                    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|NaN|[-+]Inf))")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
Series = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> dict[Series, float]:
    """Prometheus text format 0.0.4, strictly: HELP and TYPE at most once per family and
    before its samples, a family's samples together, every line well formed, no (name,
    labels) twice. Returns {(name, labels): value}."""
    assert text.endswith("\n")
    series: dict[Series, float] = {}
    helped: set[str] = set()
    typed: dict[str, str] = {}
    finished: set[str] = set()
    current = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            family = line.split(" ")[2]
            seen = helped if line.startswith("# HELP ") else typed
            assert family not in seen, f"second {line[:6]} for {family}"
            assert family not in finished and not any(n == family for n, _ in series), line
            if line.startswith("# TYPE "):
                typed[family] = line.split(" ")[3]
                assert typed[family] in ("counter", "gauge", "untyped", "summary", "histogram")
            else:
                helped.add(family)
            if current is not None and current != family:
                finished.add(current)
            current = family
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"malformed sample line {line!r}"
        name = match["name"]
        assert name == current and name in typed, f"sample {name} outside its family"
        raw = match["labels"] or ""
        pairs = LABEL.findall(raw)
        assert "".join(f'{k}="{v}",' for k, v in pairs).rstrip(",") == raw, raw
        labels = frozenset(pairs)
        assert len(labels) == len(pairs), f"a label twice in {line!r}"
        key = (name, labels)
        assert key not in series, f"duplicate series {line!r}"
        series[key] = float(match["value"])
    return series


def scrape(app) -> dict[Series, float]:
    port = app.ports["http"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def s(name: str, **labels: str) -> Series:
    return name, frozenset(labels.items())


def test_two_listeners_of_a_kind_give_one_series_each(make_app) -> None:
    """Prometheus text format 0.0.4 (a series is unique by name and labels):
    with two smtp and two submission listeners, geomail_connections_open{service=...} is one
    series per kind whose value is the sum of both listeners' open connections."""
    app = make_app(listen={"smtp": ["127.0.0.1:0", "127.0.0.1:0"], "http": ["127.0.0.1:0"],
                           "submission": [{"address": "127.0.0.1:0"}, {"address": "127.0.0.1:0"}]})
    first, second = app.ports["submission"]
    with Dialog(first) as one, Dialog(second) as two:
        one.greeting()
        two.greeting()
        wait_for(lambda: scrape(app)[s("geomail_connections_open", service="submission")] == 2,
                 10, message="2 open submission connections")
    metrics = scrape(app)
    opened = {k: v for k, v in metrics.items() if k[0] == "geomail_connections_open"}
    assert set(opened) == {s("geomail_connections_open", service="submission"),
                           s("geomail_connections_open", service="smtp")}
    assert metrics[s("geomail_connections_total", service="submission")] == 2


def test_fresh_server_exports_every_known_counter_at_zero(make_app) -> None:
    """Prometheus instrumentation practice ("avoid missing metrics": export known label values
    at 0): before any event, every counter series an operator alerts on
    exists at 0: connections per configured listener kind, refusals per kind and reason,
    messages by route, rejections by stage, deliveries by result, failed logins, TLS
    handshakes by result."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"], "http": ["127.0.0.1:0"],
                           "pop3": [{"address": "127.0.0.1:0"}]})
    metrics = scrape(app)
    expected = [s("geomail_auth_failures_total"), s("geomail_queue_item_errors_total")]
    for kind in ("smtp", "pop3"):
        expected.append(s("geomail_connections_total", service=kind))
        expected += [s("geomail_connections_refused_total", service=kind, reason=reason)
                     for reason in ("too-many-connections", "too-many-from-ip", "shutting-down")]
    expected += [s("geomail_messages_accepted_total", route=r) for r in ("local", "queue")]
    expected += [s("geomail_messages_rejected_total", stage=t) for t in ("mail", "rcpt", "data")]
    expected += [s("geomail_deliveries_total", result=r)
                 for r in ("delivered", "deferred", "bounced")]
    expected += [s("geomail_tls_handshakes_total", result=r) for r in ("ok", "failed")]
    assert {k: metrics.get(k) for k in expected} == dict.fromkeys(expected, 0.0)
    # Kinds that are not configured are not invented.
    assert s("geomail_connections_total", service="submission") not in metrics
    # The first event moves its series from 0 to 1, the others stay.
    with socket.create_connection(("127.0.0.1", app.ports["smtp"][0]), timeout=5):
        wait_for(lambda: scrape(app)[s("geomail_connections_total", service="smtp")] == 1, 10,
                 message="the connection counted")
    assert scrape(app)[s("geomail_connections_total", service="pop3")] == 0


def test_docs_list_every_metric(make_app) -> None:
    """docs/logging.md's metrics table names exactly the families /metrics exports (the
    operator's contract)."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]})
    port = app.ports["http"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        exported = set(re.findall(r"^# TYPE (\S+) ", response.read().decode(), re.MULTILINE))
    docs = (Path(__file__).resolve().parents[2] / "docs" / "logging.md").read_text()
    table = docs[docs.index("## Metrics"):]
    documented = set(re.findall(r"`(geomail_[a-z_]+)`", table))
    assert exported == documented


ACCEPTED = s("geomail_messages_accepted_total", route="local")
CONNECTIONS = s("geomail_connections_total", service="smtp")
MESSAGE = b"Subject: counted\r\n\r\nhello\r\n"


def test_two_apps_in_one_process_keep_their_own_metrics(make_app, tmp_path) -> None:
    """No process-global state: each App owns its metrics registry.
    Two Apps side by side in one process: a message accepted by one shows in its /metrics
    only, creating the second does not reset the first, and a third App started and stopped
    next to them resets neither."""
    listen = {"smtp": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}
    first = make_app(listen=listen)
    assert send(first.ports["smtp"][0], "a@remote.example", ["test1@test.com"], MESSAGE)[0] == 250
    wait_for(lambda: scrape(first)[ACCEPTED] == 1, 10, message="the message counted")
    second = make_app(listen=listen, data_dir=str(tmp_path / "second"))
    assert (scrape(first)[ACCEPTED], scrape(first)[CONNECTIONS]) == (1, 1)
    assert (scrape(second)[ACCEPTED], scrape(second)[CONNECTIONS]) == (0, 0)
    for _ in range(2):
        assert send(second.ports["smtp"][0], "b@remote.example", ["test1@test.com"],
                    MESSAGE)[0] == 250
    wait_for(lambda: scrape(second)[ACCEPTED] == 2, 10, message="both messages counted")
    assert (scrape(first)[ACCEPTED], scrape(first)[CONNECTIONS]) == (1, 1)
    with running_app(base_config(tmp_path, listen=listen, data_dir=str(tmp_path / "third"))):
        pass
    assert (scrape(first)[ACCEPTED], scrape(second)[ACCEPTED]) == (1, 2)
    assert (scrape(first)[CONNECTIONS], scrape(second)[CONNECTIONS]) == (1, 2)
