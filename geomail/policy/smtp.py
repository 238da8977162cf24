"""SMTP policy of every listener: who may send to whom, logins, the checks and fix-ups of mail
our own users send, and the reply once ``dispatch`` has made an accepted message durable."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from geomail import dispatch, usermail
from geomail.address import domain_part, normalize_domain
from geomail.checks.dnslists import DNSListChecker
from geomail.checks.greylist import Greylist
from geomail.config import Config
from geomail.dispatch import Enqueuer
from geomail.dkim import DKIMSigner
from geomail.envelope import Body, Envelope
from geomail.errors import StoreError
from geomail.ids import new_id
from geomail.log import event
from geomail.login import LoginChecker
from geomail.maillog import MailLog
from geomail.policy.defences import Defences
from geomail.policy.inbound import InboundChecks
from geomail.proto import reply as R
from geomail.proto.reply import Reply
from geomail.proto.sasl import Credentials
from geomail.proto.smtp_types import SessionInfo
from geomail.routing import Router
from geomail.spool import MemoryBudget, Spool
from geomail.srs import SRSError
from geomail.store.base import JUNK, MessageStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    """What the policy hands messages and logins to; replaced as a whole on reload."""

    router: Router
    store: MessageStore
    authenticator: LoginChecker | None = None
    queue: Enqueuer | None = None
    dkim: DKIMSigner | None = None
    dnslists: DNSListChecker | None = None  # spam.dnsbl / spam.dnswl
    greylist: Greylist | None = None  # spam.greylist
    inbound: InboundChecks | None = None  # checks: and spam.rspamd, on outsiders' mail


class SMTPPolicy:
    """What the SMTP shell (``server.smtp_conn.SMTPHandler``) asks, for every SMTP listener;
    the shell runs each call under ``limits.policy_timeout``."""

    def __init__(self, config: Config, services: Services, spool_dir: str,
                 maillog: MailLog | None = None) -> None:
        self.config = config
        self.services = services
        self.maillog = maillog or MailLog()  # the App's
        self._spool_dir = spool_dir
        self._spool_budget = MemoryBudget(config.limits.spool_memory)
        self._trusted = config.relay.allow_networks
        self._defences = Defences(config, self.maillog)

    # ---- the shell's questions --------------------------------------------------------------

    def check_client(self, info: SessionInfo) -> Reply | None:
        """Before the greeting on port 25: DNS allow- and block-lists (``policy.defences``)."""
        return self._defences.check_client(info, self.services.dnslists)

    def pregreet(self, info: SessionInfo) -> float | None:
        """The early-talker screen for this client (``policy.defences``)."""
        return self._defences.pregreet(info)

    def check_sender(self, info: SessionInfo, envelope: Envelope) -> Reply | None:
        """Authenticated users send only as their own addresses (RFC 6409 6.1)."""
        sender = envelope.sender or ""
        user = info.auth_user
        refusal: Reply | None = None
        if sender and not _valid_domain(sender):
            refusal = _R553_BAD_SENDER_DOMAIN
        elif user and sender and not self.services.router.owns(user, sender):
            refusal = R.R553_NOT_YOUR_ADDRESS
        elif self.services.inbound is not None:  # an outsider using one of our domains
            refusal = self.services.inbound.check_sender(info, sender)
        if refusal is not None:
            self.maillog.rejected(info.session_id, info.peer_ip, "mail", str(refusal),
                                  sender=sender)
        return refusal

    def check_recipient(self, info: SessionInfo, envelope: Envelope, address: str) -> Reply | None:
        """Local recipients must exist (550 at RCPT time, so no backscatter); remote ones need
        a login or a trusted network (else 554 relay denied)."""
        router = self.services.router
        refusal: Reply | None = None
        valid = _valid_domain(address)
        resolution = router.resolve(address) if valid else None
        if not valid:
            refusal = _R553_BAD_RECIPIENT_DOMAIN
        elif resolution is None:
            refusal = R.R550_NO_SUCH_USER
            why = router.srs_refusal(address)
            if why is not None:  # a forged or expired SRS address of ours (docs/forwarding.md)
                refusal = _R550_BAD_SRS
                event(log, logging.INFO, "srs-refused", session=info.session_id,
                      to=address, reason=why)
        elif resolution.remote:
            local_domain = router.is_local_domain(domain_part(router.canonical(address)))
            if not local_domain and not self._may_relay(info):
                refusal = R.R554_RELAY_DENIED
            elif self.services.queue is None:
                refusal = _R451_NO_QUEUE
        if refusal is not None:
            self.maillog.rejected(info.session_id, info.peer_ip, "rcpt", str(refusal),
                                  sender=envelope.sender, recipient=address)
        elif self.services.greylist is not None:  # RFC 6647, logged by the decision itself
            refusal = self._defences.greylist(info, envelope, address, self.services.greylist)
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
        """The body of a message about to be received (no I/O until it grows)."""
        return Spool(self._spool_dir, budget=self._spool_budget)

    def accept_message(self, info: SessionInfo, envelope: Envelope, body: Spool) -> Reply:
        """Deliver or queue durably, then 250; 451 if anything could not be made durable."""
        try:
            body.finish()
            return self._accept(info, envelope, body)
        finally:
            body.discard()

    # ---- delivery --------------------------------------------------------------------------

    def _accept(self, info: SessionInfo, envelope: Envelope, body: Spool) -> Reply:
        msgid = new_id()
        sender = envelope.sender or ""
        targets = dispatch.resolve(self.services.router, envelope.recipients)
        own_mail = bool(info.auth_user) or self._trusted_client(info)
        inbound = self.services.inbound
        checked = inbound is not None and not own_mail and inbound.applies(info)
        try:
            head = usermail.header_section(body) if own_mail or checked else b""
            if info.auth_user:
                refusal = self._check_authors(info.auth_user, sender, head)
                if refusal is not None:
                    self.maillog.rejected(info.session_id, info.peer_ip, "data",
                                          str(refusal), sender=sender, user=info.auth_user)
                    return refusal
            added, signature = (self._submission_fields(sender, head, body,
                                                           bool(targets.remote))
                                if own_mail else (b"", b""))
            content: Body = body
            folder = ""
            if checked:  # an outsider's message: authenticated and scanned (policy.inbound)
                assert inbound is not None
                verdict = inbound.check(info, envelope, msgid, head, body)
                if verdict.reply is not None:
                    self.maillog.rejected(info.session_id, info.peer_ip, "data",
                                          str(verdict.reply), sender=sender)
                    return verdict.reply
                added, content = verdict.added, verdict.body or body
                folder = JUNK if verdict.junk else ""
            if targets.remote or (dispatch.wants_success(envelope) and not folder
                                  and envelope.sender):  # RFC 3461 4.1: the queue reports it
                route = "queue"
                queue = self.services.queue
                if queue is None:
                    return _R451_NO_QUEUE
                dispatch.to_queue(queue, self.config.hostname, info, envelope, msgid, targets,
                                  content, signature + added,
                                  forward_sender=self._srs_sender(sender, targets))
            else:
                route = "local"
                dispatch.to_store(self.services.store, self.config.hostname, info, envelope,
                                  msgid, targets, content, added, folder)
        except StoreError as exc:
            event(log, logging.ERROR, "store-failed", session=info.session_id, id=msgid,
                  error=str(exc))
            return R.R451_LOCAL_ERROR
        except OSError as exc:
            event(log, logging.ERROR, "write-failed", session=info.session_id, id=msgid,
                  error=str(exc))
            return R.R451_LOCAL_ERROR
        self.maillog.accepted(msgid, info.session_id, info.peer_ip, sender,
                              envelope.recipients, content.crlf_size, route, user=info.auth_user)
        return Reply(250, "2.0.0", f"Ok: queued as {msgid}")

    def _srs_sender(self, sender: str, targets: dispatch.Targets) -> str | None:
        """The SRS address (docs/forwarding.md) for the copies an alias forwards to other
        domains: only for a sender of another domain (ours pass SPF anyway), never for the
        null sender (RFC 5321 4.5.5: it stays null)."""
        srs = self.services.router.srs
        if (srs is None or not sender or self.services.router.is_local_domain(domain_part(sender))
                or all(via is None for via in targets.remote.values())):
            return None
        try:
            return srs.forward(sender)
        except SRSError:
            return None

    def _check_authors(self, user: str, sender: str, head: bytes) -> Reply | None:
        """A logged-in user signs only as themselves: every From and Sender
        address (RFC 5322 3.6.2) must be one ``user`` may use as MAIL FROM (``Router.owns``);
        a bare local part counts as one at the envelope sender's domain. No From at all is
        left alone: it claims nobody, and DKIM then signs for the (checked) envelope sender."""
        if len(head) >= usermail.HEADER_SCAN:
            return _R553_HEADER_TOO_LONG
        authors = usermail.author_addresses(head)
        if authors is None:
            return _R553_BAD_AUTHOR_FIELD
        domain = domain_part(sender or user)
        router = self.services.router
        for address in authors:
            if not router.owns(user, address if "@" in address else f"{address}@{domain}"):
                return _R553_NOT_YOUR_FROM
        return None

    def _submission_fields(self, sender: str, head: bytes, body: Spool,
                           leaves: bool) -> tuple[bytes, bytes]:
        """For mail our own users send (logged in, or from a trusted network): the Date and
        Message-ID it lacks, and a DKIM signature when it leaves for other domains."""
        parsed = usermail.parse_header(head)
        added = usermail.missing_fields(parsed, self.config.hostname)
        signer = self.services.dkim
        if not leaves or signer is None:
            return added, b""
        domain = usermail.signing_domain(parsed, sender, signer)
        if domain is None:
            return added, b""
        return added, usermail.dkim_signature(signer, domain, added, body)


_R550_BAD_SRS = Reply(550, "5.1.1", "Invalid or expired SRS address: bounces are accepted only "
                      "for mail we forwarded recently")
_R451_NO_QUEUE = Reply(451, "4.3.0", "Outbound delivery is not available on this server")
_R553_NOT_YOUR_FROM = Reply(553, "5.7.1", "From or Sender header address not owned by the "
                            "authenticated user")
_R553_BAD_AUTHOR_FIELD = Reply(553, "5.7.1", "Malformed From or Sender header field "
                               "(RFC 5322 3.6.2)")
_R553_HEADER_TOO_LONG = Reply(553, "5.7.1", "Header section too long to check the From field")
_R553_BAD_RECIPIENT_DOMAIN = Reply(553, "5.1.2", "Recipient domain is not a valid IDNA 2008 "
                                   "domain name (RFC 5891)")
_R553_BAD_SENDER_DOMAIN = Reply(553, "5.1.8", "Sender domain is not a valid IDNA 2008 domain "
                                "name (RFC 5891)")


def _valid_domain(address: str) -> bool:
    """False when the domain of ``address`` is an internationalised name that IDNA 2008
    refuses (ASCII names and address literals are judged elsewhere)."""
    domain = domain_part(address)
    if domain.isascii():
        return True
    try:
        normalize_domain(domain)
    except ValueError:
        return False
    return True
