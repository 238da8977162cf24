"""MTA-STS record and policy parsing (RFC 8461 3.1, 3.2, 4.1) and TLS-RPT counting (RFC 8460
4.4), without the network."""

from __future__ import annotations

import pytest

from geomail.courier.mtasts import MAX_AGE_LIMIT, STSError, parse_policy, parse_txt
from geomail.courier.tlsrpt import TLSReports

GOOD = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\n"


def test_txt_record_needs_exactly_one_stsv1_with_an_id() -> None:
    """RFC 8461 3.1: v=STSv1 first, id of 1-32 alphanumerics; several STSv1 records: none."""
    assert parse_txt(["v=STSv1; id=20160831085700Z;", "other"]) == "20160831085700Z"
    assert parse_txt(["v=STSv1;id=abc; ext=1"]) == "abc"
    for bad in (["v=STSv1; id=a", "v=STSv1; id=b"], ["v=STSv1;"], ["v=STSv1; id=a-b"],
                ["v=STSv1; id=" + "a" * 33], []):
        with pytest.raises(STSError):
            parse_txt(bad)


def test_policy_fields_and_crlf() -> None:
    """RFC 8461 3.2: version, mode, mx (repeatable), max_age; CRLF or LF line ends."""
    p = parse_policy(GOOD.replace("\n", "\r\n"), "example.com", "1", 0.0)
    assert (p.mode, p.mx, p.max_age) == ("enforce", ("mail.example.com", "*.example.net"), 86400)
    assert p.policy_strings()[0] == "version: STSv1"


@pytest.mark.parametrize("text", [
    GOOD.replace("STSv1", "STSv2"), GOOD.replace("enforce", "strict"),
    GOOD.replace("86400", "-1"), GOOD.replace("86400", "1e5"),
    "version: STSv1\nmode: enforce\nmax_age: 5\n", GOOD + "garbage line\n",
    GOOD.replace("mail.example.com", "mail..example.com"),
    GOOD.replace("*.example.net", "a.*.example.net"),
])
def test_bad_policies_are_refused(text: str) -> None:
    """RFC 8461 3.2: anything malformed makes the policy unusable (sts-policy-invalid)."""
    with pytest.raises(STSError) as caught:
        parse_policy(text, "example.com", "1", 0.0)
    assert caught.value.result_type == "sts-policy-invalid"


def test_max_age_capped_and_mode_none_needs_no_mx() -> None:
    """RFC 8461 3.2: max_age at most 31557600; mode none is valid without mx lines."""
    assert parse_policy(GOOD.replace("86400", "99999999"), "e", "1", 0).max_age == MAX_AGE_LIMIT
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 1\n", "e", "1", 0).mode == "none"


def test_mx_matching_and_wildcards() -> None:
    """RFC 8461 4.1: exact names, and ``*.`` matching exactly one leftmost label."""
    p = parse_policy(GOOD, "example.com", "1", 0.0)
    assert p.matches("mail.example.com") and p.matches("MAIL.example.com.")
    assert p.matches("mx1.example.net")
    assert not p.matches("example.net") and not p.matches("a.b.example.net")
    assert not p.matches("other.example.com")


def test_tls_report_counts_persist(tmp_path) -> None:
    """RFC 8460 4.4: per policy, success and failure counts and failure details; the day's
    counts are saved and read back after a restart."""
    now = 1_700_000_000.0
    reports = TLSReports(str(tmp_path), "Org", "c@example.com", lambda: now)
    reports.record("d.example", "sts", ["version: STSv1"], ["mx.d.example"], None)
    reports.record("d.example", "sts", ["version: STSv1"], ["mx.d.example"],
                   "certificate-expired", receiving_mx="mx.d.example", receiving_ip="192.0.2.1")
    reports.save()
    again = TLSReports(str(tmp_path), "Org", "c@example.com", lambda: now)
    [day] = again.days()
    report = again.report(day, "d.example", "id1")
    assert report is not None
    [entry] = report["policies"]  # type: ignore[index]
    assert entry["summary"] == {"total-successful-session-count": 1,
                                "total-failure-session-count": 1}
    assert entry["failure-details"] == [{"result-type": "certificate-expired",
                                         "receiving-mx-hostname": "mx.d.example",
                                         "receiving-ip": "192.0.2.1",
                                         "failed-session-count": 1}]
    assert report["date-range"] == {"start-datetime": f"{day}T00:00:00Z",  # type: ignore[index]
                                    "end-datetime": report["date-range"]["end-datetime"]}  # type: ignore[index]
