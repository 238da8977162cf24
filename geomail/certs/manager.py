"""The certificate manager: a greenlet that obtains each lineage at first start and renews it
before expiry (RFC 8555 7.4), keeping the old certificate and backing off when the CA fails."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.event import Event

from geomail.certs.client import AcmeClient, AcmeFailure
from geomail.certs.store import CertInfo, lineage_paths, pair_loads, read_info, save_lineage
from geomail.config import ACMEConfig
from geomail.log import event
from geomail.metrics import Labels, Metrics
from geomail.safeio import ThreadRunner
from geomail.web.challenges import ChallengeStore

log = logging.getLogger("geomail.acme")

CHECK_INTERVAL = 12 * 3600.0  # look again at least this often (clock jumps, files replaced)
BACKOFF_FIRST = 60.0
BACKOFF_MAX = 86400.0
RATE_LIMIT_FLOOR = 3600.0  # rateLimited without Retry-After: wait at least an hour

# on_change(lineage, cert_path, key_path, names, initial): a lineage's files are new (or, with
# initial=True, found good at start) and should be served.
OnChange = Callable[[str, str, str, list[str], bool], None]


def backoff_delay(failures: int, retry_after: float | None = None, rate_limited: bool = False,
                  rand: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before the next attempt after ``failures`` failures in a row: 1 min doubling to
    a day, +-20 % jitter (so many servers do not retry in step); never sooner than the CA's
    Retry-After (RFC 8555 6.6), and at least an hour on a rate limit without one."""
    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, failures - 1))
    delay *= rand(0.8, 1.2)
    if rate_limited:
        delay = max(delay, RATE_LIMIT_FLOOR)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def renew_at(info: CertInfo, renew_before: float) -> float:
    """When to renew: ``renew_before`` ahead of expiry, but never later than when a third of
    the lifetime is left (short-lived certificates, and a renew_before longer than the
    lifetime would otherwise renew in a loop)."""
    lifetime = max(0.0, info.not_after - info.not_before)
    return info.not_after - min(renew_before, lifetime / 3)


@dataclass
class _Lineage:
    name: str
    names: list[str]
    cert: str
    key: str
    info: CertInfo | None = None
    failures: int = 0
    next_check: float = 0.0
    served: bool = False  # the holder has been told about the stored files


class CertificateManager:
    """Obtains and renews every lineage; ``on_change`` swaps the new files into the listeners
    (the SIGHUP path), so open sessions keep their context and nothing restarts."""

    def __init__(self, acme: ACMEConfig, data_dir: str, lineages: dict[str, list[str]],
                 challenges: ChallengeStore, on_change: OnChange,
                 metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.acme = acme
        self.data_dir = data_dir
        self.challenges = challenges
        self.on_change = on_change
        self.metrics = metrics
        self.clock = clock
        self.runner = ThreadRunner(1)  # the acme library blocks: its calls run here
        self.client = AcmeClient(acme, data_dir, self.runner)
        self.lineages = {name: _Lineage(name, names, *lineage_paths(data_dir, name))
                         for name, names in lineages.items()}
        self._wake = Event()
        self._greenlet: gevent.Greenlet[[], None] | None = None
        if metrics is not None:
            metrics.add_gauges(self._gauges)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self.runner.close()

    def wake(self) -> None:
        """Check every lineage now (SIGHUP, tests)."""
        for lineage in self.lineages.values():
            lineage.next_check = 0.0
        self._wake.set()

    def _run(self) -> None:
        while True:
            for lineage in self.lineages.values():
                if lineage.next_check <= self.clock():
                    try:
                        self._check(lineage)
                    except Exception:  # a bug here must not end renewals for good
                        event(log, logging.ERROR, "acme-error", lineage=lineage.name,
                              exc_info=True)
                        lineage.next_check = self.clock() + BACKOFF_MAX / 24
            soonest = min(lineage.next_check for lineage in self.lineages.values())
            self._wake.wait(timeout=max(0.0, min(soonest - self.clock(), CHECK_INTERVAL)))
            self._wake.clear()

    def _check(self, lineage: _Lineage) -> None:
        """Renew ``lineage`` if it is missing, does not cover its names, or is due."""
        now = self.clock()
        good = self.runner(pair_loads, lineage.cert, lineage.key)
        info = self.runner(read_info, lineage.cert) if good else None
        lineage.info = info
        if (info is not None and not info.self_signed
                and set(lineage.names) <= set(info.names)
                and now < renew_at(info, self.acme.renew_before)):
            if not lineage.served:
                self.on_change(lineage.name, lineage.cert, lineage.key, lineage.names, True)
                lineage.served = True
            lineage.next_check = min(renew_at(info, self.acme.renew_before),
                                     now + CHECK_INTERVAL)
            return
        why = ("missing" if info is None else "names-changed"
               if not set(lineage.names) <= set(info.names) else "due")
        event(log, logging.INFO, "acme-order", lineage=lineage.name,
              names=",".join(lineage.names), reason=why, directory=self.acme.directory)
        try:
            cert_pem, key_pem = self.client.obtain(lineage.names, self.challenges)
            self.runner(save_lineage, self.data_dir, lineage.name, cert_pem, key_pem)
        except (AcmeFailure, OSError) as exc:
            lineage.failures += 1
            failure = exc if isinstance(exc, AcmeFailure) else AcmeFailure(str(exc))
            delay = backoff_delay(lineage.failures, failure.retry_after, failure.rate_limited)
            lineage.next_check = self.clock() + delay
            if lineage.served or info is not None:
                keeping = "old-certificate"
            else:
                keeping = "placeholder" if lineage.name == "mail" else "mail-certificate"
            event(log, logging.ERROR, "acme-order-failed", lineage=lineage.name,
                  problem=failure.reason, attempt=lineage.failures,
                  retry_in=f"{delay:.0f}s", keeping=keeping)
            self._count(lineage.name, "failure")
            return
        lineage.failures = 0
        lineage.info = info = self.runner(read_info, lineage.cert)
        self._count(lineage.name, "success")
        self.on_change(lineage.name, lineage.cert, lineage.key, lineage.names, False)
        lineage.served = True
        assert info is not None
        event(log, logging.INFO, "acme-certificate-issued", lineage=lineage.name,
              names=",".join(lineage.names), serial=f"{info.serial:x}",
              not_after=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.not_after)))
        lineage.next_check = min(renew_at(info, self.acme.renew_before),
                                 self.clock() + CHECK_INTERVAL)

    def _count(self, lineage: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("geomail_acme_orders_total", lineage=lineage, result=result)

    def _gauges(self) -> list[tuple[str, Labels, float]]:
        now = time.time()
        return [("geomail_certificate_expiry_seconds", (("lineage", lineage.name),),
                 lineage.info.not_after - now)
                for lineage in self.lineages.values()
                if lineage.info is not None and not lineage.info.self_signed]
