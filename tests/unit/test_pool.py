"""courier.pool: outbound connection slots bounded in total and per destination, idle reuse
(RFC 5321 4.5.3.1 spirit: a client must not flood one server; 3.3 several transactions per
connection)."""

from __future__ import annotations

import gevent
from gevent.event import Event

from geomail.courier.pool import ConnectionPool
from tests.support import wait_for


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.usable = True
        self.closed = False

    def close(self, send_quit: bool = True) -> None:
        self.closed = True
        self.usable = False


def test_idle_connection_is_reused_then_expires() -> None:
    """RFC 5321 3.3: a connection given back is handed to the next lease for the same key and
    closed after idle_timeout."""
    pool = ConnectionPool(10, 2, idle_timeout=0.1)
    conn = Conn("a1")
    with pool.lease("a") as lease:
        assert lease.conn is None
        lease.conn = conn
    with pool.lease("a") as lease:
        assert lease.conn is conn
    with pool.lease("b") as lease:
        assert lease.conn is None  # other destinations never get it
    assert pool.open_for("a") == 1 and pool.total == 1
    wait_for(lambda: conn.closed, 2, message="idle expiry")
    assert pool.total == 0 and pool.open_for("a") == 0


def test_unusable_or_failed_connections_are_closed() -> None:
    """RFC 5321 3.8: a connection that failed (or whose lease raised) is never reused."""
    pool = ConnectionPool(10, 2)
    broken, raising = Conn("x"), Conn("y")
    with pool.lease("a") as lease:
        broken.usable = False
        lease.conn = broken
    assert broken.closed and pool.total == 0
    try:
        with pool.lease("a") as lease:
            lease.conn = raising
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert raising.closed and pool.total == 0
    pool.close()


def test_per_key_limit_waits_for_a_slot() -> None:
    """RFC 5321 4.5.3.1: at most max_per_key connections to one destination; the next waits."""
    pool = ConnectionPool(10, 2)
    order: list[str] = []
    release = Event()

    def worker(name: str) -> None:
        with pool.lease("a") as lease:
            order.append(f"got {name} conn={lease.conn and lease.conn.name}")
            if name != "third":
                release.wait()
                lease.conn = Conn(name)

    jobs = [gevent.spawn(worker, n) for n in ("first", "second", "third")]
    gevent.idle()  # every worker runs until it blocks
    assert order == ["got first conn=None", "got second conn=None"]
    assert pool.open_for("a") == 2
    release.set()
    gevent.joinall(jobs, timeout=5)
    assert order[2] in ("got third conn=first", "got third conn=second")
    assert pool.open_for("a") == 2
    pool.close()
    assert pool.total == 0


def test_total_limit_evicts_the_oldest_idle_connection() -> None:
    """RFC 5321 4.5.3.1: the total is bounded; idle connections make room for new destinations."""
    pool = ConnectionPool(2, 2)
    a, b = Conn("a"), Conn("b")
    for key, conn in (("a", a), ("b", b)):
        with pool.lease(key) as lease:
            lease.conn = conn
    assert pool.total == 2
    with pool.lease("c") as lease:
        assert lease.conn is None and pool.total == 2
        gevent.sleep(0.01)
        assert a.closed and not b.closed  # the oldest idle one
    pool.close()
    assert b.closed and pool.total == 0


def test_many_waiters_all_served_within_limits() -> None:
    """RFC 5321 4.5.3.1: hundreds of queued deliveries over a few destinations all get served,
    and the total and per-destination bounds hold throughout."""
    pool = ConnectionPool(3, 2, idle_timeout=0.05)
    peak_total, peak_key = [0], [0]
    done = []

    def worker(n: int) -> None:
        key = f"k{n % 5}"
        with pool.lease(key) as lease:
            peak_total[0] = max(peak_total[0], pool.total)
            peak_key[0] = max(peak_key[0], pool.open_for(key))
            gevent.sleep(0.001)
            lease.conn = lease.conn or Conn(key)
        done.append(n)

    jobs = [gevent.spawn(worker, n) for n in range(300)]
    gevent.joinall(jobs, timeout=20)
    assert sorted(done) == list(range(300))
    assert peak_total[0] <= 3 and peak_key[0] <= 2
    pool.close()
    assert pool.total == 0


def test_slot_goes_round_robin_to_other_destinations() -> None:
    """RFC 5321 4.5.3.1: when the total is reached, a freed slot goes to a waiting destination
    under its own limit, destinations taking turns."""
    pool = ConnectionPool(1, 1)
    served: list[str] = []

    def worker(key: str) -> None:
        with pool.lease(key):
            served.append(key)
            gevent.sleep(0.001)

    jobs = [gevent.spawn(worker, key) for key in ("a", "b", "b", "c", "a")]
    gevent.joinall(jobs, timeout=5)
    assert sorted(served) == ["a", "a", "b", "b", "c"]
    assert pool.total == 0
