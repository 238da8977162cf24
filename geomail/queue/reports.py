"""The delivery status notifications the queue sends (RFC 3464, built by ``dsn``): a bounce for
new failures, one delay warning after ``relay.delay_warning``, and what happens when the
sender is null (RFC 5321 6.1)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from geomail.config import RelayConfig
from geomail.log import event
from geomail.safeio import run_blocking
from geomail.spool import BytesBody

from . import dsn
from .files import QueuedBody, read_head
from .item import FAILED, QueueItem, Recipient, body_path

if TYPE_CHECKING:
    from geomail.envelope import Body

    from .queue import Clock

log = logging.getLogger("geomail.queue.queue")  # the queue's events keep one logger name


class Reports:
    """Sending the DSNs of a ``Queue`` (mixed into it; its attributes are the queue's)."""

    directory: str
    relay: RelayConfig
    hostname: str
    clock: Clock
    is_local: Callable[[str], bool]
    expand: Callable[[str], Sequence[str]]
    postmaster: str | None

    if TYPE_CHECKING:
        def put(self, sender: str, recipients: Sequence[str | tuple[str, str | None]],
                body: Body, prefix: bytes = b"", kind: str = "message", *,
                item_id: str | None = None) -> str: ...
        def _event(self, name: str, item: QueueItem, rcpt: Recipient | None) -> None: ...
        def _warning_time(self, item: QueueItem) -> float: ...

    def _notify(self, item: QueueItem) -> None:
        """Queue the DSNs that are due: for new failures, and the one delay warning."""
        now = self.clock.now()
        failed = [r for r in item.recipients if r.status == FAILED and not r.notified]
        if failed:
            self._report(item, failed, "failed", now)
            for rcpt in failed:
                rcpt.notified = True
        if item.pending and now >= self._warning_time(item):
            self._report(item, item.pending, "delayed", now)
            item.delay_warned = True

    def _report(self, item: QueueItem, rcpts: list[Recipient], action: str, now: float) -> None:
        if item.sender == "":
            self._undeliverable_bounce(item, rcpts)
            return
        targets = list(self.expand(item.sender)) if self.is_local(item.sender) else [item.sender]
        if not targets:
            event(log, logging.WARNING, "bounce-no-mailbox", id=item.id,
                  sender=f"<{item.sender}>")
            targets = [self.postmaster] if self.postmaster else []
        if not targets:
            self._event("dropped", item, None)
            return
        head = run_blocking(read_head, body_path(self.directory, item.id))
        until = item.created + self.relay.max_queue_time
        entries = [dsn.DSNRecipient(
            final_recipient=r.address, action=action,
            status=r.enhanced or ("4.0.0" if action == "delayed" else "5.0.0"),
            original_recipient=r.original, remote_mta=r.remote_mta, diagnostic=r.last_error,
            diagnostic_is_smtp=r.remote_mta is not None, last_attempt=r.last_attempt,
            will_retry_until=until if action == "delayed" else None) for r in rcpts]
        report = dsn.build_dsn(reporting_mta=self.hostname, sender=item.sender,
                               recipients=entries, headers=dsn.original_headers(head),
                               queue_id=item.id, arrival=item.created, now=now,
                               postmaster=self.postmaster)
        dsn_id = self.put("", targets, BytesBody(report), kind="bounce")
        event(log, logging.INFO, "dsn-sent" if action == "failed" else "delay-notice-sent",
              id=item.id, dsn=dsn_id, to=f"<{item.sender}>",
              recipients=",".join(r.address for r in rcpts))
        self._event("bounce-queued" if action == "failed" else "delay-warning", item, None)

    def _undeliverable_bounce(self, item: QueueItem, rcpts: list[Recipient]) -> None:
        """Never bounce the null sender (RFC 5321 6.1): a DSN of ours goes on to the postmaster
        once; anything else is dropped with a log line."""
        addresses = ",".join(r.address for r in rcpts)
        if (item.kind == "bounce" and self.postmaster
                and all(r.address != self.postmaster for r in item.recipients)):
            body = QueuedBody(body_path(self.directory, item.id), item.size, item.crlf_size,
                              item.eight_bit)
            dsn_id = self.put("", [self.postmaster], body, kind="double-bounce")
            event(log, logging.WARNING, "bounce-undeliverable", id=item.id, to=addresses,
                  postmaster_id=dsn_id)
            return
        event(log, logging.WARNING, "dropped", id=item.id, kind=item.kind, to=addresses,
              reason="undeliverable with null sender")
        self._event("dropped", item, None)
