"""Port 25 DMARC (issue 12 items 3, 8, 9; RFC 7489): policy discovery with the organisational
domain, SPF and DKIM alignment, ``p``/``sp``/``pct``, reject at the end of DATA, quarantine into
the Maildir++ ``.Junk`` folder (mbox: a header), exceptions, the log line and the metric."""

from __future__ import annotations

import logging
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_metrics import parse
from tests.support import wait_for
from tests.support.authmail import (
    DMARC_TIMEOUT_DOMAIN,
    Keys,
    accepted,
    auth_events,
    deliver,
    dkim_sign,
    find,
    has_header,
    inbound_app,
    message,
    module_fixtures,
    our_results,
    prop,
    result,
    stored_copy,
)
from tests.support.dns import Dnsmasq
from tests.support.stored import maildir

UNRELATED = "bounce@spf-pass.test"  # MAIL FROM passing SPF, aligned with none of the From's


keys, zone = module_fixtures()


@pytest.fixture(scope="module")
def mx(zone: Dnsmasq, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Default checks (DMARC enforced), with /metrics."""
    listen = {"smtp": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}
    with inbound_app(tmp_path_factory.mktemp("dmarc"), zone, listen=listen) as app:
        yield app


def _port(app: Any) -> int:
    return int(app.ports["smtp"][0])


def _unaligned(keys: Keys, from_domain: str, **kw: Any) -> tuple[str, bytes]:
    """A message From ``x@from_domain`` with a good signature by another domain (dkim.test)."""
    token, data = message(f"writer@{from_domain}", **kw)
    return token, dkim_sign(data, keys.rsa, "rsa", "dkim.test")


def _dmarc(stored: Any) -> Any:
    return result(our_results(stored), "dmarc")


# ------------------------------------------------------------------ reject


def test_reject_policy_refuses_unaligned_mail(mx, keys):
    """RFC 7489 6.6.2 / 6.3 (p=reject) and 3.1 (alignment), issue 12 item 3: SPF passes for
    spf-pass.test and DKIM passes for dkim.test, neither aligned with From reject.test: DMARC
    fails and the message is refused at the end of DATA with ``550 5.7.1`` naming the From
    domain; nothing is stored."""
    token, data = _unaligned(keys, "reject.test")
    outcome = deliver(_port(mx), UNRELATED, data)
    assert (outcome.stage, outcome.code) == ("data", 550), outcome
    assert outcome.text.startswith("5.7.1") and "reject.test" in outcome.text, outcome
    assert find(mx, token) is None


@pytest.mark.parametrize("mail_from, signer", [
    ("x@reject.test", None),
    ("bounce@mail.reject.test", None),
    ("x@norecords.test", "reject.test"),
    ("x@spf-fail.test", "reject.test"),
    ("x@REJECT.Test", None),
    ("x@norecords.test", "Reject.TEST"),
], ids=["spf-aligned", "spf-relaxed-aligned", "dkim-aligned", "dkim-aligned-spf-fail",
        "spf-aligned-case", "dkim-aligned-case"])
def test_reject_policy_delivers_aligned_mail(mx, keys, mail_from, signer):
    """RFC 7489 3.1.1 / 3.1.2 (relaxed alignment by default: organisational domains match) and
    4.2 (aligned SPF pass OR aligned DKIM pass is a DMARC pass): delivered to INBOX with
    ``dmarc=pass header.from=reject.test``; an SPF fail does not junk a message DMARC passes
    (RFC 7489 10.1: DMARC, not SPF alone, decides when the domain publishes a policy); domain
    names compare case-insensitively (RFC 7489 3.1, RFC 4343)."""
    token, data = message("writer@reject.test")
    if signer:
        data = dkim_sign(data, keys.rsa, "rsa", signer)
    accepted(deliver(_port(mx), mail_from, data))
    folder, stored = stored_copy(mx, token)
    dmarc = _dmarc(stored)
    assert dmarc.result == "pass", str(dmarc)
    assert prop(dmarc, "header", "from") == "reject.test"
    assert folder == "inbox"


def test_subdomain_uses_organisational_policy_and_relaxed_dkim(mx, keys):
    """RFC 7489 6.6.3 (no record at the From domain: the organisational domain's, found with
    the Public Suffix List) and 3.1.1 (relaxed: d=reject.test aligns with news.reject.test)."""
    token, data = message("writer@news.reject.test")
    accepted(deliver(_port(mx), "x@norecords.test",
                     dkim_sign(data, keys.ed, "ed", "reject.test")))
    folder, stored = stored_copy(mx, token)
    dmarc = _dmarc(stored)
    assert (dmarc.result, folder) == ("pass", "inbox"), str(dmarc)
    assert prop(dmarc, "header", "from") == "news.reject.test"


def test_subdomain_unaligned_is_refused_by_organisational_policy(mx, keys):
    """RFC 7489 6.6.3: news.reject.test has no record; reject.test's p=reject applies."""
    _token, data = _unaligned(keys, "news.reject.test")
    outcome = deliver(_port(mx), UNRELATED, data)
    assert (outcome.stage, outcome.code) == ("data", 550), outcome
    assert outcome.text.startswith("5.7.1"), outcome


@pytest.mark.parametrize("mail_from, signer, expected", [
    ("bounce@mail.strict.test", None, 550),  # SPF pass, only relaxed-aligned
    ("x@norecords.test", "strict.test", 250),  # DKIM d= equals the From domain
], ids=["spf-relaxed-only", "dkim-exact"])
def test_strict_alignment(mx, keys, mail_from, signer, expected):
    """RFC 7489 3.1.1 / 3.1.2 (adkim=s, aspf=s: the domains must be identical): mail.strict.test
    does not align with strict.test; d=strict.test does."""
    _token, data = message("writer@strict.test")
    if signer:
        data = dkim_sign(data, keys.rsa, "rsa", signer)
    outcome = deliver(_port(mx), mail_from, data)
    assert (outcome.stage, outcome.code) == ("data", expected), outcome


@pytest.mark.parametrize("from_domain, expected", [
    ("sub.org-reject.test", 550),  # sp=reject
    ("org-reject.test", 250),  # p=none
], ids=["sp-applies-to-subdomain", "p-applies-to-domain"])
def test_subdomain_policy(mx, keys, from_domain, expected):
    """RFC 7489 6.3 (``sp=``: the policy for subdomains of the organisational domain; ``p=``
    for the domain itself)."""
    _token, data = _unaligned(keys, from_domain)
    outcome = deliver(_port(mx), UNRELATED, data)
    assert (outcome.stage, outcome.code) == ("data", expected), outcome


# ------------------------------------------------------------------ quarantine and none


def _assert_junk(app: Any, token: str) -> Any:
    folder, stored = stored_copy(app, token)
    assert folder == "junk", folder
    junk = maildir(app.config.store.path, "alice@example.com") / ".Junk"
    assert all((junk / sub).is_dir() for sub in ("new", "cur", "tmp")), list(junk.iterdir())
    assert (junk / "maildirfolder").is_file()  # Maildir++: marks a folder (Courier, Dovecot)
    assert has_header(stored, "X-Spam", "Yes"), stored.body[:600]
    return stored


def test_quarantine_policy_delivers_to_junk(mx, keys):
    """RFC 7489 6.3 (p=quarantine: treat as suspicious), issue 12 item 3: delivered into the
    Maildir++ folder ``.Junk`` (a maildir of its own: new/cur/tmp, and ``maildirfolder``)
    with ``X-Spam: Yes``."""
    token, data = _unaligned(keys, "quarantine.test")
    accepted(deliver(_port(mx), UNRELATED, data))
    stored = _assert_junk(mx, token)
    assert _dmarc(stored).result == "fail"


def test_none_policy_delivers_to_inbox(mx, keys):
    """RFC 7489 6.3 (p=none: no action, report only): INBOX, ``dmarc=fail``, no X-Spam."""
    token, data = _unaligned(keys, "none.test")
    accepted(deliver(_port(mx), UNRELATED, data))
    folder, stored = stored_copy(mx, token)
    assert folder == "inbox"
    assert _dmarc(stored).result == "fail"
    assert not has_header(stored, "X-Spam", "Yes")


@pytest.mark.parametrize("from_domain, folder", [("pct-reject.test", "junk"),
                                                 ("pct-quarantine.test", "inbox")])
def test_pct_zero_applies_the_next_softer_policy(mx, keys, from_domain, folder):
    """RFC 7489 6.6.4 (messages not sampled by ``pct`` get the next less strict policy:
    reject -> quarantine, quarantine -> none); with ``pct=0`` none is sampled."""
    token, data = _unaligned(keys, from_domain)
    accepted(deliver(_port(mx), UNRELATED, data))
    found, stored = stored_copy(mx, token)
    assert found == folder
    assert _dmarc(stored).result == "fail"


def test_quarantine_in_mbox_store_is_a_header(zone, keys, tmp_path):
    """Issue 12 item 3 (mbox: a header only): a quarantined message is appended to the user's
    mbox with ``X-Spam: Yes``."""
    with inbound_app(tmp_path, zone, store={"format": "mbox"}) as app:
        token, data = _unaligned(keys, "quarantine.test")
        accepted(deliver(_port(app), UNRELATED, data))
        folder, stored = stored_copy(app, token)
        assert folder == "mbox"
        assert has_header(stored, "X-Spam", "Yes"), stored.body[:600]
        assert _dmarc(stored).result == "fail"


# ------------------------------------------------------------------ exceptions


@pytest.mark.parametrize("checks", [{"enforce_dmarc": False}, {"skip_domains": ["reject.test"]}],
                         ids=["enforce-off", "skip-domain"])
def test_unenforced_failure_is_delivered_and_reported(zone, keys, tmp_path, checks):
    """Issue 12 items 3 and 8 (``checks.enforce_dmarc: false``; exceptions per sender domain,
    ``checks.skip_domains``), RFC 7489 6.7 (local policy may override): a p=reject failure is
    delivered to INBOX with ``dmarc=fail`` reported."""
    with inbound_app(tmp_path, zone, checks=checks) as app:
        token, data = _unaligned(keys, "reject.test")
        accepted(deliver(_port(app), UNRELATED, data))
        folder, stored = stored_copy(app, token)
        assert folder == "inbox"
        dmarc = _dmarc(stored)
        assert dmarc.result == "fail"
        assert prop(dmarc, "header", "from") == "reject.test"


# ------------------------------------------------------------------ From: none or several


def test_message_without_from_is_refused(mx):
    """RFC 7489 6.6.1 (a message without a single RFC5322.From is rejected) and RFC 5322 3.6
    (From: is required): ``550 5.7.1`` at the end of DATA."""
    _token, data = message("")
    outcome = deliver(_port(mx), UNRELATED, data)
    assert (outcome.stage, outcome.code) == ("data", 550), outcome
    assert outcome.text.startswith("5.7.1"), outcome


@pytest.mark.parametrize("header", [
    "writer@none.test, writer@reject.test",
    "writer@reject.test, writer@none.test",
    "writer@none.test\r\nFrom: writer@reject.test",
], ids=["reject-second", "reject-first", "two-from-fields"])
def test_several_from_domains_strictest_policy_applies(mx, keys, header):
    """RFC 7489 6.6.1 (several From addresses in different domains: each is evaluated, the
    strictest disposition applies; a second From field is no way around the policy):
    none.test (p=none) with reject.test (p=reject), neither aligned: refused ``550 5.7.1``."""
    _token, data = message(header)
    outcome = deliver(_port(mx), UNRELATED, dkim_sign(data, keys.rsa, "rsa", "dkim.test"))
    assert (outcome.stage, outcome.code) == ("data", 550), outcome
    assert outcome.text.startswith("5.7.1"), outcome


@pytest.mark.parametrize("header", [
    '"Writer, The" <Writer@Reject.TEST>',
    "=?utf-8?q?Caf=C3=A9?= <writer@REJECT.test> (comment)",
    "Writer\r\n <writer@news.Reject.Test>",  # folded; relaxed alignment
], ids=["display-name-case", "encoded-word-comment", "folded"])
def test_from_domain_is_found_in_any_address_form(mx, header):
    """RFC 7489 3.1 / 6.6.1 with RFC 5322 3.4 address syntax and RFC 5321 2.4 (domains are
    case-insensitive): display names, quoted commas, comments, encoded words and folding do not
    hide the From domain, which aligns with the SPF-passing MAIL FROM domain reject.test."""
    token, data = message(header)
    accepted(deliver(_port(mx), "x@reject.test", data))
    folder, stored = stored_copy(mx, token)
    dmarc = _dmarc(stored)
    assert (dmarc.result, folder) == ("pass", "inbox"), str(dmarc)
    assert prop(dmarc, "header", "from").lower().endswith("reject.test")


@pytest.mark.parametrize("header", ["writer@reject.test.", "Bank <writer@REJECT.TEST.>"],
                         ids=["trailing-dot", "trailing-dot-angle"])
def test_from_domain_with_trailing_dot_is_judged(mx, keys, header):
    """RFC 7489 6.6.1 / 3.1 (the Author Domain is the From domain; ``reject.test.`` is the same
    name as ``reject.test``, RFC 1034 3.1): an unaligned message whose From domain is written
    with a trailing dot is refused like any other (a From that yields no domain must not skip
    DMARC)."""
    _token, data = message(header)
    outcome = deliver(_port(mx), UNRELATED, dkim_sign(data, keys.rsa, "rsa", "dkim.test"))
    assert (outcome.stage, outcome.code) == ("data", 550), outcome


def test_two_dmarc_records_mean_no_policy(mx, keys):
    """RFC 7489 6.6.3 step 2 (several DMARC records: no policy, as if none were published):
    unaligned mail From two.test, whose two records both say reject, is delivered with
    ``dmarc=none``."""
    token, data = _unaligned(keys, "two.test")
    accepted(deliver(_port(mx), UNRELATED, data))
    folder, stored = stored_copy(mx, token)
    assert (_dmarc(stored).result, folder) == ("none", "inbox"), str(_dmarc(stored))


def test_dmarc_lookup_timeout_is_not_a_failure(mx, keys):
    """RFC 7489 6.6.3 / 11.2 and RFC 8601 2.7.1: the policy lookup timing out is temperror:
    never a permanent refusal; delivered with ``dmarc=temperror`` (or deferred with 4xx)."""
    token, data = _unaligned(keys, DMARC_TIMEOUT_DOMAIN)
    outcome = deliver(_port(mx), UNRELATED, data)
    if outcome.code != 250:
        assert 400 <= outcome.code < 500, outcome
        return
    folder, stored = stored_copy(mx, token)
    assert _dmarc(stored).result == "temperror", str(_dmarc(stored))
    assert folder == "inbox"


# ------------------------------------------------------------------ log line and metric


def _counts(app: Any) -> dict[str, float]:
    port = app.ports["http"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        series = parse(response.read().decode())
    return {dict(labels)["result"]: value for (name, labels), value in series.items()
            if name == "geomail_dmarc_total"}


def _event(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    events = wait_for(lambda: auth_events(caplog.records), timeout=5,
                      message="an auth-checked log line")
    assert len(events) == 1, events
    [fields] = events
    assert {"session", "id", "spf", "dkim", "dmarc", "action"} <= fields.keys(), fields
    assert re.fullmatch(r"\w+", fields["session"]), fields
    return fields


@pytest.mark.parametrize("case", ["accept", "junk", "reject"])
def test_decision_is_logged_and_counted(mx, keys, caplog, case):
    """Issue 12 item 9: each decision is one ``auth-checked`` line (session, id, spf, dkim,
    dmarc, action; values as docs/logging.md gives them) and
    ``geomail_dmarc_total{result=...}`` counts it."""
    caplog.set_level(logging.INFO)
    domain = {"accept": "reject.test", "junk": "quarantine.test", "reject": "reject.test"}[case]
    token, data = message(f"writer@{domain}")
    if case == "accept":  # aligned DKIM pass
        data = dkim_sign(data, keys.rsa, "rsa", "reject.test")
    else:
        data = dkim_sign(data, keys.rsa, "rsa", "dkim.test")
    before = _counts(mx)
    outcome = deliver(_port(mx), UNRELATED, data)
    fields = _event(caplog)
    dmarc = "pass" if case == "accept" else "fail"
    signer = "reject.test" if case == "accept" else "dkim.test"
    # docs/logging.md: dmarc is result:domain (the strictest From domain), dkim result:domain
    # per signature.
    assert (fields["action"], fields["dmarc"], fields["spf"]) == \
        (case, f"{dmarc}:{domain}", "pass"), fields
    assert fields["dkim"] == f"pass:{signer}", fields
    if case == "reject":
        assert outcome.code == 550, outcome
    else:
        assert accepted(outcome).queue_id == fields["id"], (outcome, fields)
        assert stored_copy(mx, token)
    after = _counts(mx)
    assert after.get(dmarc, 0) == before.get(dmarc, 0) + 1, (before, after)
    assert {k: v for k, v in after.items() if k != dmarc} == \
        {k: v for k, v in before.items() if k != dmarc}, (before, after)


def test_dmarc_counters_exported_from_the_start(zone, tmp_path: Path):
    """Issue 12 item 9 and the /metrics rule (every known counter series at 0 from the start):
    ``geomail_dmarc_total`` has pass, fail and none series before any mail."""
    with inbound_app(tmp_path, zone, listen={"smtp": ["127.0.0.1:0"],
                                             "http": ["127.0.0.1:0"]}) as app:
        counts = _counts(app)
    assert {"pass", "fail", "none"} <= counts.keys(), counts
    assert set(counts.values()) == {0.0}, counts
