"""The SMTP shell runs the policy under a deadline and logs a slow call (sessions sans-IO in the
strict sense; ``limits.policy_timeout``). A slow disk is simulated by making an internal geomail
function slow; the client is smtplib on a real socket. RFC 5321 4.2.5: a transient failure is a 4yz
reply and the session goes on; RFC 5321 6.1: a duplicate is preferred to a lost message."""

from __future__ import annotations

import base64
import logging
import smtplib
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from geomail import dispatch
from geomail.login import Authenticator
from geomail.routing import Router
from geomail.server import policy_call
from tests.support import wait_for
from tests.support.geomail import PASSWORD
from tests.support.smtp import stored

MESSAGE = b"Subject: slow\r\n\r\nbody\r\n"


def slow_first(function: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    """``function``, the first call of which takes ``seconds`` longer (cooperatively)."""
    calls = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            gevent.sleep(seconds)
        return function(*args, **kwargs)

    return wrapper


def slow_policy_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow-policy ")]


def test_slow_store_is_logged(make_app, monkeypatch, caplog):
    """A message store slower than the slow-call threshold still gets its 250, and the log
    shows a ``slow-policy`` event naming the call and its duration (docs/logging.md)."""
    monkeypatch.setattr(policy_call, "SLOW_POLICY", 0.2)
    monkeypatch.setattr(dispatch, "to_store", slow_first(dispatch.to_store, 0.4))
    app = make_app()
    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"), \
            smtplib.SMTP("127.0.0.1", app.ports["smtp"][0], timeout=10) as client:
        client.sendmail("s@remote.example", ["test1@test.com"], MESSAGE)
    [line] = slow_policy_lines(caplog)
    assert "call=accept-message" in line and "outcome=ok" in line
    assert float(line.split("seconds=")[1].split()[0]) >= 0.4
    assert len(stored(app, "test1@test.com")) == 1


def test_store_past_its_deadline_gets_451_and_the_session_goes_on(make_app, monkeypatch,
                                                                  caplog):
    """A store that outlasts ``limits.policy_timeout`` gets 451 4.3.0 in time (RFC 5321
    4.5.3.2); the late store is not cut in the middle: it completes (so the client's retry can
    make a duplicate, which RFC 5321 6.1 prefers to a loss), and once it has, the same
    connection answers its next commands: a second message (250) and a clean QUIT."""
    monkeypatch.setattr(dispatch, "to_store", slow_first(dispatch.to_store, 1.5))
    app = make_app(limits={"policy_timeout": "300ms"})
    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"), \
            smtplib.SMTP("127.0.0.1", app.ports["smtp"][0], timeout=10) as client:
        client.ehlo("client.example")
        assert client.mail("s@remote.example")[0] == 250
        assert client.rcpt("test1@test.com")[0] == 250
        started = time.monotonic()
        code, text = client.data(MESSAGE)
        assert time.monotonic() - started < 1.2
        assert (code, text[:5]) == (451, b"4.3.0")
        assert client.noop()[0] == 250
        client.sendmail("s@remote.example", ["test1@test.com"], MESSAGE)
        assert client.quit()[0] == 221
    assert "call=accept-message" in slow_policy_lines(caplog)[0]
    assert "outcome=timeout" in slow_policy_lines(caplog)[0]
    wait_for(lambda: len(stored(app, "test1@test.com")) >= 2, 5, message="both stored")
    assert len(stored(app, "test1@test.com")) == 2  # the late one, and the second


def test_recipient_check_past_its_deadline_is_refused_transiently(make_app, monkeypatch,
                                                                  caplog):
    """A recipient check past ``limits.policy_timeout`` gets 451 4.3.0 (RFC 5321 4.5.3.1.10's
    transient class), and the next RCPT of the same transaction is checked and accepted."""
    app = make_app(limits={"policy_timeout": "300ms"})
    monkeypatch.setattr(Router, "resolve", slow_first(Router.resolve, 2.0))
    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"), \
            smtplib.SMTP("127.0.0.1", app.ports["smtp"][0], timeout=10) as client:
        client.ehlo("client.example")
        assert client.mail("s@remote.example")[0] == 250
        code, text = client.rcpt("test1@test.com")
        assert (code, text[:5]) == (451, b"4.3.0")
        assert client.rcpt("test1@test.com")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    assert "call=check-recipient" in slow_policy_lines(caplog)[0]
    assert len(stored(app, "test1@test.com")) == 1


def test_login_past_its_deadline_is_refused_transiently(make_app, monkeypatch, caplog):
    """A login check past ``limits.policy_timeout`` gets 454 4.7.0 "temporary authentication
    failure" (RFC 4954 6), and the client's next AUTH on the same connection succeeds and may
    submit (RFC 6409 4.3)."""
    app = make_app(listen={"submission": [{"address": "127.0.0.1:0",
                                           "allow_plaintext_auth": True}]},
                   limits={"policy_timeout": "300ms"})
    monkeypatch.setattr(Authenticator, "authenticate",
                        slow_first(Authenticator.authenticate, 2.0))
    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"), \
            smtplib.SMTP("127.0.0.1", app.ports["submission"][0], timeout=10) as client:
        client.ehlo("client.example")
        plain = base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode()).decode()
        code, text = client.docmd("AUTH", "PLAIN " + plain)
        assert (code, text[:5]) == (454, b"4.7.0")
        client.login("alice@example.com", PASSWORD)
        client.sendmail("alice@example.com", ["test1@test.com"], MESSAGE)
    assert "call=authenticate" in slow_policy_lines(caplog)[0]
    assert "outcome=timeout" in slow_policy_lines(caplog)[0]
    assert len(stored(app, "test1@test.com")) == 1
