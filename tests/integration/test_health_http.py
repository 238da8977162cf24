"""Health and metrics over HTTP: /healthz reflects the listeners and the queue, /metrics is
Prometheus text with the counters an operator watches."""

from __future__ import annotations

import smtplib
import urllib.error
import urllib.request

import pytest

from tests.support.geomail import PASSWORD


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:  # the error holds the response and its socket
            return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def http_app(make_app):
    return make_app(listen={"smtp": ["127.0.0.1:0"], "http": ["127.0.0.1:0"],
                            "submission": [{"address": "127.0.0.1:0",
                                            "allow_plaintext_auth": True}]})


def sample(text: str, name: str) -> float:
    """The value of the sample line ``name`` (with its labels) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_healthz_is_ok_while_everything_runs_and_503_when_not(http_app):
    """/healthz: 200 "ok" while every listener accepts and the queue runs; once a listener
    has stopped, 503 naming it."""
    port = http_app.ports["http"][0]
    assert get(port, "/healthz")[::2] == (200, "ok\n")
    http_app.listeners[0].stop()
    status, _, body = get(port, "/healthz")
    assert status == 503
    assert "listener smtp" in body and "is not accepting" in body


def test_metrics_count_connections_messages_rejections_and_auth(http_app):
    """/metrics (Prometheus text format 0.0.4): connections per listener, messages accepted
    by route, rejections by stage, failed logins, queue size."""
    port = http_app.ports["http"][0]
    smtp_port = http_app.ports["smtp"][0]
    with smtplib.SMTP("127.0.0.1", smtp_port) as client:
        client.sendmail("x@remote.example", ["alice@example.com"], b"Subject: 1\r\n\r\nx\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("x@remote.example", ["nobody@example.com"], b"x\r\n")
    with smtplib.SMTP("127.0.0.1", http_app.ports["submission"][0]) as client, \
            pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("alice@example.com", PASSWORD + "wrong")
    status, content_type, text = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE geomail_messages_accepted_total counter" in text
    assert sample(text, 'geomail_messages_accepted_total{route="local"}') == 1
    assert sample(text, 'geomail_messages_rejected_total{stage="rcpt"}') == 1
    assert sample(text, 'geomail_connections_total{service="smtp"}') == 1
    assert sample(text, "geomail_auth_failures_total") == 2  # smtplib tries PLAIN, then LOGIN
    assert sample(text, 'geomail_connections_open{service="smtp"}') == 0
    assert sample(text, "geomail_queue_messages") == 0


def test_other_paths_and_methods(http_app):
    """Unknown paths get 404, methods other than GET/HEAD 405 (RFC 9110 15.5.6)."""
    port = http_app.ports["http"][0]
    assert get(port, "/nope")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    info.value.close()
    assert info.value.code == 405
