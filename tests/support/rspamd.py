"""A real rspamd for tests (issue 12 item 6): Debian's package, started privately in the
foreground with a config in a temporary directory: one normal worker (the one serving
``/checkv2``) on 127.0.0.1 at a free port, no controller, no redis, logging to a file there.

The package's defaults are included (the rules a real install runs), with the overrides a
hermetic test needs: modules that ask the network (RBLs, SURBL, SPF, DKIM, DMARC, fuzzy,
neural, ...) are disabled and rspamd's resolver points at a port nobody answers, so nothing
leaves the machine or stalls for long; hyperscan is off and the URL matcher gets a tiny TLD
list (compiling the full Public Suffix List takes rspamd over 10 s, the rest starts in ~1 s).
``enable_test_patterns`` makes the GTUBE variants give every action: X -> reject (the one real
rspamd always honours), Y -> add header, Z -> rewrite subject, A -> no action.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from . import free_port, wait_for
from .tools import program

GTUBE_BODY = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def gtube(variant: str = "X") -> str:
    """rspamd's test pattern for an action: X reject, Y add header, Z rewrite subject,
    A no action (the last three need ``enable_test_patterns``)."""
    return variant + GTUBE_BODY[1:]


# Modules disabled: each one queries DNS or HTTP services, or needs redis.
DISABLED_MODULES = (
    "antivirus", "arc", "asn", "bimi", "clickhouse", "dcc", "dkim", "dmarc", "elastic",
    "emails", "external_services", "fuzzy_check", "greylist", "history_redis", "hfilter",
    "maillist", "metadata_exporter", "metric_exporter", "multimap", "mx_check", "neural",
    "p0f", "phishing", "ratelimit", "rbl", "replies", "reputation", "rspamd_update", "spf",
    "surbl", "url_redirector",
)

CONFIG = """\
# Written by tests/support/rspamd.py: the package's defaults, one normal worker on loopback.
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}}
"""

OPTIONS = """\
dns {{
    nameserver = ["127.0.0.1:{dns_port}"];
    timeout = 0.1s;
    retransmits = 1;
    sockets = 1;
}}
url_tld = "{directory}/tld.dat";
disable_hyperscan = true;
enable_test_patterns = true;
"""


class Rspamd:
    """rspamd on 127.0.0.1; ``start()`` waits until ``/ping`` answers, ``stop()`` ends it and
    its workers (its own process group). A missing rspamd skips the test (fails it in CI)."""

    def __init__(self) -> None:
        self.binary = program("rspamd", "rspamd")
        self.directory = tempfile.mkdtemp(prefix="rspamd-")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start_time = 0.0  # seconds the last start() took until /ping answered
        self._write_config()

    @property
    def url(self) -> str:
        """The normal worker's base URL, as ``spam.rspamd.url`` takes it."""
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        local = self.directory
        os.makedirs(os.path.join(local, "local.d"))
        os.makedirs(os.path.join(local, "override.d"))
        with open(os.path.join(local, "rspamd.conf"), "w", encoding="utf-8") as handle:
            handle.write(CONFIG.format(port=self.port))
        # A UDP port that was free a moment ago: queries there get no answer.
        dns_port = free_port(kind=socket.SOCK_DGRAM)
        with open(os.path.join(local, "override.d", "options.inc"), "w",
                  encoding="utf-8") as handle:
            handle.write(OPTIONS.format(dns_port=dns_port, directory=local))
        with open(os.path.join(local, "tld.dat"), "w", encoding="utf-8") as handle:
            handle.write("com\nnet\norg\nexample\ntest\n")
        for module in DISABLED_MODULES:
            with open(os.path.join(local, "local.d", f"{module}.conf"), "w",
                      encoding="utf-8") as handle:
                handle.write("enabled = false;\n")

    def start(self, timeout: float = 30.0) -> Rspamd:
        local = self.directory
        cmd = [self.binary, "-f", "-c", os.path.join(local, "rspamd.conf"),
               f"--var=LOCAL_CONFDIR={local}", f"--var=DBDIR={local}",
               f"--var=RUNDIR={local}", f"--var=LOGDIR={local}"]
        if os.geteuid() == 0:
            cmd.append("-i")  # workers keep root: nothing to protect in a test's temp dir
        began = time.monotonic()
        with open(os.path.join(local, "stdout.log"), "ab") as output:
            self.process = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

        def answering() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"rspamd exited ({self.process.returncode}): "
                                     f"{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as answer:
                    return bool(answer.read().strip() == b"pong")
            except OSError:
                return False

        # The deadline is generous for a loaded CI machine; rspamd normally answers in ~1 s.
        wait_for(answering, timeout, interval=0.05, message="rspamd to answer /ping")
        self.start_time = time.monotonic() - began
        return self

    def check(self, message: bytes, **headers: str) -> dict[str, object]:
        """rspamd's raw ``/checkv2`` answer, asked with urllib (a second opinion for tests)."""
        request = urllib.request.Request(f"{self.url}/checkv2", data=message, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            result: dict[str, object] = json.load(answer)
        return result

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "rspamd.log"):
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8",
                          errors="replace") as handle:
                    parts.append(handle.read())
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def stop(self) -> None:
        """Terminate rspamd's main process and its workers; kill them if they linger."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        group = process.pid  # start_new_session: the group is ours alone
        os.killpg(group, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            process.wait()
        # Workers exit with the main process; make sure none is left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)

    def close(self) -> None:
        """stop() and remove the temporary directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Rspamd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
