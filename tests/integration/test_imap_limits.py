"""IMAP's configurable command limits (``limits.imap_max_line``, ``imap_max_literal``,
``imap_max_command``) over real sockets: RFC 9051 4 (a server may refuse what it cannot
handle) and 7.1 (BAD, BYE), RFC 7888 4 (LITERAL+: a non-synchronizing literal over a limit
cannot be refused politely, its octets are already on the way)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from geomail.config import ConfigError, parse_config
from tests.support.geomail import PASSWORD, base_config
from tests.support.pop3 import ALICE

TIMEOUT = 10


@pytest.fixture
def small_app(make_app: Callable[..., Any]) -> Any:
    return make_app(listen={"smtp": ["127.0.0.1:0"],
                            "imap": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]},
                    limits={"imap_max_line": "1KiB", "imap_max_literal": "2KiB",
                            "imap_max_command": "8KiB"})


class Client:
    """Raw lines: the limits are about octets on the wire, which imaplib hides."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def login(self) -> None:
        self.send(f'l LOGIN "{ALICE}" "{PASSWORD}"\r\n'.encode())
        while not (reply := self.line()).startswith(b"l "):
            pass
        assert reply.startswith(b"l OK"), reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_a_line_over_imap_max_line_ends_the_connection(small_app: Any) -> None:
    """RFC 9051 7.1.5: a command line over ``limits.imap_max_line`` gets BYE and the
    connection closes; a line under it is served."""
    client = Client(small_app.ports["imap"][0])
    client.send(b"a NOOP " + b"x" * 900 + b"\r\n")  # under 1 KiB: parsed (and refused)
    assert client.line().startswith(b"a BAD")
    client.send(b"b NOOP " + b"x" * 2000 + b"\r\n")
    assert client.line().startswith(b"* BYE")
    assert client.line() == b""  # closed
    client.close()


def test_a_literal_over_imap_max_literal_is_refused_before_it_is_sent(small_app: Any) -> None:
    """RFC 9051 7.1 / RFC 7889 (TOOBIG code): a synchronizing literal over
    ``limits.imap_max_literal`` is refused instead of the continuation, and the connection
    goes on; one under it is accepted."""
    client = Client(small_app.ports["imap"][0])
    client.login()
    client.send(b"a CREATE {3000}\r\n")
    reply = client.line()
    assert reply.startswith(b"a BAD") and b"TOOBIG" in reply
    client.send(b"b CREATE {5}\r\n")
    assert client.line().startswith(b"+")
    client.send(b"Small\r\n")
    assert client.line().startswith(b"b OK")
    client.send(b"c LOGOUT\r\n")
    assert client.line().startswith(b"* BYE")
    client.close()


def test_a_command_over_imap_max_command_ends_the_connection(small_app: Any) -> None:
    """RFC 7888 4: non-synchronizing literals that together pass ``limits.imap_max_command``
    end the connection with BYE (the octets were sent without asking)."""
    client = Client(small_app.ports["imap"][0])
    client.login()
    literal = b"{2000+}\r\n" + b"x" * 2000
    client.send(b"a SEARCH" + b" TEXT " .join([b""] + [literal] * 5) + b"\r\n")
    lines = [client.line() for _ in range(2)]
    assert any(line.startswith(b"* BYE") for line in lines), lines
    client.close()


@pytest.mark.parametrize(("key", "value"), [("imap_max_line", "100"),
                                            ("imap_max_literal", "1GiB"),
                                            ("imap_max_command", "-1")])
def test_limits_out_of_range_name_their_key(tmp_path: Any, key: str, value: str) -> None:
    """Config errors name the key path: a limit outside its range is refused at load."""
    config = base_config(tmp_path)
    config["limits"] = {key: value}
    with pytest.raises(ConfigError, match=f"limits.{key}"):
        parse_config(config)
