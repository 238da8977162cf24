"""Where an accepted message goes: every recipient resolved to local mailboxes or remote
addresses, then one durable hand-over with the trace fields in front: the local store (one copy
per mailbox) when nobody is remote, else the outbound queue (which then delivers the local
copies too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from geomail import headers
from geomail.envelope import Body, Envelope
from geomail.proto.smtp_types import SessionInfo
from geomail.routing import Resolution, Router
from geomail.store.base import Copy, MessageStore


class Enqueuer(Protocol):
    """The outbound queue as inbound sees it."""

    def put(self, sender: str, recipients: Sequence[tuple[str, str | None]], body: Body,
            prefix: bytes = b"", *, item_id: str | None = None) -> str: ...


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
             msgid: str, targets: Targets, body: Body, prefix: bytes) -> None:
    """Queue every destination (local ones too) under ``msgid``, a Received field and
    ``prefix`` in front."""
    received = headers.received(
        helo=info.helo, client_ip=info.peer_ip, hostname=hostname,
        protocol=info.protocol(envelope.smtputf8), msgid=msgid, tls=info.tls,
        recipient=envelope.recipients[0] if len(envelope.recipients) == 1 else None)
    local = [(m, r if r != m else None) for m, r in targets.local.items()]
    queue.put(envelope.sender or "", local + list(targets.remote.items()), body,
              received + prefix, item_id=msgid)


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
