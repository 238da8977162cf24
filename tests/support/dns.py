"""A real DNS server for tests: dnsmasq on 127.0.0.1 at a free port, serving a zone we describe."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

import dns.resolver

from . import free_port, stop_process, wait_for

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
ZONE = "test"  # every name under .test is answered locally (unknown ones: NXDOMAIN)


def _free_udp_and_tcp_port(address: str) -> int:
    """A port free for both UDP and TCP: dnsmasq binds both, without SO_REUSEADDR, so a TCP
    port still in TIME_WAIT (after a truncated answer was retried over TCP) is not usable."""
    for _ in range(100):
        port = free_port(address, kind=socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


class Dnsmasq:
    """dnsmasq with ``--no-resolv --no-hosts``: answers only what the test declares.

    Names under ``.test`` that are not declared get NXDOMAIN; names outside ``.test`` get
    REFUSED (dnspython: NoNameservers, i.e. a server failure); ``timeout(domain)`` makes dnsmasq
    forward a domain to a port where nobody answers. Declare records, then ``start()``.
    Answers carry ``ttl`` (0 by default: clients do not cache between tests).
    """

    def __init__(self, port: int | None = None, ttl: int = 0) -> None:
        self.address = "127.0.0.1"
        self.port = port or _free_udp_and_tcp_port(self.address)
        self.args: list[str] = [f"--local=/{ZONE}/", f"--local-ttl={ttl}"]
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="dnsmasq-", suffix=".log", delete=False)

    @property
    def nameserver(self) -> str:
        """``host:port`` as ``relay.nameservers`` takes it."""
        return f"{self.address}:{self.port}"

    # -------------------------------------------------------------- records

    def mx(self, domain: str, host: str, preference: int = 10) -> Dnsmasq:
        self.args.append(f"--mx-host={domain},{host},{preference}")
        return self

    def null_mx(self, domain: str) -> Dnsmasq:
        """RFC 7505 ``MX 0 .``: raw RDATA, preference 0 and the root name."""
        self.args.append(f"--dns-rr={domain},15,000000")
        return self

    def host(self, name: str, *addresses: str) -> Dnsmasq:
        self.args.append(f"--host-record={name},{','.join(addresses)}")
        return self

    def txt(self, name: str, *strings: str) -> Dnsmasq:
        """A TXT record; dnsmasq splits strings longer than 255 octets itself."""
        self.args.append(f"--txt-record={name},{','.join(strings)}")
        return self

    def ptr(self, address: str, name: str) -> Dnsmasq:
        """A reverse record for ``address`` (IPv4)."""
        reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
        self.args.append(f"--ptr-record={reverse},{name}")
        return self

    def srv(self, name: str, target: str = "", port: int = 0, priority: int = 0,
            weight: int = 0) -> Dnsmasq:
        """An SRV record; without ``target``, "0 0 0 ." (service not available, RFC 6186 3.4)."""
        value = f"{name},{target},{port},{priority},{weight}" if target else name
        self.args.append(f"--srv-host={value}")
        return self

    def cname(self, alias: str, target: str) -> Dnsmasq:
        self.args.append(f"--cname={alias},{target}")
        return self

    def timeout(self, domain: str) -> Dnsmasq:
        """Queries under ``domain`` are forwarded to a dead port: the client times out."""
        dead = free_port(self.address, kind=2)
        self.args.append(f"--server=/{domain}/{self.address}#{dead}")
        return self

    # -------------------------------------------------------------- process

    def start(self) -> Dnsmasq:
        cmd = [DNSMASQ, "-C", "/dev/null", "--no-resolv", "--no-hosts", "--keep-in-foreground",
               f"--port={self.port}", f"--listen-address={self.address}", "--bind-interfaces",
               "--pid-file=", "--log-facility=-", "--cache-size=0", *self.args]
        if os.geteuid() == 0:
            cmd.append("--user=root")  # no privilege drop: nothing to protect in a test
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        resolver = self.resolver(lifetime=0.5)

        def answering() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"dnsmasq exited: {self.log()}")
            try:
                resolver.resolve(f"probe.{ZONE}", "A")
            except dns.resolver.NXDOMAIN:
                return True
            except dns.exception.DNSException:
                return False
            return True

        wait_for(answering, 10, message="dnsmasq to answer")
        return self

    def resolver(self, lifetime: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver pointed at this server."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.address]
        resolver.port = self.port
        resolver.lifetime = lifetime
        return resolver

    def log(self) -> str:
        with open(self._log.name, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        self._log.close()
        os.unlink(self._log.name)

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
