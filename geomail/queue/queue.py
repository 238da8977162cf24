"""The outbound queue: durable items, one send loop per item, retries with backoff, bounces."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent
from gevent.event import Event

from geomail.address import domain_of
from geomail.config import RelayConfig
from geomail.delivery import Courier, DeliveryError, Outcome, Outcomes
from geomail.envelope import Body, MessageDSN, RecipientDSN
from geomail.ids import new_id
from geomail.log import event
from geomail.metrics import Metrics
from geomail.proto.client import printable
from geomail.proto.hopcount import count_received
from geomail.safeio import DirSyncer, run_blocking, write_atomic

from .files import (
    HOLD_DIR,
    QueuedBody,
    held_items,
    hold_item,
    lock_queue,
    read_head,
    remove_item_files,
    scan,
    write_body,
)
from .item import (
    DELIVERED,
    FAILED,
    PENDING,
    TLS_REPORT,
    QueueItem,
    Recipient,
    body_path,
    item_path,
    valid_id,
)
from .reports import Reports

log = logging.getLogger(__name__)

ERRORS_KEY = "internal_errors"  # in QueueItem.extra: consecutive turns that raised
HELD_KEY = "held"  # in QueueItem.extra of a held item: {"at": time, "reason": text}
ADMIN_BOUNCE = DeliveryError("bounced by the administrator", True, 550, "5.0.0")


class Clock(Protocol):
    """Wall-clock time and waiting; tests inject a fake one."""

    def now(self) -> float:
        """Seconds since the epoch."""

    def wait(self, event: Event, deadline: float) -> None:
        """Return when ``event`` is set or ``now()`` reaches ``deadline``."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def wait(self, event: Event, deadline: float) -> None:
        event.wait(max(0.0, deadline - time.time()))


@dataclass(eq=False)
class _Entry:
    """A live item: its state, its send loop, and requests from the control channel."""

    item: QueueItem
    wake: Event = field(default_factory=Event)
    finished: Event = field(default_factory=Event)
    greenlet: gevent.Greenlet | None = None
    op: str | None = None  # "delete" or "bounce", applied by the loop


EventHook = Callable[[str, QueueItem, Recipient | None], None]


class Queue(Reports):
    """Durable outbound queue (chasquid's design): ``put`` returns once the message and its
    envelope are on disk; a greenlet per item tries its pending recipients, grouped per
    courier and domain, records each outcome atomically, sleeps through the ``relay.retry``
    backoff, and sends DSNs for failures (at once when permanent, after ``max_queue_time``
    otherwise) and one delay warning after ``delay_warning``.

    Collaborators are injected: ``local``/``remote`` couriers, ``is_local(address)``,
    ``expand(address)`` (a local bounce address -> its mailboxes; identity by default),
    ``postmaster`` (a final address for undeliverable bounces), ``on_event(event, item,
    recipient)`` for the mail log: events ``queued``, ``delivered``, ``deferred``, ``failed``,
    ``expired``, ``bounce-queued``, ``delay-warning``, ``dropped``, ``removed``.
    """

    def __init__(self, directory: str, relay: RelayConfig, hostname: str, *,
                 local: Courier, remote: Courier, is_local: Callable[[str], bool],
                 expand: Callable[[str], Sequence[str]] | None = None,
                 postmaster: str | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None, syncer: DirSyncer | None = None,
                 on_event: EventHook | None = None, max_received: int | None = None,
                 metrics: Metrics | None = None) -> None:
        self.directory = directory
        self.relay = relay
        self.hostname = hostname
        self.local, self.remote, self.is_local = local, remote, is_local
        self.expand = expand or (lambda address: [address])
        self.postmaster = postmaster
        self.clock = clock or SystemClock()
        self.random = rng or random.Random()
        self.syncer = syncer or DirSyncer()
        self.on_event = on_event
        self.max_received = max_received  # more Received fields: a mail loop, bounced
        self.metrics = metrics if metrics is not None else Metrics()  # the App's registry
        self._entries: dict[str, _Entry] = {}
        self._unreleased: dict[str, QueueItem] = {}  # put(start=False), not yet sent
        self._held: dict[str, QueueItem] = {}  # set aside in hold/, shown by items()
        self._stopping = False
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ start, stop

    def load(self) -> int:
        """Take ownership of the queue directory and resume every item found there (at start-up,
        before anything is put); returns how many. Raises ``QueueBusy`` if another process has it.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_fd = lock_queue(self.directory)
        items = run_blocking(scan, self.directory, True)
        self._held = {i.id: i for i in run_blocking(held_items, self.directory)}
        for item in items:
            if item.extra.pop(HELD_KEY, None) is not None:  # moved back from hold/ by hand
                item.extra.pop(ERRORS_KEY, None)
            self._start(item)
        event(log, logging.INFO, "queue-loaded", dir=self.directory, items=len(items),
              held=len(self._held))
        return len(items)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the send loops: idle ones at once, ones mid-attempt after at most ``timeout``
        seconds (their recipients' states are on disk, so nothing is lost)."""
        self._stopping = True
        greenlets = [e.greenlet for e in self._entries.values() if e.greenlet]
        for entry in self._entries.values():
            entry.wake.set()
        gevent.joinall(greenlets, timeout=timeout)
        gevent.killall([g for g in greenlets if not g.dead], block=True, timeout=5)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ put

    def put(self, sender: str, recipients: Sequence[str | tuple[str, str | None]], body: Body,
            prefix: bytes = b"", kind: str = "message", *, item_id: str | None = None,
            dsn: MessageDSN | None = None, start: bool = True) -> str:
        """Queue a message for ``recipients`` (final addresses, each optionally with the
        original recipient it was expanded from), with its DSN request (RFC 3461) if any;
        durable (files and directory fsynced) before it returns the new item's id. Raises
        ``OSError`` when the disk refuses. With ``start=False`` the item is durable but not
        sent until ``release`` (or removed by ``withdraw``): a message split into several
        items is sent only once all of them are queued."""
        if self._stopping:
            raise OSError("the queue is shutting down")
        now = self.clock.now()
        if (item_id is None or not valid_id(item_id) or item_id in self._entries
                or item_id in self._unreleased):
            item_id = new_id(now)
        rcpts: list[Recipient] = []
        for entry in recipients:
            address, original = (entry, None) if isinstance(entry, str) else entry
            if all(r.address != address for r in rcpts):
                rcpts.append(Recipient(address, original if original != address else None))
                wanted = dsn.recipients.get(address) if dsn is not None else None
                if wanted is not None:
                    rcpts[-1].notify = list(wanted.notify) if wanted.notify else None
                    rcpts[-1].orcpt = wanted.orcpt
        if not rcpts:
            raise ValueError("a queued message needs at least one recipient")
        def write_files() -> QueueItem:  # both files in one pool call
            size, crlf_size, eight_bit = write_body(body_path(self.directory, item_id), prefix,
                                                    body)
            made = QueueItem(item_id, sender, rcpts, created=now, next_attempt=now, size=size,
                             crlf_size=crlf_size, eight_bit=eight_bit, kind=kind,
                             ret=dsn.ret if dsn else None, envid=dsn.envid if dsn else None)
            write_atomic(item_path(self.directory, item_id), made.to_json(), 0o600, False)
            return made

        try:
            item = run_blocking(write_files)
            self.syncer.sync(self.directory)  # one directory fsync for both files
        except BaseException:
            run_blocking(remove_item_files, self.directory, item_id)
            raise
        event(log, logging.DEBUG, "queued", id=item_id, from_=f"<{sender}>",
              to=",".join(r.address for r in rcpts), size=item.size, kind=kind)
        self._event("queued", item, None)
        if start:
            self._start(item)
        else:
            self._unreleased[item_id] = item
        return item_id

    def release(self, item_id: str) -> None:
        """Start sending an item queued with ``put(start=False)``."""
        self._start(self._unreleased.pop(item_id))

    def withdraw(self, item_id: str) -> None:
        """Remove an item queued with ``put(start=False)`` that was never sent (the rest of
        its message could not be queued, so the client is told 451 and sends it again)."""
        self._unreleased.pop(item_id, None)
        run_blocking(remove_item_files, self.directory, item_id)
        self.syncer.sync(self.directory)

    # ------------------------------------------------------------------ tools

    def items(self) -> list[dict[str, Any]]:
        """Every item's state, oldest first (the JSON form of ``QueueItem``), held ones too."""
        items = sorted([*(e.item for e in self._entries.values()), *self._held.values()],
                       key=lambda i: i.created)
        return [i.to_dict() for i in items]

    @property
    def held(self) -> int:
        """How many items are set aside in ``hold/``."""
        return len(self._held)

    def stats(self) -> tuple[int, float | None]:
        """How many items are queued, and when the oldest was created (None when empty)."""
        created = [e.item.created for e in self._entries.values()]
        return len(created), min(created, default=None)

    @property
    def running(self) -> bool:
        """True between ``load`` and ``stop``: the queue owns its directory and sends."""
        return self._lock_fd is not None and not self._stopping

    def flush(self) -> int:
        """Make every item due now; returns how many were woken."""
        now = self.clock.now()
        for entry in self._entries.values():
            entry.item.next_attempt = min(entry.item.next_attempt, now)
            entry.wake.set()
        return len(self._entries)

    def delete(self, item_id: str, timeout: float = 10.0) -> bool:
        """Remove an item without notifying anyone; False when there is no such item."""
        return self._request(item_id, "delete", timeout)

    def bounce(self, item_id: str, timeout: float = 10.0) -> bool:
        """Fail an item's pending recipients now and send the sender a DSN."""
        return self._request(item_id, "bounce", timeout)

    def _request(self, item_id: str, op: str, timeout: float) -> bool:
        entry = self._entries.get(item_id) if valid_id(item_id) else None
        if entry is None:
            return False
        entry.op = op
        entry.wake.set()  # an idle loop applies it at once, a busy one after its attempt
        entry.finished.wait(timeout)
        return True

    # ------------------------------------------------------------------ the send loop

    def _start(self, item: QueueItem) -> None:
        entry = _Entry(item)
        self._entries[item.id] = entry
        entry.greenlet = gevent.spawn(self._run, entry)

    def _run(self, entry: _Entry) -> None:
        item = entry.item
        try:
            while not self._stopping:
                entry.wake.clear()
                try:
                    if self._step(entry):
                        return
                except Exception as exc:
                    if self._stopping or self._failed(entry, exc):
                        return
                    self.clock.wait(entry.wake, item.next_attempt)
        finally:
            entry.finished.set()

    def _failed(self, entry: _Entry, exc: Exception) -> bool:
        """An exception escaped one turn of ``entry``'s loop (a bug, the disk failing): record
        it, keep the item on its backoff schedule (never faster than the retry steps) with its
        state saved, and set it aside once ``relay.max_item_errors`` turns in a row failed.
        True when the loop must end."""
        item = entry.item
        errors = int(item.extra.get(ERRORS_KEY, 0)) + 1
        item.extra[ERRORS_KEY] = errors
        error = printable(f"{type(exc).__name__}: {exc}")[:500]
        event(log, logging.ERROR, "queue-item-error", id=item.id, errors=errors, error=error,
              exc_info=True)
        self.metrics.inc("geomail_queue_item_errors_total")
        if errors >= self.relay.max_item_errors:
            try:
                self._hold(entry, f"{errors} internal errors in a row, the last: {error}")
                return True
            except Exception:
                event(log, logging.ERROR, "queue-hold-failed", exc_info=True, id=item.id)
        steps = self.relay.retry
        now = self.clock.now()
        item.next_attempt = max(item.next_attempt, now + steps[min(errors, len(steps)) - 1])
        try:
            self._save(item)
        except Exception:
            event(log, logging.ERROR, "queue-save-failed", exc_info=True, id=item.id)
        return False

    def _hold(self, entry: _Entry, reason: str) -> None:
        """Set the item aside in ``hold/``: no more attempts, files kept for the administrator
        (``geomail queue list`` shows it, ``geomail_queue_held`` counts it)."""
        item = entry.item
        item.extra[HELD_KEY] = {"at": self.clock.now(), "reason": reason}
        run_blocking(hold_item, self.directory, item)
        self._entries.pop(item.id, None)
        self._held[item.id] = item
        event(log, logging.ERROR, "queue-item-held", id=item.id,
              dir=os.path.join(self.directory, HOLD_DIR), reason=reason)

    def _step(self, entry: _Entry) -> bool:
        """One turn of the send loop: wait, or attempt, report and record; True when done."""
        item = entry.item
        if entry.op == "delete":
            event(log, logging.INFO, "deleted", id=item.id, by="administrator")
            self._finish(entry)
            return True
        if entry.op == "bounce":
            now = self.clock.now()
            for rcpt in item.pending:
                self._settle(item, rcpt, ADMIN_BOUNCE, now)
            entry.op = None
        if item.pending:
            wake_at = min(item.next_attempt, self._warning_time(item))
            unreported = any(r.status == FAILED and not r.notified for r in item.recipients)
            if self.clock.now() < wake_at and not unreported:
                self.clock.wait(entry.wake, wake_at)
                return False
            if self.clock.now() >= item.next_attempt:
                deferred = self._attempt(item)
                self._schedule(item)
                for rcpt in deferred:  # reported once the next attempt is known
                    if rcpt.status == PENDING:
                        self._event("deferred", item, rcpt)
        self._notify(item)
        if item.done:
            self._finish(entry)
            return True
        item.extra.pop(ERRORS_KEY, None)  # a whole turn went through
        self._save(item)
        return False

    def _save(self, item: QueueItem) -> None:
        """Write the item's state durably (atomic replace, directory fsynced)."""
        run_blocking(write_atomic, item_path(self.directory, item.id), item.to_json(), 0o600,
                     False)
        self.syncer.sync(self.directory)

    def _attempt(self, item: QueueItem) -> list[Recipient]:
        """Try every pending recipient once: local ones together, remote ones per domain, the
        groups in parallel; record each outcome. A group's outcomes are written to disk as soon
        as it is done while others still run, so that a crash during a slow delivery to one
        domain does not send again what another domain already took. Returns the recipients
        this attempt deferred."""
        loop = self._loop_error(item)
        if loop is not None:
            item.attempts += 1
            now = self.clock.now()
            for rcpt in item.pending:
                rcpt.attempts += 1
                rcpt.last_attempt = now
                self._settle(item, rcpt, loop, now)
            return []
        local = [r.address for r in item.pending if self.is_local(r.address)]
        groups: list[tuple[Courier, list[str]]] = [(self.local, local)] if local else []
        by_domain: dict[str, list[str]] = {}
        for rcpt in item.pending:
            if rcpt.address not in local:
                by_domain.setdefault(domain_of(rcpt.address), []).append(rcpt.address)
        groups += [(self.remote, addresses) for addresses in by_domain.values()]
        body = QueuedBody(body_path(self.directory, item.id), item.size, item.crlf_size,
                          item.eight_bit)
        dsn = _dsn_request(item)
        report = item.kind == TLS_REPORT
        workers = [gevent.spawn(self._deliver, courier, item.sender, addrs, body, dsn, report)
                   for courier, addrs in groups]
        addresses_of = {worker: addrs for worker, (_, addrs) in zip(workers, groups, strict=True)}
        deferred: list[Recipient] = []
        try:
            with gevent.iwait(workers) as finishing:
                for finished, worker in enumerate(finishing):
                    if finished == 0:
                        item.attempts += 1
                    deferred += self._record(item, addresses_of[worker], worker)
                    if any(not w.dead for w in workers):
                        self._save(item)
        finally:
            gevent.killall([w for w in workers if not w.dead])
        return deferred

    def _loop_error(self, item: QueueItem) -> DeliveryError | None:
        """RFC 5321 6.3: a message with more ``Received:`` fields (ours included) than
        ``limits.max_received_headers`` is going round in circles: it fails with 5.4.6 instead
        of being delivered or relayed once more (Postfix's ``hopcount_limit``)."""
        if self.max_received is None:
            return None
        head = run_blocking(read_head, body_path(self.directory, item.id))
        hops = count_received(head)
        if hops <= self.max_received:
            return None
        return DeliveryError(f"mail loop: {hops} Received header fields, more than "
                             f"{self.max_received}", True, 554, "5.4.6")

    def _record(self, item: QueueItem, addresses: list[str],
                worker: gevent.Greenlet) -> list[Recipient]:
        """Settle each of ``addresses`` with what ``worker`` (its finished courier call)
        reported; returns the ones still pending."""
        now = self.clock.now()
        outcomes = worker.value if worker.successful() else None
        pending = []
        for address in addresses:
            rcpt = item.recipient(address)
            assert rcpt is not None
            outcome = (outcomes.get(address, _NO_OUTCOME) if outcomes is not None
                       else _NO_OUTCOME)
            where = outcome.attempt
            rcpt.attempts += 1
            rcpt.last_attempt = now
            if where is not None:
                rcpt.remote_mta = printable(where.remote_mta) if where.remote_mta else None
                rcpt.tls = printable(where.tls) if where.tls else None
                rcpt.dsn_passed = where.dsn
            self._settle(item, rcpt, outcome.error, now)
            if rcpt.status == PENDING:
                pending.append(rcpt)
        return pending

    def _deliver(self, courier: Courier, sender: str, addresses: list[str],
                 body: Body, dsn: MessageDSN | None = None, tls_report: bool = False
                 ) -> Outcomes:
        try:
            if tls_report:
                return courier.deliver(sender, addresses, body, dsn, tls_report=True)
            if dsn is None:
                return courier.deliver(sender, addresses, body)
            return courier.deliver(sender, addresses, body, dsn)
        except Exception:
            event(log, logging.ERROR, "internal-error", exc_info=True, where="courier",
                  to=",".join(addresses))
            error = DeliveryError("internal error", False, 451, "4.3.0")
            return {a: Outcome(error) for a in addresses}

    def _settle(self, item: QueueItem, rcpt: Recipient, outcome: DeliveryError | None,
                now: float) -> None:
        """Record one outcome on ``rcpt``."""
        if outcome is None:
            rcpt.status, rcpt.last_error, rcpt.code, rcpt.enhanced = DELIVERED, None, None, None
            self._event("delivered", item, rcpt)
            return
        rcpt.last_error = printable(str(outcome))
        rcpt.code, rcpt.enhanced = outcome.code, outcome.enhanced
        if outcome.permanent:
            rcpt.status = FAILED
            event(log, logging.DEBUG, "attempt", id=item.id, to=rcpt.address, result="failed",
                  error=str(outcome))
            self._event("failed", item, rcpt)
        else:
            event(log, logging.DEBUG, "attempt", id=item.id, to=rcpt.address,
                  result="deferred", error=str(outcome))

    def _schedule(self, item: QueueItem) -> None:
        """After an attempt: the next one (backoff with jitter), or give up on the pending."""
        now = self.clock.now()
        if not item.pending:
            return
        expires = item.created + self.relay.max_queue_time
        if now >= expires:
            for rcpt in item.pending:
                rcpt.status = FAILED
                rcpt.enhanced = rcpt.enhanced or "4.4.7"
                event(log, logging.DEBUG, "attempt", id=item.id, to=rcpt.address,
                      result="expired", after=f"{now - item.created:.0f}s",
                      error=rcpt.last_error)
                self._event("expired", item, rcpt)
            return
        steps = self.relay.retry
        delay = steps[min(item.attempts, len(steps)) - 1] if item.attempts else steps[0]
        delay *= 1.0 + self.random.uniform(0.0, 0.1)  # jitter: spread retries of many items
        item.next_attempt = min(now + delay, expires)

    def _warning_time(self, item: QueueItem) -> float:
        if (self.relay.delay_warning <= 0 or item.delay_warned or item.sender == ""
                or item.kind != "message"):
            return float("inf")
        return item.created + self.relay.delay_warning

    # ------------------------------------------------------------------ helpers

    def _finish(self, entry: _Entry) -> None:
        run_blocking(remove_item_files, self.directory, entry.item.id)
        self._entries.pop(entry.item.id, None)
        event(log, logging.INFO, "removed", id=entry.item.id)
        self._event("removed", entry.item, None)

    def _event(self, name: str, item: QueueItem, rcpt: Recipient | None) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, item, rcpt)
            except Exception:
                event(log, logging.ERROR, "internal-error", exc_info=True,
                      where="queue-event-hook", queue_event=name, id=item.id)


def _dsn_request(item: QueueItem) -> MessageDSN | None:
    """The item's DSN request (RFC 3461) for the couriers; None when the client made none."""
    wanted = {r.address: RecipientDSN(tuple(r.notify) if r.notify else None, r.orcpt)
              for r in item.recipients if r.notify is not None or r.orcpt is not None}
    if item.ret is None and item.envid is None and not wanted:
        return None
    return MessageDSN(item.ret, item.envid, wanted)


_NO_OUTCOME = Outcome(DeliveryError("the courier reported no outcome", False, 451, "4.3.0"))
