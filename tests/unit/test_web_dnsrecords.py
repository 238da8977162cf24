"""``geomail dns`` for the web side: MTA-STS TXT (RFC 8461 3.1), TLS-RPT (RFC 8460 3), SRV
records of the mail services (RFC 6186 3.1, 3.4; RFC 8314 5.1), and their ``--check``."""

from __future__ import annotations

from geomail import dnsrecords
from geomail.web.mta_sts import policy_id
from tests.unit.test_web_site import make_config


def by_name(config_records: list[dnsrecords.Record]) -> dict[tuple[str, str], str]:
    return {(r.name, r.type): r.value for r in config_records}


def test_records_for_every_domain() -> None:
    """RFC 8461 3.1 TXT with the policy id; the policy host names as CNAMEs; TLS-RPT with the
    default postmaster address; SRV with the configured ports, implicit TLS preferred."""
    config = make_config()
    found = by_name(dnsrecords.records(config, ["192.0.2.1"]))
    for domain in ("example.com", "example.org"):
        assert found[(f"_mta-sts.{domain}.", "TXT")] == f"v=STSv1; id={policy_id(config)}"
        for prefix in ("mta-sts", "autoconfig", "autodiscover"):
            assert found[(f"{prefix}.{domain}.", "CNAME")] == "mx.example.com."
        assert found[(f"_smtp._tls.{domain}.", "TXT")] == (
            f"v=TLSRPTv1; rua=mailto:postmaster@{domain}")
        assert found[(f"_submissions._tcp.{domain}.", "SRV")] == "0 1 4650 mx.example.com."
        assert found[(f"_submission._tcp.{domain}.", "SRV")] == "10 1 5870 mx.example.com."
        assert found[(f"_pop3s._tcp.{domain}.", "SRV")] == "0 1 9950 mx.example.com."
        assert found[(f"_pop3._tcp.{domain}.", "SRV")] == "10 1 1100 mx.example.com."


def test_services_not_configured_are_not_available_and_no_sts_without_https() -> None:
    """RFC 6186 3.4: "0 0 0 ." for a service not offered; without a webs listener no MTA-STS
    record is published (a policy nobody serves); the TLS-RPT address is configurable."""
    config = make_config({"smtp": "0.0.0.0:25", "submissions": "0.0.0.0:465"},
                         mta_sts={"tls_report_address": "tlsrpt@example.com"})
    found = by_name(dnsrecords.records(config, ["192.0.2.1"]))
    assert found[("_submissions._tcp.example.org.", "SRV")] == "0 1 465 mx.example.com."
    for service in ("_submission", "_pop3s", "_pop3"):
        assert found[(f"{service}._tcp.example.org.", "SRV")] == "0 0 0 ."
    assert ("_mta-sts.example.org.", "TXT") not in found
    assert ("mta-sts.example.org.", "CNAME") not in found
    assert found[("_smtp._tls.example.org.", "TXT")] == (
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")


def test_check_compares_sts_id_cname_and_srv() -> None:
    """RFC 8461 3.1: a stale id is "wrong" (senders would keep the old policy); CNAME and SRV
    must match exactly."""
    config = make_config()
    wanted = [r for r in dnsrecords.records(config, ["192.0.2.1"])
              if r.name.endswith("example.com.") and r.type in ("TXT", "CNAME", "SRV")]
    published = {(r.name, r.type): [r.value] for r in wanted}
    published[("_mta-sts.example.com.", "TXT")] = ["v=STSv1; id=old"]
    published[("_pop3._tcp.example.com.", "SRV")] = ["0 0 0 ."]
    del published[("autoconfig.example.com.", "CNAME")]
    results = dnsrecords.check(wanted, lambda name, rdtype: published.get((name, rdtype), []))
    verdicts = {(r.name, r.type): verdict for r, verdict, _ in results}
    assert verdicts[("_mta-sts.example.com.", "TXT")] == "wrong"
    assert verdicts[("_pop3._tcp.example.com.", "SRV")] == "wrong"
    assert verdicts[("autoconfig.example.com.", "CNAME")] == "missing"
    assert verdicts[("_submissions._tcp.example.com.", "SRV")] == "ok"
    assert verdicts[("mta-sts.example.com.", "CNAME")] == "ok"
    assert verdicts[("_smtp._tls.example.com.", "TXT")] == "ok"
