"""POP3 over real sockets on 127.0.0.1 when the policy or the disk is slow: the connection shell
(server/pop3_conn.py) answers the session's requests within ``limits.policy_timeout``, logs a
slow call as ``slow-policy`` (docs/logging.md) and gives the client ``-ERR [SYS/TEMP]`` (RFC
3206 4) instead of hanging. A slow disk is simulated by slowing the Maildir store's blocking
work, which runs in the thread pool, where a real disk would be slow."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from gevent import monkey

from geomail.log import EVENT_FIELDS, EVENT_NAME
from geomail.server import policy_call
from geomail.store import maildir
from tests.support import wait_for
from tests.support.pop3 import Ports, RawPOP3, make_message, pop3_overrides, send

pytest_plugins = ["tests.support.pop3_fixtures"]

real_sleep = monkey.get_original("time", "sleep")  # the thread pool's threads really wait
pytestmark = pytest.mark.parametrize("store_format", ["maildir"], indirect=True)


@pytest.fixture
def short_deadline_app(make_app, pop3_tls, store_format):
    """The POP3 test App (tests/support/pop3_fixtures.py) with a policy deadline of 0.3 s."""
    return make_app(**pop3_overrides(pop3_tls, store_format, limits={"policy_timeout": 0.3}))


def slow_down(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, seconds: float) -> list[int]:
    """Make the first call of ``owner.name`` (blocking work run in the thread pool) take
    ``seconds`` longer; the returned list counts the calls that finished."""
    real = getattr(owner, name)
    finished: list[int] = []

    def slow(*args: Any) -> Any:
        if not finished:
            real_sleep(seconds)
        try:
            return real(*args)
        finally:
            finished.append(1)

    monkeypatch.setattr(owner, name, slow)
    return finished


def slow_policy(caplog: pytest.LogCaptureFixture, call: str) -> list[dict[str, object]]:
    return [getattr(r, EVENT_FIELDS) for r in caplog.records
            if getattr(r, EVENT_NAME, None) == "slow-policy"
            and getattr(r, EVENT_FIELDS)["call"] == call]


def test_slow_maildrop_open_is_logged(pop3_app, caplog, monkeypatch):
    """A slow policy call is visible in the log (``limits.policy_timeout``): opening the maildrop at
    login (RFC 1939 4) takes longer than the slow-call threshold but less than the deadline:
    the login succeeds as usual and one ``slow-policy`` event names the call, its duration and
    the session."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(policy_call, "SLOW_POLICY", 0.1)
    slow_down(monkeypatch, maildir, "_snapshot", 0.3)
    client = RawPOP3.connect(Ports(pop3_app.ports).pop3)
    assert client.login() == b"+OK Logged in, 0 messages (0 octets)\r\n"
    assert client.quit() == b"+OK Bye, 0 messages deleted\r\n"
    [fields] = slow_policy(caplog, "open-maildrop")
    assert float(str(fields["seconds"])) >= 0.3
    assert fields["session"] and fields["outcome"] == "ok"


def test_maildrop_open_past_deadline_is_sys_temp(short_deadline_app, caplog, monkeypatch):
    """RFC 3206 4 and RFC 1939 4: when opening the maildrop takes longer than the deadline the
    client gets ``-ERR [SYS/TEMP]`` at once, stays in AUTHORIZATION on a working connection, and
    the late work in the thread pool does not keep the mailbox locked: once it has finished, the
    same connection logs in and QUITs normally (no ``[IN-USE]`` for ever)."""
    caplog.set_level(logging.INFO)
    finished = slow_down(monkeypatch, maildir, "_snapshot", 1.0)
    client = RawPOP3.connect(Ports(short_deadline_app.ports).pop3)
    assert client.login() == b"-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    assert not finished  # answered before the slow open was done
    assert client.cmd("NOOP") == b"-ERR Command not valid in this state\r\n"  # AUTHORIZATION
    [fields] = slow_policy(caplog, "open-maildrop")
    assert fields["outcome"] == "timeout"
    wait_for(lambda: finished, message="the slow open to finish")
    assert wait_for(lambda: client.login().startswith(b"+OK Logged in"),
                    message="the lock to be released")
    assert client.quit() == b"+OK Bye, 0 messages deleted\r\n"


def test_commit_past_deadline_is_sys_temp(short_deadline_app, caplog, monkeypatch):
    """RFC 1939 6: QUIT's UPDATE takes longer than the deadline: the client gets ``-ERR
    [SYS/TEMP]`` (RFC 3206 4) and the connection closes cleanly. The deletion is not cut off
    midway: it completes in the background and only then is the lock released, so the next
    session sees the message gone."""
    caplog.set_level(logging.INFO)
    ports = Ports(short_deadline_app.ports)
    for n in range(2):
        send(ports.smtp, make_message(n))
    finished = slow_down(monkeypatch, maildir.MaildirDrop, "_commit", 1.0)
    client = RawPOP3.connect(ports.pop3)
    assert client.login().startswith(b"+OK Logged in, 2 messages")
    client.ok("DELE 1")
    assert client.cmd("QUIT") == b"-ERR [SYS/TEMP] Some deleted messages were not removed\r\n"
    assert client.closed_by_server() == b""
    assert not finished
    [fields] = slow_policy(caplog, "commit")
    assert fields["outcome"] == "timeout"
    wait_for(lambda: finished, message="the slow commit to finish")
    fresh = RawPOP3.connect(ports.pop3)
    assert wait_for(lambda: fresh.login().startswith(b"+OK Logged in, 1 messages"),
                    message="the lock to be released")
    assert fresh.quit().startswith(b"+OK Bye")
