"""Connection budgets per class of service and per client network (RFC 5321 4.2.3: 421 when over).

Port 25 (anyone on the internet) and the users' ports (submission, POP3) have separate budgets;
IPv6 clients are counted per /64; an over-limit client on an implicit-TLS port gets no plaintext.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import poplib
import secrets
import shutil
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from geomail.log import KeyValueFormatter
from tests.support import wait_for
from tests.support.dialog import Dialog, wait_closed
from tests.support.geomail import PASSWORD

IPV6_FREEBIND = getattr(socket, "IPV6_FREEBIND", 78)  # Linux <linux/in6.h>; not in every Python
ALICE = "alice@example.com"
FORMAT = KeyValueFormatter()


def _tls(tls_files: dict[str, str]) -> dict[str, str]:
    return {"cert": tls_files["cert"], "key": tls_files["key"]}


def _refused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``refused`` lines of the mail log as the operator reads them (no timestamp, level)."""
    return [line for r in caplog.records if r.name == "geomail.mail"
            if (line := FORMAT.format(r).split(" ", 2)[2]).startswith("refused ")]


def test_port_25_at_its_cap_leaves_users_their_logins(make_app, tls_files, client_tls):
    """Postfix keeps submission in its own master.cf service with its own process limit; so does
    geomail: with port 25 full, in total and for 127.0.0.1, the same address still logs in on 465
    (RFC 8314 3.3 + RFC 4954 AUTH, smtplib) and submits, and on 110 (RFC 2595 STLS + RFC 1939
    USER/PASS, poplib) finds the message."""
    app = make_app(tls=_tls(tls_files),
                   listen={"smtp": ["127.0.0.1:0"], "submissions": ["127.0.0.1:0"],
                           "pop3": ["127.0.0.1:0"]},
                   limits={"max_connections": 3, "max_connections_per_ip": 3})
    port25 = app.ports["smtp"][0]
    flood = [Dialog(port25) for _ in range(3)]
    try:
        for held in flood:
            held.greeting()
        with Dialog(port25) as over:  # port 25 really is at its cap
            over.expect("421 4.7.0")
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = ALICE, ALICE, "while 25 is full"
        message.set_content("hello")
        with smtplib.SMTP_SSL("localhost", app.ports["submissions"][0], context=client_tls,
                              timeout=10) as submission:
            submission.login(ALICE, PASSWORD)
            assert submission.send_message(message) == {}
        pop = poplib.POP3("127.0.0.1", app.ports["pop3"][0], timeout=10)
        try:
            pop.stls(context=client_tls)
            pop.user(ALICE)
            assert pop.pass_(PASSWORD).startswith(b"+OK")
            assert pop.stat()[0] == 1
        finally:
            pop.quit()
        for held in flood:  # the flood was never disturbed
            held.cmd("NOOP", "250")
    finally:
        for held in flood:
            held.close()


@pytest.mark.parametrize("kind", ["submissions", "pop3s"])
def test_over_limit_on_implicit_tls_gets_no_plaintext(make_app, tls_files, client_tls, caplog,
                                                      kind):
    """RFC 8314 3.3 (implicit TLS: TLS from the first byte): a
    connection over the limit on 465/995 is closed at once without a byte (no plaintext 421 or
    -ERR); a TLS client sees the handshake fail; the refused line still says why."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = make_app(tls=_tls(tls_files), listen={"smtp": ["127.0.0.1:0"], kind: ["127.0.0.1:0"]},
                   limits={"max_connections_per_ip": 1})  # the users' per-IP default follows it
    port = app.ports[kind][0]
    with Dialog(port, tls=client_tls) as held:
        assert held.read_line() is not None  # the greeting: this one was admitted
        with Dialog(port) as raw:
            waited, seen = wait_closed(raw.sock, 5)
        assert seen == b""
        assert waited < 5
        with pytest.raises((OSError, poplib.error_proto)):  # SSLError, reset, EOF
            if kind == "submissions":
                smtplib.SMTP_SSL("localhost", port, context=client_tls, timeout=5).quit()
            else:
                poplib.POP3_SSL("127.0.0.1", port, context=client_tls, timeout=5).quit()
    wait_for(lambda: len(_refused_lines(caplog)) >= 2, timeout=5, message="two refused lines")
    assert _refused_lines(caplog)[0] == (
        f"refused service={kind} client=127.0.0.1 reason=too-many-from-ip "
        "limit=limits.max_user_connections_per_ip")


# ---- IPv6: one client is one /64 ------------------------------------------------------------


@pytest.fixture
def ipv6_site() -> Iterator[str]:
    """A random ULA /48 (RFC 4193) routed to the loopback as local (``ip -6 route add local``):
    sockets bound with IPV6_FREEBIND can use any of its addresses as source. Removed after."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2's ip to route extra IPv6 addresses to lo")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback (::1) here")
    rand = secrets.randbits(40)
    site = f"{0xfd00 | rand >> 32:x}:{rand >> 16 & 0xffff:x}:{rand & 0xffff:x}"  # fdXX:XXXX:XXXX
    route = ["ip", "-6", "route", "add", "local", f"{site}::/48", "dev", "lo"]
    done = subprocess.run(route, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot route {site}::/48 to lo: {done.stderr.strip()}")
    try:
        yield site
    finally:
        route[3] = "del"
        subprocess.run(route, capture_output=True, check=False)


def _connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("::1", port))
    return sock


def _greeting(sock: socket.socket) -> bytes:
    return sock.recv(512)


def test_ipv6_clients_counted_per_64(make_app, ipv6_site, caplog):
    """RFC 6177 (a site gets a /64 or more, so one host can change address at
    will): with max_connections_per_ip 2, a third address of the same /64 gets 421 4.7.0 and the
    refused line names the /64; an address of another /64 is served."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = make_app(listen={"smtp": ["[::1]:0"]}, limits={"max_connections_per_ip": 2})
    port = app.ports["smtp"][0]
    first, second = (_connect_from(f"{ipv6_site}:1::{n}", port) for n in (1, 2))
    other_net = _connect_from(f"{ipv6_site}:2::1", port)
    third = _connect_from(f"{ipv6_site}:1::3", port)
    try:
        assert _greeting(first).startswith(b"220 ")
        assert _greeting(second).startswith(b"220 ")
        assert _greeting(other_net).startswith(b"220 ")
        assert _greeting(third).startswith(b"421 4.7.0")
    finally:
        for sock in (first, second, other_net, third):
            sock.close()
    wait_for(lambda: _refused_lines(caplog), timeout=5, message="a refused line")
    client = ipaddress.IPv6Address(f"{ipv6_site}:1::3")
    network = ipaddress.IPv6Network(f"{ipv6_site}:1::/64")
    assert _refused_lines(caplog) == [
        f"refused service=smtp client={client} reason=too-many-from-ip "
        f"limit=limits.max_connections_per_ip network={network}"]


def test_ipv6_prefix_is_configurable(make_app, ipv6_site):
    """RFC 6177 (``limits.ipv6_prefix: 128``): every IPv6 address counts alone, so
    three addresses of one /64 are served under max_connections_per_ip 2."""
    app = make_app(listen={"smtp": ["[::1]:0"]},
                   limits={"max_connections_per_ip": 2, "ipv6_prefix": 128})
    port = app.ports["smtp"][0]
    socks = [_connect_from(f"{ipv6_site}:1::{n}", port) for n in (1, 2, 3)]
    try:
        assert [_greeting(sock)[:4] for sock in socks] == [b"220 "] * 3
    finally:
        for sock in socks:
            sock.close()
