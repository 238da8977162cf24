"""Server-side TLS: the context built from tls.cert/tls.key, reloaded on SIGHUP, and handshakes."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import tempfile

import gevent

from geomail.certs.store import pair_loads, self_signed
from geomail.config import TLSConfig
from geomail.errors import ConfigError, GeomailError
from geomail.log import event

log = logging.getLogger("geomail.tls")

# TLS 1.2 suites: forward secrecy and AEAD only (Mozilla "intermediate" minus DHE). TLS 1.3
# suites are all AEAD and OpenSSL's defaults are kept.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TLSHandshakeError(GeomailError):
    """A server-side TLS handshake failed or timed out; the socket has been closed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # short, for the log: "timeout", "WRONG_VERSION_NUMBER", ...
        super().__init__(f"TLS handshake failed: {reason}")


class _EncryptedKey(Exception):
    """Raised from the password callback: geomail never prompts for a key passphrase."""


def _no_passphrase() -> bytes:
    raise _EncryptedKey


def _read_pem(key: str, path: str, marker: bytes, what: str) -> None:
    """Fail with a ConfigError naming ``key`` and ``path`` unless the file holds ``marker``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except FileNotFoundError:
        raise ConfigError(f"{key}: file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{key}: {path} is a directory, not a PEM file") from None
    except OSError as exc:
        raise ConfigError(f"{key}: file {path} is not readable: {exc.strerror}") from None
    if marker not in data:
        raise ConfigError(f"{key}: {path} is not a PEM {what} (no '{marker.decode()}' line)")


def _certs_parse(path: str) -> bool:
    """True if every certificate in ``path`` parses (tells a bad cert from a bad key)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError):
        return False
    return True


def load_server_context(tls: TLSConfig) -> ssl.SSLContext:
    """A server context for ``tls`` (PEM full chain + key): TLS 1.2/1.3 only (RFC 8996, 8314).

    Blocking (two small file reads); raises ConfigError naming the file and the problem.
    """
    _read_pem("tls.cert", tls.cert, b"-----BEGIN CERTIFICATE-----", "certificate")
    _read_pem("tls.key", tls.key, b"PRIVATE KEY-----", "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    # No server cipher preference: every suite offered is strong, and clients without AES
    # hardware (phones) rightly pick ChaCha20.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.verify_mode = ssl.CERT_NONE  # mail clients do not present certificates
    try:
        context.load_cert_chain(tls.cert, tls.key, password=_no_passphrase)
    except _EncryptedKey:
        raise ConfigError(
            f"tls.key: {tls.key} is encrypted; geomail needs an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        if "mismatch" in f"{exc.reason} {exc}".lower():
            raise ConfigError(
                f"tls.key: {tls.key} does not match the certificate in {tls.cert}"
            ) from None
        if not _certs_parse(tls.cert):
            raise ConfigError(f"tls.cert: {tls.cert} holds a corrupt PEM certificate") from None
        raise ConfigError(f"tls.key: {tls.key} holds a corrupt PEM private key") from None
    except OSError as exc:
        raise ConfigError(f"tls: cannot read {tls.cert} / {tls.key}: {exc.strerror}") from None
    return context


def placeholder_context() -> ssl.SSLContext:
    """A context with a fresh self-signed certificate, for ACME's first start: the implicit-TLS
    listeners need one before the CA has answered (blocking, a few ms)."""
    cert_pem, key_pem = self_signed(["geomail-placeholder.invalid"])
    with tempfile.TemporaryDirectory(prefix="geomail-placeholder-") as directory:
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        for path, data in ((cert, cert_pem), (key, key_pem)):
            with open(path, "wb") as handle:
                handle.write(data)
        return load_server_context(TLSConfig(cert, key))


class TLSContextHolder:
    """The current server context; ``reload`` swaps in a new one only if it loads.

    Connections keep the context they were wrapped with, so open sessions are not disturbed.
    """

    def __init__(self, tls: TLSConfig) -> None:
        self.tls = tls
        # ACME (tls.acme): the web lineage, chosen by SNI on the webs listener.
        self.web_context: ssl.SSLContext | None = None
        self.web_names: frozenset[str] = frozenset()
        self.placeholder = tls.acme is not None and not pair_loads(tls.cert, tls.key)
        if self.placeholder:
            self.context = self._install(placeholder_context())
            event(log, logging.WARNING, "acme-placeholder", cert=tls.cert,
                  serving="self-signed", until="the CA's certificate arrives")
        else:
            self.context = self._install(load_server_context(tls))  # ConfigError at start-up

    def _install(self, context: ssl.SSLContext) -> ssl.SSLContext:
        context.sni_callback = self._choose
        return context

    def _choose(self, sslsock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                _context: ssl.SSLContext) -> None:
        """SNI (RFC 6066 3): the web lineage for its names, the mail certificate otherwise."""
        web = self.web_context
        if web is not None and server_name and server_name.lower() in self.web_names:
            sslsock.context = web

    def load_web(self, cert: str, key: str, names: list[str]) -> bool:
        """Serve ``cert``/``key`` for ``names`` (SNI); on failure keep the old one."""
        try:
            context = load_server_context(TLSConfig(cert, key))
        except ConfigError as exc:
            event(log, logging.ERROR, "tls-reload-failed", problem=str(exc),
                  keeping="old-certificate")
            return False
        self.web_context, self.web_names = context, frozenset(n.lower() for n in names)
        event(log, logging.INFO, "tls-reloaded", cert=cert)
        return True

    def reload(self, tls: TLSConfig | None = None) -> bool:
        """Rebuild from the files (or from ``tls``, if the config changed); on failure keep the
        old context, log why and return False, so a bad renewal does not take the server down.
        """
        tls = tls or self.tls
        if tls.acme is not None and self.placeholder and not pair_loads(tls.cert, tls.key):
            return False  # still waiting for the CA; the manager logs why
        try:
            context = load_server_context(tls)
        except ConfigError as exc:
            event(log, logging.ERROR, "tls-reload-failed", problem=str(exc),
                  keeping="old-certificate")
            return False
        self.tls, self.context, self.placeholder = tls, self._install(context), False
        event(log, logging.INFO, "tls-reloaded", cert=tls.cert)
        return True


def wrap_server(sock: socket.socket, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    """Wrap ``sock`` and do the server handshake within ``timeout`` seconds in total.

    Raises TLSHandshakeError (and closes the socket) if the client fails, stalls or hangs up.
    The wrapped socket gets back ``sock``'s own timeout.
    """
    previous = sock.gettimeout()
    try:
        tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise TLSHandshakeError(f"wrap failed: {exc}") from exc
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        tls_sock.do_handshake()
    except BaseException as exc:  # close on anything, a kill or an outer timeout included
        tls_sock.close()
        if exc is timer:
            raise TLSHandshakeError("timeout") from None
        if isinstance(exc, ssl.SSLError):
            raise TLSHandshakeError(exc.reason or type(exc).__name__) from exc
        if isinstance(exc, OSError):
            raise TLSHandshakeError(exc.strerror or type(exc).__name__) from exc
        raise
    finally:
        timer.close()
    tls_sock.settimeout(previous)
    return tls_sock


def tls_description(sslsock: ssl.SSLSocket) -> str:
    """Postfix-style text for a Received header: ``TLSv1.3 with cipher X (256/256 bits)``."""
    cipher = sslsock.cipher()
    version = sslsock.version() or "TLS"
    if cipher is None:
        return version
    name, _protocol, bits = cipher
    return f"{version} with cipher {name} ({bits}/{bits} bits)"
