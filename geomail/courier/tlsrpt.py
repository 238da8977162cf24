"""SMTP TLS reporting (RFC 8460): outbound TLS outcomes counted per policy domain and UTC day,
the daily JSON report (4.4), and the report mail (5.3) sent to the domain's ``rua`` mailto."""

from __future__ import annotations

import contextlib
import datetime
import gzip
import http.client
import json
import logging
import os
import secrets
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import dns.exception
import dns.resolver
import gevent
from gevent.event import Event

from geomail.log import event
from geomail.safeio import run_blocking, write_atomic

log = logging.getLogger(__name__)

# RFC 8460 4.3 result types this sender produces
RESULT_TYPES = ("starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid",
                "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
                "sts-policy-invalid", "sts-webpki-invalid")
POLICY_TYPES = ("sts", "tlsa", "no-policy-found")
MAX_DOMAINS = 10_000  # per day; further domains are not counted (bounded memory)
MAX_DETAILS = 100  # distinct failure-details per policy


@dataclass(slots=True)
class _PolicyCounts:
    policy_type: str
    policy_strings: list[str]
    mx_hosts: list[str]
    success: int = 0
    failure: int = 0
    details: dict[str, int] = field(default_factory=dict)  # json key of the detail -> count


@dataclass(frozen=True, slots=True)
class Submission:
    """A report ready to mail: who to, the message, the report id."""

    domain: str
    rua: tuple[str, ...]
    report_id: str
    message: bytes


class TLSReports:
    """Counts of one UTC day at a time, per policy domain and policy; ``flush(day)`` turns the
    counts of an ended day into reports. Saved to ``directory/<day>.json`` by ``save()`` (the
    App calls it every few minutes and at shutdown: a crash loses at most that much)."""

    def __init__(self, directory: str, organization: str, contact: str,
                 clock: Callable[[], float]) -> None:
        self._dir = directory
        self.organization = organization
        self.contact = contact
        self._clock = clock
        self._days: dict[str, dict[str, dict[str, _PolicyCounts]]] = {}
        self._loaded = False

    # ------------------------------------------------------------------ counting

    def record(self, domain: str, policy_type: str, policy_strings: list[str],
               mx_hosts: list[str], result: str | None, *, receiving_mx: str = "",
               receiving_ip: str = "", reason: str = "") -> None:
        """One session's outcome (``result`` None: success, else an RFC 8460 4.3 type)."""
        self._load()
        day = _day(self._clock())
        domains = self._days.setdefault(day, {})
        if domain not in domains and len(domains) >= MAX_DOMAINS:
            return
        key = json.dumps([policy_type, policy_strings])
        counts = domains.setdefault(domain, {}).setdefault(
            key, _PolicyCounts(policy_type, policy_strings, mx_hosts))
        if result is None:
            counts.success += 1
            return
        counts.failure += 1
        detail: dict[str, object] = {"result-type": result}
        if receiving_mx:
            detail["receiving-mx-hostname"] = receiving_mx
        if receiving_ip:
            detail["receiving-ip"] = receiving_ip
        if reason:
            detail["failure-reason-code"] = reason[:200]
        dkey = json.dumps(detail, sort_keys=True)
        if dkey in counts.details or len(counts.details) < MAX_DETAILS:
            counts.details[dkey] = counts.details.get(dkey, 0) + 1

    def today(self) -> str:
        """The current UTC day, YYYY-MM-DD."""
        return _day(self._clock())

    def days(self) -> list[str]:
        self._load()
        return sorted(self._days)

    # ------------------------------------------------------------------ reports

    def report(self, day: str, domain: str, report_id: str) -> dict[str, object] | None:
        """The RFC 8460 4.4 JSON report of ``domain`` for ``day`` (YYYY-MM-DD)."""
        policies = self._days.get(day, {}).get(domain)
        if not policies:
            return None
        begin = f"{day}T00:00:00Z"
        end = (datetime.date.fromisoformat(day) + datetime.timedelta(days=1)).isoformat() \
            + "T00:00:00Z"
        items: list[dict[str, object]] = []
        for counts in policies.values():
            policy: dict[str, object] = {"policy-type": counts.policy_type,
                                         "policy-domain": domain}
            if counts.policy_strings:
                policy["policy-string"] = counts.policy_strings
            if counts.mx_hosts:
                policy["mx-host"] = counts.mx_hosts
            entry: dict[str, object] = {
                "policy": policy,
                "summary": {"total-successful-session-count": counts.success,
                            "total-failure-session-count": counts.failure}}
            if counts.details:
                entry["failure-details"] = [
                    {**json.loads(k), "failed-session-count": n}
                    for k, n in counts.details.items()]
            items.append(entry)
        return {"organization-name": self.organization,
                "date-range": {"start-datetime": begin, "end-datetime": end},
                "contact-info": self.contact, "report-id": report_id, "policies": items}

    def take_day(self, day: str) -> list[str]:
        """The policy domains counted on ``day``; the day is then forgotten (file removed)."""
        self._load()
        return sorted(self._days.get(day, {}))

    def forget(self, day: str) -> None:
        self._days.pop(day, None)
        run_blocking(_unlink, os.path.join(self._dir, f"{day}.json"))

    def message(self, day: str, domain: str, rua: list[str], sender: str,
                submitter: str, report_id: str | None = None) -> Submission | None:
        """The report mail of RFC 8460 5.3 (multipart/report; report-type=tlsrpt) for ``rua``."""
        report_id = report_id or f"{day}.{secrets.token_hex(8)}@{submitter}"
        data = self.report(day, domain, report_id)
        if data is None:
            return None
        begin = int(datetime.datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp())
        end = begin + 86400 - 1
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = ", ".join(rua)
        msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
        msg["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
        msg["Message-ID"] = make_msgid(domain=submitter)
        msg["TLS-Report-Domain"] = domain
        msg["TLS-Report-Submitter"] = submitter
        msg.set_content(f"This is an aggregate TLS report from {submitter} for {domain} "
                        f"({day}, RFC 8460).\n")
        payload = gzip.compress(json.dumps(data, indent=1).encode(), mtime=0)
        filename = f"{submitter}!{domain}!{begin}!{end}!{report_id.split('@')[0]}.json.gz"
        msg.add_attachment(payload, maintype="application", subtype="tlsrpt+gzip",
                           filename=filename)
        msg.replace_header("Content-Type", msg["Content-Type"].replace(
            "multipart/mixed", "multipart/report"))
        msg.set_param("report-type", "tlsrpt")
        return Submission(domain, tuple(rua), report_id, msg.as_bytes())

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write each day's counts durably (temp, fsync, rename)."""
        for day, domains in list(self._days.items()):
            data = {d: [{"policy-type": c.policy_type, "policy-string": c.policy_strings,
                         "mx-host": c.mx_hosts, "success": c.success, "failure": c.failure,
                         "details": c.details} for c in pols.values()]
                    for d, pols in domains.items()}
            try:
                run_blocking(_write, self._dir, os.path.join(self._dir, f"{day}.json"),
                             json.dumps(data).encode())
            except OSError as exc:
                event(log, logging.ERROR, "tlsrpt-save-failed", day=day, error=str(exc))

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for day, data in run_blocking(_read_all, self._dir):
            domains = self._days.setdefault(day, {})
            for domain, pols in data.items():
                for p in pols:
                    counts = _PolicyCounts(str(p["policy-type"]), list(p["policy-string"]),
                                           list(p["mx-host"]), int(p["success"]),
                                           int(p["failure"]), dict(p["details"]))
                    key = json.dumps([counts.policy_type, counts.policy_strings])
                    domains.setdefault(domain, {})[key] = counts


def rua_addresses(resolver: dns.resolver.Resolver, domain: str) -> list[str]:
    """The mailto: addresses of ``_smtp._tls.DOMAIN`` (RFC 8460 3)."""
    return rua_uris(resolver, domain)[0]


def rua_uris(resolver: dns.resolver.Resolver, domain: str) -> tuple[list[str], list[str]]:
    """The mailto: addresses and https: URLs of ``_smtp._tls.DOMAIN`` (RFC 8460 3); other
    schemes are logged and skipped."""
    try:
        answer = resolver.resolve(f"_smtp._tls.{domain}", "TXT", search=False)
    except (dns.exception.DNSException, OSError):
        return [], []
    records = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
    records = [r for r in records if r.startswith("v=TLSRPTv1")]
    if len(records) != 1:
        return [], []
    found: list[str] = []
    urls: list[str] = []
    for part in records[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() != "rua":
            continue
        for uri in value.split(","):
            uri = uri.strip()
            if uri.lower().startswith("mailto:"):
                address = uri[7:].split("?")[0]
                if "@" in address:
                    found.append(address)
            elif uri.lower().startswith("https://"):
                urls.append(uri)
            elif uri:
                event(log, logging.INFO, "tlsrpt-rua-unsupported", domain=domain, rua=uri)
    return found, urls


def post_report(url: str, payload: bytes, context: ssl.SSLContext,
                timeout: float = 30.0) -> str | None:
    """POST the gzipped report to an https: rua (RFC 8460 5.4); None when accepted (2xx),
    else why not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return "not an https URL"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout,
                                           context=context)
    except ValueError as exc:
        return str(exc)
    try:
        conn.request("POST", target, body=payload,
                     headers={"Content-Type": "application/tlsrpt+gzip"})
        response = conn.getresponse()
        response.read(65536)
        return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return str(exc) or type(exc).__name__
    finally:
        conn.close()


def _day(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()


def previous_day(now: float) -> str:
    """The UTC day before ``now``'s."""
    return (datetime.datetime.fromtimestamp(now, datetime.UTC).date()
            - datetime.timedelta(days=1)).isoformat()


def _write(directory: str, path: str, data: bytes) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    write_atomic(path, data)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _read_all(directory: str) -> list[tuple[str, dict[str, list[dict[str, Any]]]]]:
    found = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            try:
                with open(os.path.join(directory, name), "rb") as handle:
                    found.append((name[:-5], json.loads(handle.read())))
            except (OSError, ValueError) as exc:
                event(log, logging.WARNING, "tlsrpt-unreadable", file=name, error=str(exc))
    return found


class TLSReportSender:
    """Saves the counts every ``save_every`` seconds and, once a UTC day has ended, mails each
    policy domain's report to its ``rua`` (RFC 8460 3, 5.3) through ``put`` (the queue's:
    sender, recipients, message). ``send_day(day)`` does one day at once (tests, operators)."""

    def __init__(self, reports: TLSReports, resolver: dns.resolver.Resolver,
                 put: Callable[[str, list[str], bytes], str], sender: str, submitter: str,
                 save_every: float = 300.0, tls: ssl.SSLContext | None = None) -> None:
        self.reports = reports
        self._resolver = resolver
        self._put = put
        self.sender = sender
        self.submitter = submitter
        self._every = save_every
        self._tls = tls or ssl.create_default_context()  # for https: rua (PKIX)
        self._greenlet: Any = None
        self._stopping = Event()

    def start(self) -> None:
        self._stopping.clear()
        self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout: float = 10.0) -> None:
        """Let a round in progress finish (no report sent twice), then save the counts."""
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            self._greenlet.kill()
            self._greenlet = None
        self.reports.save()

    def _run(self) -> None:
        while not self._stopping.wait(self._every):
            try:
                self.reports.save()
                today = self.reports.today()
                for day in self.reports.days():
                    if day < today:
                        self.send_day(day)
            except Exception as exc:  # the next round tries again
                event(log, logging.ERROR, "tlsrpt-failed", error=str(exc))

    def send_day(self, day: str) -> list[str]:
        """Mail the reports of ``day`` (YYYY-MM-DD) and forget its counts; the queue ids."""
        sent: list[str] = []
        for domain in self.reports.take_day(day):
            rua, urls = rua_uris(self._resolver, domain)
            report_id = f"{day}.{secrets.token_hex(8)}@{self.submitter}"
            data = self.reports.report(day, domain, report_id) if urls else None
            for url in urls if data is not None else ():
                payload = gzip.compress(json.dumps(data).encode(), mtime=0)
                error = post_report(url, payload, self._tls)
                if error is None:
                    event(log, logging.INFO, "tlsrpt-posted", domain=domain, day=day,
                          report_id=report_id, url=url)
                else:
                    event(log, logging.WARNING, "tlsrpt-post-failed", domain=domain, day=day,
                          url=url, error=error)
            if not rua:
                continue
            submission = self.reports.message(day, domain, rua, self.sender, self.submitter,
                                              report_id)
            if submission is None:
                continue
            queue_id = self._put("", rua, submission.message)
            event(log, logging.INFO, "tlsrpt-sent", domain=domain, day=day,
                  report_id=submission.report_id, to=",".join(rua), id=queue_id)
            sent.append(queue_id)
        self.reports.forget(day)
        return sent
