"""Port 25 DKIM and ARC verification and the Authentication-Results header (issue 12 items 2
and 4): RSA and Ed25519 signatures made by the tests with dkimpy and keys they publish on
dnsmasq, per-signature results, ARC chains, and forged Authentication-Results headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dkim
import pytest

from tests.support.authmail import (
    AUTHSERV_ID,
    Keys,
    accepted,
    arc_seal,
    authserv_id,
    deliver,
    dkim_sign,
    dnsfunc,
    inbound_app,
    message,
    module_fixtures,
    our_results,
    prop,
    result,
    results,
    results_fields,
    stored_copy,
)
from tests.support.dns import Dnsmasq

SENDER = "bounce@norecords.test"  # MAIL FROM: SPF none, unaligned with the From domain
FROM = "writer@dkim.test"  # dkim.test publishes keys but no DMARC record


keys, zone = module_fixtures()


@pytest.fixture(scope="module", params=[1, 0], ids=["worker-process", "in-process"])
def mx(zone: Dnsmasq, tmp_path_factory: pytest.TempPathFactory,
       request: pytest.FixtureRequest) -> Iterator[Any]:
    """Every test twice: verification in a worker process (``limits.verify_processes: 1``,
    the default) and in the server itself (``0``): the verdicts must not differ."""
    with inbound_app(tmp_path_factory.mktemp("dkim"), zone,
                     limits={"verify_processes": request.param}) as app:
        yield app


def _send(app: Any, data: bytes, token: str) -> Any:
    accepted(deliver(app.ports["smtp"][0], SENDER, data))
    _folder, stored = stored_copy(app, token)
    return our_results(stored)


def _key(keys: Keys, selector: str) -> Any:
    return keys.rsa if selector == "rsa" else keys.ed


@pytest.mark.parametrize("selector", ["rsa", "ed"], ids=["rsa-sha256", "ed25519-sha256"])
def test_dkim_signature_passes(mx, keys, zone, selector):
    """RFC 6376 6.1 (verifier actions) and RFC 8463 (Ed25519): a signature by a key published
    at ``<s>._domainkey.<d>`` verifies: ``dkim=pass header.d=dkim.test header.s=<s>``
    (RFC 8601 2.7.1)."""
    token, data = message(FROM)
    signed = dkim_sign(data, _key(keys, selector), selector, "dkim.test")
    assert dkim.verify(signed, dnsfunc=dnsfunc(zone))  # the test's own signature is good
    header = _send(mx, signed, token)
    [res] = results(header, "dkim")
    assert res.result == "pass", str(res)
    assert prop(res, "header", "d") == "dkim.test"
    assert prop(res, "header", "s") == selector


@pytest.mark.parametrize("selector", ["rsa", "ed"], ids=["rsa-sha256", "ed25519-sha256"])
@pytest.mark.parametrize("change", ["body", "to-header"])
def test_dkim_signature_of_a_changed_message_fails(mx, keys, selector, change):
    """RFC 6376 6.1.3 (body hash and signature): a body or a signed header field changed
    after signing gives ``dkim=fail``."""
    token, data = message(FROM, body="The amount is 10 euros.\r\n")
    signed = dkim_sign(data, _key(keys, selector), selector, "dkim.test")
    if change == "body":
        signed = signed.replace(b"10 euros", b"99 euros")
    else:
        signed = signed.replace(b"To: alice@example.com", b"To: Alice <alice@example.com>")
    header = _send(mx, signed, token)
    [res] = results(header, "dkim")
    assert res.result == "fail", str(res)
    assert prop(res, "header", "d") == "dkim.test"
    assert prop(res, "header", "s") == selector


def test_dkim_signature_without_published_key_does_not_pass(mx, keys):
    """RFC 6376 6.1.2 (no key record: PERMFAIL): a signature whose selector has no key is
    reported as permerror (or fail), never pass."""
    token, data = message(FROM)
    header = _send(mx, dkim_sign(data, keys.rsa, "missing", "dkim.test"), token)
    [res] = results(header, "dkim")
    assert res.result in ("permerror", "fail"), str(res)
    assert prop(res, "header", "s") == "missing"


def test_two_signatures_give_two_results(mx, keys):
    """RFC 6376 6.1 (every signature is verified) / RFC 8463 3 (sign with both algorithms):
    an RSA and an Ed25519 signature each get a ``dkim=`` result with their d= and s=."""
    token, data = message(FROM)
    signed = dkim_sign(dkim_sign(data, keys.rsa, "rsa", "dkim.test"), keys.ed, "ed", "dkim.test")
    header = _send(mx, signed, token)
    found = sorted((prop(r, "header", "s"), r.result, prop(r, "header", "d"))
                   for r in results(header, "dkim"))
    assert found == [("ed", "pass", "dkim.test"), ("rsa", "pass", "dkim.test")], str(header)


def test_one_good_one_bad_signature(mx, keys):
    """RFC 6376 6.1 / RFC 8601 2.7.1: one signature failing (bad key) does not hide the other
    one passing: two results, one pass and one not."""
    token, data = message(FROM)
    signed = dkim_sign(dkim_sign(data, keys.rsa, "rsa", "dkim.test"), keys.rsa, "missing",
                       "dkim.test")
    header = _send(mx, signed, token)
    found = {prop(r, "header", "s"): r.result for r in results(header, "dkim")}
    assert found.keys() == {"rsa", "missing"}, str(header)
    assert found["rsa"] == "pass" and found["missing"] != "pass", str(header)


def test_unsigned_message_is_dkim_none(mx):
    """RFC 8601 2.7.1 (none: the message was not signed)."""
    token, data = message(FROM)
    assert result(_send(mx, data, token), "dkim").result == "none"


# ------------------------------------------------------------------ ARC


def test_arc_chain_passes(mx, keys, zone):
    """RFC 8617 5.2 (validating the chain): a message sealed by a forwarder (one ARC set,
    i=1) verifies: ``arc=pass``."""
    token, data = message(FROM)
    sealed = arc_seal(dkim_sign(data, keys.rsa, "rsa", "dkim.test"), keys.rsa, "rsa",
                      "forwarder.test")
    assert dkim.arc_verify(sealed, dnsfunc=dnsfunc(zone))[0] == b"pass"
    header = _send(mx, sealed, token)
    assert result(header, "arc").result == "pass", str(header)
    assert result(header, "dkim").result == "pass", str(header)


def test_arc_chain_of_changed_message_fails(mx, keys):
    """RFC 8617 5.2: the body changed after the forwarder sealed it: the ARC-Message-Signature
    no longer verifies: ``arc=fail``."""
    token, data = message(FROM, body="Forward me as I am.\r\n")
    sealed = arc_seal(data, keys.rsa, "rsa", "forwarder.test")
    header = _send(mx, sealed.replace(b"as I am", b"as I was"), token)
    assert result(header, "arc").result == "fail", str(header)


def test_no_arc_headers_is_arc_none(mx):
    """RFC 8617 4.4 (cv=none: no chain) reported as ``arc=none``."""
    token, data = message(FROM)
    assert result(_send(mx, data, token), "arc").result == "none"


# ------------------------------------------------------------------ Authentication-Results


@pytest.mark.parametrize("forged", [
    "mx.test.com; dkim=pass header.d=bank.test",
    "MX.Test.COM; spf=pass smtp.mailfrom=ceo@bank.test",
    "mx.test.com 1; dmarc=pass header.from=bank.test",
    "(trust me) mx.test.com; iprev=pass policy.iprev=192.0.2.66 (bank.test)",
    "\r\n  mx.test.com;\r\n  dkim=pass header.d=bank.test",
], ids=["same-case", "other-case", "with-version", "with-comment", "folded"])
def test_forged_authentication_results_of_ours_are_removed(mx, forged):
    """RFC 8601 5 (a header claiming our authserv-id that we did not add is removed before
    delivery; the authserv-id is compared case-insensitively, RFC 8601 2.5, and may be followed
    by a version or folded, RFC 8601 2.2) and RFC 8601 2.1: ours is prepended, exactly one; another
    ADMD's header stays."""
    other = "other.example; spf=pass smtp.mailfrom=list@other.example"
    token, data = message(FROM, headers=[f"Authentication-Results: {forged}",
                                         f"Authentication-Results: {other}"])
    accepted(deliver(mx.ports["smtp"][0], SENDER, data))
    _folder, stored = stored_copy(mx, token)
    header = our_results(stored)  # first header, authserv-id ours, the only one of ours
    assert str(header.authserv_id).lower() == AUTHSERV_ID
    fields = results_fields(stored)
    assert [authserv_id(v) for _n, v in fields] == [AUTHSERV_ID, "other.example"], fields
    assert fields[1][1].strip() == other
    assert b"bank.test" not in stored.body, stored.body[:800]


def test_authentication_results_method_set(mx):
    """Issue 12 item 4 / RFC 8601 2.7: our header carries spf, dkim, arc, dmarc and iprev
    results, each once for an unsigned message, with our hostname as authserv-id."""
    token, data = message(FROM)
    header = _send(mx, data, token)
    methods = sorted(r.method for r in header.results)
    assert methods == ["arc", "dkim", "dmarc", "iprev", "spf"], str(header)
    assert prop(result(header, "spf"), "smtp", "mailfrom") == SENDER
    assert prop(result(header, "dmarc"), "header", "from") == "dkim.test"


def test_authentication_results_text_in_the_body_stays(mx):
    """RFC 8601 5 is about header fields: a line in the body that looks like our field (a
    quoted bounce, a forwarded message) is delivered unchanged."""
    quoted = "Authentication-Results: mx.test.com; dkim=pass header.d=bank.test\r\n"
    token, data = message(FROM, body=f"Look at this:\r\n\r\n{quoted}")
    accepted(deliver(mx.ports["smtp"][0], SENDER, data))
    _folder, stored = stored_copy(mx, token)
    our_results(stored)
    assert stored.body.endswith(quoted.replace("\r\n", "\n").encode()), stored.body[-300:]


def test_forged_authentication_results_after_a_long_header_section(mx):
    """RFC 8601 5 holds for the whole header section: a field claiming our authserv-id after
    300 KiB of other header fields is removed too (or the message refused), never delivered
    as if we had written it."""
    padding = [f"X-Pad-{i}: {'x' * 1000}" for i in range(300)]
    token, data = message(FROM, headers=[*padding,
                                         "Authentication-Results: mx.test.com; dmarc=pass "
                                         "header.from=bank.test"])
    outcome = deliver(mx.ports["smtp"][0], SENDER, data)
    if outcome.code != 250:
        assert outcome.code >= 500, outcome
        return
    _folder, stored = stored_copy(mx, token)
    assert b"bank.test" not in stored.body, "forged Authentication-Results delivered"


@pytest.mark.parametrize("sender, helo", [
    ('"x;dkim=pass header.d=bank.test"@spf-pass.test', "client.sender.test"),
    ("", "x;dkim=pass"),
], ids=["mail-from-local-part", "helo"])
def test_client_text_cannot_add_results(mx, sender, helo):
    """RFC 8601 2.2 (a property value that is not a token is a quoted-string) and RFC 8601 7.1
    (forged results): ';' and '=' in the MAIL FROM local part (RFC 5321 4.1.2 quoted-string)
    or the HELO name stay inside the spf property value; our header holds exactly one result
    of each method and no dkim=pass."""
    token, data = message(FROM)
    accepted(deliver(mx.ports["smtp"][0], sender, data, helo=helo))
    _folder, stored = stored_copy(mx, token)
    header = our_results(stored)
    assert sorted(r.method for r in header.results) == ["arc", "dkim", "dmarc", "iprev", "spf"]
    assert result(header, "dkim").result == "none", str(header)
    spf = result(header, "spf")
    assert prop(spf, "smtp", "mailfrom" if sender else "helo") == (sender or helo)
