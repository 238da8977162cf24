"""Running a policy call for a connection shell: under a deadline, logged when slow.

The sessions (proto/) only ask; the shells answer by calling the policy, which may wait on the
disk, the thread pool or DNS. Each call gets ``limits.policy_timeout``; one that takes longer
than ``SLOW_POLICY`` seconds, or fails, or runs out of time, is logged as ``slow-policy`` (and a
failure also as ``internal-error``). The caller then answers with its ``fallback``, a
transient refusal.

A call that has started to make something durable must not be cut in the middle (its thread
pool job would go on writing, and its clean-up would race it): ``call_durable`` runs it to its
end in the connection's greenlet and, once the deadline passes, answers the client from another
greenlet; ``detach=True`` runs it in a greenlet of its own, waits up to the deadline, and on
time-out lets it finish unobserved. Either way the message may be stored although the client
was told 4xx and will send it again: a duplicate, which RFC 5321 6.1 prefers to a loss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar, cast

import gevent

from geomail.log import event
from geomail.server.listener import ShuttingDown

log = logging.getLogger(__name__)

SLOW_POLICY = 1.0  # seconds: a policy call slower than this is logged
T = TypeVar("T")


def call_policy(call: str, session: str, limit: float, fallback: T,
                function: Callable[..., T], *args: object, detach: bool = False) -> T:
    """``function(*args)`` within ``limit`` seconds; ``fallback`` if it fails or is late."""
    started = time.monotonic()
    outcome = "ok"
    result = fallback
    if detach:
        worker = gevent.spawn(_guarded, call, session, function, *args)
        worker.join(limit)
        if not worker.ready():
            outcome = "timeout"
        elif worker.value is _FAILED:
            outcome = "error"
        else:
            result = cast(T, worker.value)
    else:
        timer = gevent.Timeout(limit)
        timer.start()
        try:
            result = function(*args)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            outcome = "timeout"
        except ShuttingDown:
            raise
        except Exception:
            outcome = "error"
            _failed(call, session)
        finally:
            timer.close()
    _report(call, session, started, outcome)
    return result


def call_durable(call: str, session: str, limit: float, fallback: T, late: Callable[[], None],
                 function: Callable[..., T], *args: object) -> tuple[T, bool]:
    """A call that makes something durable (storing a message): run in the calling greenlet
    and never cut. If it outlasts ``limit``, ``late()`` runs at once in a greenlet of its own
    (it tells the client ``fallback``) while the call goes on. Returns the answer for the
    session, and whether ``late`` already gave it: after a time-out the answer is ``fallback``
    whatever the call did (a possible duplicate, which RFC 5321 6.1 prefers to a loss).

    Cheaper than ``detach=True`` on the hot path: no greenlet unless the deadline passes."""
    started = time.monotonic()
    answered: list[gevent.Greenlet] = []
    timer = gevent.get_hub().loop.timer(limit)
    timer.start(lambda: answered.append(gevent.spawn(late)))
    outcome = "ok"
    result = fallback
    try:
        result = function(*args)
    except ShuttingDown:
        raise
    except Exception:
        outcome = "error"
        _failed(call, session)
    finally:
        timer.stop()
        timer.close()
    if answered:
        answered[0].join()  # its reply is out before anything else is sent
        outcome, result = "timeout", fallback
    _report(call, session, started, outcome)
    return result, bool(answered)


def _report(call: str, session: str, started: float, outcome: str) -> None:
    """The ``slow-policy`` event, for a call that was slow, failed or ran out of time."""
    elapsed = time.monotonic() - started
    if elapsed >= SLOW_POLICY or outcome != "ok":
        event(log, logging.WARNING, "slow-policy", call=call, session=session,
              seconds=f"{elapsed:.3f}", outcome=outcome)


_FAILED = object()


def _guarded(call: str, session: str, function: Callable[..., object], *args: object) -> object:
    """A detached call: its failure is logged here (after a time-out, nobody waits for it)."""
    try:
        return function(*args)
    except Exception:
        _failed(call, session)
        return _FAILED


def _failed(call: str, session: str) -> None:
    event(log, logging.ERROR, "internal-error", exc_info=True, where=call, session=session)
