"""MTA-STS (RFC 8461) and TLS reporting (RFC 8460) through SMTPCourier against real peers on
loopback: policies fetched from a real HTTPS server (certificates from a throwaway trustme CA
given to geomail as ``relay.tls_ca_file``), names from a real dnsmasq, MX hosts that are aiosmtpd
peers with STARTTLS."""

from __future__ import annotations

import datetime
import email
import gzip
import json
import ssl
import time
from email import policy as email_policy
from pathlib import Path

import pytest
import trustme

from geomail.config import RelayConfig
from geomail.courier.mx import MXResolver
from geomail.courier.smtp import SMTPCourier
from geomail.courier.tls_policy import TLSPolicy, build_tls_policy
from geomail.courier.tlsrpt import TLSReportSender
from geomail.dnsresolver import make_resolver
from geomail.spool import BytesBody
from tests.support import free_port, free_port_on, wait_for
from tests.support.dns import Dnsmasq
from tests.support.https_server import HTTPSServer
from tests.support.mta import SmtpdPeer
from tests.support.outbound import errors

HTTPS_IP, GOOD_IP, WRONG_IP = "127.0.0.40", "127.0.0.41", "127.0.0.42"
MESSAGE = b"From: alice@example.com\nTo: bob@good.test\nSubject: hi\n\nhello\n"
POLICIES = {
    "good.test": "version: STSv1\nmode: enforce\nmx: mx.good.test\nmx: *.wild.test\n"
                 "max_age: 86400\n",
    "nomatch.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\n"
                    "max_age: 604800\r\n",
    "wrong.test": "version: STSv1\nmode: enforce\nmx: mx.wrong.test\nmax_age: 86400\n",
    "testing.test": "version: STSv1\nmode: testing\nmx: mx.testing.test\nmax_age: 86400\n",
}
RUA = "tlsrpt@reports.example"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The throwaway CA and the certificates: HTTPS for every mta-sts name, a right one for
    mx.good.test and one for another name (served by the 'wrong' MX)."""
    d = tmp_path_factory.mktemp("ca")
    authority = trustme.CA()
    paths = {"ca": str(d / "ca.pem"), "https": str(d / "https.pem"),
             "good": str(d / "good.pem"), "wrong": str(d / "wrong.pem")}
    authority.cert_pem.write_to_path(paths["ca"])
    authority.issue_cert(*(f"mta-sts.{n}" for n in POLICIES)).private_key_and_cert_chain_pem \
        .write_to_path(paths["https"])
    authority.issue_cert("mx.good.test", "mx1.wild.test").private_key_and_cert_chain_pem \
        .write_to_path(paths["good"])
    authority.issue_cert("somebody.else.test").private_key_and_cert_chain_pem \
        .write_to_path(paths["wrong"])
    return paths


@pytest.fixture(scope="module")
def zone():
    server = Dnsmasq()
    for domain in POLICIES:
        server.host(f"mta-sts.{domain}", HTTPS_IP)
        server.txt(f"_mta-sts.{domain}", "v=STSv1; id=20260101")
        server.txt(f"_smtp._tls.{domain}", f"v=TLSRPTv1; rua=mailto:{RUA}")
    server.mx("good.test", "mx.good.test").host("mx.good.test", GOOD_IP)
    server.mx("nomatch.test", "mx.nomatch.test").host("mx.nomatch.test", GOOD_IP)
    server.mx("wrong.test", "mx.wrong.test").host("mx.wrong.test", WRONG_IP)
    server.mx("testing.test", "mx.testing.test").host("mx.testing.test", WRONG_IP)
    server.mx("plain.test", "mx.plain.test").host("mx.plain.test", WRONG_IP)  # no policy
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def https(ca, tmp_path_factory: pytest.TempPathFactory):
    server = HTTPSServer(tmp_path_factory.mktemp("www"), ca["https"], HTTPS_IP,
                         free_port(HTTPS_IP))
    for domain, text in POLICIES.items():
        server.policy(f"mta-sts.{domain}", text)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mx_port() -> int:
    return free_port_on([GOOD_IP, WRONG_IP])


@pytest.fixture(scope="module")
def peers(ca, mx_port):
    with SmtpdPeer(GOOD_IP, mx_port, tls="starttls", cert=ca["good"], key=ca["good"]) as good, \
            SmtpdPeer(WRONG_IP, mx_port, tls="starttls", cert=ca["wrong"],
                      key=ca["wrong"]) as wrong:
        yield {"good": good, "wrong": wrong}


def relay(zone: Dnsmasq, mx_port: int, https_port: int, ca: dict[str, str]) -> RelayConfig:
    return RelayConfig(nameservers=((zone.address, zone.port),), mx_port=mx_port,
                       connect_timeout=2.0, command_timeout=5.0, data_timeout=5.0,
                       dns_timeout=1.5, mta_sts_port=https_port, tls_ca_file=ca["ca"])


@pytest.fixture
def make(zone, mx_port, https, ca, tmp_path):
    """Couriers with MTA-STS over ``tmp_path`` (the data_dir: the same one after a 'restart')."""
    made: list[SMTPCourier] = []

    def courier(port: int | None = None) -> tuple[SMTPCourier, TLSPolicy]:
        cfg = relay(zone, mx_port, port or https.port, ca)
        tls = build_tls_policy(cfg, "mail.example.com", str(tmp_path), make_resolver(cfg),
                               None, "postmaster@example.com")
        made.append(SMTPCourier(cfg, "mail.example.com", MXResolver.from_config(cfg),
                                tls_policy=tls))
        return made[-1], tls

    yield courier
    for c in made:
        c.close()


def send(courier: SMTPCourier, rcpt: str):  # type: ignore[no-untyped-def]
    return courier.deliver("alice@example.com", [rcpt], BytesBody(MESSAGE))


def test_enforce_matching_mx_with_valid_certificate_is_delivered(make, peers) -> None:
    """RFC 8461 4.1-4.2, 5: enforce mode, the MX matches the policy and its certificate is
    valid (PKIX, trusted CA) for its name: delivered over verified TLS."""
    courier, tls = make()
    before = len(peers["good"].messages())
    out = send(courier, "bob@good.test")
    assert errors(out) == {"bob@good.test": None}
    attempt = out["bob@good.test"].attempt
    assert attempt is not None and "verified" in attempt.tls
    assert len(peers["good"].messages()) == before + 1
    assert tls.mta_sts is not None
    cached = tls.mta_sts.cached("good.test")
    assert cached is not None and cached.mode == "enforce" and cached.id == "20260101"


def test_enforce_mx_not_in_policy_is_deferred(make, peers) -> None:
    """RFC 8461 4.1, 5: an MX host that matches no ``mx`` pattern is not used; with none
    left the message is deferred (4.7.5) with MTA-STS named in the reason."""
    courier, _ = make()
    before = len(peers["good"].messages())
    error = errors(send(courier, "bob@nomatch.test"))["bob@nomatch.test"]
    assert error is not None and not error.permanent and error.enhanced == "4.7.5"
    assert "MTA-STS" in str(error) and "mx.nomatch.test does not match" in str(error)
    assert len(peers["good"].messages()) == before


def test_enforce_certificate_for_wrong_name_is_deferred(make, peers) -> None:
    """RFC 8461 4.2: the MX certificate must be valid for the MX host name; otherwise the host
    is skipped and the message deferred; RFC 8460 4.3 reports certificate-host-mismatch."""
    courier, tls = make()
    before = len(peers["wrong"].messages())
    error = errors(send(courier, "bob@wrong.test"))["bob@wrong.test"]
    assert error is not None and not error.permanent and error.enhanced == "4.7.5"
    assert "MTA-STS" in str(error) and "certificate" in str(error).lower()
    assert len(peers["wrong"].messages()) == before
    assert tls.reports is not None
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    report = tls.reports.report(day, "wrong.test", "r1")
    assert report is not None
    [entry] = report["policies"]  # type: ignore[index]
    assert entry["summary"]["total-failure-session-count"] == 1
    assert entry["failure-details"][0]["result-type"] == "certificate-host-mismatch"


def test_testing_mode_delivers_and_records_failure(make, peers) -> None:
    """RFC 8461 5: in testing mode a failed validation does not stop delivery, but is
    reported (RFC 8460 4.3)."""
    courier, tls = make()
    before = len(peers["wrong"].messages())
    out = send(courier, "bob@testing.test")
    assert errors(out) == {"bob@testing.test": None}
    assert len(peers["wrong"].messages()) == before + 1
    assert tls.reports is not None
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    report = tls.reports.report(day, "testing.test", "r2")
    assert report is not None
    [entry] = report["policies"]  # type: ignore[index]
    assert entry["policy"]["policy-type"] == "sts"
    assert "mode: testing" in entry["policy"]["policy-string"]
    assert entry["summary"]["total-failure-session-count"] == 1
    assert entry["failure-details"][0]["result-type"] == "certificate-host-mismatch"
    assert entry["failure-details"][0]["receiving-mx-hostname"] == "mx.testing.test"


def test_no_policy_keeps_opportunistic_tls(make, peers) -> None:
    """RFC 8461 5 / RFC 7435: a domain without a policy gets opportunistic STARTTLS (wrong
    certificate accepted)."""
    courier, _ = make()
    out = send(courier, "bob@plain.test")
    assert errors(out) == {"bob@plain.test": None}


def test_policy_cache_survives_restart(make, peers, https) -> None:
    """RFC 8461 5.1, 10.2: the policy is kept durably for max_age; after a restart, with the
    policy host gone, the cached enforce policy still applies (not downgraded)."""
    courier, _ = make()
    assert errors(send(courier, "bob@nomatch.test"))["bob@nomatch.test"] is not None
    courier2, tls2 = make(port=free_port(HTTPS_IP))  # new process state, nobody answers HTTPS
    error = errors(send(courier2, "bob@nomatch.test"))["bob@nomatch.test"]
    assert error is not None and "MTA-STS" in str(error)
    assert tls2.mta_sts is not None and tls2.mta_sts.cached("nomatch.test") is not None


def test_expired_cached_policy_is_dropped_at_load(make, peers, https, tmp_path) -> None:
    """RFC 8461 5.1: a policy past its max_age is not used again; its cache file is removed
    when the cache is read after a restart."""
    courier, _ = make()
    send(courier, "bob@nomatch.test")
    path = tmp_path / "mta-sts" / "nomatch.test.json"
    kept = json.loads(path.read_text())
    kept["fetched"] = kept["fetched"] - 2 * 31557600  # older than any max_age
    path.write_text(json.dumps(kept))
    _, tls2 = make(port=free_port(HTTPS_IP))  # restarted; the policy host is gone
    assert tls2.mta_sts is not None
    assert tls2.mta_sts.lookup("nomatch.test").policy is None
    assert not path.exists()


def test_tls_report_mailed_and_valid(make, peers, zone, tmp_path) -> None:
    """RFC 8460 3 (rua mailto), 4.4 (JSON report fields and types), 5.3 (the mail: headers,
    Subject, multipart/report; report-type=tlsrpt, application/tlsrpt+gzip attachment name)."""
    courier, tls = make()
    send(courier, "bob@good.test")
    send(courier, "bob@wrong.test")
    assert tls.reports is not None
    tls.reports.save()
    assert list((tmp_path / "tlsrpt").glob("*.json"))
    sent: list[tuple[str, list[str], bytes]] = []

    def put(sender: str, rcpts: list[str], message: bytes) -> str:
        sent.append((sender, rcpts, message))
        return f"q{len(sent)}"

    sender = TLSReportSender(tls.reports, zone.resolver(), put, "postmaster@mail.example.com",
                             "mail.example.com")
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert len(sender.send_day(day)) == 2
    assert tls.reports.days() == []
    by_domain = {}
    for envelope_from, rcpts, raw in sent:
        assert envelope_from == "" and rcpts == [RUA]
        msg = email.message_from_bytes(raw, policy=email_policy.default)
        by_domain[msg["TLS-Report-Domain"]] = msg
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "tlsrpt"
        assert msg["TLS-Report-Submitter"] == "mail.example.com"
        assert msg["Subject"].startswith(f"Report Domain: {msg['TLS-Report-Domain']} "
                                         "Submitter: mail.example.com Report-ID: <")
        [part] = [p for p in msg.iter_attachments()]
        assert part.get_content_type() == "application/tlsrpt+gzip"
        submitter, domain, begin, end, rest = part.get_filename().split("!")
        assert (submitter, domain) == ("mail.example.com", msg["TLS-Report-Domain"])
        assert int(end) - int(begin) == 86399 and rest.endswith(".json.gz")
        check_report(json.loads(gzip.decompress(part.get_payload(decode=True))))
    assert set(by_domain) == {"good.test", "wrong.test"}


def check_report(report: dict) -> None:  # type: ignore[type-arg]
    """RFC 8460 4.4's JSON schema, field by field (required fields and their types)."""
    assert isinstance(report["organization-name"], str) and report["organization-name"]
    dr = report["date-range"]
    for key in ("start-datetime", "end-datetime"):
        datetime.datetime.strptime(dr[key], "%Y-%m-%dT%H:%M:%SZ")  # RFC 3339 date-time
    assert isinstance(report["contact-info"], str)
    assert isinstance(report["report-id"], str) and report["report-id"]
    assert isinstance(report["policies"], list) and report["policies"]
    for entry in report["policies"]:
        pol = entry["policy"]
        assert pol["policy-type"] in ("tlsa", "sts", "no-policy-found")
        assert isinstance(pol["policy-domain"], str)
        for key in ("policy-string", "mx-host"):
            if key in pol:
                assert all(isinstance(s, str) for s in pol[key])
        summary = entry["summary"]
        for key in ("total-successful-session-count", "total-failure-session-count"):
            assert isinstance(summary[key], int) and summary[key] >= 0
        for detail in entry.get("failure-details", []):
            assert detail["result-type"] in (
                "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid",
                "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
                "sts-policy-invalid", "sts-webpki-invalid")
            assert isinstance(detail["failed-session-count"], int)
            for key in ("sending-mta-ip", "receiving-ip", "receiving-mx-hostname",
                        "receiving-mx-helo", "additional-information", "failure-reason-code"):
                if key in detail:
                    assert isinstance(detail[key], str)


def test_txt_id_change_triggers_refetch(ca, https, tmp_path: Path) -> None:
    """RFC 8461 3.1, 5.1: a new ``id`` in the TXT record makes the sender fetch the policy
    again before its max_age ends; the same id keeps the cached one."""
    from geomail.courier.mtasts import MTASTS

    first = Dnsmasq().host("mta-sts.good.test", HTTPS_IP).txt("_mta-sts.good.test",
                                                              "v=STSv1; id=aaa").start()
    port = first.port
    cfg = RelayConfig(nameservers=((first.address, port),), dns_timeout=1.5,
                      tls_ca_file=ca["ca"])
    tls = build_tls_policy(cfg, "h", str(tmp_path), make_resolver(cfg), None, "p@h")
    sts = MTASTS(make_resolver(cfg), str(tmp_path / "mta-sts"), tls.verified, port=https.port)
    https.policy("mta-sts.good.test", POLICIES["good.test"].replace("86400", "604800"))
    try:
        assert sts.lookup("good.test").policy.id == "aaa"  # type: ignore[union-attr]
        https.policy("mta-sts.good.test", POLICIES["good.test"].replace("86400", "90000"))
        assert sts.lookup("good.test").policy.max_age == 604800  # type: ignore[union-attr]
    finally:
        first.stop()
    second = Dnsmasq(port=port).host("mta-sts.good.test", HTTPS_IP).txt(
        "_mta-sts.good.test", "v=STSv1; id=bbb").start()
    try:
        found = sts.lookup("good.test").policy
        assert found is not None and found.id == "bbb" and found.max_age == 90000
    finally:
        second.stop()
        https.policy("mta-sts.good.test", POLICIES["good.test"])
    assert time.time() < found.expires


def test_concurrent_deliveries_fetch_once(ca, https, zone, tmp_path: Path, caplog) -> None:
    """RFC 8461 5.1 (fetch, then cache): several deliveries to one domain at once share one
    policy fetch."""
    import gevent

    from geomail.courier.mtasts import MTASTS

    cfg = RelayConfig(nameservers=((zone.address, zone.port),), dns_timeout=1.5,
                      tls_ca_file=ca["ca"])
    tls = build_tls_policy(cfg, "h", str(tmp_path), make_resolver(cfg), None, "p@h")
    sts = MTASTS(make_resolver(cfg), str(tmp_path / "mta-sts"), tls.verified, port=https.port)
    caplog.set_level("INFO")
    jobs = [gevent.spawn(sts.lookup, "good.test") for _ in range(5)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert all(job.value.policy is not None for job in jobs)
    assert sum("mta-sts-policy" in r.getMessage() for r in caplog.records) == 1


def test_policy_host_with_bad_certificate_or_missing_file_gives_no_policy(
        ca, https, zone, tmp_path: Path) -> None:
    """RFC 8461 3.3: the policy host's certificate must be valid for mta-sts.DOMAIN (else
    sts-webpki-invalid, RFC 8460 4.3.1) and only a 200 answer counts (a missing policy:
    sts-policy-fetch-error); without a cached policy the domain then has none."""
    from geomail.courier.mtasts import MTASTS

    cfg = RelayConfig(nameservers=((zone.address, zone.port),), dns_timeout=1.5,
                      tls_ca_file=ca["ca"])
    tls = build_tls_policy(cfg, "h", str(tmp_path), make_resolver(cfg), None, "p@h")
    www = tmp_path / "www"
    www.mkdir()
    with HTTPSServer(www, ca["wrong"], HTTPS_IP, free_port(HTTPS_IP)) as impostor:
        impostor.policy("mta-sts.good.test", POLICIES["good.test"])
        sts = MTASTS(make_resolver(cfg), str(tmp_path / "a"), tls.verified, port=impostor.port)
        found = sts.lookup("good.test")
        assert found.policy is None and found.failure == "sts-webpki-invalid"
    sts = MTASTS(make_resolver(cfg), str(tmp_path / "b"), tls.verified, port=https.port)
    https.policy("mta-sts.wrong.test", "")
    (https.directory / "mta-sts.wrong.test" / ".well-known" / "mta-sts.txt").unlink()
    try:
        found = sts.lookup("wrong.test")
        assert found.policy is None and found.failure == "sts-policy-fetch-error"
        assert "404" in found.reason
    finally:
        https.policy("mta-sts.wrong.test", POLICIES["wrong.test"])


def test_ended_day_is_reported_by_the_timer(zone, tmp_path: Path) -> None:
    """RFC 8460 4.1 (one report per day, 00:00 to 24:00 UTC) and 3 (to the rua): once the UTC
    day has ended, the periodic round mails its report and forgets the day's counts."""
    from geomail.courier.tlsrpt import TLSReports
    from tests.support import wait_for

    now = [time.time() - 86400]
    reports = TLSReports(str(tmp_path / "tlsrpt"), "Org", "c@example.com", lambda: now[0])
    reports.record("good.test", "sts", ["version: STSv1"], ["mx.good.test"], None)
    yesterday = reports.today()
    now[0] = time.time()
    sent: list[list[str]] = []

    def put(sender: str, rcpts: list[str], message: bytes) -> str:
        sent.append(rcpts)
        assert b"TLS-Report-Domain: good.test" in message
        return "q1"

    sender = TLSReportSender(reports, zone.resolver(), put, "p@example.com", "example.com",
                             save_every=0.05)
    sender.start()
    try:
        wait_for(lambda: sent, 5, message="the report")
    finally:
        sender.stop()
    assert sent == [[RUA]] and yesterday not in reports.days()
    assert not (tmp_path / "tlsrpt" / f"{yesterday}.json").exists()


def test_tls_report_posted_to_https_rua(ca, tmp_path: Path) -> None:
    """RFC 8460 3 (an https: rua) and 5.4 (the gzipped report POSTed as
    application/tlsrpt+gzip, over HTTPS verified with PKIX)."""
    from geomail.courier.tlsrpt import TLSReports

    authority_cert = str(tmp_path / "localhost.pem")
    ca_obj = trustme.CA()
    ca_obj.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(authority_cert)
    ca_file = str(tmp_path / "ca.pem")
    ca_obj.cert_pem.write_to_path(ca_file)
    www = tmp_path / "www"
    www.mkdir()
    with HTTPSServer(www, authority_cert, "127.0.0.1", free_port()) as server, \
            Dnsmasq().txt("_smtp._tls.post.test",
                          f"v=TLSRPTv1;rua=https://localhost:{server.port}/tlsrpt") as dns:
        now = time.time()
        reports = TLSReports(str(tmp_path / "tlsrpt"), "Org", "c@example.com", lambda: now)
        reports.record("post.test", "no-policy-found", [], [], "starttls-not-supported",
                       receiving_mx="mx.post.test")
        context = ssl.create_default_context(cafile=ca_file)
        sender = TLSReportSender(reports, dns.resolver(), lambda *a: "never", "p@example.com",
                                 "example.com", tls=context)
        assert sender.send_day(reports.today()) == []  # nothing mailed: https only
    [posted] = list((www / "posted").iterdir())
    kind, _, body = posted.read_bytes().partition(b"\n")
    assert kind == b"application/tlsrpt+gzip"
    report = json.loads(gzip.decompress(body))
    check_report(report)
    [entry] = report["policies"]
    assert entry["policy"]["policy-type"] == "no-policy-found"
    assert entry["failure-details"][0]["result-type"] == "starttls-not-supported"


def test_tls_report_delivered_despite_enforce_policy_and_not_counted(make, peers,
                                                                     tmp_path) -> None:
    """RFC 8460 5.3: a TLS report sent over SMTP MUST be delivered despite TLS failures and
    SHOULD NOT count in the next report. Through a real queue: the report item (kind
    ``tls-report``) to wrong.test, whose enforce policy fails on the MX's wrong-name
    certificate, is delivered (opportunistic TLS); an ordinary message there is deferred;
    only the ordinary one's session is in wrong.test's counts."""
    from geomail.queue.queue import Queue

    courier, tls = make()
    queue = Queue(str(tmp_path / "queue"), courier.relay, "mail.example.com", local=courier,
                  remote=courier, is_local=lambda address: False)
    (tmp_path / "queue").mkdir()
    queue.load()
    before = len(peers["wrong"].messages())
    try:
        report_id = queue.put("", ["tlsrpt@wrong.test"], BytesBody(MESSAGE), kind="tls-report")
        plain_id = queue.put("alice@example.com", ["bob@wrong.test"], BytesBody(MESSAGE))

        def arrived() -> list[list[str]]:
            return [m.rcpt_tos for m in peers["wrong"].messages()[before:]]

        assert wait_for(arrived, 10, message="the TLS report") == [["tlsrpt@wrong.test"]]

        def deferred() -> str | None:
            [item] = [i for i in queue.items() if i["id"] == plain_id]
            return item["recipients"][0]["last_error"]  # type: ignore[no-any-return]

        assert "MTA-STS" in wait_for(deferred, 10, message="the deferral")
        assert report_id not in {i["id"] for i in queue.items()}  # delivered, removed
    finally:
        queue.stop(1)
    assert len(peers["wrong"].messages()) == before + 1
    assert tls.reports is not None
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    report = tls.reports.report(day, "wrong.test", "r3")
    assert report is not None
    [entry] = report["policies"]  # type: ignore[index]
    assert entry["summary"] == {"total-successful-session-count": 0,
                                "total-failure-session-count": 1}
