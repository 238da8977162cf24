"""The composition root: builds every service from the Config, runs listeners, handles signals."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time

import gevent
from gevent.event import Event
from gevent.pool import Pool

from geomail import preload, system
from geomail.address import domain_part
from geomail.certs.manager import CertificateManager
from geomail.certs.store import WEB_LINEAGE, lineage_names
from geomail.checks.dnslists import DNSListChecker
from geomail.checks.greylist import Greylist
from geomail.checks.rspamd import RspamdClient
from geomail.checks.verify_pool import VerifyPool, worker_command
from geomail.clientnet import client_network
from geomail.config import Config, ListenerConfig, load_config
from geomail.courier.local import LocalCourier
from geomail.courier.mx import MXResolver
from geomail.courier.smtp import SMTPCourier
from geomail.courier.tls_policy import build_tls_policy
from geomail.courier.tlsrpt import TLSReportSender
from geomail.dkim import DKIMError, DKIMSigner
from geomail.dnsresolver import make_resolver
from geomail.errors import ConfigError
from geomail.log import event
from geomail.login import Authenticator
from geomail.maillog import MailLog
from geomail.metrics import Labels, Metrics
from geomail.policy.imap import IMAPPolicy
from geomail.policy.inbound import InboundChecks
from geomail.policy.pop3 import POP3Policy
from geomail.policy.smtp import Services, SMTPPolicy
from geomail.proto import reply as R
from geomail.proto.imap import IMAPSettings
from geomail.proto.imap_parser import ReaderLimits
from geomail.proto.pop3_types import POP3Settings
from geomail.proto.smtp_types import SMTPSettings
from geomail.queue.control import ControlServer, socket_path
from geomail.queue.item import QueueItem, Recipient
from geomail.queue.queue import Queue
from geomail.routing import Router
from geomail.safeio import Workers, run_blocking, write_atomic
from geomail.server.http import HealthServer
from geomail.server.imap_conn import IMAPService
from geomail.server.listener import ConnectionBudget, ConnectionTracker, Listener
from geomail.server.pop3_conn import POP3Service
from geomail.server.smtp_conn import SMTPService
from geomail.server.tls import TLSContextHolder
from geomail.server.web import WebServer
from geomail.spool import BytesBody
from geomail.spool import sweep as sweep_spool
from geomail.srs import SRS, load_keys
from geomail.store.factory import open_store
from geomail.store.imap_cache import IMAPCache
from geomail.store.maildir import MaildirStore
from geomail.userdb import UserDB
from geomail.web.challenges import ChallengeStore
from geomail.web.site import PublicSite

log = logging.getLogger(__name__)

SMTP_KINDS = ("smtp", "submission", "submissions")
POP3_KINDS = ("pop3", "pop3s")
IMAP_KINDS = ("imap", "imaps")
IMPLICIT_TLS_KINDS = ("submissions", "pop3s", "imaps")
SMTP_REFUSALS = {
    "too-many-connections": R.R421_TOO_MANY_CONNECTIONS.wire,
    "too-many-from-ip": R.R421_TOO_MANY_FROM_IP.wire,
    "shutting-down": R.R421_SHUTTING_DOWN.wire,
}
POP3_REFUSALS = {  # RFC 3206: SYS/TEMP, the client may retry later
    "too-many-connections": b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
    "too-many-from-ip": b"-ERR [SYS/TEMP] Too many connections from your address\r\n",
    "shutting-down": b"-ERR [SYS/TEMP] Server shutting down\r\n",
}
IMAP_REFUSALS = {  # RFC 9051 7.1.5: BYE as the greeting
    "too-many-connections": b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
    "too-many-from-ip": b"* BYE [UNAVAILABLE] Too many connections from your address\r\n",
    "shutting-down": b"* BYE [UNAVAILABLE] Server shutting down\r\n",
}


class App:
    """A running geomail: listeners, store, queue and the policy that joins them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        limits = config.limits
        network = functools.partial(client_network, ipv4_prefix=limits.ipv4_prefix,
                                    ipv6_prefix=limits.ipv6_prefix)
        # Port 25 (anyone) and the users' ports (submission, POP3, IMAP) have separate budgets,
        # so a flood on 25 cannot refuse the owner.
        self.budgets = {
            "smtp": ConnectionBudget(limits.max_connections, limits.max_connections_per_ip,
                                     network, ("max_connections", "max_connections_per_ip")),
            "user": ConnectionBudget(limits.max_user_connections,
                                     limits.max_user_connections_per_ip, network,
                                     ("max_user_connections", "max_user_connections_per_ip")),
        }
        self.tracker = ConnectionTracker(self.budgets.values())
        # Every admitted connection fits (that is the memory bound), plus a little room so that
        # over-limit clients still get their 421.
        capacity = limits.max_connections + limits.max_user_connections
        self.pool = Pool(capacity + max(100, capacity // 10))
        self.tls = TLSContextHolder(config.tls) if config.tls else None
        # The App's own: thread pools (threads start on first use), counters, mail log.
        self.workers = Workers(limits.io_threads, limits.read_threads, limits.password_threads,
                               limits.verify_threads)
        self.metrics = Metrics(services=[lst.kind for lst in config.listeners
                                         if lst.kind in SMTP_KINDS + POP3_KINDS + IMAP_KINDS])
        self.maillog = MailLog(self.metrics)
        self.store = open_store(config.store, config.hostname, reader=self.workers.read)
        self.authenticator = Authenticator(UserDB(config.users), limits,
                                           hashing=self.workers.hash, metrics=self.metrics)
        self._srs_keys: list[bytes] | None = None  # data_dir/srs.key, read by start()
        self.services = Services(router=_router(config), store=self.store,
                                 authenticator=self.authenticator,
                                 dkim=DKIMSigner(config.dkim) if config.dkim else None)
        spam = config.spam
        checks_dns = make_resolver(config.relay)  # one cache for the checks of inbound mail
        if spam.dnsbl or spam.dnswl:
            self.services.dnslists = DNSListChecker(checks_dns, spam.dnsbl, spam.dnswl)
        if spam.greylist is not None:  # opened at start, after the privilege drop
            self.services.greylist = Greylist(
                os.path.join(config.data_dir, "greylist.sqlite"), spam.greylist)
        self.verify_pool = (VerifyPool(limits.verify_processes, worker_command(config.user))
                            if limits.verify_processes and config.checks.dkim else None)
        self.services.inbound = InboundChecks(
            config, checks_dns, self.workers.verify, self.maillog,
            RspamdClient(spam.rspamd) if spam.rspamd else None, pool=self.verify_pool)
        own = [(lst.host, lst.port) for lst in config.listeners_of("smtp")]
        resolver = None if config.relay.smarthost else MXResolver.from_config(config.relay, own)
        # MTA-STS, DANE and TLS reports for MX hosts (docs/outbound-tls.md)
        self.tls_policy = None if config.relay.smarthost else build_tls_policy(
            config.relay, config.hostname, config.data_dir, checks_dns, self.metrics,
            f"postmaster@{(config.domains or (config.hostname,))[0]}")
        self.courier = SMTPCourier(config.relay, config.hostname, resolver,
                                   tls_policy=self.tls_policy)
        self.queue = Queue(config.queue_dir, config.relay, config.hostname,
                           local=LocalCourier(self.store), remote=self.courier,
                           is_local=self._is_local, expand=self._bounce_mailboxes,
                           postmaster=self._postmaster(), on_event=self._queue_event,
                           max_received=config.limits.max_received_headers)
        self.services.queue = self.queue
        self.tls_reports = None if self.tls_policy is None or self.tls_policy.reports is None \
            else TLSReportSender(self.tls_policy.reports, checks_dns, self._queue_report,
                                 f"postmaster@{(config.domains or (config.hostname,))[0]}",
                                 config.hostname, tls=self.tls_policy.verified)
        self.control = ControlServer(self.queue, socket_path(config.data_dir))
        self.policy = SMTPPolicy(config, self.services, os.path.join(config.data_dir, "spool"),
                                 self.maillog)
        self.mail_access = POP3Policy(self.authenticator, self.store)
        self.imap_access = IMAPPolicy(self.authenticator, self._maildir_of, config.hostname,
                                      reader=self.workers.read,
                                      cache=IMAPCache(config.limits.imap_cache_messages))
        self.listeners = [self._listener(lst) for lst in config.listeners
                          if lst.kind in SMTP_KINDS + POP3_KINDS + IMAP_KINDS]
        self.http = [HealthServer(lst, self.problems, self.metrics.render, self.maillog)
                     for lst in config.listeners if lst.kind == "http"]
        self.challenges = ChallengeStore()  # ACME http-01 answers, served by the web site
        self.web = [WebServer(lst, PublicSite(config, self.challenges), config.web, self.tls,
                              limits.tls_handshake_timeout, self.maillog)
                    for lst in config.listeners_of("web", "webs")]
        acme = config.tls.acme if config.tls else None
        self.certificates = None if acme is None else CertificateManager(
            acme, config.data_dir,
            lineage_names(config.hostname, config.domains, bool(config.listeners_of("webs"))),
            self.challenges, self._certificate_changed, self.metrics)
        self.metrics.add_gauges(self._gauges)
        self._stopped = Event()

    def _maildir_of(self, user: str) -> str:
        """A user's maildir (IMAP needs store.format: maildir, the config checks it)."""
        assert isinstance(self.store, MaildirStore)
        return self.store.mailbox_path(user)

    def _listener(self, config: ListenerConfig) -> Listener:
        if config.kind in IMAP_KINDS:
            imap = IMAPService(
                config.kind, self.imap_access,
                IMAPSettings(tls_available=self.tls is not None and config.kind == "imap",
                             allow_plaintext_auth=config.allow_plaintext_auth,
                             max_bad_commands=self.config.limits.max_bad_commands,
                             # APPEND: the message size every other way in allows
                             limits=ReaderLimits(
                                 max_line=self.config.limits.imap_max_line,
                                 max_literal=self.config.limits.imap_max_literal,
                                 max_message=self.config.limits.max_message_size,
                                 max_command=self.config.limits.imap_max_command)),
                self.config.limits, self.tracker, self.tls, self.maillog)
            return Listener(config, imap.serve, self.tracker, self.budgets["user"],
                            _refusals(config, IMAP_REFUSALS), self.pool, self.maillog)
        if config.kind in POP3_KINDS:
            pop3 = POP3Service(
                config.kind, self.mail_access,
                POP3Settings(tls_available=self.tls is not None and config.kind == "pop3",
                             allow_plaintext_auth=config.allow_plaintext_auth,
                             max_bad_commands=self.config.limits.max_bad_commands),
                self.config.limits, self.tracker, self.tls, self.maillog)
            return Listener(config, pop3.serve, self.tracker, self.budgets["user"],
                            _refusals(config, POP3_REFUSALS), self.pool, self.maillog)
        settings = SMTPSettings(
            hostname=self.config.hostname,
            max_message_size=self.config.limits.max_message_size,
            max_recipients=self.config.limits.max_recipients,
            max_line_length=self.config.limits.max_line_length,
            max_command_length=self.config.limits.max_command_length,
            max_bad_commands=self.config.limits.max_bad_commands,
            soft_error_limit=self.config.limits.soft_error_limit,
            hard_error_limit=self.config.limits.hard_error_limit,
            error_sleep_time=self.config.limits.error_sleep_time,
            junk_command_limit=self.config.limits.junk_command_limit,
            max_received_headers=self.config.limits.max_received_headers,
            tls_available=self.tls is not None and config.kind not in IMPLICIT_TLS_KINDS,
            # The users' ports (RFC 6409): logins offered, and needed before MAIL.
            auth_offered=config.kind != "smtp",
            auth_required=config.kind != "smtp",
            tls_required_for_auth=not config.allow_plaintext_auth,
            implicit_tls=config.kind in IMPLICIT_TLS_KINDS,
        )
        service = SMTPService(config.kind, self.policy, settings, self.config.limits,
                              self.tracker, self.tls, self.maillog)
        budget = self.budgets["smtp" if config.kind == "smtp" else "user"]
        return Listener(config, service.serve, self.tracker, budget,
                        _refusals(config, SMTP_REFUSALS), self.pool, self.maillog)

    # ---- life cycle ------------------------------------------------------------------------

    def bind(self) -> None:
        """Open every listening socket (as root, for ports below 1024; fails early when a port
        is in use)."""
        for listener in [*self.listeners, *self.http, *self.web]:
            try:
                listener.bind()
            except OSError as exc:
                raise ConfigError(f"listen.{listener.config.kind}: cannot listen on "
                                  f"{listener.config.address}: {exc.strerror}") from exc

    def start(self) -> None:
        """Prepare the data directory, resume the queue, then accept connections."""
        self.workers.start()
        spool = os.path.join(self.config.data_dir, "spool")
        os.makedirs(spool, mode=0o700, exist_ok=True)
        self.queue.load()  # takes the data directory's lock: no other server uses the spool
        if self.config.srs.enabled:  # after the privilege drop: the key file is the user's
            try:
                self._srs_keys = run_blocking(load_keys, self.config.data_dir, write_atomic)
            except ValueError as exc:
                raise ConfigError([str(exc)]) from exc
            self.services.router = _router(self.config, self._srs_keys)
        swept = run_blocking(sweep_spool, spool)
        if swept:
            event(log, logging.WARNING, "spool-swept", dir=spool, files=swept,
                  reason="interrupted-transactions")
        self.control.start()
        if self.tls_reports is not None:
            self.tls_reports.start()
        if self.services.greylist is not None:
            self.services.greylist.open()
        for listener in [*self.listeners, *self.http, *self.web]:
            listener.start()
        if self.certificates is not None:  # after the web listener: the CA connects to it
            self.certificates.start()

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: refuse new connections, let transactions finish, then close the rest."""
        grace = self.config.limits.shutdown_grace if grace is None else grace
        system.sd_notify("STOPPING=1")
        for listener in self.listeners:
            listener.stop()
        self.tracker.interrupt_idle()
        # The pool holds the greenlets the listeners spawned; a connection woken from parking
        # runs in another, so wait for the connections themselves too.
        end = time.monotonic() + grace
        if not (self.pool.join(timeout=grace)
                and self.tracker.wait_all_ended(end - time.monotonic())):
            event(log, logging.WARNING, "shutdown-grace-expired", open=self.tracker.total)
            self.tracker.interrupt_all()
            self.pool.join(timeout=5)
            self.tracker.wait_all_ended(5)
        self.control.stop()
        self.imap_access.notifier.close()  # IDLE's inotify instance; the connections are gone
        if self.certificates is not None:
            self.certificates.stop()
        if self.tls_reports is not None:  # before the queue: a report round may be queuing
            self.tls_reports.stop()
        self.queue.stop(timeout=max(grace, 1))
        self.courier.close()
        if self.tls_reports is not None:  # the sessions of the last deliveries too
            self.tls_reports.reports.save()
        if self.services.greylist is not None:
            self.services.greylist.close()
        for server in [*self.http, *self.web]:
            server.stop()
        if self.verify_pool is not None:
            self.verify_pool.close()
        self.workers.close()
        self._stopped.set()

    def reload(self) -> None:
        """SIGHUP: re-read users, aliases and certificates from the same file."""
        try:
            fresh = load_config(self.config.source)
        except ConfigError as exc:
            event(log, logging.ERROR, "reload-failed", problems=str(exc))
            return
        self.services.router = _router(fresh, self._srs_keys)
        self.authenticator.reload(UserDB(fresh.users))
        self.queue.postmaster = self._postmaster()
        if self.tls is not None:
            self.tls.reload(fresh.tls)
        if self.certificates is not None:
            self.certificates.wake()
        event(log, logging.INFO, "reloaded", users=len(fresh.users), aliases=len(fresh.aliases))

    def _certificate_changed(self, lineage: str, cert: str, key: str, names: list[str],
                             initial: bool) -> None:
        """The ACME manager stored (or found) a lineage: serve it, as SIGHUP would."""
        if self.tls is None:
            return
        if lineage == WEB_LINEAGE:
            self.tls.load_web(cert, key, names)
        elif not initial or self.tls.placeholder:
            self.tls.reload()

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (graceful; a second signal stops at once); HUP reloads."""
        def on_term() -> None:
            if self.tracker.draining:
                event(log, logging.WARNING, "stopping", signal="second", grace=0)
                os._exit(1)
            event(log, logging.INFO, "stopping", signal="term",
                  grace=f"{self.config.limits.shutdown_grace}s")
            gevent.spawn(self.stop)

        gevent.signal_handler(signal.SIGTERM, on_term)
        gevent.signal_handler(signal.SIGINT, on_term)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        os.umask(0o077)
        self.bind()
        system.prepare_data_dir(self.config.data_dir, self.config.user)
        preload.before_privilege_drop(self.workers.io_threads)
        if self.verify_pool is not None:
            self.verify_pool.start()  # as root: a worker drops its privileges itself
        system.drop_privileges(self.config.user)
        self.start()
        event(log, logging.INFO, "started", pid=os.getpid())
        system.sd_notify("READY=1")
        self._stopped.wait()
        event(log, logging.INFO, "stopped")

    def problems(self) -> list[str]:
        """What is wrong right now (for /healthz): dead listeners, a dead queue."""
        found = [f"listener {lst.config.kind} {lst.address} is not accepting"
                 for lst in [*self.listeners, *self.web] if not lst.alive]
        if not self.queue.running:
            found.append("the outbound queue is not running")
        return found

    def _gauges(self) -> list[tuple[str, Labels, float]]:
        count, oldest = self.queue.stats()
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        return [("geomail_connections_open", (("service", lst.config.kind),), lst.open)
                for lst in self.listeners] + [
            ("geomail_queue_messages", (), count), ("geomail_queue_oldest_seconds", (), age),
            ("geomail_queue_held", (), self.queue.held)]

    def _queue_event(self, name: str, item: QueueItem, rcpt: Recipient | None) -> None:
        """The queue's events in the operator's mail log."""
        if rcpt is None:
            return
        if name == "delivered":
            self.maillog.delivered(item.id, rcpt.address, rcpt.remote_mta or "local",
                                   attempts=rcpt.attempts, tls=rcpt.tls)
        elif name == "deferred":
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.next_attempt))
            self.maillog.deferred(item.id, rcpt.address, rcpt.last_error or "", rcpt.attempts,
                                  when)
        elif name in ("failed", "expired"):
            self.maillog.bounced(item.id, rcpt.address, rcpt.last_error or name,
                                 item.sender or None)

    # ---- routing callbacks for the queue ---------------------------------------------------

    def _is_local(self, address: str) -> bool:
        return self.services.router.is_local_domain(domain_part(address))

    def _bounce_mailboxes(self, address: str) -> list[str]:
        """Where a bounce to a local sender goes (its mailboxes; [] if nobody has it; for our
        SRS address, the original sender it reverses to: docs/forwarding.md)."""
        found = self.services.router.resolve(address) if self._is_local(address) else None
        return [*found.mailboxes, *found.remote] if found else [address]

    def _queue_report(self, sender: str, recipients: list[str], message: bytes) -> str:
        """Queue a TLS report (RFC 8460 5.3), DKIM-signed (RFC 8460 3) when we hold a key for
        its From domain (``postmaster@`` the first local domain)."""
        signer = self.services.dkim
        domain = (self.config.domains or (self.config.hostname,))[0]
        if signer is not None and signer.can_sign(domain):
            try:
                message = run_blocking(signer.sign, domain, message) + message
            except DKIMError as exc:
                event(log, logging.WARNING, "dkim-not-signed", domain=domain, reason=str(exc))
        # kind tls-report: sent despite TLS failures, not counted (RFC 8460 5.3)
        return self.queue.put(sender, recipients, BytesBody(message), kind="tls-report")

    def _postmaster(self) -> str | None:
        """The mailbox that gets bounces nobody else can take."""
        found = self.services.router.resolve("postmaster")
        return found.mailboxes[0] if found and found.mailboxes else None

    @property
    def ports(self) -> dict[str, list[int]]:
        """Bound ports per listener kind (for tests that listen on port 0)."""
        found: dict[str, list[int]] = {}
        for listener in [*self.listeners, *self.http, *self.web]:
            found.setdefault(listener.config.kind, []).append(listener.port)
        return found


def _refusals(config: ListenerConfig, texts: dict[str, bytes]) -> dict[str, bytes]:
    """What an over-limit client is told: nothing on an implicit-TLS port (465, 995), where a
    plaintext reply is garbage to a client expecting a TLS handshake, and a handshake per refused
    client would cost CPU exactly when a flood is on; it is closed at once."""
    return {} if config.kind in IMPLICIT_TLS_KINDS else texts


def _router(config: Config, srs_keys: list[bytes] | None = None) -> Router:
    srs = (SRS(srs_keys, config.srs.domain or config.domains[0], config.srs.max_age)
           if srs_keys and config.srs.enabled else None)
    return Router(config.domains, config.users, config.aliases, config.suffix_separator, srs)

