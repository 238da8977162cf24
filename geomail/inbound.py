"""SMTP policy: who may send to whom, logins, and handing accepted mail to the store or queue."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from geomail import headers, maillog, submission
from geomail.config import Config
from geomail.dkim import DKIMSigner
from geomail.envelope import Body, Envelope
from geomail.errors import StoreError
from geomail.ids import new_id
from geomail.proto import reply as R
from geomail.proto.reply import Reply
from geomail.proto.sasl import Credentials
from geomail.proto.smtp_policy import BodySink, SessionInfo
from geomail.routing import Resolution, Router
from geomail.spool import Spool
from geomail.store.base import Copy, MessageStore

log = logging.getLogger(__name__)


class AuthOutcome(Protocol):
    """What an authenticator says about one login attempt."""

    @property
    def ok(self) -> bool: ...

    @property
    def user(self) -> str | None: ...

    @property
    def blocked(self) -> bool: ...


class Authenticator(Protocol):
    def authenticate(self, username: str, password: str, client_ip: str) -> AuthOutcome: ...


class Enqueuer(Protocol):
    """The outbound queue as inbound sees it."""

    def put(self, sender: str, recipients: Sequence[tuple[str, str | None]], body: Body,
            prefix: bytes = b"", *, item_id: str | None = None) -> str: ...


@dataclass(slots=True)
class Services:
    """What the policy hands messages and logins to; replaced as a whole on reload."""

    router: Router
    store: MessageStore
    authenticator: Authenticator | None = None
    queue: Enqueuer | None = None
    dkim: DKIMSigner | None = None


class InboundPolicy:
    """Implements ``proto.smtp.SMTPHandler`` for every SMTP listener."""

    def __init__(self, config: Config, services: Services, spool_dir: str) -> None:
        self.config = config
        self.services = services
        self._spool_dir = spool_dir
        self._trusted = config.relay.allow_networks

    # ---- SMTPHandler -----------------------------------------------------------------------

    def check_sender(self, info: SessionInfo, envelope: Envelope) -> Reply | None:
        """Authenticated users send only as their own addresses (RFC 6409 6.1)."""
        sender = envelope.sender or ""
        user = info.auth_user
        if user and sender and not self.services.router.owns(user, sender):
            maillog.rejected(info.session_id, info.peer_ip, "mail", str(R.R553_NOT_YOUR_ADDRESS),
                             sender=sender)
            return R.R553_NOT_YOUR_ADDRESS
        return None

    def check_recipient(self, info: SessionInfo, envelope: Envelope, address: str) -> Reply | None:
        """Local recipients must exist (550 at RCPT time, so no backscatter); remote ones need
        a login or a trusted network (else 554 relay denied)."""
        router = self.services.router
        resolution = router.resolve(address)
        refusal: Reply | None = None
        if resolution is None:
            refusal = R.R550_NO_SUCH_USER
        elif resolution.remote:
            local_domain = router.is_local_domain(router.canonical(address).rpartition("@")[2])
            if not local_domain and not self._may_relay(info):
                refusal = R.R554_RELAY_DENIED
            elif self.services.queue is None:
                refusal = _R451_NO_QUEUE
        if refusal is not None:
            maillog.rejected(info.session_id, info.peer_ip, "rcpt", str(refusal),
                             sender=envelope.sender, recipient=address)
        return refusal

    def _may_relay(self, info: SessionInfo) -> bool:
        return bool(info.auth_user) or self._trusted_client(info)

    def _trusted_client(self, info: SessionInfo) -> bool:
        """Is the client in ``relay.allow_networks`` (scripts on this machine, a LAN)?"""
        if not self._trusted:
            return False
        ip = ipaddress.ip_address(info.peer_ip)
        return any(ip in network for network in self._trusted)

    def authenticate(self, info: SessionInfo, credentials: Credentials) -> str | Reply:
        """Check a login through the authenticator (threadpool, throttled per client IP)."""
        authenticator = self.services.authenticator
        if authenticator is None:
            return R.R535_AUTH_FAILED
        outcome = authenticator.authenticate(credentials.username, credentials.password,
                                             info.peer_ip)
        if outcome.ok and outcome.user:
            return outcome.user
        return R.R454_AUTH_BLOCKED if outcome.blocked else R.R535_AUTH_FAILED

    def open_body(self, info: SessionInfo, envelope: Envelope) -> Spool:
        return Spool(self._spool_dir)

    def accept_message(self, info: SessionInfo, envelope: Envelope, body: BodySink) -> Reply:
        """Deliver or queue durably, then 250; 451 if anything could not be made durable."""
        assert isinstance(body, Spool)  # open_body made it
        try:
            body.finish()
            return self._accept(info, envelope, body)
        finally:
            body.discard()

    # ---- delivery --------------------------------------------------------------------------

    def _accept(self, info: SessionInfo, envelope: Envelope, body: Spool) -> Reply:
        msgid = new_id()
        sender = envelope.sender or ""
        router = self.services.router
        local: dict[str, str] = {}  # mailbox -> the recipient that led there
        remote: dict[str, str | None] = {}
        for recipient in envelope.recipients:
            resolution = router.resolve(recipient) or Resolution()
            for mailbox in resolution.mailboxes:
                local.setdefault(mailbox, recipient)
            for address in resolution.remote:
                remote.setdefault(address, recipient if address != recipient else None)
        protocol = info.protocol(envelope.smtputf8)
        try:
            added, signature = self._submission_fields(info, sender, body, bool(remote))
            if remote:
                route = "queue"
                queue = self.services.queue
                if queue is None:
                    return _R451_NO_QUEUE
                received = headers.received(
                    helo=info.helo, client_ip=info.peer_ip, hostname=self.config.hostname,
                    protocol=protocol, msgid=msgid, tls=info.tls,
                    recipient=envelope.recipients[0] if len(envelope.recipients) == 1 else None)
                targets = [(m, r if r != m else None) for m, r in local.items()]
                queue.put(sender, targets + list(remote.items()), body,
                          received + signature + added, item_id=msgid)
            else:
                route = "local"
                copies = [self._local_copy(info, protocol, msgid, sender, mailbox, recipient,
                                           added) for mailbox, recipient in local.items()]
                self.services.store.deliver(copies, body)
        except StoreError as exc:
            log.error("store failed session=%s id=%s error=%s", info.session_id, msgid, exc)
            return R.R451_LOCAL_ERROR
        except OSError as exc:
            log.error("write failed session=%s id=%s error=%s", info.session_id, msgid, exc)
            return R.R451_LOCAL_ERROR
        maillog.accepted(msgid, info.session_id, info.peer_ip, sender, envelope.recipients,
                         body.crlf_size, route, user=info.auth_user)
        return Reply(250, "2.0.0", f"Ok: queued as {msgid}")

    def _submission_fields(self, info: SessionInfo, sender: str, body: Spool,
                           leaves: bool) -> tuple[bytes, bytes]:
        """For mail our own users send (logged in, or from a trusted network): the Date and
        Message-ID it lacks, and a DKIM signature when it leaves for other domains."""
        if not (info.auth_user or self._trusted_client(info)):
            return b"", b""
        head = submission.header_section(body)
        added = submission.missing_fields(head, self.config.hostname)
        signer = self.services.dkim
        if not leaves or signer is None:
            return added, b""
        domain = submission.signing_domain(head, sender, signer)
        if domain is None:
            return added, b""
        return added, submission.dkim_signature(signer, domain, added, body)

    def _local_copy(self, info: SessionInfo, protocol: str, msgid: str, sender: str,
                    mailbox: str, recipient: str, added: bytes = b"") -> Copy:
        prefix = b"".join((
            headers.return_path(sender),
            headers.delivered_to(mailbox),
            headers.received(helo=info.helo, client_ip=info.peer_ip,
                             hostname=self.config.hostname, protocol=protocol, msgid=msgid,
                             tls=info.tls, recipient=recipient),
            added,
        ))
        return Copy(mailbox, prefix)


_R451_NO_QUEUE = Reply(451, "4.3.0", "Outbound delivery is not available on this server")
