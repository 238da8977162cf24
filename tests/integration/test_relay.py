"""Outbound relay against real peers on loopback: dnsmasq for DNS, smtp-sink and aiosmtpd as the
receiving MX hosts; the queue, MXResolver and SMTPCourier as the server wires them."""

from __future__ import annotations

import email
import os
from email import policy

import dkim as dkimpy
import pytest

from geomail.address import domain_of
from geomail.config import DKIMConfig, RelayConfig
from geomail.courier.local import LocalCourier
from geomail.courier.mx import MXResolver
from geomail.courier.smtp import SMTPCourier
from geomail.dkim import DKIMSigner, keygen
from geomail.queue.item import QueueItem
from geomail.queue.queue import Queue
from geomail.spool import BytesBody
from geomail.store.maildir import MaildirStore
from tests.support import free_port_on, wait_for
from tests.support.dns import Dnsmasq
from tests.support.mta import SmtpdPeer, SmtpSink
from tests.support.outbound import errors

HOSTS = {  # MX host -> loopback address; each test starts the servers it needs
    "mx1.a.test": "127.0.0.2", "dead.backup.test": "127.0.0.3", "mx2.backup.test": "127.0.0.4",
    "implicit.test": "127.0.0.5", "mx.defer.test": "127.0.0.6", "mx.reject.test": "127.0.0.7",
    "mx.b.test": "127.0.0.8", "e1.eq.test": "127.0.0.10", "e2.eq.test": "127.0.0.11",
    "mx.loop.test": "127.0.0.13", "mx.seven.test": "127.0.0.15",
}
MESSAGE = (b"From: Alice <alice@example.com>\nTo: Bob <bob@a.test>\nSubject: Lunch\n"
           b"Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <lunch.1@example.com>\n\n"
           b"Hi Bob,\n.a line with a leading dot\n..and two\n\nbye\n")


@pytest.fixture(scope="module")
def mx_port() -> int:
    return free_port_on(sorted(set(HOSTS.values())))


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = str(tmp_path_factory.mktemp("dkim") / "example.com.key")
    return path, keygen(path)


@pytest.fixture(scope="module")
def zone(dkim_key: tuple[str, str]):
    server = Dnsmasq()
    for name, address in HOSTS.items():
        server.host(name, address)
    (server.mx("a.test", "mx1.a.test", 10)
     .mx("backup.test", "dead.backup.test", 10).mx("backup.test", "mx2.backup.test", 20)
     .mx("defer.test", "mx.defer.test").mx("reject.test", "mx.reject.test")
     .mx("b.test", "mx.b.test").mx("eq.test", "e1.eq.test", 10).mx("eq.test", "e2.eq.test", 10)
     .mx("loop.test", "mx.loop.test").mx("seven.test", "mx.seven.test")
     .mx("ghost.test", "nonexistent-host.ghost.test")
     .null_mx("null.test").cname("alias.test", "a.test").timeout("slow.test")
     .txt("geomail._domainkey.example.com", dkim_key[1]))
    server.start()
    yield server
    server.stop()


def relay_config(zone: Dnsmasq, mx_port: int, **overrides) -> RelayConfig:
    settings = {"nameservers": ((zone.address, zone.port),), "mx_port": mx_port,
                "retry": (0.3,), "max_queue_time": 120.0, "delay_warning": 0.0,
                "connect_timeout": 2.0, "command_timeout": 5.0, "data_timeout": 5.0,
                "dns_timeout": 1.5, **overrides}
    return RelayConfig(**settings)


@pytest.fixture
def courier(zone, mx_port):
    made: list[SMTPCourier] = []

    def make(**overrides) -> SMTPCourier:
        relay = relay_config(zone, mx_port, **overrides)
        made.append(SMTPCourier(relay, "mail.example.com", MXResolver.from_config(relay)))
        return made[-1]

    yield make
    for c in made:
        c.close()


class Setup:
    """A queue as the app builds it: local mail into a Maildir, remote mail over SMTP."""

    def __init__(self, tmp_path, relay: RelayConfig) -> None:
        self.store = MaildirStore(str(tmp_path / "mail"), "mail.example.com")
        self.mail_dir = str(tmp_path / "mail")
        self.remote = SMTPCourier(relay, "mail.example.com", MXResolver.from_config(relay))
        self.events: list[tuple[str, str, str | None, str | None]] = []
        self.queue = Queue(str(tmp_path / "queue"), relay, "mail.example.com",
                           local=LocalCourier(self.store), remote=self.remote,
                           is_local=lambda a: domain_of(a) == "example.com",
                           postmaster="postmaster@example.com",
                           on_event=lambda e, i, r: self.events.append(
                               (e, i.id, r and r.address, r and r.tls)))
        self.queue.load()

    def mailbox(self, user: str = "alice") -> list[bytes]:
        new = os.path.join(self.mail_dir, "example.com", user, "new")
        if not os.path.isdir(new):
            return []
        found = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as handle:
                found.append(handle.read())
        return found

    def item(self, item_id: str) -> QueueItem | None:
        path = os.path.join(self.queue.directory, f"{item_id}.json")
        try:
            with open(path, "rb") as handle:
                return QueueItem.from_json(handle.read())
        except FileNotFoundError:
            return None

    def gone(self, item_id: str) -> bool:
        return not os.path.exists(os.path.join(self.queue.directory, f"{item_id}.json"))

    def close(self) -> None:
        self.queue.stop(2)
        self.remote.close()


@pytest.fixture
def setup(tmp_path, zone, mx_port):
    made: list[Setup] = []

    def make(**overrides) -> Setup:
        made.append(Setup(tmp_path, relay_config(zone, mx_port, **overrides)))
        return made[-1]

    yield make
    for s in made:
        s.close()


def report_of(raw: bytes) -> tuple[email.message.EmailMessage, list]:
    """The parsed DSN (RFC 3464) in a mailbox file, and its delivery-status blocks."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    status = next(p for p in msg.walk() if p.get_content_type() == "message/delivery-status")
    return msg, status.get_payload()


# ------------------------------------------------------------------------------------------


def test_delivered_to_mx_byte_exact_and_dkim_verifies(setup, zone, mx_port, dkim_key) -> None:
    """RFC 5321 5.1 / 4.5.2 and RFC 6376 6: the MX gets the message byte for byte (dots
    stuffed and unstuffed on the way), and its DKIM signature verifies against the TXT record
    that dnsmasq serves."""
    s = setup()
    signer = DKIMSigner(DKIMConfig("geomail", {"example.com": dkim_key[0]}))
    signed = signer.sign("example.com", MESSAGE) + MESSAGE
    with SmtpSink("127.0.0.2", mx_port) as sink:
        item_id = s.queue.put("alice@example.com", ["bob@a.test", "carol@a.test"],
                              BytesBody(signed))
        wait_for(lambda: s.gone(item_id), 10, message="delivery")
        [got] = sink.messages()
    assert got.content == signed
    assert got.mail_from == "alice@example.com" and got.rcpt_tos == ["bob@a.test", "carol@a.test"]
    assert got.helo == "mail.example.com"

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        answer = zone.resolver().resolve(name.decode(), "TXT")
        return b"".join(answer[0].strings)

    assert dkimpy.verify(got.content.replace(b"\n", b"\r\n"), dnsfunc=dnsfunc)
    assert ("delivered", item_id, "bob@a.test", "none") in s.events


def test_first_mx_down_second_preference_gets_it(courier, mx_port) -> None:
    """RFC 5321 5.1: when the most preferred MX does not answer, the next one is tried."""
    c = courier()
    with SmtpSink("127.0.0.4", mx_port) as sink:
        out = c.deliver("alice@example.com", ["bob@backup.test"], BytesBody(MESSAGE))
        assert errors(out) == {"bob@backup.test": None}
        assert out["bob@backup.test"].attempt.remote_mta.startswith("mx2.backup.test [127.0.0.4]")
        assert len(sink.messages()) == 1


def test_equal_preferences_are_shuffled(zone) -> None:
    """RFC 5321 5.1: MX hosts of equal preference are tried in random order."""
    resolver = MXResolver(zone.resolver())
    orders = {tuple(h.name for h in resolver.resolve("eq.test")) for _ in range(40)}
    assert orders == {("e1.eq.test", "e2.eq.test"), ("e2.eq.test", "e1.eq.test")}


def test_implicit_mx_and_cname(courier, zone, mx_port) -> None:
    """RFC 5321 5.1: no MX record -> the domain's address is the implicit MX; CNAMEs followed."""
    resolver = MXResolver(zone.resolver())
    [host] = resolver.resolve("implicit.test")
    assert (host.name, host.preference, host.addresses) == ("implicit.test", 0, ("127.0.0.5",))
    [host] = resolver.resolve("alias.test")
    assert host.name == "mx1.a.test"
    c = courier()
    with SmtpSink("127.0.0.5", mx_port) as sink:
        out = c.deliver("alice@example.com", ["x@implicit.test"], BytesBody(MESSAGE))
        assert errors(out) == {"x@implicit.test": None}
        assert sink.messages()[0].rcpt_tos == ["x@implicit.test"]


def test_null_mx_bounces_at_once(setup) -> None:
    """RFC 7505 3: a null MX fails with 556 5.1.10 without any attempt; the sender gets a
    DSN in her local mailbox at once (RFC 3464)."""
    s = setup()
    item_id = s.queue.put("alice@example.com", [("bob@null.test", "team@example.com")],
                          BytesBody(MESSAGE))
    [raw] = wait_for(s.mailbox, 10, message="bounce in alice's mailbox")
    wait_for(lambda: s.gone(item_id), 5, message="item removed")
    _msg, (per_message, per_rcpt) = report_of(raw)
    assert raw.startswith(b"Return-Path: <>\nDelivered-To: alice@example.com\n")
    assert per_message["Reporting-MTA"] == "dns; mail.example.com"
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@null.test"
    assert per_rcpt["Original-Recipient"] == "rfc822; team@example.com"
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "5.1.10"
    assert "556 5.1.10" in per_rcpt["Diagnostic-Code"]


def test_nxdomain_is_permanent(courier) -> None:
    """RFC 5321 5.1: a domain that does not exist fails permanently (it bounces)."""
    out = courier().deliver("alice@example.com", ["bob@nowhere.test"], BytesBody(MESSAGE))
    error = out["bob@nowhere.test"].error
    assert error is not None and error.permanent and error.enhanced == "5.1.2"


def test_dns_failures_defer(courier, setup, zone) -> None:
    """RFC 5321 4.5.4.1: a DNS server that times out or fails (SERVFAIL/REFUSED) defers; the
    message stays queued for the next attempt."""
    c = courier(dns_timeout=1.0)
    for domain in ("slow.test", "outside.example"):  # forwarded to a dead port; refused
        error = c.deliver("alice@example.com", [f"bob@{domain}"], BytesBody(MESSAGE))[
            f"bob@{domain}"].error
        assert error is not None and not error.permanent, domain
    s = setup(nameservers=(("127.0.0.1", free_port_on(["127.0.0.1"])),), dns_timeout=0.5,
              retry=(30.0,))
    item_id = s.queue.put("alice@example.com", ["bob@a.test"], BytesBody(MESSAGE))
    item = wait_for(lambda: (i := s.item(item_id)) and i.attempts == 1 and i, 10,
                    message="first attempt recorded")
    rcpt = item.recipients[0]
    assert rcpt.status == "pending" and "timed out" in rcpt.last_error
    assert s.mailbox() == []


def test_mx_host_without_address_defers(courier) -> None:
    """RFC 5321 5.1: an MX name that does not resolve is the domain's (fixable) problem: retry."""
    out = courier().deliver("a@example.com", ["b@ghost.test"], BytesBody(MESSAGE))
    error = out["b@ghost.test"].error
    assert error is not None and not error.permanent


def test_4xx_defers_then_next_attempt_delivers(setup, mx_port) -> None:
    """RFC 5321 4.2.1 / 4.5.4.1: a 4xx reply defers; the retry (short steps here) delivers."""
    s = setup(retry=(0.5,))
    sink = SmtpSink("127.0.0.6", mx_port, ["-r", "RCPT"]).start()
    try:
        item_id = s.queue.put("alice@example.com", ["bob@defer.test"], BytesBody(MESSAGE))
        item = wait_for(lambda: (i := s.item(item_id)) and i.attempts >= 1 and i, 10,
                        message="deferred attempt")
        assert item.recipients[0].status == "pending"
        assert item.recipients[0].code == 450
        assert item.recipients[0].remote_mta.startswith("mx.defer.test")
        assert sink.messages() == []
    finally:
        sink.cleanup()
    with SmtpSink("127.0.0.6", mx_port) as sink:
        wait_for(lambda: s.gone(item_id), 10, message="delivered on retry")
        assert [m.rcpt_tos for m in sink.messages()] == [["bob@defer.test"]]
    assert s.mailbox() == []  # no delay warning, no bounce


def test_5xx_bounces_to_local_sender_and_never_for_null_sender(setup, mx_port) -> None:
    """RFC 5321 4.2.1 / RFC 3464: a 5xx fails the recipient; the DSN lands in the local
    sender's mailbox with Remote-MTA and Diagnostic-Code; mail from <> is never bounced
    (RFC 5321 6.1)."""
    s = setup()
    with SmtpSink("127.0.0.7", mx_port, ["-f", "RCPT"]):
        bounced = s.queue.put("alice@example.com", ["bob@reject.test"], BytesBody(MESSAGE))
        silent = s.queue.put("", ["carol@reject.test"], BytesBody(MESSAGE))
        [raw] = wait_for(s.mailbox, 10, message="bounce")
        wait_for(lambda: s.gone(bounced) and s.gone(silent), 10, message="both done")
    msg, (_per_message, per_rcpt) = report_of(raw)
    assert msg["To"] == "alice@example.com"
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@reject.test"
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "5.3.0"
    assert per_rcpt["Remote-MTA"] == "dns; mx.reject.test"
    assert per_rcpt["Diagnostic-Code"].startswith("smtp; 500 5.3.0")
    headers = next(p for p in msg.walk() if p.get_content_type() == "text/rfc822-headers")
    assert b"Subject: Lunch" in headers.get_payload(decode=True)
    assert len(s.mailbox()) == 1 and len(s.mailbox("postmaster")) == 0
    assert ("dropped", silent, None, None) in s.events


def test_two_domains_partial_success_per_recipient(setup, mx_port) -> None:
    """RFC 5321 3.3 / 4.2.1: one message, two domains and several recipients: each RCPT's
    reply counts on its own (delivered, rejected, deferred)."""
    s = setup(retry=(30.0,))
    with SmtpSink("127.0.0.2", mx_port) as sink_a, SmtpdPeer("127.0.0.8", mx_port) as peer_b:
        item_id = s.queue.put("alice@example.com", [
            "ok@a.test", "good@b.test", "reject1@b.test", "defer1@b.test"], BytesBody(MESSAGE))
        wait_for(s.mailbox, 10, message="bounce for reject1")
        item = wait_for(lambda: (i := s.item(item_id)) and i.attempts == 1 and i, 10,
                        message="first attempt recorded")
        states = {r.address: r.status for r in item.recipients}
        assert states == {"ok@a.test": "delivered", "good@b.test": "delivered",
                          "reject1@b.test": "failed", "defer1@b.test": "pending"}
        assert [m.rcpt_tos for m in sink_a.messages()] == [["ok@a.test"]]
        assert [m.rcpt_tos for m in peer_b.messages()] == [["good@b.test"]]
        assert item.recipient("defer1@b.test").code == 451
    _, (_, per_rcpt) = report_of(s.mailbox()[0])
    assert per_rcpt["Final-Recipient"] == "rfc822; reject1@b.test"
    assert per_rcpt["Status"] == "5.1.1"


def test_routing_loop_is_detected(zone, mx_port) -> None:
    """RFC 5321 5.1: an MX that is one of our own listening addresses is a loop (5.4.6)."""
    from geomail.delivery import DeliveryError

    for own in [("127.0.0.13", mx_port), ("0.0.0.0", mx_port)]:
        resolver = MXResolver(zone.resolver(), own_addresses=[own], port=mx_port)
        with pytest.raises(DeliveryError) as caught:
            resolver.resolve("loop.test")
        assert caught.value.permanent and caught.value.enhanced == "5.4.6"
    other_port = MXResolver(zone.resolver(), own_addresses=[("127.0.0.13", 1)], port=mx_port)
    assert other_port.resolve("loop.test")[0].addresses == ("127.0.0.13",)
