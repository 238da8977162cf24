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
from geomail.envelope import Body, MessageDSN
from geomail.log import event
from geomail.proto.dsn_params import orcpt_param, xtext_encode
from geomail.safeio import run_blocking

from .connection import ConnectionLost, OutboundSMTP, Timeouts, Transaction
from .mx import MXResolver
from .pool import ConnectionPool
from .tls_policy import DANE, OPPORTUNISTIC, STS_TESTING, HostTLS, TLSPolicy, classify

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
                 smarthost_tls: ssl.SSLContext | None = None, idle_timeout: float = 5.0,
                 tls_policy: TLSPolicy | None = None) -> None:
        self.relay = relay
        self.tls_policy = tls_policy  # MTA-STS / DANE / TLS-RPT for MX hosts (tls_policy.py)
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

    def deliver(self, sender: str, recipients: Sequence[str], body: Body,
                dsn: MessageDSN | None = None, *, tls_report: bool = False) -> Outcomes:
        """Try once; each recipient's outcome, and where it went; ``dsn`` is passed on to hosts
        that offer DSN (RFC 3461 5.2). A ``tls_report`` (RFC 8460 5.3) ignores the domain's
        MTA-STS and DANE policies (opportunistic TLS) and is not counted in TLS reports."""
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
        if tls_report and not self.smarthost:
            # Its session may be unverified: never handed to mail the domain's policy covers.
            key += " [tls-report]"
        with self.pool.lease(key) as lease:
            conn = cast("OutboundSMTP | None", lease.conn)
            if conn is not None:  # an idle connection to the same destination: reuse it
                pending = self._attempt(conn, sender, pending, body, eight_bit, outcomes, True,
                                        dsn)
                if pending or not conn.usable:
                    lease.conn = None
                    conn.close(send_quit=conn.usable)
            try:
                for target in self._targets(domain, tls_report) if pending else ():
                    conn = lease.conn = self._connect(*target, outcomes, pending)
                    if conn is None:
                        continue
                    pending = self._attempt(conn, sender, pending, body, eight_bit, outcomes,
                                            False, dsn)
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

    def _targets(self, domain: str, tls_report: bool = False
                 ) -> Iterator[tuple[str, str, int, bool, HostTLS | None]]:
        """(name, address, port, is_smarthost, TLS requirement) to try in order; DNS errors
        raise DeliveryError, and so does a TLS policy that leaves no host (4.7.5, transient).
        A TLS report gets no requirement: RFC 8460 5.3, delivered despite TLS failures and
        left out of the next report."""
        if self.smarthost:
            for address in _resolve_host(self.smarthost.host):
                yield self.smarthost.host, address, self.smarthost.port, True, None
            return
        assert self.resolver is not None
        hosts = self.resolver.resolve(domain)
        plan = self.tls_policy.for_domain(domain) if self.tls_policy and not tls_report \
            else None
        skipped: list[str] = []
        for host in hosts:
            tls = plan.host(host.name) if plan else None
            if tls is not None and tls.skip:
                event(log, logging.INFO, "mx-skipped", domain=domain, host=host.name,
                      policy=tls.mode, reason=tls.skip)
                skipped.append(tls.describe(tls.skip))
                continue
            for address in host.addresses:
                yield host.name, address, self.relay.mx_port, False, tls
        if skipped and len(skipped) == len(hosts):
            raise DeliveryError("; ".join(skipped), False, 451, "4.7.5")

    def _connect(self, name: str, address: str, port: int, smarthost: bool,
                 host_tls: HostTLS | None, outcomes: Outcomes,
                 pending: list[str]) -> OutboundSMTP | None:
        """An open, greeted session (TLS, AUTH as configured), or None with the error recorded."""
        try:
            return self._open(name, address, port, smarthost, try_tls=True, host_tls=host_tls)
        except ConnectionLost as exc:
            if exc.code == 454 and host_tls is not None and host_tls.mode == STS_TESTING:
                # MTA-STS testing mode only reports (RFC 8461 5): on as without a policy.
                event(log, logging.INFO, "mx-tls-failed", host=name,
                      address=f"[{address}]:{port}", retry="opportunistic", error=exc.message)
                try:
                    return self._open(name, address, port, smarthost, try_tls=True)
                except DeliveryError as again:
                    exc = again  # type: ignore[assignment]
            if exc.code == 454 and not smarthost and not self.relay.verify_tls \
                    and (host_tls is None or not host_tls.required):
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
              try_tls: bool, host_tls: HostTLS | None = None) -> OutboundSMTP:
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
            elif host_tls is not None and host_tls.verify:
                self._policy_tls(conn, host_tls)
            elif try_tls and "STARTTLS" in conn.extensions:
                if not conn.starttls(self.mx_tls, name, self.hostname) and self.relay.verify_tls:
                    raise DeliveryError(f"{conn.remote_mta} refused STARTTLS and relay."
                                        "verify_tls requires it", False, 454, "4.7.0")
                self._opportunistic_outcome(conn, host_tls)
            elif self.relay.verify_tls:
                raise DeliveryError(f"{conn.remote_mta} does not offer STARTTLS and relay."
                                    "verify_tls requires it", False, 454, "4.7.0")
            elif try_tls:
                self._opportunistic_outcome(conn, host_tls)
            return conn
        except BaseException:
            if conn is not None:
                conn.close(send_quit=conn.usable)
            raise

    def _policy_tls(self, conn: OutboundSMTP, tls: HostTLS) -> None:
        """STARTTLS as an MTA-STS policy (PKIX for the MX name, RFC 8461 4.2) or DANE (TLSA
        match, RFC 7672 3) demands; a failure is reported and raised as ``ConnectionLost``
        454 4.7.5 (enforce, DANE: the host is not used; testing: the caller goes on)."""
        assert self.tls_policy is not None
        where = f"[{conn.address}]:{conn.port}"

        def fail(result: str, reason: str) -> ConnectionLost:
            self.tls_policy.outcome(tls, conn.name, conn.address, result, reason)  # type: ignore[union-attr]
            conn.close(send_quit=conn.usable)
            return ConnectionLost(tls.describe(reason), 454, "4.7.5")

        if "STARTTLS" not in conn.extensions:
            raise fail("starttls-not-supported", f"{conn.remote_mta} does not offer STARTTLS")
        context = self.mx_tls_unverified if tls.mode == DANE else self.tls_policy.verified
        try:
            started = conn.starttls(context, conn.name, self.hostname)
        except ConnectionLost as exc:
            result = classify(exc)
            raise fail(result, f"{exc.message} ({result})") from exc
        if not started:
            raise fail("starttls-not-supported", f"{conn.remote_mta} refused STARTTLS")
        if tls.mode == DANE and not tls.authenticated:
            conn.tls = conn.tls.replace(" verified", "") + " dane-unauthenticated"
        elif tls.mode == DANE:
            from .dane import match_certificate

            # RFC 7672 3.2.2: the CNAME-expanded names of the TLSA lookup count as well.
            names = [conn.name, tls.domain, *tls.names]
            reason = match_certificate(tls.tlsa, _peer_chain(conn), names)  # type: ignore[arg-type]
            if reason is not None:
                raise fail("tlsa-invalid", f"{conn.remote_mta}: {reason}")
            conn.tls = conn.tls.replace(" verified", "") + " dane-verified"
        event(log, logging.DEBUG, "mx-tls-policy-ok", host=conn.name, address=where,
              policy=tls.mode, tls=conn.tls)
        self.tls_policy.outcome(tls, conn.name, conn.address, None)

    def _opportunistic_outcome(self, conn: OutboundSMTP, tls: HostTLS | None) -> None:
        """Count a session without a policy for TLS-RPT's no-policy-found (RFC 8460 4.2)."""
        if self.tls_policy is not None and tls is not None and tls.mode == OPPORTUNISTIC:
            self.tls_policy.outcome(tls, conn.name, conn.address,
                                    None if conn.tls != "none" else "starttls-not-supported")

    @property
    def mx_tls_unverified(self) -> ssl.SSLContext:
        """Encryption only: for DANE hosts the TLSA match decides, not the CA (RFC 7672 3.1)."""
        return client_tls_context(False)

    # ------------------------------------------------------------------ one transaction

    def _attempt(self, conn: OutboundSMTP, sender: str, pending: list[str], body: Body,
                 eight_bit: bool, outcomes: Outcomes, reused: bool,
                 dsn: MessageDSN | None = None) -> list[str]:
        """One transaction on ``conn`` for ``pending``; returns the recipients still to try."""
        ext = conn.extensions
        passed = dsn is not None and "DSN" in ext  # RFC 3461 5.2: the next hop takes it on
        where = Attempt(conn.remote_mta, conn.tls, passed)
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
        rcpt_params: dict[str, str] = {}
        if passed:
            assert dsn is not None
            params += dsn_mail_params(dsn)
            rcpt_params = {wire: dsn_rcpt_params(dsn, rcpt) for wire, rcpt in forms.items()}
        try:
            result = conn.transaction(mail_from, list(forms), body, " ".join(params), reused,
                                      rcpt_params)
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


def _peer_chain(conn: OutboundSMTP) -> list[bytes]:
    """The server's certificate chain in DER, leaf first (RFC 7672 needs more than the leaf)."""
    sock = conn.sock
    leaf = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    chain: list[bytes] = []
    sslobj = getattr(sock, "_sslobj", None)
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is not None:
        import _ssl

        chain = [c.public_bytes(_ssl.ENCODING_DER) for c in getter() or ()]
    if leaf and (not chain or chain[0] != leaf):
        chain.insert(0, leaf)
    return chain


def dsn_mail_params(dsn: MessageDSN) -> list[str]:
    """RET and ENVID as passed on (RFC 3461 4.3, 4.4, 5.2.1: unchanged, xtext-encoded)."""
    params = [f"RET={dsn.ret}"] if dsn.ret else []
    if dsn.envid is not None:
        params.append(f"ENVID={xtext_encode(dsn.envid)}")
    return params


def dsn_rcpt_params(dsn: MessageDSN, rcpt: str) -> str:
    """NOTIFY and ORCPT for ``rcpt`` as passed on (RFC 3461 5.2.1)."""
    wanted = dsn.recipients.get(rcpt)
    if wanted is None:
        return ""
    params = [f"NOTIFY={','.join(wanted.notify)}"] if wanted.notify else []
    if wanted.orcpt:
        params.append(f"ORCPT={orcpt_param(wanted.orcpt)}")
    return " ".join(params)


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
