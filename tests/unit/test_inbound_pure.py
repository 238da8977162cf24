"""The pure parts of inbound sender authentication: the Authentication-Results field we write
(RFC 8601 2.2), forged ones found and taken out (RFC 8601 5), the From domains DMARC judges
(RFC 7489 6.6.1), the strictest of several verdicts, organisational domains (RFC 7489 3.2),
the ``checks:``/``spam:`` config and the Junk folder of a Maildir (Maildir++)."""

from __future__ import annotations

import os
from typing import Any

import authres
import pytest

from geomail.checks.authresults import WithoutFields, build_field, claims, forged_fields
from geomail.checks.dkim_verify import ARCResult, DKIMResult, key_names
from geomail.checks.dmarc_policy import DMARCResult, organizational_domain, strictest
from geomail.checks.iprev import IprevResult
from geomail.checks.spf import SPFResult
from geomail.config import parse_config
from geomail.errors import ConfigError
from geomail.policy.inbound import from_domains
from geomail.spool import BytesBody
from geomail.store.base import JUNK, Copy
from geomail.store.maildir import MaildirStore

ID = "mx.example.com"


def _parse(field: bytes) -> Any:
    unfolded = field.decode().replace("\n\t", " ").strip()
    return authres.AuthenticationResultsHeader.parse(unfolded)


def test_field_carries_every_method_and_parses() -> None:
    """RFC 8601 2.2: authserv-id, then one resinfo per method, as a strict parser reads it."""
    field = build_field(
        ID, SPFResult("pass", "mailfrom", "a@x.org", "x.org"),
        [DKIMResult("pass", "x.org", "s1", "rsa-sha256"), DKIMResult("fail", "y.org", "s2")],
        ARCResult("none"), [DMARCResult("pass", "x.org", "reject")],
        IprevResult("pass", "192.0.2.1", "mail.x.org"))
    assert field.startswith(b"Authentication-Results: mx.example.com;\n\t")
    assert field.endswith(b"\n") and b"\r" not in field
    header = _parse(field)
    assert header.authserv_id == ID
    methods = [(r.method, r.result) for r in header.results]
    assert methods == [("iprev", "pass"), ("spf", "pass"), ("dkim", "pass"), ("dkim", "fail"),
                       ("arc", "none"), ("dmarc", "pass")]
    spf = header.results[1]
    assert spf.smtp_mailfrom == "a@x.org"
    assert header.results[2].header_d == "x.org" and header.results[2].header_s == "s1"


def test_field_helo_scope_and_hostile_values() -> None:
    """RFC 8601 2.7.2: smtp.helo when MAIL FROM was <>; a client's HELO cannot add a clause
    or a line (RFC 8601 7.1: the field must not be made to say what we did not find)."""
    field = build_field(ID, SPFResult("none", "helo", "evil; dkim=pass\r\nX: y", "evil"),
                        None, None, [], None)
    assert field.count(b"\n") == 2  # the name line and one method line
    header = _parse(field)
    assert [(r.method, r.result) for r in header.results] == [("spf", "none")]


def test_no_results_says_none() -> None:
    """RFC 8601 2.2: a field with no method results says ``none``; an unsigned message checked
    for DKIM says ``dkim=none`` (RFC 8601 2.7.1)."""
    assert build_field(ID, None, None, None, [], None) == (
        b"Authentication-Results: mx.example.com;\n\tnone\n")
    assert build_field(ID, None, [], None, [], None) == (
        b"Authentication-Results: mx.example.com;\n\tdkim=none\n")


@pytest.mark.parametrize(("value", "ours"), [
    (b" mx.example.com; spf=pass smtp.mailfrom=a@b\n", True),
    (b" MX.Example.COM; dkim=pass\n", True),
    (b" (comment) mx.example.com 1;\n\tdkim=pass\n", True),
    (b' "mx.example.com"; none\n', True),
    (b" mx.example.com.; none\n", True),
    (b" other.example.net; spf=pass\n", False),
    (b" mx.example.com.evil.org; spf=pass\n", False),
])
def test_claims_our_authserv_id(value: bytes, ours: bool) -> None:
    """RFC 8601 5: fields that claim our authserv-id are ours to remove, no others."""
    assert claims(value, ID) is ours


def test_spam_verdict_fields_of_the_sender_are_ours_to_remove() -> None:
    """Fields only we write (X-Spam, X-Spam-Score) are found whatever their case; others not."""
    head = (b"x-spam: No\nX-Spam-Score: -100\nX-Spammy: keep\nSubject: hi\n\n")
    spans = forged_fields(head, ID, (b"x-spam", b"x-spam-score"))
    assert [head[a:b] for a, b in spans] == [b"x-spam: No\n", b"X-Spam-Score: -100\n"]


def test_forged_fields_removed_others_kept() -> None:
    """RFC 8601 5: a forged field (folded) is taken out; another server's stays; the body view
    has the right sizes (Maildir S=/W= and SIZE depend on them)."""
    head = (b"Authentication-Results: mx.example.com;\n\tdkim=pass header.d=bank.example\n"
            b"Authentication-Results: relay.example.net; spf=pass\n"
            b"From: a@x.org\nSubject: hi\n\n")
    message = head + b"body line\n"
    spans = forged_fields(head, ID)
    assert len(spans) == 1
    body = WithoutFields(BytesBody(message), head, spans)
    data = b"".join(body.chunks(7))
    assert data == (b"Authentication-Results: relay.example.net; spf=pass\n"
                    b"From: a@x.org\nSubject: hi\n\nbody line\n")
    assert body.size == len(data)
    assert body.crlf_size == len(data) + data.count(b"\n")


@pytest.mark.parametrize(("head", "domains"), [
    (b"From: a@Example.ORG\n", ["example.org"]),
    (b"From: a@x.org, b@y.org, c@x.org\n", ["x.org", "y.org"]),
    (b"From: \"Name\" <n@z.org>\n", ["z.org"]),
    (b"Subject: no from\n", None),
    (b"From: undisclosed\n", []),
])
def test_from_domains(head: bytes, domains: list[str] | None) -> None:
    """RFC 7489 6.6.1: each author domain once; no From field at all is told apart."""
    assert from_domains(head + b"\n") == domains


def test_strictest_of_several_from_domains() -> None:
    """RFC 7489 6.6.1: with several From domains the strictest disposition applies."""
    results = [DMARCResult("pass", "a.org", "reject", "none"),
               DMARCResult("fail", "b.org", "quarantine", "quarantine"),
               DMARCResult("none", "c.org")]
    assert strictest(results).domain == "b.org"


@pytest.mark.parametrize(("domain", "org"), [
    ("mail.example.co.uk", "example.co.uk"), ("example.com", "example.com"),
    ("a.b.c.example.com", "example.com"), ("co.uk", "co.uk"),
])
def test_organizational_domain(domain: str, org: str) -> None:
    """RFC 7489 3.2: public suffix (from the Public Suffix List) plus one label."""
    from publicsuffixlist import PublicSuffixList

    assert organizational_domain(PublicSuffixList(), domain) == org


def test_key_names_of_dkim_and_arc_signatures() -> None:
    """RFC 6376 3.6.2.1 / RFC 8617 4.1: keys at <s>._domainkey.<d>, each asked once."""
    head = (b"DKIM-Signature: v=1; a=rsa-sha256; d=Example.org; s=sel;\n\th=from; bh=x; b=y\n"
            b"ARC-Seal: i=1; a=rsa-sha256; d=example.org; s=sel; cv=none; b=z\n"
            b"DKIM-Signature: broken\nFrom: a@example.org\n")
    assert key_names(head) == [b"sel._domainkey.example.org"]


def test_checks_and_spam_config_defaults_and_errors() -> None:
    """Issue 12 item 8: verification on by default, DNS lists and greylisting off; errors name
    their key path."""
    raw: dict[str, Any] = {"domains": ["example.com"], "listen": {"smtp": "127.0.0.1:25"}}
    config = parse_config(raw)
    assert config.checks.spf and config.checks.dkim and config.checks.dmarc
    assert config.checks.enforce_dmarc and config.checks.authentication_results
    assert config.spam.rspamd is None and config.spam.greylist is None
    assert not config.spam.dnsbl and config.spam.early_talker
    with pytest.raises(ConfigError) as caught:
        parse_config({**raw, "checks": {"spf_fail": "drop", "skip_networks": ["nope"]},
                      "spam": {"rspamd": {"url": "ftp://x"}}})
    text = str(caught.value)
    assert "checks.spf_fail" in text and "checks.skip_networks[0]" in text
    assert "spam.rspamd.url" in text


def test_junk_copy_goes_to_the_maildir_plus_plus_folder(tmp_path: Any) -> None:
    """Issue 12 item 3: quarantined mail goes to the Maildir++ folder ``.Junk`` (with its
    ``maildirfolder`` marker, as Dovecot and Courier expect); the inbox stays empty but
    exists."""
    store = MaildirStore(str(tmp_path), ID)
    store.deliver([Copy("alice@example.com", b"X-Spam: Yes\n", JUNK)], BytesBody(b"S: x\n\nb\n"))
    root = store.mailbox_path("alice@example.com")
    assert len(os.listdir(f"{root}/.Junk/new")) == 1
    assert os.path.exists(f"{root}/.Junk/maildirfolder")
    assert os.listdir(f"{root}/new") == []
    for sub in ("tmp", "cur"):
        assert os.path.isdir(f"{root}/.Junk/{sub}")
