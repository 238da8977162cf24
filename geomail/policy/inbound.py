"""Trust on port 25: what a message from an outsider (a client neither logged in nor trusted)
must pass before it is delivered. Sender authentication (SPF, DKIM, ARC, DMARC, iprev), the
``Authentication-Results`` field, and rspamd's verdict when configured, combined into one
decision: accept, deliver to the Junk folder, or refuse.

DNS questions run concurrently on the hub (cooperative); the DKIM and ARC arithmetic runs in
the App's verification threads; one log line (``auth-checked``) tells each decision."""

from __future__ import annotations

import email.policy
import email.utils
import logging
import re
from dataclasses import dataclass, field

import dns.resolver
import gevent

from geomail.address import domain_part, normalize_domain
from geomail.checks import dkim_verify
from geomail.checks.authresults import WithoutFields, build_field, forged_fields
from geomail.checks.dkim_verify import ARCResult, DKIMResult, DKIMVerifier, Keys
from geomail.checks.dmarc_policy import DMARCEvaluator, DMARCResult, strictest
from geomail.checks.iprev import IprevResult, check_iprev
from geomail.checks.rspamd import RspamdClient, RspamdError, ScanFacts, SpamVerdict
from geomail.checks.spf import SPFChecker, SPFResult
from geomail.checks.ttlcache import TTLCache
from geomail.checks.verify_pool import VerifyPool, VerifyPoolError
from geomail.clientnet import client_address
from geomail.config import ChecksConfig, Config
from geomail.envelope import Body, Envelope
from geomail.log import event
from geomail.maillog import MailLog
from geomail.proto.reply import Reply
from geomail.proto.smtp_types import SessionInfo
from geomail.safeio import Runner
from geomail.units import KiB, MiB
from geomail.usermail import HEADER_SCAN

log = logging.getLogger("geomail.mail")

SPAM_FIELDS = (b"x-spam", b"x-spam-score", b"x-spam-status", b"x-spam-flag")
POOL_LIMIT = MiB  # larger messages are not copied to a worker process
INLINE_VERIFY = 64 * KiB  # without a worker: larger messages are verified in the threads
MAX_FROM_DOMAINS = 5  # distinct From domains evaluated; more is not a message a person sent
_FOLD = re.compile(r"\r?\n[ \t]*")
_FROM_FIELD = re.compile(rb"^from[ \t]*:([^\n]*\n(?:[ \t][^\n]*\n)*)", re.IGNORECASE | re.MULTILINE)
# One address, optionally after a plain display name: the common From, read without a parser.
_PLAIN_FROM = re.compile(r"\s*(?:[A-Za-z0-9 .'_-]*<)?[A-Za-z0-9._%+=-]+@"
                         r"([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>?\s*")
R553_FORGED_LOCAL = Reply(553, "5.7.1", "Sender address in a local domain: log in to send "
                          "as it")
R550_NO_FROM = Reply(550, "5.7.1", "Message has no From header field with an address "
                     "(RFC 5322 3.6.2)")
R552_HEADER_TOO_LONG = Reply(552, "5.3.4", "Header section too long")
R550_SPF_FAIL = Reply(550, "5.7.23", "SPF check failed: the sender's domain does not "
                      "authorise this client (RFC 7208 8.4)")


@dataclass(slots=True)
class InboundVerdict:
    """What the checks decided for one message."""

    reply: Reply | None = None  # a refusal; None delivers
    junk: bool = False  # deliver to the Junk folder
    added: bytes = b""  # fields to put in front of the message (Authentication-Results, X-Spam)
    body: Body | None = None  # the message less forged fields, when any were taken out
    reasons: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        return "reject" if self.reply is not None else "junk" if self.junk else "accept"


@dataclass(slots=True)
class _Findings:
    from_domains: list[str] | None = None  # None: no From field at all
    spf: SPFResult | None = None
    iprev: IprevResult | None = None
    dkim: list[DKIMResult] | None = None  # None: not checked; []: no signature
    arc: ARCResult | None = None
    dmarc: list[DMARCResult] = field(default_factory=list)


class InboundChecks:
    """Sender authentication and spam checks of one App (built from ``checks:``/``spam:``)."""

    def __init__(self, config: Config, resolver: dns.resolver.Resolver, verify: Runner,
                 maillog: MailLog, rspamd: RspamdClient | None = None,
                 dmarc: DMARCEvaluator | None = None, pool: VerifyPool | None = None) -> None:
        self.config: ChecksConfig = config.checks
        self._hostname = config.hostname
        self._domains = frozenset(config.domains)
        self._trusted = config.relay.allow_networks
        self._resolver = resolver
        self._verify = verify  # the verification threads (Workers.verify)
        self._maillog = maillog
        self._rspamd = rspamd
        self._dmarc = dmarc or (DMARCEvaluator(resolver) if self.config.dmarc else None)
        self._spf = SPFChecker(resolver)
        self._dkim = DKIMVerifier()
        self._pool = pool
        self._iprev_results: TTLCache[IprevResult] = TTLCache()
        self._outsiders: dict[str, bool] = {}  # client address -> checked? (config-only fact)

    # ---- who is checked ---------------------------------------------------------------------

    def applies(self, info: SessionInfo) -> bool:
        """Outsiders only: not logged in, not in relay.allow_networks or checks.skip_networks."""
        if info.auth_user:
            return False
        outsider = self._outsiders.get(info.peer_ip)  # asked at MAIL and after DATA
        if outsider is None:
            ip = client_address(info.peer_ip)
            outsider = not any(ip in net for net in (*self._trusted, *self.config.skip_networks))
            if len(self._outsiders) >= 4096:
                self._outsiders.clear()
            self._outsiders[info.peer_ip] = outsider
        return outsider

    def check_sender(self, info: SessionInfo, sender: str) -> Reply | None:
        """Item 5: an outsider may not use one of our domains as MAIL FROM (553 5.7.1)."""
        if (self.config.reject_forged_local and sender and self.applies(info)
                and _canonical_domain(domain_part(sender)) in self._domains):
            return R553_FORGED_LOCAL
        return None

    # ---- the message --------------------------------------------------------------------------

    def check(self, info: SessionInfo, envelope: Envelope, msgid: str, head: bytes,
              body: Body) -> InboundVerdict:
        """Run every check that is on for an outsider's message; cooperative."""
        sender = envelope.sender or ""
        if len(head) >= HEADER_SCAN:  # a forged field could hide past what we read
            verdict = InboundVerdict(R552_HEADER_TOO_LONG, reasons=["header section too long"])
            self._report(info, msgid, _Findings(), verdict)
            return verdict
        findings = self._authenticate(info, sender, head, body)
        verdict = self._decide(findings)
        # RFC 8601 5; and the spam verdict fields, which only we (and rspamd through us) write.
        spans = forged_fields(head, self._hostname, SPAM_FIELDS)
        if spans:
            verdict.body = WithoutFields(body, head, spans)
            verdict.reasons.append(f"removed {len(spans)} forged fields")
        if self.config.authentication_results:
            verdict.added = build_field(self._hostname, findings.spf, findings.dkim,
                                        findings.arc, findings.dmarc, findings.iprev)
        if verdict.reply is None and self._rspamd is not None:
            self._scan(info, envelope, msgid, verdict, verdict.body or body, findings.iprev)
        if verdict.junk and b"\nX-Spam: Yes\n" not in b"\n" + verdict.added:
            verdict.added += b"X-Spam: Yes\n"  # mbox has no Junk folder: the mark is the field
        self._report(info, msgid, findings, verdict)
        return verdict

    def _authenticate(self, info: SessionInfo, sender: str, head: bytes,
                      body: Body) -> _Findings:
        """Every DNS question at once, under one deadline (twice ``relay.dns_timeout``: a
        check still waiting then counts as ``temperror``), so that slow DNS can never hold a
        message past ``limits.policy_timeout``; then the signatures, then DMARC."""
        checks, resolver = self.config, self._resolver
        found = _Findings(from_domains=from_domains(head))
        names = dkim_verify.key_names(head) if checks.dkim or checks.arc else []
        keys = dkim_verify.Keys()
        # Results still fresh in the caches cost no greenlet; the rest are asked at once.
        if checks.spf:
            found.spf = self._spf.cached(info.peer_ip, sender, info.helo)
        if checks.iprev:
            found.iprev = self._iprev_results.get(info.peer_ip)
        spf = (gevent.spawn(self._spf.check, info.peer_ip, sender, info.helo, self._hostname)
               if checks.spf and found.spf is None else None)
        iprev = (gevent.spawn(self._iprev, info.peer_ip)
                 if checks.iprev and found.iprev is None else None)
        fetch = gevent.spawn(dkim_verify.fetch_keys, resolver, names, keys) if names else None
        waits = [g for g in (spf, iprev, fetch) if g is not None]
        if waits:
            gevent.joinall(waits, timeout=2 * resolver.lifetime)
            gevent.killall([g for g in waits if not g.ready()])
        keys.settle(names)
        if spf is not None:
            found.spf = spf.value or SPFResult("temperror", *_spf_identity(sender, info.helo),
                                               "checks took too long")
        if iprev is not None:
            found.iprev = iprev.value or IprevResult("temperror", info.peer_ip)
        if checks.dkim or checks.arc:
            # A small message is verified right here (a few hundred microseconds of CPU); in a
            # thread it would cost the hub more: every socket call the hub makes releases the
            # GIL to the verifying thread and then waits to get it back (bench/README.md).
            dkim, arc = self._verify_signatures(body, keys)
            found.dkim = dkim if checks.dkim else None
            found.arc = arc if checks.arc else None
        if self._dmarc is not None:
            found.dmarc = self._evaluate_dmarc((found.from_domains or [])[:MAX_FROM_DOMAINS],
                                               found.spf, found.dkim or [])
        return found

    def _evaluate_dmarc(self, domains: list[str], spf: SPFResult | None,
                        dkim: list[DKIMResult]) -> list[DMARCResult]:
        """Each From domain's verdict, all under one deadline; the usual single domain in
        this greenlet (its record is most often known already), several at once."""
        assert self._dmarc is not None
        deadline = 2 * self._resolver.lifetime
        if len(domains) == 1:
            timer = gevent.Timeout(deadline)
            try:
                with timer:
                    return [self._dmarc.evaluate(domains[0], spf, dkim)]
            except gevent.Timeout as exc:
                if exc is not timer:  # someone else's deadline: not ours to swallow
                    raise
                return [DMARCResult("temperror", domains[0], reason="took too long")]
        evaluations = [gevent.spawn(self._dmarc.evaluate, d, spf, dkim) for d in domains]
        gevent.joinall(evaluations, timeout=deadline)
        gevent.killall([g for g in evaluations if not g.ready()])
        return [g.value or DMARCResult("temperror", d, reason="took too long")
                for g, d in zip(evaluations, domains, strict=True)]

    def _iprev(self, ip: str) -> IprevResult:
        """``check_iprev``, its verdict reused for a minute (``ttlcache``) but for temperror."""
        result = self._iprev_results.get(ip)
        if result is None:
            result = check_iprev(self._resolver, ip)
            if result.result != "temperror":
                self._iprev_results.put(ip, result)
        return result

    def _verify_signatures(self, body: Body, keys: Keys) -> tuple[list[DKIMResult], ARCResult]:
        """In a worker process when there is a pool (``limits.verify_processes``); a message
        too large to pass around, or when the pool fails, in this process: a small one right
        here (a few hundred microseconds), a large one in the verification threads."""
        arc = self.config.arc
        if self._pool is not None and body.size <= POOL_LIMIT:
            try:
                return self._pool.verify(list(body.chunks()), keys, arc)
            except VerifyPoolError as exc:
                event(log, logging.WARNING, "verify-worker-failed", error=str(exc))
        if body.size <= INLINE_VERIFY:
            return _verify_body(self._dkim, body, keys, arc)
        # In a thread the work costs the hub more than its own time (every socket call hands
        # the GIL over and waits to get it back), but a large message would stall it longer.
        result: tuple[list[DKIMResult], ARCResult] = self._verify(_verify_body, self._dkim,
                                                                  body, keys, arc)
        return result

    def _decide(self, found: _Findings) -> InboundVerdict:
        """RFC 7489 6.6: DMARC's disposition when it has one; else what ``spf_fail`` says."""
        verdict, checks = InboundVerdict(), self.config
        if self._dmarc is not None and checks.enforce_dmarc and not found.from_domains:
            verdict.reply = R550_NO_FROM
            verdict.reasons = ["no From field" if found.from_domains is None
                               else "no domain in the From field"]
            return verdict
        dmarc = strictest(found.dmarc) if found.dmarc else None
        exempt = dmarc is not None and _exempt(dmarc.domain, checks.skip_domains)
        if dmarc is not None and dmarc.failed and checks.enforce_dmarc and not exempt:
            if dmarc.disposition == "reject":
                verdict.reply = Reply(550, "5.7.1", f"DMARC policy of {dmarc.domain} rejects "
                                      "this message: no aligned SPF or DKIM pass")
            verdict.junk = dmarc.disposition == "quarantine"
            verdict.reasons.append(f"dmarc {dmarc.disposition} ({dmarc.domain})")
            return verdict
        dmarc_speaks = dmarc is not None and dmarc.result in ("pass", "fail")
        if found.spf is not None and found.spf.result == "fail" and not dmarc_speaks:
            if checks.spf_fail == "reject":
                verdict.reply = R550_SPF_FAIL
            verdict.junk = checks.spf_fail == "junk"
            verdict.reasons.append(f"spf fail ({found.spf.domain}), spf_fail={checks.spf_fail}")
        return verdict

    def _scan(self, info: SessionInfo, envelope: Envelope, msgid: str, verdict: InboundVerdict,
              body: Body, iprev: IprevResult | None) -> None:
        """rspamd's opinion of the message as it will be delivered (with our results)."""
        assert self._rspamd is not None
        facts = ScanFacts(client_ip=info.peer_ip, helo=info.helo,
                          sender=envelope.sender or "", recipients=tuple(envelope.recipients),
                          queue_id=msgid, hostname=iprev.name if iprev and iprev.name else None)
        try:
            # The body is read in a thread (a spilled one is a file), sent from the hub.
            chunks = self._verify(_read_all, body)
            scan = self._rspamd.scan([verdict.added, *chunks],
                                     len(verdict.added) + body.size, facts)
            spam = self._rspamd.verdict(scan)
            score: float | None = scan.score
        except RspamdError as exc:
            spam, score = self._rspamd.failed(exc), None
            event(log, logging.WARNING, "spam-check-failed", session=info.session_id, id=msgid,
                  error=str(exc), action="reject" if spam.reply else "accept")
        self._apply_spam(verdict, spam)
        self._maillog.metrics.inc("geomail_spam_checks_total", action=spam.action)
        event(log, logging.INFO, "spam-checked", session=info.session_id, id=msgid,
              action=spam.action, score=score)

    @staticmethod
    def _apply_spam(verdict: InboundVerdict, spam: SpamVerdict) -> None:
        verdict.reply = spam.reply
        verdict.junk = verdict.junk or spam.junk
        verdict.added += spam.headers
        if spam.reply is not None or spam.junk:
            verdict.reasons.append(f"rspamd {spam.action}")

    def _report(self, info: SessionInfo, msgid: str, found: _Findings,
                verdict: InboundVerdict) -> None:
        dmarc = strictest(found.dmarc) if found.dmarc else None
        self._maillog.metrics.inc("geomail_dmarc_total",
                                  result=dmarc.result if dmarc else "none")
        self._maillog.metrics.inc("geomail_inbound_checks_total", action=verdict.action)
        event(log, logging.INFO, "auth-checked", session=info.session_id, id=msgid,
              client=info.peer_ip,
              spf=found.spf.result if found.spf else None,
              dkim=None if found.dkim is None else
              ",".join(f"{d.result}:{d.domain}" for d in found.dkim) or "none",
              arc=found.arc.result if found.arc else None,
              dmarc=f"{dmarc.result}:{dmarc.domain}" if dmarc else None,
              iprev=found.iprev.result if found.iprev else None,
              action=verdict.action, reason="; ".join(verdict.reasons) or None)


def _canonical_domain(domain: str) -> str:
    """``Example.COM.`` and its IDNA forms as ``domains:`` holds them (A-labels, no dot)."""
    try:
        return normalize_domain(domain.rstrip("."))
    except ValueError:
        return domain.lower().rstrip(".")


def _exempt(domain: str, skip: tuple[str, ...]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in skip)


def from_domains(head: bytes) -> list[str] | None:
    """The distinct domains of the From field's addresses (RFC 7489 6.6.1); None when there is
    no From field; [] when it names no domain at all.

    A From field that is one plain address (``a@example.org``, ``Name <a@example.org>``) is read
    by a pattern; anything else by a strict (``email.headerregistry``) and a lenient
    (``email.utils.getaddresses``) parser together, so that a spelling one of them fails on
    (``a@example.org.``, a source route) cannot slip past: any mail program that shows a domain
    is judged by it."""
    values = [_FOLD.sub(" ", m.group(1).decode("utf-8", "replace"))
              for m in _FROM_FIELD.finditer(head)]
    if not values:
        return None
    domains: list[str] = []
    for text in values:
        plain = _PLAIN_FROM.fullmatch(text)
        found = [plain.group(1)] if plain else _parsed_domains(text)
        for domain in found:
            domain = domain.strip().strip("<>[]").lower().rstrip(".")
            if domain and domain not in domains:
                domains.append(domain)
    return domains


def _parsed_domains(text: str) -> list[str]:
    found = [address.rpartition("@")[2]
             for _name, address in email.utils.getaddresses([text]) if "@" in address]
    try:
        field = email.policy.default.header_factory("From", text)
        found += [address.domain or "" for address in field.addresses]
    except (IndexError, ValueError, TypeError, AttributeError):  # a defective field
        pass
    return found


def _spf_identity(sender: str, helo: str | None) -> tuple[str, str, str]:
    """(scope, identity, domain) as ``SPFChecker.check`` reports them."""
    if sender:
        return "mailfrom", sender, domain_part(sender)
    return "helo", helo or "", (helo or "").strip("[]")


def _verify_body(verifier: DKIMVerifier, body: Body, keys: Keys,
                 arc: bool) -> tuple[list[DKIMResult], ARCResult]:
    """The message in CRLF form, every signature checked."""
    message = b"".join(body.chunks()).replace(b"\n", b"\r\n")
    return verifier.verify(message, keys, arc)


def _read_all(body: Body) -> list[bytes]:
    return list(body.chunks())
