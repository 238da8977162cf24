"""One outbound SMTP connection on a gevent socket: replies, EHLO, STARTTLS, AUTH, transactions."""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from geomail.delivery import DeliveryError
from geomail.envelope import Body
from geomail.log import event
from geomail.proto.client import Extensions, MalformedReply, ReplyParser, ServerReply, parse_ehlo
from geomail.proto.dotwriter import DotWriter
from geomail.safeio import run_blocking
from geomail.units import KiB

log = logging.getLogger(__name__)

_SMALL_BODY = 256 * KiB  # read in one threadpool call; larger bodies are read chunk by chunk


class ConnectionLost(DeliveryError):
    """The connection failed or the server misbehaved; it cannot be used any more (transient)."""

    def __init__(self, message: str, code: int = 451, enhanced: str = "4.4.2") -> None:
        super().__init__(message, False, code, enhanced)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed for each step (RFC 5321 4.5.3.2)."""

    connect: float = 30.0
    command: float = 300.0  # greeting, each command's reply, TLS handshake
    data: float = 600.0  # each block of message data and the reply to the final dot


@dataclass(slots=True)
class Transaction:
    """The replies one mail transaction got."""

    mail: ServerReply | None = None
    rcpt: dict[str, ServerReply] = field(default_factory=dict)  # per recipient as given
    data: ServerReply | None = None  # the reply to DATA (354 expected)
    final: ServerReply | None = None  # the reply after the final dot

    @property
    def accepted(self) -> list[str]:
        """Recipients whose RCPT got a 2xx."""
        return [r for r, reply in self.rcpt.items() if reply.code < 300]


class OutboundSMTP:
    """A client session with one server. Every read and write has a timeout; any socket, TLS or
    protocol failure raises ``ConnectionLost`` and leaves the connection unusable."""

    def __init__(self, sock: socket.socket, name: str, address: str, port: int,
                 timeouts: Timeouts) -> None:
        self.sock = sock
        self.name = name  # host name, for logs and DSN Remote-MTA
        self.address = address
        self.port = port
        self.timeouts = timeouts
        self.extensions = Extensions()
        self.tls = "none"  # "TLSv1.3" or "TLSv1.3 verified" once encrypted
        self.usable = True  # False after a failure or a 421: never reuse it
        self._parser = ReplyParser()
        self._replies: deque[ServerReply] = deque()

    @property
    def remote_mta(self) -> str:
        """``name [address]:port``, for logs and the item's records."""
        return f"{self.name} [{self.address}]:{self.port}"

    @classmethod
    def open(cls, name: str, address: str, port: int, timeouts: Timeouts,
             tls: ssl.SSLContext | None = None) -> OutboundSMTP:
        """Connect (with TLS from the first byte when ``tls`` is given, RFC 8314 3.3) and read
        the greeting; raises ``ConnectionLost`` (a refusal included)."""
        conn = cls(connect(name, address, port, timeouts.connect), name, address, port, timeouts)
        if tls is not None:
            conn.wrap_tls(tls, name)
        greeting = conn.read_reply("greeting")
        if greeting.code != 220:
            conn.close(send_quit=greeting.code != 421)
            raise ConnectionLost(f"{conn.remote_mta} refused service: {greeting}",
                                 greeting.code if greeting.transient else 451)
        return conn

    # ------------------------------------------------------------------ low level

    def read_reply(self, step: str, timeout: float | None = None) -> ServerReply:
        """The next reply, waiting at most ``timeout`` (the command timeout by default)."""
        self.sock.settimeout(timeout or self.timeouts.command)
        try:
            while not self._replies:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionLost(f"{self.remote_mta} closed the connection ({step})")
                self._replies.extend(self._parser.feed(data))
        except ConnectionLost:
            self.usable = False
            raise
        except (OSError, MalformedReply) as exc:
            self.usable = False
            raise ConnectionLost(f"{self.remote_mta}: {_describe(exc)} ({step})") from exc
        reply = self._replies.popleft()
        event(log, logging.DEBUG, "smtp-out", remote=self.remote_mta, dir="<-", line=reply)
        if reply.code == 421:  # the server is closing the channel (RFC 5321 3.8)
            self.usable = False
        return reply

    def send(self, data: bytes, step: str, timeout: float | None = None) -> None:
        """Write ``data`` whole, within ``timeout``."""
        self.sock.settimeout(timeout or self.timeouts.command)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.usable = False
            raise ConnectionLost(f"{self.remote_mta}: {_describe(exc)} ({step})") from exc

    def command(self, line: str, step: str | None = None) -> ServerReply:
        """Send one command line and read its reply."""
        event(log, logging.DEBUG, "smtp-out", remote=self.remote_mta, dir="->",
              line="AUTH <redacted>" if line.upper().startswith("AUTH") else line)
        self.send(line.encode("utf-8") + b"\r\n", step or line.split(" ", 1)[0])
        return self.read_reply(step or line.split(" ", 1)[0])

    def close(self, send_quit: bool = True) -> None:
        """QUIT (best effort, short timeout) and close the socket."""
        if send_quit and self.usable:
            with contextlib.suppress(OSError):
                self.sock.settimeout(min(5.0, self.timeouts.command))
                self.sock.sendall(b"QUIT\r\n")
        self.usable = False
        with contextlib.suppress(OSError):
            self.sock.close()

    # ------------------------------------------------------------------ session set-up

    def hello(self, hostname: str) -> Extensions:
        """EHLO, or HELO when the server refuses EHLO (RFC 5321 4.1.4)."""
        reply = self.command(f"EHLO {hostname}")
        if reply.code == 250:
            self.extensions = parse_ehlo(reply)
            return self.extensions
        if reply.code == 421 or not reply.permanent:
            raise ConnectionLost(f"{self.remote_mta} rejected EHLO: {reply}")
        reply = self.command(f"HELO {hostname}")
        if reply.code != 250:
            raise ConnectionLost(f"{self.remote_mta} rejected HELO: {reply}")
        self.extensions = Extensions()
        return self.extensions

    def starttls(self, context: ssl.SSLContext, server_hostname: str, hostname: str) -> bool:
        """STARTTLS (RFC 3207) and a new EHLO; False when the server declined (still usable in
        plain text). A failed handshake raises ``ConnectionLost``."""
        reply = self.command("STARTTLS")
        if reply.code != 220:
            if reply.code == 421:
                raise ConnectionLost(f"{self.remote_mta} closing at STARTTLS: {reply}")
            return False
        if self._parser.buffered or self._replies:
            # Anything sent before the handshake is unauthenticated plain text (CVE-2011-0411).
            self.usable = False
            raise ConnectionLost(f"{self.remote_mta} sent data after its STARTTLS reply")
        self.wrap_tls(context, server_hostname)
        self.hello(hostname)
        return True

    def wrap_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The client TLS handshake: after STARTTLS, or from the first byte (RFC 8314, the
        caller then reads the greeting)."""
        self.sock.settimeout(self.timeouts.command)
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        except (OSError, ValueError) as exc:
            self.usable = False
            raise ConnectionLost(f"TLS handshake with {self.remote_mta} failed: "
                                 f"{_describe(exc)}", 454, "4.7.5") from exc
        self._note_tls(context)

    def _note_tls(self, context: ssl.SSLContext) -> None:
        version_of = getattr(self.sock, "version", None)
        version = version_of() if version_of else None
        verified = context.verify_mode == ssl.CERT_REQUIRED
        self.tls = f"{version or 'TLS'}{' verified' if verified else ''}"
        event(log, logging.DEBUG, "smtp-out-tls", remote=self.remote_mta, version=version,
              verified="yes" if verified else "no")

    def authenticate(self, username: str, password: str) -> None:
        """AUTH PLAIN, else AUTH LOGIN (RFC 4954); raises ``DeliveryError`` (transient: the
        credentials are the operator's to fix) when refused or nothing usable is offered."""
        mechanisms = self.extensions.auth_mechanisms
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
            reply = self.command(f"AUTH PLAIN {token}", "AUTH")
        elif "LOGIN" in mechanisms:
            reply = self.command("AUTH LOGIN", "AUTH")
            for secret in (username, password):
                if reply.code != 334:
                    break
                event(log, logging.DEBUG, "smtp-out", remote=self.remote_mta, dir="->",
                      line="<redacted>")
                self.send(base64.b64encode(secret.encode()) + b"\r\n", "AUTH")
                reply = self.read_reply("AUTH")
        else:
            raise DeliveryError(f"{self.remote_mta} offers no AUTH PLAIN or LOGIN", False, 454,
                                "4.7.0")
        if reply.code != 235:
            self.usable = self.usable and reply.code != 334
            raise DeliveryError(f"{self.remote_mta} refused our credentials: {reply}", False,
                                454, "4.7.0")

    # ------------------------------------------------------------------ transactions

    def transaction(self, sender: str, recipients: Sequence[str], body: Body,
                    mail_params: str = "", reset_first: bool = False,
                    rcpt_params: Mapping[str, str] | None = None) -> Transaction:
        """One mail transaction: MAIL, RCPT for each of ``recipients`` (the forms sent), DATA
        and the body, pipelined when the server offers PIPELINING (RFC 2920). Raises
        ``ConnectionLost`` when the connection fails; the message may then have been accepted.
        ``rcpt_params``: parameters per recipient form (DSN NOTIFY/ORCPT, RFC 3461 4.1)."""
        mail = f"MAIL FROM:<{sender}>{' ' + mail_params if mail_params else ''}"
        extra = rcpt_params or {}
        rcpts = [f"RCPT TO:<{r}>{' ' + extra[r] if extra.get(r) else ''}" for r in recipients]
        result = Transaction()
        if "PIPELINING" in self.extensions:
            lines = (["RSET"] if reset_first else []) + [mail, *rcpts, "DATA"]
            event(log, logging.DEBUG, "smtp-out", remote=self.remote_mta, dir="->",
                  line=" | ".join(lines))
            self.send("".join(f"{line}\r\n" for line in lines).encode("utf-8"), "MAIL")
            if reset_first:
                self._expect_reset(self.read_reply("RSET"))
            result.mail = self.read_reply("MAIL")
            for r in recipients:
                result.rcpt[r] = self.read_reply("RCPT")
            result.data = self.read_reply("DATA")
            if result.data.code == 354 and not (result.mail.code < 300 and result.accepted):
                # RFC 2920 3.1: DATA was accepted anyway; end it with an empty message.
                self.send(b".\r\n", "DATA")
                self.read_reply("DATA", self.timeouts.data)
                return result
        else:
            if reset_first:
                self._expect_reset(self.command("RSET"))
            result.mail = self.command(mail, "MAIL")
            if result.mail.code >= 300:
                return result
            for r, line in zip(recipients, rcpts, strict=True):
                result.rcpt[r] = self.command(line, "RCPT")
            if not result.accepted:
                self._expect_reset(self.command("RSET"))
                return result
            result.data = self.command("DATA")
        if result.data is None or result.data.code != 354:
            return result
        self._send_body(body)
        result.final = self.read_reply("end of data", self.timeouts.data)
        return result

    def _expect_reset(self, reply: ServerReply) -> None:
        if reply.code != 250:
            self.usable = False
            raise ConnectionLost(f"{self.remote_mta} refused RSET: {reply}")

    def _send_body(self, body: Body) -> None:
        writer = DotWriter()
        if body.size <= _SMALL_BODY:
            content = run_blocking(_read_all, body)
            self.send(writer.feed(content) + writer.finish(), "DATA", self.timeouts.data)
            return
        chunks = body.chunks()
        try:
            while (chunk := run_blocking(next, chunks, None)) is not None:
                self.send(writer.feed(chunk), "DATA", self.timeouts.data)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self.send(writer.finish(), "DATA", self.timeouts.data)


def connect(name: str, address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``address``:``port`` with Nagle off (commands are small and
    pipelined); raises ``ConnectionLost`` naming ``name``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except OSError as exc:
        sock.close()
        raise ConnectionLost(f"cannot connect to {name} [{address}]:{port}: "
                             f"{_describe(exc)}") from exc
    return sock


def _read_all(body: Body) -> bytes:
    return b"".join(body.chunks())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
