"""MTA-STS (RFC 8461) and TLS reports (RFC 8460) through the whole App: a message to a domain
whose enforce policy excludes its MX is retried and finally bounced with the reason; the
policy survives a restart; the day's TLS report goes through our own queue to the ``rua``."""

from __future__ import annotations

import datetime
import email
import gzip
import json
from email import policy as email_policy
from pathlib import Path

import dkim
import pytest
import trustme

from geomail.dkim import keygen
from tests.integration.test_mta_sts import check_report
from tests.support import free_port, wait_for
from tests.support.dns import Dnsmasq
from tests.support.geomail import running_app
from tests.support.https_server import HTTPSServer
from tests.support.outbound import (
    dnsfunc,
    mailbox,
    parse_report,
    queue_items,
    sender_config,
    submit,
)

HTTPS_IP, MX_IP = "127.0.0.50", "127.0.0.51"
POLICY = "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 604800\n"
MESSAGE = b"From: alice@example.com\r\nTo: x@strict.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def world(tmp_path: Path):
    authority = trustme.CA()
    ca, cert = str(tmp_path / "ca.pem"), str(tmp_path / "https.pem")
    authority.cert_pem.write_to_path(ca)
    authority.issue_cert("mta-sts.strict.test").private_key_and_cert_chain_pem.write_to_path(
        cert)
    key = str(tmp_path / "example.com.key")
    dkim_txt = keygen(key)
    zone = (Dnsmasq().txt("geomail._domainkey.test.com", dkim_txt)
            .mx("strict.test", "mx.strict.test").host("mx.strict.test", MX_IP)
            .host("mta-sts.strict.test", HTTPS_IP)
            .txt("_mta-sts.strict.test", "v=STSv1; id=1")
            .txt("_smtp._tls.strict.test", "v=TLSRPTv1; rua=mailto:bob@example.com").start())
    (tmp_path / "www").mkdir()
    https = HTTPSServer(tmp_path / "www", cert, HTTPS_IP, free_port(HTTPS_IP))
    https.policy("mta-sts.strict.test", POLICY)
    https.start()
    try:
        yield zone, https, ca, key
    finally:
        https.stop()
        zone.stop()


def config(tmp_path: Path, zone: Dnsmasq, port: int, ca: str, key: str,
           **relay: object) -> dict:  # type: ignore[type-arg]
    return sender_config(tmp_path, zone, free_port(MX_IP),
                         dkim={"selector": "geomail", "key": key}, relay={
        "mta_sts_port": port, "tls_ca_file": ca, "retry": ["1s"], "max_queue_time": "3s",
        "tls_reports": {"organization": "Example Org", "contact": "tls@example.com"},
        **relay})


def test_enforce_defers_then_bounces_with_reason_and_report_is_mailed(world, tmp_path) -> None:
    """RFC 8461 5 (enforce: no delivery to an MX outside the policy; temporary failure until
    the queue gives up: the bounce names MTA-STS, RFC 3464 2.3.6), 5.1 (policy cached
    durably: a restarted server still applies it while the policy host is gone); RFC 8460
    5.3 (the report mailed to the rua through our queue) and 4.4 (its JSON)."""
    zone, https, ca, key = world
    with running_app(config(tmp_path, zone, https.port, ca, key)) as app:
        submit(app.ports["submission"][0], ["x@strict.test"], MESSAGE)
        [bounce] = wait_for(lambda: mailbox(app.config.store.path, "alice@example.com"), 15,
                            message="the bounce")
        _, _, [per_rcpt], _ = parse_report(bounce)
        assert per_rcpt["Status"] == "4.7.5"
        assert "MTA-STS" in str(per_rcpt["Diagnostic-Code"])
        assert "mx.strict.test does not match" in bounce.decode()
        assert app.tls_reports is not None
        day = datetime.datetime.now(datetime.UTC).date().isoformat()
        assert app.tls_reports.send_day(day)
        [raw] = wait_for(lambda: mailbox(app.config.store.path, "bob@example.com"), 10,
                         message="the TLS report")
    msg = email.message_from_bytes(raw, policy=email_policy.default)
    assert msg["TLS-Report-Domain"] == "strict.test"
    assert msg["From"] == "postmaster@test.com"  # the first local domain
    assert dkim.verify(raw, dnsfunc=dnsfunc(zone))  # RFC 8460 3: reports DKIM-signed

    [part] = list(msg.iter_attachments())
    report = json.loads(gzip.decompress(part.get_payload(decode=True)))
    check_report(report)
    assert report["organization-name"] == "Example Org"
    assert report["contact-info"] == "tls@example.com"
    [entry] = report["policies"]
    assert entry["policy"]["policy-type"] == "sts"
    assert entry["policy"]["mx-host"] == ["mx.elsewhere.test"]
    assert entry["summary"]["total-failure-session-count"] >= 1
    assert entry["failure-details"][0]["result-type"] == "validation-failure"

    https.stop()  # the policy host is gone: only the durable cache knows the policy
    assert (tmp_path / "data" / "mta-sts" / "strict.test.json").exists()
    with running_app(config(tmp_path, zone, https.port, ca, key, max_queue_time="1h")) as app:
        submit(app.ports["submission"][0], ["y@strict.test"], MESSAGE)

        def deferred() -> str | None:
            for item in queue_items(app.config.data_dir).values():
                for rcpt in item["recipients"]:
                    if rcpt["address"] == "y@strict.test" and rcpt.get("last_error"):
                        return str(rcpt["last_error"])
            return None

        assert "MTA-STS" in wait_for(deferred, 10, message="the deferral")
