"""Remote delivery over SMTP: MX walk or smarthost, STARTTLS, per-recipient replies."""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from typing import cast

from geomail.address import domain_of, normalize_domain, split_address
from geomail.config import RelayConfig
from geomail.delivery import Attempt, DeliveryError, Outcome, Outcomes
from geomail.envelope import Body
from geomail.log import event
from geomail.safeio import run_blocking

from .connection import ConnectionLost, OutboundSMTP, Timeouts, Transaction
from .mx import MXResolver
from .pool import ConnectionPool

log = logging.getLogger(__name__)

_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
SMARTHOST_KEY = "[smarthost]"


def client_tls_context(verify: bool, cafile: str | None = None) -> ssl.SSLContext:
    """A client TLS context: verified against the system CAs (or ``cafile``), or encrypting
    only (opportunistic STARTTLS to MX hosts, RFC 3207 4.1 / RFC 7435)."""
    if verify:
        return ssl.create_default_context(cafile=cafile)
    # The same defaults without loading the system's CA bundle, which nothing here would
    # consult and which is slow to load at every start-up.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class SMTPCourier:
    """Delivers to remote domains (``delivery.Courier``); all recipients of one call share a
    domain. Tries each MX in turn (or the smarthost): a 4xx or a connection failure moves the
    still-pending recipients on to the next host, a 5xx is final for its recipient. Connections
    are bounded in total and per destination and kept open a few seconds for the next message.

    TLS to MX hosts is opportunistic by default: STARTTLS when offered, certificate not checked,
    plain text when the handshake fails. With ``relay.verify_tls`` it is required and verified
    (a host without it defers). The smarthost always requires TLS (``smarthost.verify_tls``).
    """

    def __init__(self, relay: RelayConfig, hostname: str, resolver: MXResolver | None = None,
                 *, mx_tls: ssl.SSLContext | None = None,
                 smarthost_tls: ssl.SSLContext | None = None, idle_timeout: float = 5.0) -> None:
        self.relay = relay
        self.hostname = hostname
        self.smarthost = relay.smarthost
        if self.smarthost is None and resolver is None:
            resolver = MXResolver.from_config(relay)
        self.resolver = resolver
        self.mx_tls = mx_tls or client_tls_context(relay.verify_tls)
        verify = self.smarthost.verify_tls if self.smarthost else False  # unused without one
        self.smarthost_tls = smarthost_tls or client_tls_context(verify)
        self.timeouts = Timeouts(relay.connect_timeout, relay.command_timeout, relay.data_timeout)
        self.pool = ConnectionPool(relay.max_connections, relay.max_connections_per_domain,
                                   idle_timeout)

    def close(self) -> None:
        """Close the idle connections (at shutdown)."""
        self.pool.close()

    def deliver(self, sender: str, recipients: Sequence[str], body: Body) -> Outcomes:
        """Try once; each recipient's outcome, and where it went."""
        outcomes: Outcomes = {}
        if _unsendable(sender):
            _all(outcomes, recipients, DeliveryError(
                "the sender address cannot be sent in SMTP", True, 553, "5.1.7"))
            return outcomes
        pending = []
        for rcpt in dict.fromkeys(recipients):
            if _unsendable(rcpt):
                _record(outcomes, rcpt, DeliveryError(
                    "the recipient address cannot be sent in SMTP", True, 553, "5.1.3"), None)
            else:
                pending.append(rcpt)
        if not pending:
            return outcomes
        domain = domain_of(pending[0])
        try:
            eight_bit = self._eight_bit(body)
        except OSError as exc:
            _all(outcomes, pending, DeliveryError(f"cannot read the queued message: {exc}",
                                                  False, 451, "4.3.0"))
            return outcomes
        key = SMARTHOST_KEY if self.smarthost else domain
        with self.pool.lease(key) as lease:
            conn = cast("OutboundSMTP | None", lease.conn)
            if conn is not None:  # an idle connection to the same destination: reuse it
                pending = self._attempt(conn, sender, pending, body, eight_bit, outcomes, True)
                if pending or not conn.usable:
                    lease.conn = None
                    conn.close(send_quit=conn.usable)
            try:
                for target in self._targets(domain) if pending else ():
                    conn = lease.conn = self._connect(*target, outcomes, pending)
                    if conn is None:
                        continue
                    pending = self._attempt(conn, sender, pending, body, eight_bit, outcomes,
                                            False)
                    if not pending and conn.usable:
                        break  # the lease keeps it open for the next message
                    lease.conn = None
                    conn.close(send_quit=conn.usable)
                    if not pending:
                        break
            except DeliveryError as exc:  # DNS: the domain as a whole
                _all(outcomes, pending, exc)
        for rcpt in recipients:
            outcomes.setdefault(rcpt, Outcome(DeliveryError("not attempted", False, 451, "4.4.0")))
        return outcomes

    # ------------------------------------------------------------------ hosts

    def _targets(self, domain: str) -> Iterator[tuple[str, str, int, bool]]:
        """(name, address, port, is_smarthost) to try in order; DNS errors raise DeliveryError."""
        if self.smarthost:
            for address in _resolve_host(self.smarthost.host):
                yield self.smarthost.host, address, self.smarthost.port, True
            return
        assert self.resolver is not None
        for host in self.resolver.resolve(domain):
            for address in host.addresses:
                yield host.name, address, self.relay.mx_port, False

    def _connect(self, name: str, address: str, port: int, smarthost: bool,
                 outcomes: Outcomes, pending: list[str]) -> OutboundSMTP | None:
        """An open, greeted session (TLS, AUTH as configured), or None with the error recorded."""
        try:
            return self._open(name, address, port, smarthost, try_tls=True)
        except ConnectionLost as exc:
            if exc.code == 454 and not smarthost and not self.relay.verify_tls:
                # Opportunistic TLS failed in the handshake: deliver in plain text instead
                # (RFC 7435 4: encryption is welcome, not a condition of delivery).
                event(log, logging.INFO, "mx-tls-failed", host=name,
                      address=f"[{address}]:{port}", retry="plaintext", error=exc.message)
                try:
                    return self._open(name, address, port, smarthost, try_tls=False)
                except DeliveryError as again:
                    exc = again  # type: ignore[assignment]
            event(log, logging.INFO, "mx-failed", host=name, address=f"[{address}]:{port}",
                  error=str(exc))
            _all(outcomes, pending, exc, Attempt(f"{name} [{address}]:{port}", None))
        except DeliveryError as exc:
            event(log, logging.INFO, "mx-failed", host=name, address=f"[{address}]:{port}",
                  error=str(exc))
            _all(outcomes, pending, exc, Attempt(f"{name} [{address}]:{port}", None))
        return None

    def _open(self, name: str, address: str, port: int, smarthost: bool,
              try_tls: bool) -> OutboundSMTP:
        conn: OutboundSMTP | None = None
        try:
            if smarthost and self.smarthost and self.smarthost.tls == "implicit":
                conn = OutboundSMTP.open(name, address, port, self.timeouts, self.smarthost_tls)
            else:
                conn = OutboundSMTP.open(name, address, port, self.timeouts)
            conn.hello(self.hostname)
            if smarthost and self.smarthost:
                if self.smarthost.tls == "starttls":
                    if "STARTTLS" not in conn.extensions:
                        raise DeliveryError(f"smarthost {conn.remote_mta} does not offer "
                                            "STARTTLS, which is required", False, 454, "4.7.0")
                    if not conn.starttls(self.smarthost_tls, name, self.hostname):
                        raise DeliveryError(f"smarthost {conn.remote_mta} refused STARTTLS, "
                                            "which is required", False, 454, "4.7.0")
                if self.smarthost.username and self.smarthost.password:
                    conn.authenticate(self.smarthost.username, self.smarthost.password)
            elif try_tls and "STARTTLS" in conn.extensions:
                if not conn.starttls(self.mx_tls, name, self.hostname) and self.relay.verify_tls:
                    raise DeliveryError(f"{conn.remote_mta} refused STARTTLS and relay."
                                        "verify_tls requires it", False, 454, "4.7.0")
            elif self.relay.verify_tls:
                raise DeliveryError(f"{conn.remote_mta} does not offer STARTTLS and relay."
                                    "verify_tls requires it", False, 454, "4.7.0")
            return conn
        except BaseException:
            if conn is not None:
                conn.close(send_quit=conn.usable)
            raise

    # ------------------------------------------------------------------ one transaction

    def _attempt(self, conn: OutboundSMTP, sender: str, pending: list[str], body: Body,
                 eight_bit: bool, outcomes: Outcomes, reused: bool) -> list[str]:
        """One transaction on ``conn`` for ``pending``; returns the recipients still to try."""
        where = Attempt(conn.remote_mta, conn.tls)
        ext = conn.extensions
        limit = ext.size_limit
        if limit is not None and body.crlf_size > limit:
            return _all(outcomes, pending, DeliveryError(
                f"message size {body.crlf_size} exceeds the limit of {conn.remote_mta} "
                f"({limit})", True, 552, "5.3.4"), where)
        if eight_bit and "8BITMIME" not in ext:
            return _all(outcomes, pending, DeliveryError(
                f"the message has 8-bit content and {conn.remote_mta} does not support "
                "8BITMIME (RFC 6152)", True, 554, "5.6.3"), where)
        utf8 = "SMTPUTF8" in ext
        mail_from = _wire_address(sender, utf8)
        if mail_from is None:
            return _all(outcomes, pending, DeliveryError(
                f"non-ASCII sender address and {conn.remote_mta} does not support SMTPUTF8 "
                "(RFC 6531)", True, 553, "5.6.7"), where)
        forms: dict[str, str] = {}
        for rcpt in pending:
            wire = _wire_address(rcpt, utf8)
            if wire is None:
                _record(outcomes, rcpt, DeliveryError(
                    f"non-ASCII recipient address and {conn.remote_mta} does not support "
                    "SMTPUTF8 (RFC 6531)", True, 553, "5.6.7"), where)
            else:
                forms[wire] = rcpt
        if not forms:
            return []
        params = []
        if "SIZE" in ext:
            params.append(f"SIZE={body.crlf_size}")
        if eight_bit:
            params.append("BODY=8BITMIME")
        if utf8 and not (mail_from + "".join(forms)).isascii():
            params.append("SMTPUTF8")
        try:
            result = conn.transaction(mail_from, list(forms), body, " ".join(params), reused)
        except ConnectionLost as exc:
            event(log, logging.INFO, "mx-failed", host=conn.remote_mta, error=str(exc))
            return _all(outcomes, list(forms.values()), exc, where)
        return self._judge(conn, result, forms, outcomes, where)

    def _judge(self, conn: OutboundSMTP, result: Transaction, forms: dict[str, str],
               outcomes: Outcomes, where: Attempt) -> list[str]:
        """Record each recipient's outcome; return the ones to try at the next host."""
        retry: list[str] = []
        assert result.mail is not None
        for wire, rcpt in forms.items():
            reply = result.mail if result.mail.code >= 300 else result.rcpt.get(wire)
            if reply is not None and reply.code < 300:
                reply = result.final or result.data
            if reply is None or reply.code == 354:
                error: DeliveryError | None = DeliveryError(
                    f"{conn.remote_mta} gave no final reply", False, 451, "4.4.2")
            elif reply.code < 300:
                error = None
            else:
                # The server's own words: they become the DSN's Diagnostic-Code (RFC 3464 2.3.6);
                # where it came from is in the Attempt (Remote-MTA).
                error = DeliveryError(reply.text or "(no text)", reply.permanent, reply.code,
                                      reply.enhanced)
            _record(outcomes, rcpt, error, where)
            result_name = "delivered" if error is None else (
                "rejected" if error.permanent else "deferred")
            event(log, logging.DEBUG, "mx-reply", to=rcpt, remote=conn.remote_mta,
                  result=result_name, tls=conn.tls, reply=reply)
            if error is not None and not error.permanent:
                retry.append(rcpt)
        return retry

    def _eight_bit(self, body: Body) -> bool:
        known = getattr(body, "eight_bit", None)
        if isinstance(known, bool):
            return known
        return bool(run_blocking(_scan_eight_bit, body))


def _scan_eight_bit(body: Body) -> bool:
    return any(_EIGHT_BIT.search(chunk) for chunk in body.chunks())


def _resolve_host(host: str) -> list[str]:
    """Addresses of the smarthost through the system resolver (gevent's, cooperative)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryError(f"cannot resolve smarthost {host}: {exc}", False, 451,
                            "4.4.3") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _unsendable(address: str) -> bool:
    """True for an address that would break the command line it goes into (CR, LF, NUL, <>)."""
    return any(c in address for c in "\r\n\0<>")


def _wire_address(address: str, smtputf8: bool) -> str | None:
    """``address`` as sent: domain as A-labels; None when it needs SMTPUTF8 the server lacks."""
    if not address:
        return ""
    local, domain = split_address(address)
    if domain:
        with contextlib.suppress(ValueError):  # not encodable: sent as is, the server judges
            domain = normalize_domain(domain)
    if not (local.isascii() and domain.isascii()) and not smtputf8:
        return None
    return f"{local}@{domain}" if domain else local


def _record(outcomes: Outcomes, rcpt: str, error: DeliveryError | None,
            where: Attempt | None) -> None:
    """Set ``rcpt``'s outcome; without ``where``, the host an earlier try reached stays."""
    if where is None and rcpt in outcomes:
        where = outcomes[rcpt].attempt
    outcomes[rcpt] = Outcome(error, where)


def _all(outcomes: Outcomes, rcpts: Sequence[str], error: DeliveryError,
         where: Attempt | None = None) -> list[str]:
    """Record ``error`` for each of ``rcpts``; the ones to try elsewhere (all, if transient)."""
    for rcpt in rcpts:
        _record(outcomes, rcpt, error, where)
    return [] if error.permanent else list(rcpts)
