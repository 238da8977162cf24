"""rspamd beside geomail (issue 12 item 6): a real rspamd (Debian's package, started privately on
loopback) judges every outsider's message after the sender checks: its ``reject`` refuses the
message (554 5.7.1), ``add header`` files it in the Junk folder with ``X-Spam: Yes``, a clean
message is delivered with its score; rspamd down: delivered (fail open, the default) with a
log line and a counter, or 451 (fail closed). The rspamd protocol:
https://rspamd.com/doc/developers/protocol.html."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port
from tests.support.dns import Dnsmasq
from tests.support.geomail import base_config, running_app
from tests.support.rspamd import Rspamd, gtube
from tests.support.stored import maildir

MAILBOX = "alice@example.com"


@pytest.fixture(scope="module")
def rspamd() -> Iterator[Rspamd]:
    server = Rspamd().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def zone() -> Iterator[Dnsmasq]:
    """DNS for the checks that run before rspamd: nothing published (spf/dkim/dmarc none)."""
    server = Dnsmasq().start()
    yield server
    server.stop()


def _config(tmp_path: Path, zone: Dnsmasq, url: str, fail: str = "open") -> dict[str, Any]:
    return base_config(tmp_path, checks={"skip_networks": []},
                       relay={"nameservers": [zone.nameserver], "dns_timeout": "2s"},
                       spam={"rspamd": {"url": url, "timeout": "5s", "fail": fail}})


def _send(app: Any, body: str) -> None:
    message = f"From: a@sender.test\r\nTo: {MAILBOX}\r\nSubject: t\r\n\r\n{body}\r\n"
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"][0], timeout=30) as client:
        client.sendmail("a@sender.test", [MAILBOX], message)


def _stored(tmp_path: Path, folder: str = "") -> list[bytes]:
    root = maildir(tmp_path / "data" / "mail", MAILBOX)
    new = root / folder / "new" if folder else root / "new"
    return [p.read_bytes() for p in sorted(new.glob("*"))] if new.is_dir() else []


def test_gtube_is_refused_and_a_clean_message_delivered_with_its_score(
        tmp_path: Path, zone: Dnsmasq, rspamd: Rspamd, caplog: pytest.LogCaptureFixture) -> None:
    """rspamd's ``reject`` -> 554 5.7.1 after DATA, nothing stored; ``no action`` -> the
    message in the inbox with X-Spam-Score; ``add header`` -> the Junk folder with X-Spam: Yes
    (issue 12 item 6); each scan is one ``spam-checked`` line and a counter."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    with running_app(_config(tmp_path, zone, rspamd.url)) as app:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            _send(app, gtube("X"))
        assert refused.value.smtp_code == 554
        assert refused.value.smtp_error.startswith(b"5.7.1")
        assert _stored(tmp_path) == []
        _send(app, "Hello Alice, the minutes of today's meeting are attached.")
        _send(app, gtube("Y"))
        metrics = app.metrics
        assert metrics.value("geomail_spam_checks_total", action="reject") == 1
        assert metrics.value("geomail_spam_checks_total", action="add header") == 1
    inbox = _stored(tmp_path)
    assert len(inbox) == 1 and b"\nX-Spam-Score: " in inbox[0]
    assert b"X-Spam: Yes" not in inbox[0]
    assert b"\nAuthentication-Results: mx.test.com;" in inbox[0]
    junk = _stored(tmp_path, ".Junk")
    assert len(junk) == 1 and b"\nX-Spam: Yes\n" in junk[0]
    lines = [r.getMessage() for r in caplog.records if "spam-checked" in r.getMessage()]
    assert len(lines) == 3 and any("action=reject" in line for line in lines)


def test_rspamd_down_fails_open_with_a_log_line(
        tmp_path: Path, zone: Dnsmasq, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12 item 6: rspamd unreachable -> delivered anyway (``fail: open``, the default),
    a ``spam-check-failed`` warning and ``geomail_spam_checks_total{action="error"}``."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    dead = f"http://127.0.0.1:{free_port()}"
    with running_app(_config(tmp_path, zone, dead)) as app:
        _send(app, "Hello")
        assert app.metrics.value("geomail_spam_checks_total", action="error") == 1
    assert len(_stored(tmp_path)) == 1
    failed = [r for r in caplog.records if "spam-check-failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert "action=accept" in failed[0].getMessage()


def test_rspamd_down_fails_closed_when_configured(tmp_path: Path, zone: Dnsmasq) -> None:
    """``spam.rspamd.fail: closed``: rspamd unreachable -> 451 4.7.1 (the sender retries),
    nothing stored."""
    dead = f"http://127.0.0.1:{free_port()}"
    with (running_app(_config(tmp_path, zone, dead, fail="closed")) as app,
          pytest.raises(smtplib.SMTPDataError) as deferred):
        _send(app, "Hello")
    assert deferred.value.smtp_code == 451
    assert deferred.value.smtp_error.startswith(b"4.7.1")
    assert _stored(tmp_path) == []
