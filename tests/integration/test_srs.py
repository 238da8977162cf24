"""SRS round trip through two real geomails on loopback (Shevek's "Sender Rewriting Scheme" as
libsrs2 documents it; RFC 7208 1.2 on forwarding; RFC 5321 3.9.1 aliases, 4.5.5 the null
sender of bounces, 3.6.3 undeliverable mail): A forwards for an alias with an SRS0 sender, B
(the remote MX, found through dnsmasq) forwards again as SRS1 to a domain with a null MX
(RFC 7505), bounces, and the bounce travels B -> A -> back to the original sender's mailbox."""

from __future__ import annotations

import logging
import re
import smtplib
from pathlib import Path

import pytest

from geomail.srs import SRS, load_keys
from tests.support import wait_for
from tests.support.dns import Dnsmasq
from tests.support.geomail import running_app
from tests.support.outbound import mailbox, relay_settings
from tests.support.stored import split

MX = {"fwd.test": "127.0.0.51", "remote.test": "127.0.0.52", "origin.test": "127.0.0.52"}
MESSAGE = (b"From: Alice <alice@origin.test>\r\nTo: list@fwd.test\r\nSubject: srs\r\n"
           b"Message-ID: <srs.1@origin.test>\r\n\r\nplease forward\r\n")


@pytest.fixture(scope="module")
def zone():
    server = Dnsmasq()
    for domain in ("fwd.test", "remote.test"):
        server.mx(domain, f"mx.{domain}", 10).host(f"mx.{domain}", MX[domain])
    server.mx("origin.test", "mx.remote.test", 10).null_mx("void.test").start()
    yield server
    server.stop()


def config(directory: Path, zone, port: int, hostname: str, domains: list[str],
           users: list[str], aliases: dict[str, list[str]]) -> dict[str, object]:
    return {"hostname": hostname, "domains": domains, "data_dir": str(directory),
            "users": {user: {} for user in users}, "aliases": aliases,
            "listen": {"smtp": [f"{MX[domains[0]]}:{port}"]},
            "relay": relay_settings(zone, port), "limits": {"shutdown_grace": "1s"}}


@pytest.fixture
def pair(tmp_path: Path, zone, mx_port: int):
    """A: fwd.test (carol, and list@ forwarding to B); B: remote.test and origin.test (bob,
    alice, and gone@ forwarding to a null-MX domain)."""
    a = config(tmp_path / "a", zone, mx_port, "mx.fwd.test", ["fwd.test"], ["carol@fwd.test"],
               {"list@fwd.test": ["carol@fwd.test", "bob@remote.test", "gone@remote.test",
                                  "nobody@remote.test"]})
    b = config(tmp_path / "b", zone, mx_port, "mx.remote.test", ["remote.test", "origin.test"],
               ["bob@remote.test", "alice@origin.test"], {"gone@remote.test": ["x@void.test"]})
    with running_app(a) as app_a, running_app(b) as app_b:
        yield app_a, app_b


def return_path(raw: bytes) -> str:
    """The envelope sender the final MTA recorded (RFC 5321 4.4)."""
    match = re.match(rb"Return-Path: <([^>]*)>\n", raw)
    assert match, raw[:200]
    return match[1].decode()


def rcpt(port: int, sender: str, recipient: str) -> tuple[int, bytes]:
    with smtplib.SMTP(MX["fwd.test"], port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail(sender)
        return client.rcpt(recipient)


def test_srs_round_trip_through_a_second_mta(pair, mx_port: int, caplog) -> None:
    """SRS0 out, SRS1 on the second hop, the bounce (null sender, RFC 5321 4.5.5) reversed
    twice and delivered to the original sender; A's own bounce (B refused a recipient at RCPT)
    reaches the original sender too; the local copy keeps the original sender."""
    a, b = pair
    with smtplib.SMTP(MX["fwd.test"], mx_port, timeout=10) as client:
        client.ehlo("client.example")
        client.sendmail("alice@origin.test", ["list@fwd.test"], MESSAGE)
    [local] = wait_for(lambda: mailbox(a.config.store.path, "carol@fwd.test"), 10,
                       message="carol's copy")
    assert split(local).fields["sender"] == "alice@origin.test"
    [forwarded] = wait_for(lambda: mailbox(b.config.store.path, "bob@remote.test"), 10,
                           message="bob's copy at B")
    srs0 = return_path(forwarded)
    assert srs0.startswith("SRS0=") and srs0.endswith("=origin.test=alice@fwd.test"), srs0
    key = load_keys(a.config.data_dir, lambda *_: None)
    assert SRS(key, "fwd.test").reverse(srs0) == "alice@origin.test"
    bounces = wait_for(lambda: (found := mailbox(b.config.store.path, "alice@origin.test"))
                       and len(found) == 2 and found, 20, message="two bounces for alice")
    [b_bounce] = [m for m in bounces if b"x@void.test" in m]  # B's, via SRS1 and SRS0
    [a_bounce] = [m for m in bounces if b"nobody@remote.test" in m]  # A's, via SRS0
    for bounce in (a_bounce, b_bounce):
        assert return_path(bounce) == "" and b"multipart/report" in bounce
        assert b"<srs.1@origin.test>" in bounce  # the original header comes back
    assert re.search(r'to=x@void\.test .*dsn_to="<SRS1=.{4}=fwd\.test==', caplog.text)


def test_forged_and_expired_srs_addresses_are_refused_at_rcpt(pair, mx_port: int,
                                                              caplog) -> None:
    """No backscatter relay: an SRS address with a wrong hash, or one older than max_age,
    is refused at RCPT (RFC 5321 3.6.2, 550 5.1.1); a valid one is accepted."""
    a, _ = pair
    caplog.set_level(logging.INFO)
    keys = load_keys(a.config.data_dir, lambda *_: None)
    valid = SRS(keys, "fwd.test").forward("alice@origin.test")
    assert rcpt(mx_port, "", valid)[0] == 250
    forged = "SRS0=AAAA" + valid[9:]
    code, text = rcpt(mx_port, "", forged)
    assert (code, text[:5]) == (550, b"5.1.1") and b"SRS" in text
    old = SRS(keys, "fwd.test", clock=lambda: 0.0).forward("alice@origin.test")  # 1970
    assert rcpt(mx_port, "", old)[0] == 550
    assert rcpt(mx_port, "", "SRS1=AAAA=x.test==AAAA=AA=y.test=z@fwd.test")[0] == 550
    reasons = re.findall(r"srs-refused .*reason=\"?(\w+)", caplog.text)
    assert reasons == ["forged", "expired", "forged"], caplog.text
