"""SMTPCourier against real servers on loopback: STARTTLS, smarthost with AUTH, SIZE, 8BITMIME,
SMTPUTF8, connection reuse and limits (names resolved by a real dnsmasq)."""

from __future__ import annotations

import gevent
import pytest
import trustme

from geomail.config import RelayConfig, SmarthostConfig
from geomail.courier.mx import MXResolver
from geomail.courier.smtp import SMTPCourier, client_tls_context
from geomail.spool import BytesBody
from tests.support import free_port, free_port_on
from tests.support.dns import Dnsmasq
from tests.support.mta import SmtpdPeer, SmtpSink
from tests.support.outbound import errors

HOSTS = {"mx.tls.test": "127.0.0.20", "mx.size.test": "127.0.0.21",
         "mx.seven.test": "127.0.0.22", "mx.utf8.test": "127.0.0.23",
         "mx.reuse.test": "127.0.0.24", "mx.busy.test": "127.0.0.25",
         "mx.old.test": "127.0.0.26", "mx.big.test": "127.0.0.27",
         "mx.xn--bcher-kva.test": "127.0.0.30"}
MESSAGE = b"From: alice@example.com\nTo: bob@tls.test\nSubject: hi\n\nhello\n"


@pytest.fixture(scope="module")
def mx_port() -> int:
    return free_port_on([*sorted(HOSTS.values()), "127.0.0.28", "127.0.0.29"])


@pytest.fixture(scope="module")
def zone():
    server = Dnsmasq()
    for name, address in HOSTS.items():
        server.host(name, address)
        server.mx(name.removeprefix("mx."), name)
    # slow.test: the preferred MX answers too slowly, the second one works
    server.host("mx1.slow.test", "127.0.0.28").host("mx2.slow.test", "127.0.0.29")
    server.mx("slow.test", "mx1.slow.test", 10).mx("slow.test", "mx2.slow.test", 20)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A server certificate for 'localhost' and the CA that signed it (trustme)."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    chain, ca_path = str(directory / "server.pem"), str(directory / "ca.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(chain)
    ca.cert_pem.write_to_path(ca_path)
    return chain, ca_path


@pytest.fixture
def courier(zone, mx_port):
    made: list[SMTPCourier] = []

    def make(smarthost_tls=None, mx_tls=None, **overrides) -> SMTPCourier:
        settings = {"nameservers": ((zone.address, zone.port),), "mx_port": mx_port,
                    "connect_timeout": 2.0, "command_timeout": 5.0, "data_timeout": 5.0,
                    "dns_timeout": 1.5, **overrides}
        relay = RelayConfig(**settings)
        resolver = None if relay.smarthost else MXResolver.from_config(relay)
        made.append(SMTPCourier(relay, "mail.example.com", resolver, mx_tls=mx_tls,
                                smarthost_tls=smarthost_tls))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_opportunistic_starttls_is_used_and_reported(courier, certs, mx_port) -> None:
    """RFC 3207 4 / RFC 7435: STARTTLS when offered, the certificate not verified (MX default),
    a fresh EHLO after it, and the outcome reported for the queue to record."""
    with SmtpdPeer("127.0.0.20", mx_port, tls="starttls", cert=certs[0], key=certs[0]) as peer:
        out = courier().deliver("alice@example.com", ["bob@tls.test"], BytesBody(MESSAGE))
        assert errors(out) == {"bob@tls.test": None}
        assert out["bob@tls.test"].attempt.tls.startswith("TLSv1.")
        assert "verified" not in out["bob@tls.test"].attempt.tls
        [got] = peer.messages()
        assert got.meta["tls"] is True and got.content == MESSAGE


def test_failed_tls_handshake_falls_back_to_plain_text(courier, certs, mx_port) -> None:
    """RFC 7435 4 / RFC 3207 4.1: opportunistic TLS that fails in the handshake does not stop
    delivery (retried in plain text); with relay.verify_tls it defers instead."""
    import ssl

    picky = client_tls_context(False)
    picky.minimum_version = ssl.TLSVersion.TLSv1_3  # the peer speaks TLS 1.2 at most
    with SmtpdPeer("127.0.0.20", mx_port, tls="starttls", cert=certs[0], key=certs[0],
                   tls12=True) as peer:
        out = courier(mx_tls=picky).deliver("alice@example.com", ["bob@tls.test"],
                                            BytesBody(MESSAGE))
        assert errors(out) == {"bob@tls.test": None} and out["bob@tls.test"].attempt.tls == "none"
        assert [m.meta["tls"] for m in peer.messages()] == [False]
        error = courier(verify_tls=True).deliver(  # trustme's CA is not a system CA
            "alice@example.com", ["bob@tls.test"], BytesBody(MESSAGE))["bob@tls.test"].error
        assert error is not None and not error.permanent and "TLS" in error.message
        assert len(peer.messages()) == 1


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_smarthost_auth_over_tls(courier, certs, mode) -> None:
    """RFC 3207 / RFC 8314 3.3 and RFC 4954 4: all remote mail goes to the smarthost, over
    verified TLS, after AUTH with the configured credentials."""
    port = free_port("127.0.0.1")
    smarthost = SmarthostConfig("localhost", port, mode, "relayuser", "s3cret", verify_tls=True)
    context = client_tls_context(True, cafile=certs[1])
    with SmtpdPeer("127.0.0.1", port, tls=mode, cert=certs[0], key=certs[0],
                   auth="relayuser:s3cret") as peer:
        c = courier(smarthost=smarthost, smarthost_tls=context)
        out = c.deliver("alice@example.com", ["bob@anywhere.example"], BytesBody(MESSAGE))
        assert errors(out) == {"bob@anywhere.example": None}
        assert out["bob@anywhere.example"].attempt.tls.endswith(" verified")
        [got] = peer.messages()
        assert got.meta["tls"] and got.meta["authenticated"] and got.meta["login"] == "relayuser"
        assert got.rcpt_tos == ["bob@anywhere.example"] and got.content == MESSAGE
        bad = SmarthostConfig("localhost", port, mode, "relayuser", "wrong", verify_tls=True)
        error = courier(smarthost=bad, smarthost_tls=context).deliver(
            "alice@example.com", ["bob@anywhere.example"], BytesBody(MESSAGE))[
            "bob@anywhere.example"].error
        assert error is not None and not error.permanent and "credentials" in error.message


def test_smarthost_requires_tls(courier, certs) -> None:
    """RFC 3207 / RFC 8314: a smarthost that does not verify (unknown CA) or does not offer
    STARTTLS gets no mail and no password; the message is deferred, not sent in clear."""
    port = free_port("127.0.0.1")
    smarthost = SmarthostConfig("localhost", port, "starttls", "u", "p", verify_tls=True)
    with SmtpdPeer("127.0.0.1", port, tls="starttls", cert=certs[0], key=certs[0],
                   auth="u:p") as peer:
        error = courier(smarthost=smarthost).deliver(  # system CAs: trustme's CA is unknown
            "alice@example.com", ["bob@anywhere.example"], BytesBody(MESSAGE))[
            "bob@anywhere.example"].error
        assert error is not None and not error.permanent and "TLS" in error.message
        assert peer.messages() == []
    with SmtpSink("127.0.0.1", port) as sink:
        error = courier(smarthost=smarthost).deliver(
            "alice@example.com", ["bob@anywhere.example"], BytesBody(MESSAGE))[
            "bob@anywhere.example"].error
        assert error is not None and not error.permanent and "STARTTLS" in error.message
        assert sink.messages() == []


def test_size_limit_fails_at_once(courier, mx_port) -> None:
    """RFC 1870 6.1: a message larger than the server's SIZE fails permanently (552 5.3.4)
    without being sent; a smaller one carries SIZE= in MAIL FROM."""
    with SmtpdPeer("127.0.0.21", mx_port, size=2000) as peer:
        c = courier()
        out = c.deliver("alice@example.com", ["bob@size.test"], BytesBody(b"x" * 5000 + b"\n"))
        error = out["bob@size.test"].error
        assert error is not None and error.permanent and (error.code, error.enhanced) == (
            552, "5.3.4")
        out = c.deliver("alice@example.com", ["bob@size.test"], BytesBody(MESSAGE))
        assert errors(out) == {"bob@size.test": None}
        [got] = peer.messages()
        crlf_size = len(MESSAGE.replace(b"\n", b"\r\n"))
        assert f"SIZE={crlf_size}" in got.meta["mail_options"]


def test_8bit_needs_8bitmime(courier, mx_port) -> None:
    """RFC 6152 3: 8-bit content is sent with BODY=8BITMIME; to a server without 8BITMIME it
    fails with a clear permanent error instead of being mangled."""
    body = BytesBody(b"Subject: caf\xc3\xa9\n\ncaf\xc3\xa9\n")
    with SmtpSink("127.0.0.22", mx_port, ["-8"]) as sink:
        out = courier().deliver("alice@example.com", ["bob@seven.test"], body)
        error = out["bob@seven.test"].error
        assert error is not None and error.permanent and error.enhanced == "5.6.3"
        assert "8BITMIME" in error.message and sink.messages() == []
    with SmtpSink("127.0.0.22", mx_port) as sink:
        out = courier().deliver("alice@example.com", ["bob@seven.test"], body)
        assert errors(out) == {"bob@seven.test": None}
        [got] = sink.messages()
        assert "BODY=8BITMIME" in got.mail_args and got.content == b"".join(body.chunks())


def test_smtputf8_addresses(courier, mx_port) -> None:
    """RFC 6531 3.4 / 3.2: a non-ASCII local part needs SMTPUTF8: sent with the SMTPUTF8
    parameter where offered, a permanent 553 5.6.7 where not; ASCII recipients unaffected."""
    with SmtpdPeer("127.0.0.23", mx_port) as peer:
        out = courier().deliver("alice@example.com", ["jösé@utf8.test"], BytesBody(MESSAGE))
        assert errors(out) == {"jösé@utf8.test": None}
        [got] = peer.messages()
        assert got.rcpt_tos == ["jösé@utf8.test"] and "SMTPUTF8" in got.meta["mail_options"]
    with SmtpSink("127.0.0.23", mx_port) as sink:
        out = courier().deliver("alice@example.com", ["jösé@utf8.test", "bob@utf8.test"],
                                BytesBody(MESSAGE))
        error = out["jösé@utf8.test"].error
        assert error is not None and error.permanent and (error.code, error.enhanced) == (
            553, "5.6.7")
        assert out["bob@utf8.test"].error is None
        assert [m.rcpt_tos for m in sink.messages()] == [["bob@utf8.test"]]


def test_connection_reused_for_the_same_destination(courier, mx_port) -> None:
    """RFC 5321 4.1.1.5 / 3.3: further messages to the same domain reuse the open connection
    (RSET between transactions) until it has been idle a few seconds."""
    with SmtpdPeer("127.0.0.24", mx_port) as peer:
        c = courier()
        for n in range(3):
            out = c.deliver("alice@example.com", [f"u{n}@reuse.test"], BytesBody(MESSAGE))
            assert errors(out) == {f"u{n}@reuse.test": None}
        got = peer.messages()
        assert len(got) == 3
        assert len({tuple(m.meta["peer"]) for m in got}) == 1  # one TCP connection
        assert c.pool.open_for("reuse.test") == 1
        c.close()
        assert c.pool.total == 0


def test_connections_bounded_per_domain(courier, mx_port) -> None:
    """RFC 5321 4.5.3.1 spirit / Postfix's default_destination_concurrency_limit: at most
    max_connections_per_domain connections to one destination, however many messages are waiting for
    it."""
    peak = []
    with SmtpSink("127.0.0.25", mx_port, ["-w", "1"]) as sink:
        c = courier(max_connections_per_domain=2, max_connections=10)

        def sample() -> None:
            while True:
                peak.append(c.pool.open_for("busy.test"))
                gevent.sleep(0.02)

        sampler = gevent.spawn(sample)
        jobs = [gevent.spawn(c.deliver, "alice@example.com", [f"u{n}@busy.test"],
                             BytesBody(MESSAGE)) for n in range(4)]
        gevent.joinall(jobs, timeout=30)
        sampler.kill()
        assert [errors(j.value) for j in jobs] == [{f"u{n}@busy.test": None} for n in range(4)]
        assert len(sink.messages()) == 4
    assert max(peak) == 2


def test_helo_fallback_without_esmtp(courier, mx_port) -> None:
    """RFC 5321 4.1.4 / 3.2: a server that refuses EHLO gets HELO, and plain SMTP is used."""
    with SmtpSink("127.0.0.26", mx_port, ["-e"]) as sink:
        out = courier().deliver("alice@example.com", ["bob@old.test"], BytesBody(MESSAGE))
        assert errors(out) == {"bob@old.test": None}
        [got] = sink.messages()
        assert got.content == MESSAGE and got.mail_args == "<alice@example.com>"
        assert got.meta["proto"] == "SMTP" and got.helo == "mail.example.com"


def test_command_timeout_moves_to_the_next_mx(courier, mx_port) -> None:
    """RFC 5321 4.5.3.2: every step has a timeout; a server too slow to answer MAIL counts as a
    failed host and the next MX gets the message."""
    with SmtpSink("127.0.0.28", mx_port, ["-W", "MAIL:5"]) as slow, \
            SmtpSink("127.0.0.29", mx_port) as good:
        out = courier(command_timeout=0.5).deliver("alice@example.com", ["bob@slow.test"],
                                                   BytesBody(MESSAGE))
        assert errors(out) == {"bob@slow.test": None}
        assert out["bob@slow.test"].attempt.remote_mta.startswith("mx2.slow.test")
        assert slow.messages() == [] and len(good.messages()) == 1


def test_large_body_sent_in_chunks_byte_exact(courier, mx_port) -> None:
    """RFC 5321 4.5.2 / 4.5.3.1.6: a multi-megabyte body, read chunk by chunk, arrives byte for
    byte, with dot-stuffing right across chunk boundaries."""
    line = b"." + b"x" * 70 + b"\n"
    content = b"Subject: big\n\n" + line * (3 * 1024 * 1024 // len(line)) + b"last line"
    with SmtpSink("127.0.0.27", mx_port) as sink:
        out = courier().deliver("alice@example.com", ["bob@big.test"], BytesBody(content))
        assert errors(out) == {"bob@big.test": None}
        [got] = sink.messages()
        assert got.content == content + b"\n"  # the wire form ends every line, the last too


def test_internationalised_domain_sent_as_a_labels(courier, mx_port) -> None:
    """RFC 5890 / RFC 6531 3.2: a U-label domain is looked up and sent as its A-label, so a
    server without SMTPUTF8 still takes an ASCII local part."""
    with SmtpSink("127.0.0.30", mx_port) as sink:
        out = courier().deliver("alice@example.com", ["bob@bücher.test"], BytesBody(MESSAGE))
        assert errors(out) == {"bob@bücher.test": None}
        assert sink.messages()[0].rcpt_tos == ["bob@xn--bcher-kva.test"]
        bad = ["bob@x.test>\r\nRSET", "bo\r\nb@old.test", "bob@exa mple.test"]
        out = courier().deliver("alice@example.com", bad, BytesBody(MESSAGE))
        assert all(o.error is not None and o.error.permanent for o in out.values())  # never sent
        out = courier().deliver("al\nice@example.com", ["bob@old.test"], BytesBody(MESSAGE))
        error = out["bob@old.test"].error
        assert error is not None and error.enhanced == "5.1.7"
        assert len(sink.messages()) == 1
