"""Port 25 sender checks (issue 12 items 1, 4, 5): SPF for MAIL FROM (HELO for ``<>``) with
every RFC 7208 result, what an SPF fail does where DMARC has no say, iprev, our own domains
refused from outsiders, and ordinary senders without any records still delivered.

The client is 127.0.0.1 (``checks.skip_networks: []`` makes it an outsider); dnsmasq serves
the records (tests/support/authmail.py ``auth_zone``)."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.authmail import (
    AUTHSERV_ID,
    LIAR_IP,
    RCPT,
    TIMEOUT_DOMAIN,
    accepted,
    authserv_id,
    deliver,
    inbound_app,
    message,
    module_fixtures,
    our_results,
    prop,
    result,
    results_fields,
    stored_copy,
)
from tests.support.dialog import Dialog
from tests.support.dns import Dnsmasq
from tests.support.geomail import PASSWORD, base_config, running_app
from tests.support.tools import program

PLAIN_FROM = "someone@plain.test"  # a From domain without records: DMARC has no say


keys, zone = module_fixtures()


@pytest.fixture(scope="module")
def mx(zone: Dnsmasq, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Default checks; a submission listener (plain-text login allowed) for the logged-in case."""
    listen = {"smtp": ["127.0.0.1:0"],
              "submission": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]}
    with inbound_app(tmp_path_factory.mktemp("spf"), zone, listen=listen) as app:
        yield app


def _port(app: Any) -> int:
    return int(app.ports["smtp"][0])


# ------------------------------------------------------------------ SPF results


@pytest.mark.parametrize("sender, expected", [
    ("x@spf-pass.test", "pass"),
    ("x@spf-fail.test", "fail"),
    ("x@spf-softfail.test", "softfail"),
    ("x@spf-neutral.test", "neutral"),
    ("x@spf-none.test", "none"),
    ("x@no-such-domain.test", "none"),
    (f"x@{TIMEOUT_DOMAIN}", "temperror"),
    ("x@spf-permerror.test", "permerror"),
    ("x@spf-toomany.test", "permerror"),
    ("x@spf-void.test", "permerror"),
], ids=["pass", "fail", "softfail", "neutral", "none", "none-nxdomain", "temperror",
        "permerror-syntax", "permerror-10-lookups", "permerror-void-lookups"])
def test_spf_result_for_mail_from(mx, sender, expected):
    """RFC 7208 2.6 (the seven results) and 8.1-8.7, RFC 8601 2.7.2: the MAIL FROM identity is
    checked against 127.0.0.1 and the result is in our Authentication-Results as
    ``spf=<result> smtp.mailfrom=<address>``. ``-all`` fails, ``~all`` softfails, ``?all`` is
    neutral, no record (or NXDOMAIN, RFC 7208 4.3) is none, a lookup that times out is
    temperror (RFC 7208 4.4), an unknown mechanism (4.6), 11 DNS-querying terms or 3 void
    lookups (4.6.4) are permerror. The message is delivered (to INBOX or Junk)."""
    token, data = message(PLAIN_FROM)
    accepted(deliver(_port(mx), sender, data))
    _folder, stored = stored_copy(mx, token)
    spf = result(our_results(stored), "spf")
    assert spf.result == expected, str(spf)
    assert prop(spf, "smtp", "mailfrom") == sender


@pytest.mark.parametrize("helo, expected", [("helo-pass.test", "pass"),
                                            ("helo-fail.test", "fail")])
def test_spf_checks_helo_for_the_null_sender(mx, helo, expected):
    """RFC 7208 2.3 / 2.4: with ``MAIL FROM:<>`` the HELO identity is checked, reported as
    ``spf=<result> smtp.helo=<name>`` (RFC 8601 2.7.2)."""
    token, data = message(PLAIN_FROM)
    accepted(deliver(_port(mx), "", data, helo=helo))
    _folder, stored = stored_copy(mx, token)
    spf = result(our_results(stored), "spf")
    assert spf.result == expected, str(spf)
    assert prop(spf, "smtp", "helo") == helo


# ------------------------------------------------------------------ SPF fail without DMARC


def test_spf_fail_goes_to_junk_by_default(mx):
    """Issue 12 item 1 / ``checks.spf_fail: junk`` (default), RFC 7208 8.4: an SPF fail for a
    domain without a DMARC record is delivered into the Maildir++ folder ``.Junk``."""
    token, data = message("x@spf-fail.test")
    accepted(deliver(_port(mx), "x@spf-fail.test", data))
    folder, stored = stored_copy(mx, token)
    assert folder == "junk"
    header = our_results(stored)
    assert result(header, "spf").result == "fail"
    assert result(header, "dmarc").result == "none"


@pytest.mark.parametrize("action", ["reject", "accept"])
def test_spf_fail_action(zone, tmp_path, action):
    """RFC 7208 8.4 (a fail MAY be rejected, with 5.7.23 per RFC 7372 3.2) and
    ``checks.spf_fail``: ``reject`` refuses at the end of DATA with ``550 5.7.23``; ``accept``
    delivers to INBOX with spf=fail reported."""
    with inbound_app(tmp_path, zone, checks={"spf_fail": action}) as app:
        token, data = message("x@spf-fail.test")
        outcome = deliver(_port(app), "x@spf-fail.test", data)
        if action == "reject":
            assert (outcome.stage, outcome.code) == ("data", 550), outcome
            assert outcome.text.startswith("5.7.23"), outcome
        else:
            accepted(outcome)
            folder, stored = stored_copy(app, token)
            assert folder == "inbox"
            assert result(our_results(stored), "spf").result == "fail"


# ------------------------------------------------------------------ iprev


def test_iprev_pass_with_forward_confirmed_ptr(mx):
    """RFC 8601 3 (iprev) / RFC 8601 2.7.3: 127.0.0.1 has a PTR client.sender.test whose A is
    127.0.0.1: ``iprev=pass policy.iprev=127.0.0.1``."""
    token, data = message(PLAIN_FROM)
    accepted(deliver(_port(mx), "x@spf-pass.test", data))
    _folder, stored = stored_copy(mx, token)
    iprev = result(our_results(stored), "iprev")
    assert iprev.result == "pass", str(iprev)
    assert prop(iprev, "policy", "iprev") == "127.0.0.1"


@pytest.mark.parametrize("source, allowed", [
    ("127.0.0.2", ("fail", "permerror")),  # no PTR (NXDOMAIN)
    (LIAR_IP, ("fail",)),  # PTR liar.sender.test, whose A is 192.0.2.7
], ids=["no-ptr", "ptr-not-confirmed"])
def test_iprev_does_not_pass_without_confirmed_name(mx, source, allowed):
    """RFC 8601 3 (iprev: the PTR name must resolve back to the address): a client whose
    reverse lookup is NXDOMAIN gets fail or permerror; one whose PTR name points elsewhere
    gets fail."""
    token, data = message(PLAIN_FROM)
    accepted(deliver(_port(mx), "x@spf-pass.test", data, source=source))
    _folder, stored = stored_copy(mx, token)
    assert stored.fields["ip"] == source
    iprev = result(our_results(stored), "iprev")
    assert iprev.result in allowed, str(iprev)
    assert prop(iprev, "policy", "iprev") == source


# ------------------------------------------------------------------ ordinary senders


def test_sender_without_records_is_delivered_with_none_results(mx):
    """Issue 12 Tests (no regression for ordinary senders), RFC 7208 2.6.1, RFC 7489 6.6.3:
    an unsigned message from a domain that publishes nothing is delivered to INBOX with
    spf=none, dkim=none, arc=none and dmarc=none reported."""
    token, data = message("x@norecords.test")
    accepted(deliver(_port(mx), "x@norecords.test", data))
    folder, stored = stored_copy(mx, token)
    assert folder == "inbox"
    header = our_results(stored)
    assert result(header, "spf").result == "none"
    assert result(header, "dkim").result == "none"
    assert result(header, "arc").result == "none"
    dmarc = result(header, "dmarc")
    assert dmarc.result == "none"
    assert prop(dmarc, "header", "from") == "norecords.test"


# ------------------------------------------------------------------ our own domains


@pytest.mark.parametrize("sender", ["x@example.com", "alice@example.com", "Bob@EXAMPLE.COM",
                                    "x@test.com"])
def test_own_domain_from_outsider_is_refused_at_mail(mx, sender):
    """Issue 12 item 5: MAIL FROM in one of our domains (any letter case, RFC 5321 2.4) from a
    client neither logged in nor in relay.allow_networks gets ``553 5.7.1`` at MAIL."""
    with Dialog(_port(mx)) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd(f"MAIL FROM:<{sender}>", "553 5.7.1")
        smtp.cmd("MAIL FROM:<>", "250 ")  # the null sender is fine (RFC 5321 4.5.5)
        smtp.cmd(f"RCPT TO:<{RCPT}>", "250 ")
        smtp.cmd("QUIT", "221")


@pytest.mark.parametrize("sender", ["x@example.com.", "<@relay.test:x@example.com"],
                         ids=["trailing-dot", "source-route"])
def test_own_domain_in_other_spellings_is_refused(mx, sender):
    """Issue 12 item 5 with RFC 5321 4.1.2 (a trailing dot is not Domain syntax: refuse it as
    a syntax error or as our domain, never accept it) and RFC 5321 C / 4.1.1.2 (a source
    route is ignored: what remains is our domain): 5xx at MAIL, not 250."""
    address = sender if sender.startswith("<") else f"<{sender}"
    with Dialog(_port(mx)) as smtp:
        smtp.greeting()
        smtp.ehlo()
        reply = smtp.cmd(f"MAIL FROM:{address}>", "5")
        assert reply.code in (501, 553), reply
        smtp.cmd("QUIT", "221")


def test_swaks_forging_our_domain_is_refused(mx):
    """Issue 12 item 5 with a real client: swaks sending as x@example.com to port 25 sees
    ``553 5.7.1`` after MAIL FROM and nothing is delivered."""
    swaks = program("swaks", "swaks libnet-ssleay-perl")
    done = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(_port(mx)),
                           "--helo", "client.sender.test", "--from", "x@example.com",
                           "--to", RCPT, "--header", "Subject: forged-by-swaks"],
                          capture_output=True, timeout=30)
    out = done.stdout.decode(errors="replace")
    assert done.returncode != 0, out
    assert "<** 553 5.7.1" in out, out
    assert "forged-by-swaks" not in "".join(
        p.read_text(errors="replace") for p in Path(mx.config.store.path).rglob("*")
        if p.is_file())


def test_own_domain_from_logged_in_user_is_accepted(mx):
    """Issue 12 item 5 (RFC 6409 submission): a logged-in user sends as their own address in
    our domain."""
    plain = base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode()).decode()
    with Dialog(mx.ports["submission"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd(f"AUTH PLAIN {plain}", "235 2.7.0")
        smtp.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")
        smtp.cmd("RCPT TO:<bob@example.com>", "250 2.1.5")
        smtp.cmd("QUIT", "221")


@pytest.mark.parametrize("overrides", [
    {"relay": {"allow_networks": ["127.0.0.1/32"]}},
    {"checks": {"reject_forged_local": False}},
], ids=["allow-networks", "reject-forged-local-off"])
def test_own_domain_accepted_from_allowed_network(zone, tmp_path, overrides):
    """Issue 12 item 5: a client in ``relay.allow_networks`` may send as our domain (scripts on
    the VPS); ``checks.reject_forged_local: false`` turns the refusal off."""
    with inbound_app(tmp_path, zone, **overrides) as app:
        token, data = message(PLAIN_FROM)
        accepted(deliver(_port(app), "x@example.com", data))
        assert stored_copy(app, token)


def test_loopback_is_not_checked_by_default(zone, tmp_path):
    """``checks.skip_networks`` defaults to this machine (as Postfix's mynetworks_style=host,
    issue 12 item 3 "exceptions per client network"): mail from 127.0.0.1 is neither refused
    for our domain nor given an Authentication-Results field."""
    raw = base_config(tmp_path, relay={"nameservers": [zone.nameserver], "dns_timeout": "2s"})
    with running_app(raw) as app:
        token, data = message("x@example.com")
        accepted(deliver(_port(app), "x@example.com", data))
        _folder, stored = stored_copy(app, token)
        assert results_fields(stored) == [], stored.body[:400]


def test_authentication_results_can_be_turned_off(zone, tmp_path):
    """Issue 12 item 8 (each check can be turned off): ``checks.authentication_results: false``
    adds no Authentication-Results field of ours (RFC 8601 is then not claimed)."""
    with inbound_app(tmp_path, zone, checks={"authentication_results": False}) as app:
        token, data = message(PLAIN_FROM)
        accepted(deliver(_port(app), "x@spf-pass.test", data))
        _folder, stored = stored_copy(app, token)
        assert [v for _n, v in results_fields(stored) if authserv_id(v) == AUTHSERV_ID] == []
