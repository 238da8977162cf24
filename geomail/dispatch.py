"""Where an accepted message goes: every recipient resolved to local mailboxes or remote
addresses, then one durable hand-over with the trace fields in front: the local store (one copy
per mailbox) when nobody is remote, else the outbound queue (which then delivers the local
copies too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from geomail import headers
from geomail.envelope import Body, Envelope, MessageDSN
from geomail.proto.smtp_types import SessionInfo
from geomail.routing import Resolution, Router
from geomail.store.base import Copy, MessageStore


class Enqueuer(Protocol):
    """The outbound queue as inbound sees it."""

    def put(self, sender: str, recipients: Sequence[tuple[str, str | None]], body: Body,
            prefix: bytes = b"", *, item_id: str | None = None,
            dsn: MessageDSN | None = None, start: bool = True) -> str: ...

    def release(self, item_id: str) -> None: ...

    def withdraw(self, item_id: str) -> None: ...


@dataclass(slots=True)
class Targets:
    """The destinations of one message's recipients."""

    local: dict[str, str] = field(default_factory=dict)  # mailbox -> the recipient that led there
    remote: dict[str, str | None] = field(default_factory=dict)  # -> recipient, if an alias


def resolve(router: Router, recipients: Sequence[str]) -> Targets:
    """Each recipient's mailboxes and remote addresses, each destination once."""
    targets = Targets()
    for recipient in recipients:
        resolution = router.resolve(recipient) or Resolution()
        for mailbox in resolution.mailboxes:
            targets.local.setdefault(mailbox, recipient)
        for address in resolution.remote:
            targets.remote.setdefault(address, recipient if address != recipient else None)
    return targets


def to_queue(queue: Enqueuer, hostname: str, info: SessionInfo, envelope: Envelope,
             msgid: str, targets: Targets, body: Body, prefix: bytes,
             forward_sender: str | None = None) -> None:
    """Queue every destination (local ones too) under ``msgid``, a Received field and
    ``prefix`` in front. With ``forward_sender`` (an SRS address, docs/forwarding.md) the
    remote addresses an alias led to go in an item of their own with that envelope sender."""
    received = headers.received(
        helo=info.helo, client_ip=info.peer_ip, hostname=hostname,
        protocol=info.protocol(envelope.smtputf8), msgid=msgid, tls=info.tls,
        recipient=envelope.recipients[0] if len(envelope.recipients) == 1 else None)
    local = [(m, r if r != m else None) for m, r in targets.local.items()]
    remote = list(targets.remote.items())
    forwarded = [(a, r) for a, r in remote if r is not None] if forward_sender else []
    remote = [(a, r) for a, r in remote if r is None] if forwarded else remote
    if not forwarded:
        queue.put(envelope.sender or "", local + remote, body, received + prefix,
                  item_id=msgid, dsn=dsn_request(envelope, targets))
        return
    assert forward_sender is not None
    if not (local or remote):
        queue.put(forward_sender, forwarded, body, received + prefix, item_id=msgid,
                  dsn=dsn_request(envelope, targets))
        return
    # Two items for one message: neither is sent before both are durable, so a failure of
    # the second (451 to the client, who sends again) leaves no copy behind.
    first = queue.put(forward_sender, forwarded, body, received + prefix,
                      dsn=dsn_request(envelope, targets), start=False)
    try:
        second = queue.put(envelope.sender or "", local + remote, body, received + prefix,
                           item_id=msgid, dsn=dsn_request(envelope, targets), start=False)
    except BaseException:
        queue.withdraw(first)
        raise
    queue.release(first)
    queue.release(second)


def dsn_request(envelope: Envelope, targets: Targets) -> MessageDSN | None:
    """The DSN request (RFC 3461) of ``envelope``, each recipient's NOTIFY/ORCPT carried to
    the destinations it led to; None when the client made none."""
    if envelope.ret is None and envelope.envid is None and not envelope.dsn:
        return None
    by_final = {}
    for final, recipient in [*targets.local.items(), *targets.remote.items()]:
        wanted = envelope.dsn.get(recipient or final)
        if wanted is not None:
            by_final[final] = wanted
    return MessageDSN(envelope.ret, envelope.envid, by_final)


def wants_success(envelope: Envelope) -> bool:
    """Whether any recipient asked for a success DSN (RFC 3461 4.1, NOTIFY=SUCCESS): then
    even local-only mail goes through the queue, which sends it."""
    return any(d.notify and "SUCCESS" in d.notify for d in envelope.dsn.values())


def to_store(store: MessageStore, hostname: str, info: SessionInfo, envelope: Envelope,
             msgid: str, targets: Targets, body: Body, added: bytes, folder: str = "") -> None:
    """Store one copy per local mailbox (in ``folder`` of it, when given), its trace fields
    and ``added`` in front."""
    protocol = info.protocol(envelope.smtputf8)
    sender = envelope.sender or ""
    copies = [local_copy(info, hostname, protocol, msgid, sender, mailbox, recipient, added,
                         folder)
              for mailbox, recipient in targets.local.items()]
    store.deliver(copies, body)


def local_copy(info: SessionInfo, hostname: str, protocol: str, msgid: str, sender: str,
               mailbox: str, recipient: str, added: bytes = b"", folder: str = "") -> Copy:
    """``mailbox``'s copy: Return-Path, Delivered-To, Received, then ``added``."""
    prefix = b"".join((
        headers.return_path(sender),
        headers.delivered_to(mailbox),
        headers.received(helo=info.helo, client_ip=info.peer_ip, hostname=hostname,
                         protocol=protocol, msgid=msgid, tls=info.tls, recipient=recipient),
        added,
    ))
    return Copy(mailbox, prefix, folder)
