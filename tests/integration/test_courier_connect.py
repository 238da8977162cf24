"""The courier's one connect path: plain (then STARTTLS) and implicit TLS connections to a
smarthost are made the same way (RFC 3207 and RFC 8314 3.3; one path, so that neither can drift)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from geomail.config import RelayConfig, SmarthostConfig
from geomail.courier.smtp import SMTPCourier, client_tls_context
from geomail.spool import BytesBody
from tests.support import free_port
from tests.support.mta import SmtpdPeer

MESSAGE = b"From: alice@example.com\nTo: bob@anywhere.example\nSubject: hi\n\nhello\n"
MODES = ["starttls", "implicit"]


@pytest.fixture
def courier(tls_files: dict[str, str]) -> Iterator[Callable[[str, int], SMTPCourier]]:
    made: list[SMTPCourier] = []

    def make(mode: str, port: int) -> SMTPCourier:
        relay = RelayConfig(smarthost=SmarthostConfig("localhost", port, mode, verify_tls=True),
                            connect_timeout=2.0, command_timeout=5.0, data_timeout=5.0)
        context = client_tls_context(True, cafile=tls_files["ca"])
        made.append(SMTPCourier(relay, "mail.example.com", None, smarthost_tls=context))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.mark.parametrize("mode", MODES)
def test_connection_sets_tcp_nodelay(courier, tls_files, mode) -> None:
    """RFC 2920 3.1 / RFC 8314 3.3: pipelined command groups go out at once, so every outbound
    connection, implicit TLS included, disables Nagle (TCP_NODELAY, read back with getsockopt)."""
    port = free_port("127.0.0.1")
    with SmtpdPeer("127.0.0.1", port, tls=mode, cert=tls_files["cert"], key=tls_files["key"]):
        conn = courier(mode, port)._open("localhost", "127.0.0.1", port, True, try_tls=True)
        try:
            assert conn.tls.endswith(" verified")
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()


def test_connect_failure_is_worded_the_same(courier) -> None:
    """RFC 5321 4.5.4.1 / RFC 8314 3.3: a refused connection to the smarthost defers the mail
    with the same message whether the connection would have been plain or implicit TLS."""
    port = free_port("127.0.0.1")  # nothing listens there
    messages = []
    for mode in MODES:
        error = courier(mode, port).deliver("alice@example.com", ["bob@anywhere.example"],
                                            BytesBody(MESSAGE))["bob@anywhere.example"].error
        assert error is not None and not error.permanent
        messages.append(error.message)
    assert messages[0] == messages[1] == (
        f"cannot connect to localhost [127.0.0.1]:{port}: Connection refused")
