"""The greylist store (geomail/checks/greylist.py) on a real sqlite file, with a clock the test
moves: RFC 6647 greylisting of (client network, sender, recipient) triplets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from geomail.checks.greylist import PRUNE_EVERY, Greylist
from geomail.config import GreylistConfig

CONFIG = GreylistConfig(delay=300, retry_window=1800, pass_lifetime=86400, auto_whitelist=3)
SENDER, RCPT = "Sender@Example.ORG", "Alice@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Greylist]:
    greylist = Greylist(str(tmp_path / "greylist.sqlite"), CONFIG, clock=clock)
    greylist.open()
    yield greylist
    greylist.close()


def test_first_sight_is_greylisted_until_the_delay(store: Greylist, clock: Clock) -> None:
    """RFC 6647 2.1: a new triplet gets a temporary refusal, and so does a retry before the
    delay, each telling how long is left; a retry after it passes."""
    first = store.check("192.0.2.7", SENDER, RCPT)
    assert (first.result, first.retry, first.network) == ("greylisted", 300, "192.0.2.0/24")
    clock.now += 100
    assert store.check("192.0.2.7", SENDER, RCPT).retry == 200
    clock.now += 200
    passed = store.check("192.0.2.7", SENDER, RCPT)
    assert (passed.result, passed.first_pass, passed.passes) == ("passed", True, 1)
    clock.now += 10
    again = store.check("192.0.2.7", SENDER, RCPT)
    assert (again.result, again.first_pass) == ("passed", False)


def test_triplet_is_network_sender_and_recipient(store: Greylist, clock: Clock) -> None:
    """RFC 6647 4.1 (issue 12 item 7): the client counts by its /24 (IPv6: /64), so a retry
    from another host of the sending farm passes; addresses compare without letter case
    (the null sender ``<>`` is the empty string); another sender or recipient is a new
    triplet."""
    store.check("192.0.2.7", SENDER, RCPT)
    store.check("2001:db8:1:2::25", "", RCPT)
    clock.now += 301
    assert store.check("192.0.2.200", SENDER.lower(), RCPT.upper()).result == "passed"
    assert store.check("2001:db8:1:2:ffff::1", "", RCPT).result == "passed"
    assert store.check("192.0.3.7", SENDER, RCPT).result == "greylisted"
    assert store.check("192.0.2.7", "other@example.org", RCPT).result == "greylisted"
    assert store.check("192.0.2.7", SENDER, "bob@example.com").result == "greylisted"
    assert store.check("2001:db8:1:3::25", "", RCPT).result == "greylisted"


def test_retry_after_the_window_starts_again(store: Greylist, clock: Clock) -> None:
    """RFC 6647 2.2 (``retry_window``): a triplet not retried in time is forgotten; its next
    attempt is a first sight again, with the full delay."""
    store.check("192.0.2.7", SENDER, RCPT)
    clock.now += CONFIG.retry_window + 1
    verdict = store.check("192.0.2.7", SENDER, RCPT)
    assert (verdict.result, verdict.retry) == ("greylisted", 300)


def test_passed_triplet_lives_pass_lifetime_from_last_use(store: Greylist,
                                                          clock: Clock) -> None:
    """RFC 6647 2.2 (``pass_lifetime``): a passed triplet stays good while it is used; unused
    for longer than the lifetime, it is greylisted again."""
    store.check("192.0.2.7", SENDER, RCPT)
    clock.now += 301
    store.check("192.0.2.7", SENDER, RCPT)
    clock.now += CONFIG.pass_lifetime - 1
    assert store.check("192.0.2.7", SENDER, RCPT).result == "passed"  # used: refreshed
    clock.now += CONFIG.pass_lifetime - 1
    assert store.check("192.0.2.7", SENDER, RCPT).result == "passed"
    clock.now += CONFIG.pass_lifetime + 1
    assert store.check("192.0.2.7", SENDER, RCPT).result == "greylisted"


def test_auto_whitelist_after_passes(store: Greylist, clock: Clock) -> None:
    """RFC 6647 6.4 (issue 12 item 7, ``auto_whitelist``): after N triplets of a client network
    passed, the network skips greylisting for new triplets too; a pass of the same triplet
    again does not count twice."""
    for n in range(3):
        store.check("192.0.2.7", SENDER, f"r{n}@example.com")
    clock.now += 301
    assert [store.check("192.0.2.7", SENDER, f"r{n}@example.com").passes
            for n in range(2)] == [1, 2]
    assert store.check("192.0.2.7", SENDER, "r1@example.com").result == "passed"  # known
    assert store.check("192.0.2.9", "new@example.net", "x@example.com").result == "greylisted"
    assert store.check("192.0.2.7", SENDER, "r2@example.com").passes == 3
    verdict = store.check("192.0.2.8", "new@example.net", "y@example.com")
    assert (verdict.result, verdict.passes) == ("whitelisted", 3)
    assert store.check("198.51.100.1", SENDER, RCPT).result == "greylisted"


def test_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    """Issue 12 item 7 (greylisting durable across restarts): a triplet first seen before the
    store was closed passes after the delay with a new store on the same file."""
    path = str(tmp_path / "greylist.sqlite")
    first = Greylist(path, CONFIG, clock=clock)
    first.open()
    assert first.check("192.0.2.7", SENDER, RCPT).result == "greylisted"
    first.close()
    clock.now += 301
    second = Greylist(path, CONFIG, clock=clock)
    second.open()
    try:
        assert second.check("192.0.2.7", SENDER, RCPT).result == "passed"
    finally:
        second.close()


def test_expired_rows_are_pruned(store: Greylist, clock: Clock) -> None:
    """RFC 6647 2.2: the store forgets expired triplets (and client counts) by itself, at most
    every ``PRUNE_EVERY`` seconds, so it cannot grow without bound."""
    for n in range(5):
        store.check("192.0.2.7", SENDER, f"r{n}@example.com")
    assert store.count() == (5, 0)
    clock.now += CONFIG.retry_window + PRUNE_EVERY
    store.check("198.51.100.1", SENDER, RCPT)
    assert store.count() == (1, 0)
