"""The delivery status notifications the queue sends (RFC 3464, built by ``dsn``): a bounce for
new failures, one delay warning after ``relay.delay_warning``, success notices, and what happens
when the sender is null (RFC 5321 6.1). Each recipient's NOTIFY (RFC 3461 4.1) decides which
it gets: absent means FAILURE,DELAY (as in Postfix), NEVER none at all."""

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
from .item import DELIVERED, FAILED, QueueItem, Recipient, body_path

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
        """Queue the DSNs that are due: for new failures, new successes asked for with
        NOTIFY=SUCCESS, and the one delay warning; each only to recipients whose NOTIFY asks."""
        now = self.clock.now()
        failed = [r for r in item.recipients if r.status == FAILED and not r.notified]
        if failed:
            self._report_wanted(item, failed, "failed", now)
            for rcpt in failed:
                rcpt.notified = True
        done = [r for r in item.recipients if r.status == DELIVERED and not r.notified
                and r.wants("SUCCESS") and not r.dsn_passed]
        if done:
            if item.sender:  # never a DSN to the null sender (RFC 3461 6.2, RFC 5321 6.1)
                self._report(item, done, "success", now)
            for rcpt in done:
                rcpt.notified = True
        if item.pending and now >= self._warning_time(item):
            self._report_wanted(item, item.pending, "delayed", now)
            item.delay_warned = True

    def _report_wanted(self, item: QueueItem, rcpts: list[Recipient], action: str,
                       now: float) -> None:
        """Report ``rcpts`` whose NOTIFY asks for ``action`` (RFC 3461 4.1); log the rest."""
        kind = "FAILURE" if action == "failed" else "DELAY"
        wanted = [r for r in rcpts if r.wants(kind)]
        unwanted = [r for r in rcpts if not r.wants(kind)]
        if unwanted:
            event(log, logging.INFO, "dsn-not-requested", id=item.id, kind=kind.lower(),
                  recipients=",".join(r.address for r in unwanted),
                  notify=",".join(unwanted[0].notify or ()))
        if wanted:
            self._report(item, wanted, action, now)

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
        path = body_path(self.directory, item.id)
        head = run_blocking(read_head, path)
        message = None
        if item.ret == "FULL" and action == "failed":  # RFC 3461 4.3; successes get headers
            message = run_blocking(_read_whole, path, self.relay.bounce_size_limit)
        until = item.created + self.relay.max_queue_time
        entries = [_entry(r, action, until) for r in rcpts]
        report = dsn.build_dsn(reporting_mta=self.hostname, sender=item.sender,
                               recipients=entries, headers=dsn.original_headers(head),
                               queue_id=item.id, arrival=item.created, now=now,
                               postmaster=self.postmaster, envid=item.envid, message=message)
        dsn_id = self.put("", targets, BytesBody(report), kind="bounce")
        to, addresses = f"<{item.sender}>", ",".join(r.address for r in rcpts)
        if action == "failed":
            event(log, logging.INFO, "dsn-sent", id=item.id, dsn=dsn_id, to=to,
                  recipients=addresses)
        elif action == "delayed":
            event(log, logging.INFO, "delay-notice-sent", id=item.id, dsn=dsn_id, to=to,
                  recipients=addresses)
        else:
            event(log, logging.INFO, "success-notice-sent", id=item.id, dsn=dsn_id, to=to,
                  recipients=addresses)
        self._event({"failed": "bounce-queued", "delayed": "delay-warning"}.get(
            action, "success-notice"), item, None)

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


def _entry(rcpt: Recipient, action: str, until: float) -> dsn.DSNRecipient:
    """``rcpt``'s block in a report; a success is ``delivered`` into a local mailbox,
    ``relayed`` to a next hop that does not offer DSN (RFC 3461 6.2.1)."""
    if action == "success":
        return dsn.DSNRecipient(
            final_recipient=rcpt.address, action="relayed" if rcpt.remote_mta else "delivered",
            status="2.0.0", original_recipient=rcpt.original, remote_mta=rcpt.remote_mta,
            last_attempt=rcpt.last_attempt, orcpt=rcpt.orcpt)
    return dsn.DSNRecipient(
        final_recipient=rcpt.address, action=action,
        status=rcpt.enhanced or ("4.0.0" if action == "delayed" else "5.0.0"),
        original_recipient=rcpt.original, remote_mta=rcpt.remote_mta,
        diagnostic=rcpt.last_error, diagnostic_is_smtp=rcpt.remote_mta is not None,
        last_attempt=rcpt.last_attempt,
        will_retry_until=until if action == "delayed" else None, orcpt=rcpt.orcpt)


def _read_whole(path: str, limit: int) -> bytes | None:
    """The whole message for RET=FULL, or None when it is over ``limit`` or gone (then the
    headers go back instead, RFC 3461 4.3 allows it)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None
