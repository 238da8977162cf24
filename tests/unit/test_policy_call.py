"""call_policy (geomail/server/policy_call.py): how a connection shell runs what a session asks,
under ``limits.policy_timeout``, logging a slow call (the shells run policy under a deadline; a slow
policy call is visible in the log). Greenlets, no sockets."""

from __future__ import annotations

import logging

import gevent
import pytest
from gevent.event import Event

from geomail.server import policy_call
from geomail.server.policy_call import call_policy

LATE = "fallback"


def slow_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records
            if rec.getMessage().startswith("slow-policy ")]


def test_fast_call_is_quiet(caplog):
    """A prompt answer is returned as is and logs nothing."""
    with caplog.at_level(logging.DEBUG, logger="geomail.server.policy_call"):
        assert call_policy("check-sender", "s1", 5.0, LATE, lambda x: x * 2, 21) == 42
    assert slow_events(caplog) == []


def test_slow_call_is_logged(caplog, monkeypatch):
    """A call slower than SLOW_POLICY still answers, and leaves a ``slow-policy`` event naming
    the call, the session and the time it took (docs/logging.md)."""
    monkeypatch.setattr(policy_call, "SLOW_POLICY", 0.05)

    def slow() -> str:
        gevent.sleep(0.1)
        return "user"

    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"):
        assert call_policy("authenticate", "s2", 5.0, LATE, slow) == "user"
    [line] = slow_events(caplog)
    assert "call=authenticate" in line and "session=s2" in line and "outcome=ok" in line
    assert float(line.split("seconds=")[1].split()[0]) >= 0.1


def test_call_past_its_deadline_gets_the_fallback(caplog):
    """A call past the deadline is abandoned: the fallback (a transient refusal, RFC 5321
    4.2.5) comes back in time, and the event says ``outcome=timeout``."""
    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"):
        answer = call_policy("check-recipient", "s3", 0.05, LATE, gevent.sleep, 10)
    assert answer == LATE
    [line] = slow_events(caplog)
    assert "call=check-recipient" in line and "outcome=timeout" in line


def test_detached_call_finishes_after_its_deadline(caplog):
    """``detach=True`` (storing a message): past the deadline the caller gets the fallback at
    once, but the call is not cut in the middle; it completes in the background (a possible
    duplicate, which RFC 5321 6.1 prefers to a loss)."""
    done = Event()

    def store() -> str:
        gevent.sleep(0.2)
        done.set()
        return "250"

    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"):
        assert call_policy("accept-message", "s4", 0.05, LATE, store, detach=True) == LATE
        assert not done.is_set()
        assert done.wait(5)
    assert "outcome=timeout" in slow_events(caplog)[0]


@pytest.mark.parametrize("detach", [False, True])
def test_failing_call_gets_the_fallback(caplog, detach):
    """An exception from the policy is a bug: logged with its traceback (``internal-error``)
    and as ``slow-policy outcome=error``; the client gets the fallback, never the text."""
    def broken() -> str:
        raise RuntimeError("disk on fire")

    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"):
        assert call_policy("accept-message", "s5", 5.0, LATE, broken, detach=detach) == LATE
    errors = [rec for rec in caplog.records if rec.getMessage().startswith("internal-error")]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "where=accept-message" in errors[0].getMessage()
    assert "outcome=error" in slow_events(caplog)[0]


def test_durable_call_answers_late_but_is_never_cut(caplog):
    """``call_durable`` (storing a message): past the deadline ``late`` tells the client the
    fallback at once, from another greenlet, while the store runs on to its end in the caller's
    greenlet; the session then gets the fallback too (what the client heard), and the event
    says ``outcome=timeout`` (RFC 5321 4.5.3.2 and 6.1: answer in time, lose nothing)."""
    told: list[float] = []
    stored = Event()

    def store() -> str:
        gevent.sleep(0.2)
        stored.set()
        return "250"

    started = gevent.get_hub().loop.now()
    with caplog.at_level(logging.WARNING, logger="geomail.server.policy_call"):
        answer, early = policy_call.call_durable(
            "accept-message", "s6", 0.05, LATE,
            lambda: told.append(gevent.get_hub().loop.now() - started), store)
    assert (answer, early) == (LATE, True)
    assert stored.is_set()  # the store was not cut
    assert told and told[0] < 0.2  # the client was answered before the store ended
    assert "outcome=timeout" in slow_events(caplog)[0]


def test_durable_call_in_time_is_plain():
    """A store within its deadline: its own answer, nothing said early."""
    told: list[int] = []
    assert policy_call.call_durable("accept-message", "s7", 5.0, LATE, lambda: told.append(1),
                                    lambda: "250") == ("250", False)
    assert told == []
