"""The built-in spam defences of port 25 (issue 12 item 7), decided for the SMTP policy: DNS
allow- and block-lists at connect (RFC 5782), greylisting at RCPT (RFC 6647), and whether the
early-talker screen applies. Each decision is one mail-log line with its reasons and a counter.

They apply only on ``listen.smtp`` to clients that are not exempt: not in
``checks.skip_networks`` (this machine, by default) nor ``relay.allow_networks``, as Postfix's
postscreen lets ``mynetworks`` through; greylisting also spares logged-in users and clients a
DNSWL lists.
"""

from __future__ import annotations

import logging

from geomail.checks.dnslists import DNSListChecker, Listing
from geomail.checks.greylist import Greylist
from geomail.clientnet import client_address
from geomail.config import Config
from geomail.envelope import Envelope
from geomail.log import event
from geomail.maillog import MailLog
from geomail.proto.reply import Reply
from geomail.proto.smtp_types import SessionInfo

PORT_25 = "smtp"  # the listener kind the defences guard


class Defences:
    """The decisions; the checkers themselves (DNS lists, the greylist store) are the App's
    and handed in per call (they live in ``policy.smtp.Services``)."""

    def __init__(self, config: Config, maillog: MailLog) -> None:
        self.spam = config.spam
        self.maillog = maillog
        self._exempt = (*config.checks.skip_networks, *config.relay.allow_networks)

    def exempt(self, info: SessionInfo) -> bool:
        """True when no defence applies: not port 25, or an exempt client network."""
        if info.service != PORT_25:
            return True
        if not self._exempt:
            return False
        try:
            ip = client_address(info.peer_ip)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def pregreet(self, info: SessionInfo) -> float | None:
        """The early-talker screen: None when it does not apply, else the greeting delay."""
        if not self.spam.early_talker or self.exempt(info):
            return None
        return self.spam.greet_delay

    def check_client(self, info: SessionInfo, lists: DNSListChecker | None) -> Reply | None:
        """At connect: 554 5.7.1 naming the list for a client a DNSBL lists, unless a DNSWL
        lists it (remembered in ``info.dnswl``: it then skips greylisting too)."""
        if lists is None or self.exempt(info):
            return None
        listing = lists.check(info.peer_ip)
        return self._listing_decision(info, listing)

    def _listing_decision(self, info: SessionInfo, listing: Listing) -> Reply | None:
        metrics, log = self.maillog.metrics, self.maillog.log
        failed = ",".join(listing.failed) or None
        if listing.kind == "allow":
            info.dnswl = listing.zone
            metrics.inc("geomail_dnsbl_total", result="allowed")
            event(log, logging.INFO, "dnswl-listed", session=info.session_id,
                  client=info.peer_ip, zone=listing.zone, code=listing.code, failed=failed)
            return None
        if listing.kind == "block":
            metrics.inc("geomail_dnsbl_total", result="listed")
            event(log, logging.INFO, "dnsbl-listed", session=info.session_id,
                  client=info.peer_ip, zone=listing.zone, code=listing.code, failed=failed)
            return Reply(554, "5.7.1", f"Service unavailable; client [{info.peer_ip}] blocked "
                                       f"using {listing.zone}")
        metrics.inc("geomail_dnsbl_total", result="clean")
        # A list that cannot answer is worth the operator's notice (INFO), a clean one is not.
        event(log, logging.INFO if failed else logging.DEBUG, "dnsbl-clean",
              session=info.session_id, client=info.peer_ip, failed=failed)
        return None

    def greylist(self, info: SessionInfo, envelope: Envelope, address: str,
                 store: Greylist | None) -> Reply | None:
        """At RCPT, for a recipient otherwise accepted: 451 4.7.1 for a triplet not yet
        seen long enough (RFC 6647 2.1), None to go on."""
        if (store is None or info.auth_user or info.dnswl is not None
                or self.exempt(info)):
            return None
        sender = envelope.sender or ""
        verdict = store.check(info.peer_ip, sender, address)
        metrics, log = self.maillog.metrics, self.maillog.log
        metrics.inc("geomail_greylist_total", result=verdict.result)
        session, client, from_ = info.session_id, info.peer_ip, f"<{sender}>"
        if verdict.result == "greylisted":
            event(log, logging.INFO, "greylisted", session=session, client=client, from_=from_,
                  to=address, retry=verdict.retry, network=verdict.network)
            # RFC 6647 2.1: a temporary refusal that says when to come back, no client data.
            return Reply(451, "4.7.1", f"Greylisted, try again in {verdict.retry} seconds")
        reason = ("whitelisted" if verdict.result == "whitelisted"
                  else "retried" if verdict.first_pass else "known")
        event(log, logging.INFO, "greylist-passed", session=session, client=client, from_=from_,
              to=address, reason=reason, passes=verdict.passes or None, network=verdict.network)
        return None
