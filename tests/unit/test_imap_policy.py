"""policy/imap: store requests of one session run one at a time, in the pool's threads."""

from __future__ import annotations

import gevent
from gevent.monkey import get_original

from geomail.policy.imap import IMAPPolicy
from geomail.proto.imap_mailbox import ViewFolder
from geomail.safeio import run_blocking

real_sleep = get_original("time", "sleep")


class SlowStore:
    """A store whose folder view takes a while (a slow disk) and counts overlapping calls."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    def view(self, name: str) -> str:
        self.active += 1
        self.peak = max(self.peak, self.active)
        real_sleep(0.05)  # blocks the pool thread, as a slow disk would
        self.active -= 1
        return name


def test_requests_of_one_store_never_overlap() -> None:
    """RFC 9051 5.5 (a server may run commands one at a time): a request cut at
    policy_timeout goes on in its thread, so the next one must wait for it, not run beside it
    on the same store (whose caches are not thread-safe)."""
    policy = IMAPPolicy(None, lambda user: "", "mail.example.com",  # type: ignore[arg-type]
                        reader=run_blocking, writer=run_blocking)
    store = SlowStore()
    calls = [gevent.spawn(policy.perform, store, ViewFolder("INBOX"))  # type: ignore[arg-type]
             for _ in range(3)]
    gevent.joinall(calls, timeout=10, raise_error=True)
    assert [c.value for c in calls] == ["INBOX"] * 3
    assert store.peak == 1
