"""POP3 and TLS over real sockets: STLS (RFC 2595 4), implicit TLS on pop3s (RFC 8314 3.1), and
no plaintext login where TLS is required (RFC 8314 4.1, RFC 2595 2.3); Maildir and mbox."""

from __future__ import annotations

import base64
import logging
import poplib
import socket
import ssl

import pytest

from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE, Ports, RawPOP3, make_message, pop3_overrides, send, unstuff

pytest_plugins = ["tests.support.pop3_fixtures"]

NO_PLAINTEXT = b"-ERR [AUTH] Plaintext login is disabled; use STLS first\r\n"
PLAIN = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()


@pytest.fixture
def ports(pop3_app) -> Ports:
    return Ports(pop3_app.ports)


def capabilities(client: RawPOP3) -> set[str]:
    _, body = client.multi("CAPA")
    return set(unstuff(body).decode().split("\r\n")[:-1])


def test_plaintext_login_refused_until_stls(ports, pop3_client_tls):
    """RFC 2595 4 and RFC 8314 4.1: on a pop3 listener without ``allow_plaintext_auth`` CAPA
    offers STLS but neither USER nor SASL; USER, PASS and AUTH get ``-ERR [AUTH]`` (RFC 3206 5).
    After STLS the capabilities are asked again (RFC 2595 4: the client must discard the old
    list): now USER and SASL PLAIN are there, STLS is not, and the login works."""
    send(ports.smtp, make_message(1))
    client = RawPOP3.connect(ports.pop3_strict)
    caps = capabilities(client)
    assert "STLS" in caps
    assert not {"USER", "SASL PLAIN"} & caps
    assert client.cmd(f"USER {ALICE}") == NO_PLAINTEXT
    assert client.cmd(f"PASS {PASSWORD}") == NO_PLAINTEXT
    assert client.cmd(f"AUTH PLAIN {PLAIN}") == NO_PLAINTEXT
    assert client.cmd("AUTH PLAIN") == NO_PLAINTEXT
    assert client.cmd("STLS") == b"+OK Begin TLS negotiation\r\n"
    client.starttls(pop3_client_tls)
    assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
    caps = capabilities(client)
    assert {"USER", "SASL PLAIN"} <= caps
    assert "STLS" not in caps
    assert client.cmd("STLS").startswith(b"-ERR")
    assert client.login().startswith(b"+OK Logged in, 1 messages")
    assert unstuff(client.multi("RETR 1")[1]).endswith(make_message(1))
    assert client.quit().startswith(b"+OK")


def test_poplib_stls_and_auth_plain(ports, pop3_client_tls):
    """RFC 2595 4 with a stock client (poplib.stls), then AUTH PLAIN with an initial response
    (RFC 5034 4) over the upgraded connection."""
    pop = poplib.POP3("127.0.0.1", ports.pop3_strict, timeout=10)
    pop.stls(context=pop3_client_tls)
    assert pop._shortcmd(f"AUTH PLAIN {PLAIN}").startswith(b"+OK Logged in")
    assert pop.stat() == (0, 0)
    pop.quit()


def test_stls_with_pipelined_plaintext_closes(ports):
    """RFC 2595 4 / CVE-2011-0411: commands sent in the same packet as STLS would be taken as
    if they came over TLS. The server answers -ERR instead of starting TLS and closes; nothing
    of the injected command is executed."""
    client = RawPOP3.connect(ports.pop3_strict)
    client.send(f"STLS\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    assert client.closed_by_server() == b"-ERR Commands pipelined after STLS\r\n"


def test_stls_then_plaintext_instead_of_handshake(ports, caplog):
    """RFC 2595 4: after ``+OK`` to STLS the next bytes must be a TLS handshake; plaintext there
    fails the handshake, the server closes without answering it, and logs the TLS failure."""
    caplog.set_level(logging.INFO)
    client = RawPOP3.connect(ports.pop3_strict)
    assert client.cmd("STLS").startswith(b"+OK")
    client.send(f"USER {ALICE}\r\n".encode())
    assert b"+OK" not in client.closed_by_server()
    assert any("tls" in r.getMessage() and "fail" in r.getMessage() for r in caplog.records)


def test_pop3s_implicit_tls(ports, pop3_client_tls):
    """RFC 8314 3.1: pop3s speaks TLS from the first byte, then POP3 as usual: the greeting comes
    over TLS, CAPA offers USER and SASL PLAIN but not STLS (RFC 2595 4: not when TLS is
    active), and USER/PASS logs in."""
    send(ports.smtp, make_message(1))
    pop = poplib.POP3_SSL("127.0.0.1", ports.pop3s, context=pop3_client_tls, timeout=10)
    assert pop.getwelcome().startswith(b"+OK")
    caps = pop.capa()
    assert "USER" in caps and caps.get("SASL") == ["PLAIN"]
    assert "STLS" not in caps
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == 1
    assert b"\r\n".join(pop.retr(1)[1]).endswith(make_message(1)[:-2])
    pop.quit()


def test_pop3s_untrusted_client_sees_certificate_error(ports):
    """RFC 8314 3.1 / RFC 6125: the server presents the test CA's certificate; a client without
    that CA refuses it (so the other tests do verify the chain)."""
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("127.0.0.1", ports.pop3s, context=context, timeout=10)


def test_plaintext_client_on_pop3s_dropped(ports, pop3_client_tls, caplog):
    """RFC 8314 3.1: a client that speaks plaintext POP3 to the TLS port gets no POP3 answer and
    is disconnected; the failure is logged and the port keeps serving TLS clients."""
    caplog.set_level(logging.INFO)
    raw = socket.create_connection(("127.0.0.1", ports.pop3s), timeout=10)
    raw.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    received = b""
    try:
        while chunk := raw.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    raw.close()
    assert b"+OK" not in received and b"-ERR" not in received
    assert any("tls" in r.getMessage() and "fail" in r.getMessage() for r in caplog.records)
    pop = poplib.POP3_SSL("127.0.0.1", ports.pop3s, context=pop3_client_tls, timeout=10)
    assert pop.getwelcome().startswith(b"+OK")
    pop.quit()


def test_silent_plaintext_client_on_pop3s_timed_out(make_app, pop3_tls, store_format):
    """RFC 8314 3.1: a plaintext client waiting for a greeting on the TLS port never gets one;
    the server drops it when ``limits.tls_handshake_timeout`` expires."""
    app = make_app(**pop3_overrides(pop3_tls, store_format,
                                    limits={"tls_handshake_timeout": "1s"}))
    raw = socket.create_connection(("127.0.0.1", Ports(app.ports).pop3s), timeout=10)
    assert raw.recv(4096) == b""  # closed by the server, nothing sent first
    raw.close()


def test_no_stls_without_certificate(make_app, store_format):
    """RFC 2595 4: without a configured certificate STLS is neither offered nor accepted, and on
    a listener that requires TLS nothing offers a login."""
    app = make_app(store={"format": store_format}, listen={"pop3": ["127.0.0.1:0"]})
    client = RawPOP3.connect(app.ports["pop3"][0])
    caps = capabilities(client)
    assert not {"STLS", "USER", "SASL PLAIN"} & caps
    assert client.cmd("STLS") == b"-ERR STLS not available\r\n"
    assert client.cmd(f"USER {ALICE}") == NO_PLAINTEXT
    assert client.quit() == b"+OK Bye\r\n"
