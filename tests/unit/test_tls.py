"""Server TLS: loading tls.cert/tls.key, protocol floor, reload on SIGHUP, handshakes."""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gevent
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from geomail.config import TLSConfig
from geomail.errors import ConfigError
from geomail.server import tls as tls_module
from geomail.server.tls import (
    TLSContextHolder,
    TLSHandshakeError,
    load_server_context,
    tls_description,
    wrap_server,
)
from tests.support.privileges import owned_tempdir, unprivileged

HOST = "mail.example.com"


@dataclass
class Certs:
    """A throwaway CA and a server certificate for HOST written as PEM files."""

    ca: trustme.CA
    server: trustme.LeafCert
    config: TLSConfig


def write_certs(directory: Path, key_type: trustme.KeyType = trustme.KeyType.ECDSA,
                name: str = "") -> Certs:
    ca = trustme.CA(key_type=key_type)
    server = ca.issue_cert(HOST, key_type=key_type)
    cert, key = directory / f"fullchain{name}.pem", directory / f"privkey{name}.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    return Certs(ca, server, TLSConfig(str(cert), str(key)))


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return write_certs(tmp_path)


def client_context(ca: trustme.CA, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    for attribute, version in versions.items():
        setattr(context, attribute, version)
    return context


Handshake = Callable[..., tuple[ssl.SSLSocket | TLSHandshakeError, object]]


@pytest.fixture
def handshake() -> Iterator[Handshake]:
    """Run wrap_server on one end of a socketpair and the client on the other; every socket
    the handshakes leave open is closed at teardown."""
    opened: list[socket.socket] = []

    def run(server_context: ssl.SSLContext, client: ssl.SSLContext,
            timeout: float = 10.0) -> tuple[ssl.SSLSocket | TLSHandshakeError, object]:
        server_end, client_end = socket.socketpair()

        def run_client() -> object:
            try:
                return client.wrap_socket(client_end, server_hostname=HOST)
            except (ssl.SSLError, OSError) as exc:
                client_end.close()
                return exc

        client_greenlet = gevent.spawn(run_client)
        try:
            server: ssl.SSLSocket | TLSHandshakeError = wrap_server(server_end, server_context,
                                                                    timeout)
        except TLSHandshakeError as exc:
            server = exc
        client_greenlet.join()
        opened.extend(end for end in (server, client_greenlet.value)
                      if isinstance(end, socket.socket))
        return server, client_greenlet.value

    yield run
    for sock in opened:
        sock.close()


DESCRIPTION = re.compile(r"^(TLSv1\.[23]) with cipher ([A-Z0-9_-]+) \((\d+)/\3 bits\)$")


# -- loading -----------------------------------------------------------------------------------


def test_context_loads_full_chain_and_settings(certs: Certs) -> None:
    """A PEM full chain and key give a server context limited to TLS 1.2-1.3 (RFC 8996 2;
    RFC 8314 4.1), without compression or renegotiation."""
    context = load_server_context(certs.config)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n)
                         for n in names)


def test_combined_pem_file(tmp_path: Path) -> None:
    """Key and chain may live in one file (tls.cert and tls.key naming the same path)."""
    certs = write_certs(tmp_path)
    combined = tmp_path / "combined.pem"
    certs.server.private_key_and_cert_chain_pem.write_to_path(str(combined))
    load_server_context(TLSConfig(str(combined), str(combined)))


def test_missing_files_name_the_key_and_path(certs: Certs, tmp_path: Path) -> None:
    """A missing certificate or key is a ConfigError naming the config key and the file."""
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=rf"^tls\.cert: file {re.escape(missing)} does not"):
        load_server_context(TLSConfig(missing, certs.config.key))
    with pytest.raises(ConfigError, match=rf"^tls\.key: file {re.escape(missing)} does not"):
        load_server_context(TLSConfig(certs.config.cert, missing))
    with pytest.raises(ConfigError, match=r"^tls\.key: .* is a directory"):
        load_server_context(TLSConfig(certs.config.cert, str(tmp_path)))


def test_unreadable_file(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable key (permissions) is a ConfigError naming the file and the reason."""
    real_open = open

    def deny(path: str, *args: object, **kwargs: object) -> object:
        if path == certs.config.key:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(tls_module, "open", deny, raising=False)
    with pytest.raises(ConfigError) as info:
        load_server_context(certs.config)
    assert str(info.value) == f"tls.key: file {certs.config.key} is not readable: Permission denied"


def test_unreadable_file_by_mode() -> None:
    """A key with mode 000 is reported as not readable, naming the file and the reason. Run as
    an unprivileged user also under root, which reads any file."""
    with owned_tempdir() as base, unprivileged():
        certs = write_certs(base)
        os.chmod(certs.config.key, 0)
        with pytest.raises(ConfigError) as info:
            load_server_context(certs.config)
    assert str(info.value) == f"tls.key: file {certs.config.key} is not readable: Permission denied"


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("cert", b"hello\n", r"^tls\.cert: .*fullchain\.pem is not a PEM certificate"),
        ("key", b"hello\n", r"^tls\.key: .*privkey\.pem is not a PEM private key"),
        ("cert", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
         r"^tls\.cert: .*fullchain\.pem holds a corrupt PEM certificate"),
        ("key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
         r"^tls\.key: .*privkey\.pem holds a corrupt PEM private key"),
    ],
)
def test_not_pem(certs: Certs, which: str, content: bytes, message: str) -> None:
    """Files that are not PEM, or corrupt PEM, are ConfigErrors naming the file at fault."""
    Path(getattr(certs.config, which)).write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_server_context(certs.config)


def test_key_does_not_match_certificate(certs: Certs, tmp_path: Path) -> None:
    """A key from another certificate is a ConfigError naming both files."""
    other = write_certs(tmp_path, name="-other")
    with pytest.raises(ConfigError) as info:
        load_server_context(TLSConfig(certs.config.cert, other.config.key))
    assert str(info.value) == (f"tls.key: {other.config.key} does not match the certificate "
                               f"in {certs.config.cert}")


def test_encrypted_key_is_refused_without_prompting(certs: Certs) -> None:
    """A passphrase-protected key is reported, never prompted for (no terminal at boot)."""
    key = serialization.load_pem_private_key(certs.server.private_key_pem.bytes(), None)
    Path(certs.config.key).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))
    with pytest.raises(ConfigError, match=r"^tls\.key: .* is encrypted"):
        load_server_context(certs.config)


# -- handshakes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "key_type"), [
    (ssl.TLSVersion.TLSv1_3, trustme.KeyType.ECDSA),
    (ssl.TLSVersion.TLSv1_2, trustme.KeyType.ECDSA),
    (ssl.TLSVersion.TLSv1_2, trustme.KeyType.RSA),
])
def test_handshake_and_description(tmp_path: Path, version: ssl.TLSVersion,
                                   key_type: trustme.KeyType, handshake: Handshake) -> None:
    """wrap_server completes a real handshake; tls_description reads like Postfix's Received
    header text (RFC 5321 4.4 leaves the comment free-form): version, cipher, bits."""
    certs = write_certs(tmp_path, key_type)
    server, client = handshake(load_server_context(certs.config),
                               client_context(certs.ca, maximum_version=version))
    assert isinstance(server, ssl.SSLSocket), server
    assert isinstance(client, ssl.SSLSocket), client
    text = tls_description(server)
    match = DESCRIPTION.match(text)
    assert match, text
    assert match.group(1) == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
    if version == ssl.TLSVersion.TLSv1_2:
        kind = "ECDSA" if key_type == trustme.KeyType.ECDSA else "RSA"
        assert match.group(2).startswith(f"ECDHE-{kind}-")
    client.sendall(b"EHLO x\r\n")
    assert server.recv(100) == b"EHLO x\r\n"
    server.close()
    client.close()


@pytest.mark.parametrize("maximum", ["TLSv1", "TLSv1_1"])
def test_refuses_tls_1_0_and_1_1(certs: Certs, maximum: str, handshake: Handshake) -> None:
    """A client that offers at most TLS 1.0 or 1.1 is refused (RFC 8996 2-3, RFC 8314 4.1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = client_context(certs.ca, minimum_version=ssl.TLSVersion.TLSv1,
                                maximum_version=getattr(ssl.TLSVersion, maximum))
    client.set_ciphers("ALL:@SECLEVEL=0")  # let the old client really offer its version
    server, client_result = handshake(load_server_context(certs.config), client)
    assert isinstance(server, TLSHandshakeError)
    assert server.reason == "UNSUPPORTED_PROTOCOL"
    assert isinstance(client_result, ssl.SSLError)


def test_refuses_tls12_without_forward_secrecy(tmp_path: Path, handshake: Handshake) -> None:
    """TLS 1.2 clients offering only static-RSA key exchange find no shared cipher."""
    certs = write_certs(tmp_path, trustme.KeyType.RSA)
    client = client_context(certs.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("AES256-GCM-SHA384:AES128-SHA")
    server, _ = handshake(load_server_context(certs.config), client)
    assert isinstance(server, TLSHandshakeError)
    assert server.reason == "NO_SHARED_CIPHER"


def test_plaintext_client_on_tls_port(certs: Certs) -> None:
    """A client speaking plaintext to an implicit-TLS port (RFC 8314 3.3) fails the handshake
    cleanly with TLSHandshakeError, and the socket is closed."""
    server_end, client_end = socket.socketpair()
    client_end.sendall(b"EHLO plaintext.example\r\n")
    with pytest.raises(TLSHandshakeError) as info:
        wrap_server(server_end, load_server_context(certs.config), 5)
    assert info.value.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_RECORD")
    assert server_end.fileno() == -1
    try:
        answer = client_end.recv(100)
    except ConnectionResetError:
        answer = b""
    assert answer == b"" or answer[0] == 0x15  # closed, maybe after a TLS alert record
    client_end.close()


def test_handshake_timeout(certs: Certs) -> None:
    """A client that never completes the handshake is dropped after the timeout
    (limits.tls_handshake_timeout) with reason "timeout"."""
    server_end, client_end = socket.socketpair()
    with pytest.raises(TLSHandshakeError) as info:
        wrap_server(server_end, load_server_context(certs.config), 0.2)
    assert info.value.reason == "timeout"
    assert client_end.recv(10) == b""  # the server closed its end
    client_end.close()


def test_outer_timeout_is_not_swallowed(certs: Certs) -> None:
    """A caller's own gevent.Timeout firing during the handshake propagates unchanged."""
    server_end, client_end = socket.socketpair()
    outer = gevent.Timeout(0.1)
    with pytest.raises(gevent.Timeout) as info, outer:
        wrap_server(server_end, load_server_context(certs.config), 30)
    assert info.value is outer
    client_end.close()


def test_client_hangs_up_during_handshake(certs: Certs) -> None:
    """A client closing the connection mid-handshake gives TLSHandshakeError, not a crash."""
    server_end, client_end = socket.socketpair()
    client_end.close()
    with pytest.raises(TLSHandshakeError):
        wrap_server(server_end, load_server_context(certs.config), 5)


# -- reload -----------------------------------------------------------------------------------


def replace_files(target: Certs, source: Certs) -> None:
    os.replace(source.config.cert, target.config.cert)
    os.replace(source.config.key, target.config.key)


def test_reload_keeps_old_context_on_broken_files_and_switches_on_good_ones(
    certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture, handshake: Handshake
) -> None:
    """SIGHUP rebuilds the context: a broken renewal keeps the old one (logged), a good one is
    used by new connections while open connections keep theirs (DESIGN: certbot renewals)."""
    holder = TLSContextHolder(certs.config)
    old_context = holder.context
    open_server, open_client = handshake(holder.context, client_context(certs.ca))
    assert isinstance(open_server, ssl.SSLSocket) and isinstance(open_client, ssl.SSLSocket)

    Path(certs.config.cert).write_text("renewal went wrong\n")
    with caplog.at_level(logging.ERROR, logger="geomail.tls"):
        assert holder.reload() is False
    assert holder.context is old_context
    assert "tls-reload-failed" in caplog.text and certs.config.cert in caplog.text
    server, client = handshake(holder.context, client_context(certs.ca))
    assert isinstance(server, ssl.SSLSocket), server  # still serving the old certificate

    renewed = write_certs(tmp_path, name="-new")
    replace_files(certs, renewed)
    assert holder.reload() is True
    assert holder.context is not old_context
    server, client = handshake(holder.context, client_context(renewed.ca))
    assert isinstance(server, ssl.SSLSocket), server  # the new certificate, new CA
    server, client = handshake(holder.context, client_context(certs.ca))
    assert isinstance(client, ssl.SSLCertVerificationError)  # the old one is gone

    open_client.sendall(b"NOOP\r\n")  # the connection opened before the reload still works
    assert open_server.recv(100) == b"NOOP\r\n"
    open_server.sendall(b"250 2.0.0 OK\r\n")
    assert open_client.recv(100) == b"250 2.0.0 OK\r\n"


def test_reload_with_new_paths(certs: Certs, tmp_path: Path, handshake: Handshake) -> None:
    """reload(tls) takes new file names from a changed configuration."""
    holder = TLSContextHolder(certs.config)
    other = write_certs(tmp_path, name="-other")
    assert holder.reload(other.config) is True
    assert holder.tls == other.config
    server, _ = handshake(holder.context, client_context(other.ca))
    assert isinstance(server, ssl.SSLSocket)


def test_holder_start_up_failure_is_config_error(tmp_path: Path) -> None:
    """At start-up a bad certificate is a ConfigError (the server does not start)."""
    missing = str(tmp_path / "none.pem")
    with pytest.raises(ConfigError, match=r"tls\.cert"):
        TLSContextHolder(TLSConfig(missing, missing))


def test_description_without_cipher() -> None:
    """tls_description degrades to the version when no cipher is known."""

    class NoCipher:
        def cipher(self) -> None:
            return None

        def version(self) -> str:
            return "TLSv1.3"

    assert tls_description(NoCipher()) == "TLSv1.3"  # type: ignore[arg-type]
