"""A real DNSSEC-signed zone and a validating resolver for DANE tests (RFC 7672): Debian's
knotd serves and signs ``dane.test`` automatically, and also serves ``plain.test`` unsigned
and ``bogus.test`` unsigned although unbound holds a trust anchor for it (so its answers are
bogus: SERVFAIL). unbound validates with ``dane.test``'s DNSKEY as trust anchor, reaching
knot through stub zones. Both run privately on 127.0.0.1 at free ports, in a temp directory.

Readiness is awaited by polling queries (knot: the signed DNSKEY RRset; unbound: a validated
answer), never by sleeping."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from . import free_port, stop_process, wait_for
from .tools import program

SIGNED = "dane.test"
PLAIN = "plain.test"
BOGUS = "bogus.test"

KNOT_CONF = """\
server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{d}/knot.sock"
database:
    storage: "{d}/db"
log:
  - target: "{d}/knot.log"
    any: info
policy:
  - id: quick
    algorithm: ecdsap256sha256
    single-type-signing: on
    nsec3: off
template:
  - id: default
    storage: "{d}"
    zonefile-load: difference-no-serial
    journal-content: all
zone:
  - domain: {signed}
    file: "{d}/{signed}.zone"
    dnssec-signing: on
    dnssec-policy: quick
  - domain: {plain}
    file: "{d}/{plain}.zone"
  - domain: {bogus}
    file: "{d}/{bogus}.zone"
"""

UNBOUND_CONF = """\
server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    num-threads: 1
    so-reuseport: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: "{d}/unbound.log"
    verbosity: 1
    val-log-level: 2
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    trust-anchor-file: "{d}/anchors"
    val-permissive-mode: no
    module-config: "validator iterator"
    qname-minimisation: no
    target-fetch-policy: "0 0 0 0 0"
    local-zone: "test." nodefault
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
remote-control:
    control-enable: no
stub-zone:
    name: "{signed}"
    stub-addr: 127.0.0.1@{knot}
stub-zone:
    name: "{plain}"
    stub-addr: 127.0.0.1@{knot}
stub-zone:
    name: "{bogus}"
    stub-addr: 127.0.0.1@{knot}
"""


def _zone(origin: str, lines: list[str]) -> str:
    head = [f"$ORIGIN {origin}.", "$TTL 60",
            f"@ SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 60",
            "@ NS ns", "ns A 127.0.0.1"]
    return "\n".join(head + lines) + "\n"


def _free_udp_tcp() -> int:
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


class SignedDNS:
    """knotd + unbound. ``records`` maps a zone (``SIGNED``, ``PLAIN``, ``BOGUS``) to extra
    zone-file lines relative to its origin. ``nameserver`` is unbound's "127.0.0.1:port"."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.knotd = program("knotd", "knot")
        self.unbound = program("unbound", "unbound")
        self.directory = tempfile.mkdtemp(prefix="dnssec-")
        self.knot_port = _free_udp_tcp()
        self.port = _free_udp_tcp()
        self.records = records
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def _spawn(self, cmd: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(os.path.join(self.directory, log), "ab") as output:
            process = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        return process

    def _query(self, port: int, name: str, rdtype: str) -> dns.message.Message | None:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        try:
            return dns.query.udp(query, "127.0.0.1", timeout=0.5, port=port)
        except (OSError, dns.exception.DNSException):
            return None

    def log(self) -> str:
        out = []
        for name in ("knot.log", "knotd.out", "unbound.log", "unbound.out"):
            path = os.path.join(self.directory, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as handle:
                    out.append(f"--- {name}\n{handle.read()[-3000:]}")
        return "\n".join(out)

    def _alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args!r} exited ({process.returncode}):\n"
                                     f"{self.log()}")

    def start(self, timeout: float = 20.0) -> SignedDNS:
        d = self.directory
        os.makedirs(os.path.join(d, "db"))
        for zone in (SIGNED, PLAIN, BOGUS):
            self._write(f"{zone}.zone", _zone(zone, self.records.get(zone, [])))
        conf = self._write("knot.conf", KNOT_CONF.format(
            d=d, port=self.knot_port, signed=SIGNED, plain=PLAIN, bogus=BOGUS))
        self._spawn([self.knotd, "-c", conf], "knotd.out")

        def signed_keys() -> dns.rrset.RRset | None:
            self._alive()
            answer = self._query(self.knot_port, SIGNED, "DNSKEY")
            if answer is None or len(answer.answer) < 2:  # DNSKEY and its RRSIG
                return None
            return answer.find_rrset(answer.answer, dns.name.from_text(SIGNED),
                                     dns.rdataclass.IN, dns.rdatatype.DNSKEY)

        keys = wait_for(signed_keys, timeout, interval=0.05, message="knot to sign dane.test")
        assert keys is not None
        # bogus.test is anchored with the same key, but served unsigned: validation fails.
        anchors = keys.to_text() + "\n" + keys.to_text().replace(f"{SIGNED}.", f"{BOGUS}.") \
            + "\n"
        self._write("anchors", anchors)
        conf = self._write("unbound.conf", UNBOUND_CONF.format(
            d=d, port=self.port, knot=self.knot_port, signed=SIGNED, plain=PLAIN, bogus=BOGUS))
        self._spawn([self.unbound, "-d", "-c", conf], "unbound.out")

        def validating() -> bool:
            self._alive()
            answer = self._query(self.port, SIGNED, "SOA")
            return answer is not None and bool(answer.flags & dns.flags.AD)

        wait_for(validating, timeout, interval=0.05, message="unbound to validate dane.test")
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SignedDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
