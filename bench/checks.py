#!/usr/bin/env python3
"""checks.py - issue 12's benchmark: inbound SMTP with sender authentication on, beside geomail
without it and beside Postfix, in one run.

One dnsmasq on 127.0.0.1 (a free high port, cache on as a VPS's caching resolver would have it)
answers for the sender domain ``sender.bench``: SPF ``v=spf1 ip4:127.0.0.1 -all``, a DKIM key
(RSA 2048, made here with ``cryptography``) at ``s1._domainkey.sender.bench``, DMARC
``v=DMARC1; p=reject``, and PTR 127.0.0.1 -> client.sender.bench -> A 127.0.0.1 (iprev pass).
One 1 KiB message (From: news@sender.bench) is DKIM-signed with dkimpy (relaxed/relaxed) and
sent as-is by Postfix's ``smtp-source -F`` (MAIL FROM news@sender.bench, one connection per
message, ``-s 100``) to three targets, the order rotated every repetition:

  postfix          mailbench.py's private Postfix (virtual(8) Maildir), the same message file;
  geomail          ``$GEOMAIL_CMD`` with the default ``checks:``: 127.0.0.1 is in the default
                   ``checks.skip_networks``, so nothing is checked (the no-check figure);
  geomail-checks   the same build with ``checks: {skip_networks: []}``: SPF, DKIM, ARC, DMARC,
                   iprev and Authentication-Results for every message, DNS from the dnsmasq.

Per repetition and target: M messages, msgs/s = M / (time until the M-th file is in the Maildir
and nothing is in flight). Meanwhile a probe client (one more connection, plain socket) sends
NOOP every 5 ms to the geomail under load and records each reply's latency: a hub blocked on a
DNS answer or on verification would show as a max near that time. Before the repetitions each
target takes a warm-up load (not counted) whose stored copies are checked: the signed message
byte for byte after our trace fields, and geomail-checks' Authentication-Results saying
spf=pass dkim=pass dmarc=pass (printed). Last, the slow-DNS phase (``--slow``): messages from
``slow.bench``, whose ``_dmarc`` name dnsmasq forwards to a dead port, so each message waits
``relay.dns_timeout`` (2 s) for DMARC; NOOP latency meanwhile must stay low.

    .venv/bin/python bench/checks.py                          # as root: 5 reps x 1,500 msgs, ~70 s
    .venv/bin/python bench/checks.py --reps 1 --messages 300  # smoke

Needs root (Postfix instance), postfix (smtp-source), dnsmasq-base, the project's venv (dkimpy,
cryptography). Results: bench/run/checks-<stamp>/ (results.json, summary.md, logs).
"""

import argparse
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import benchkit as bk

mb = bk.mailbench
HOST = "127.0.0.1"
PORTS = {"postfix": 2535, "geomail": 2536, "geomail-checks": 2537}
DOMAIN = mb.DOMAIN  # bench.test: the recipients' domain (mailbench's Postfix serves it)
RCPT = mb.RCPT
SENDER_DOMAIN = "sender.bench"
SLOW_DOMAIN = "slow.bench"  # its _dmarc name is forwarded to a port where nobody answers
CLIENT_NAME = "client.sender.bench"
SELECTOR = "s1"
DNS_TIMEOUT = "2s"
TARGETS = ["postfix", "geomail", "geomail-checks"]
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


# ---------------------------------------------------------------------- DNS and the message


def free_udp_tcp_port():
    """A port free for UDP and TCP on HOST (dnsmasq binds both, without SO_REUSEADDR)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port = u.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind((HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for UDP and TCP")


def dkim_key():
    """(PKCS#1 PEM private key, the DKIM TXT record publishing it) - RSA 2048 (RFC 6376 3.3.1)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


class Dnsmasq:
    """dnsmasq answering for *.bench and 127.in-addr.arpa only; stopped by PID."""

    def __init__(self, run, record):
        self.port = free_udp_tcp_port()
        dead = free_udp_tcp_port()  # nobody listens there: lookups forwarded to it time out
        self.argv = [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "-C", "/dev/null", "--no-resolv", "--no-hosts",
                     "--keep-in-foreground", f"--port={self.port}", f"--listen-address={HOST}",
                     "--bind-interfaces", "--pid-file=", "--log-facility=-", "--local-ttl=300",
                     "--local=/bench/", "--local=/127.in-addr.arpa/",
                     f"--ptr-record=1.0.0.127.in-addr.arpa,{CLIENT_NAME}", f"--host-record={CLIENT_NAME},{HOST}",
                     f"--server=/_dmarc.{SLOW_DOMAIN}/{HOST}#{dead}"]
        for domain in (SENDER_DOMAIN, SLOW_DOMAIN):
            self.argv += [f"--txt-record={domain},v=spf1 ip4:{HOST} -all",
                          f"--txt-record={SELECTOR}._domainkey.{domain},{record}"]
        self.argv.append(f"--txt-record=_dmarc.{SENDER_DOMAIN},v=DMARC1; p=reject")
        if os.geteuid() == 0:
            self.argv.append("--user=root")  # no privilege drop: it serves a benchmark on loopback
        self.proc = bk.Proc(self.argv, os.path.join(run, "dnsmasq.log"))

    @property
    def nameserver(self):
        return f"{HOST}:{self.port}"

    def ask(self, name, rdtype="TXT"):
        """One answer through dnsmasq (dig-free: dnspython from the venv)."""
        import dns.resolver
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port, r.lifetime = [HOST], self.port, 1.0
        return [x.to_text() for x in r.resolve(name, rdtype, search=False)]

    def wait(self):
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if not self.proc.alive():
                raise RuntimeError("dnsmasq exited; see dnsmasq.log in the run directory")
            with contextlib.suppress(Exception):
                return self.ask(f"_dmarc.{SENDER_DOMAIN}")
            time.sleep(0.05)
        raise RuntimeError("dnsmasq does not answer")


def signed_message(domain, pem, size):
    """A CRLF message from news@<domain> with ~size octets of body, DKIM-signed (relaxed/relaxed)."""
    head = (f"From: News <news@{domain}>\r\nTo: {RCPT}\r\nSubject: checks benchmark\r\n"
            f"Date: Sun, 06 Dec 2026 06:00:00 +0000\r\nMessage-ID: <bench.{domain}@{domain}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"  # 74 octets
    body = (line * (size // len(line) + 1))[:size - 2].rstrip("\r\n") + "\r\n"
    message = (head + body).encode()
    sig = dkim.sign(message, SELECTOR.encode(), domain.encode(), pem, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=SIGNED_HEADERS)
    return sig + message


def write_message_file(path, message):
    """smtp-source -F appends CRLF to each line it reads: the file has bare LF endings."""
    assert b"\n." not in message and not message.startswith(b".")  # -F would dot-stuff those lines
    with open(path, "wb") as f:
        f.write(message.replace(b"\r\n", b"\n"))


# ---------------------------------------------------------------------- geomail targets


class Geomail:
    """One geomail (``$GEOMAIL_CMD``), SMTP only, as mailbench.py's target plus ``checks``/``relay``."""

    def __init__(self, name, run, owner, nameserver, checks, checks_extra=""):
        self.name, self.port, self.owner, self.checks = name, PORTS[name], owner, checks
        self.root = bk.fresh_dir(run, name)
        self.data = os.path.join(self.root, "data")
        os.makedirs(self.data, mode=0o700)
        if owner:
            os.chown(self.data, *owner)
        self.conf = os.path.join(self.root, "geomail.yaml")
        user = f"user: {bk.geomail_user_name()}" if owner else "user: root"
        extra = f", {checks_extra}" if checks_extra else ""
        checks_line = f"checks: {{skip_networks: []{extra}}}   # check 127.0.0.1 too" if checks else \
            "# checks: defaults (127.0.0.0/8 is in checks.skip_networks: nothing is checked)"
        with open(self.conf, "w") as f:
            f.write(f"""\
# written by bench/checks.py
hostname: mx.{DOMAIN}
domains: [{DOMAIN}]
data_dir: {self.data}
{user}
store: {{format: maildir, path: {self.data}/mail}}
users:
  {RCPT}: {{}}
listen:
  smtp: ["{HOST}:{self.port}"]
relay: {{nameservers: ["{nameserver}"], dns_timeout: {DNS_TIMEOUT}}}
# per-IP limits raised as in mailbench.py (the load comes from one address); the NOOP probe
# sends thousands of NOOPs on one session (junk commands, smtpd_junk_command_limit)
limits: {{max_connections: 20000, max_connections_per_ip: 20000, shutdown_grace: 5s, junk_command_limit: 1000000}}
log: {{level: info}}
{checks_line}
""")
        self.proc = None
        self.logpath = os.path.join(self.root, "geomail.log")

    def maildir(self):
        return os.path.join(self.data, "mail", DOMAIN, mb.USER)

    def delivered(self):
        md = self.maildir()
        return mb.count_files(os.path.join(md, "new")) + mb.count_files(os.path.join(md, "cur"))

    def settled(self):
        return True  # geomail delivers before its 250

    def reset_maildir(self):
        if os.path.isdir(self.maildir()):
            mb.trash_maildir(self.maildir(), self.owner)

    def junk(self):
        return mb.count_files(os.path.join(self.maildir(), ".Junk", "new"))

    def start(self):
        bk.free_or_die(HOST, self.port)
        self.proc = bk.Proc([mb.GEOMAIL_CMD, "serve", "-c", self.conf], self.logpath)
        if not bk.wait_banner(HOST, self.port, 60):
            raise RuntimeError(f"{self.name} did not answer; see {self.logpath}")

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def cpu(self):
        return bk.thread_cpu_seconds(self.proc.pid) if self.proc else None


class PostfixTarget(mb.PostfixTarget):
    """mailbench.py's private Postfix on this script's own port."""

    def __init__(self):
        super().__init__(port=PORTS["postfix"])

    def cpu(self):
        pids = self.pids()
        return (sum(bk.cpu_seconds(p) or 0 for p in pids), 0.0) if pids else None


# ---------------------------------------------------------------------- load and probe


class NoopProbe(threading.Thread):
    """One SMTP session that sends NOOP every ``interval`` s and records each reply's latency."""

    def __init__(self, port, interval):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.lat = []  # seconds
        self.worst_at = None  # seconds since the first NOOP
        self.error = None
        self.halt = threading.Event()
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self._reply()
        self.sock.sendall(b"EHLO probe.client.test\r\n")
        self._reply()

    def _reply(self):
        while True:
            line = self.reader.readline()
            if not line or line[3:4] != b"-":
                return line

    def run(self):
        start = time.perf_counter()
        try:
            while not self.halt.is_set():
                t0 = time.perf_counter()
                self.sock.sendall(b"NOOP\r\n")
                line = self._reply()
                dt = time.perf_counter() - t0
                if not line.startswith(b"250"):
                    self.error = f"NOOP -> {line!r}"
                    return
                if not self.lat or dt > max(self.lat):
                    self.worst_at = t0 - start
                self.lat.append(dt)
                self.halt.wait(self.interval)
        except OSError as e:
            self.error = repr(e)

    def finish(self):
        self.halt.set()
        self.join(timeout=40)
        with contextlib.suppress(OSError):
            self.sock.sendall(b"QUIT\r\n")
            self.sock.close()
        ms = [1e3 * x for x in self.lat]
        return {"noops": len(ms), "p50_ms": bk.pct(ms, 50), "p99_ms": bk.pct(ms, 99),
                "max_ms": max(ms) if ms else None, "max_at_s": self.worst_at, "error": self.error}


def smtp_source(port, m, conc, msgfile, sender, timeout):
    argv = ["smtp-source", "-s", str(conc), "-m", str(m), "-F", msgfile, "-f", sender, "-t", RCPT,
            "-M", CLIENT_NAME, f"{bk.loopback(HOST)}:{port}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def load(target, m, conc, msgfile, sender, probe_interval, budget):
    """One measured load: M messages at concurrency conc, counted in the Maildir."""
    target.reset_maildir()
    probe = NoopProbe(target.port, probe_interval) if probe_interval else None
    cpu0 = target.cpu()
    if probe:
        probe.start()
    t0 = time.monotonic()
    r = smtp_source(target.port, m, conc, msgfile, sender, budget)
    t1 = time.monotonic()
    got = mb.wait_delivered(target, m, budget)
    t2 = time.monotonic()
    cpu1 = target.cpu()
    out = {"messages": m, "delivered": got, "seconds": t2 - t0, "accepted_seconds": t1 - t0,
           "e2e_rate": m / (t2 - t0) if got >= m else None, "smtp_source_rc": r.returncode,
           "smtp_source_err": (r.stderr or r.stdout).strip()[-300:], "loadavg": bk.loadavg()}
    if cpu0 and cpu1:
        out["cpu_main"] = (cpu1[0] - cpu0[0]) / (t2 - t0)
        out["cpu_threads"] = (cpu1[1] - cpu0[1]) / (t2 - t0)
    if probe:
        out["noop"] = probe.finish()
    return out


# ---------------------------------------------------------------------- stored copies


def newest_file(maildir):
    d = os.path.join(maildir, "new")
    names = sorted(os.listdir(d), key=lambda n: os.path.getmtime(os.path.join(d, n)))
    return os.path.join(d, names[-1]) if names else None


def check_stored(target, message):
    """The last stored copy: the signed message byte for byte (LF endings) after our trace fields.
    Returns (the added fields' names, the Authentication-Results field unfolded or None)."""
    path = newest_file(target.maildir())
    if path is None:
        raise RuntimeError(f"{target.name}: nothing stored")
    with open(path, "rb") as f:
        stored = f.read().replace(b"\r\n", b"\n")
    # smtp-source -F ends the data with an empty line before the dot (the file's last line is
    # followed by CRLF, then CRLF.CRLF): trailing empty lines are not content (RFC 6376 3.4.4)
    stored, expected = stored.rstrip(b"\n") + b"\n", message.replace(b"\r\n", b"\n")
    if not stored.endswith(expected):
        raise RuntimeError(f"{target.name}: the stored copy {path} is not the signed message plus trace fields")
    added = stored[:-len(expected)].decode("utf-8", "replace")
    names = re.findall(r"^([A-Za-z-]+):", added, re.M)
    ar = re.search(r"^Authentication-Results:.*(?:\n[ \t].*)*", added, re.M)
    return names, (re.sub(r"\s+", " ", ar.group(0)) if ar else None)


def verdicts(ar):
    return {k: v for k, v in re.findall(r"(?<![.\w])(spf|dkim|dmarc|iprev|arc)=(\w+)", ar or "")}


# ---------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--messages", type=int, default=1500, help="per target and repetition")
    ap.add_argument("--conc", type=int, default=100)
    ap.add_argument("--size", type=int, default=1024, help="body octets of the signed message")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--noop-interval", type=float, default=0.005)
    ap.add_argument("--slow", type=int, default=40, help="messages of the slow-DNS phase (0: skip it)")
    ap.add_argument("--budget", type=float, default=450, help="wall-clock seconds before no new repetition starts")
    ap.add_argument("--checks-extra", default="", metavar="YAML",
                    help="more keys for geomail-checks' checks: section, to see what costs what, e.g. "
                         "'dkim: false, arc: false'")
    ap.add_argument("--keep-data", action="store_true")
    a = ap.parse_args()
    if not (1 <= a.reps <= 20 and a.conc <= a.messages <= 10000 and 1 <= a.conc <= 500 and 0 <= a.slow <= 200
            and 256 <= a.size <= 1 << 20 and 0 <= a.warmup <= 2000 and 0.001 <= a.noop_interval <= 1):
        raise SystemExit("bounds: reps 1..20, messages conc..10000, conc 1..500, slow 0..200, size 256..1 MiB")
    if os.geteuid() != 0:
        raise SystemExit("run as root (the private Postfix instance)")
    for port in PORTS.values():
        bk.free_or_die(HOST, port)
    t_start = time.monotonic()
    run = bk.make_run_dir("checks")
    mb.RUN = run  # PostfixTarget and trash_maildir() work below the run directory
    owner = bk.geomail_owner()
    info = bk.sysinfo()
    info.update({"args": vars(a), "run": run, "geomail_cmd": mb.GEOMAIL_CMD,
                 "dns": "dnsmasq, default cache (150 names), local records TTL 300 s",
                 "version": subprocess.run([mb.GEOMAIL_CMD, "--version"], capture_output=True, text=True,
                                           timeout=60).stdout.strip()})
    bk.log("run dir", run, "load", info["loadavg"])
    pem, record = dkim_key()
    msg = signed_message(SENDER_DOMAIN, pem, a.size)
    slow_msg = signed_message(SLOW_DOMAIN, pem, a.size)
    msgfile, slowfile = os.path.join(run, "message.eml"), os.path.join(run, "slow.eml")
    write_message_file(msgfile, msg)
    write_message_file(slowfile, slow_msg)
    info["message_octets"] = len(msg)
    dns = None
    targets = {}
    res = {"rounds": [], "warmup": {}, "slow": None, "stored": {}}
    try:
        dns = Dnsmasq(run, record)
        info["dmarc_record"] = dns.wait()
        info["dkim_record"] = dns.ask(f"{SELECTOR}._domainkey.{SENDER_DOMAIN}")
        info["ptr"] = dns.ask("1.0.0.127.in-addr.arpa", "PTR")
        bk.log(f"dnsmasq on {dns.nameserver}: _dmarc {info['dmarc_record']}, PTR {info['ptr']}")
        targets = {"postfix": PostfixTarget(),
                   "geomail": Geomail("geomail", run, owner, dns.nameserver, checks=False),
                   "geomail-checks": Geomail("geomail-checks", run, owner, dns.nameserver, checks=True,
                                             checks_extra=a.checks_extra)}
        for t in targets.values():
            t.start()
        # warm-up (not counted), then the stored copies are what was signed
        for name, t in targets.items():
            if a.warmup:
                w = load(t, a.warmup, min(a.conc, a.warmup), msgfile, f"news@{SENDER_DOMAIN}", 0, 120)
                res["warmup"][name] = w
                if w["delivered"] < a.warmup:
                    raise RuntimeError(f"{name}: warm-up delivered {w['delivered']}/{a.warmup}: {w['smtp_source_err']}")
            else:
                load(t, 1, 1, msgfile, f"news@{SENDER_DOMAIN}", 0, 60)
            names, ar = check_stored(t, msg)
            res["stored"][name] = {"added_fields": names, "authentication_results": ar}
            bk.log(f"{name}: stored copy = signed message + {names}")
        ar = res["stored"]["geomail-checks"]["authentication_results"]
        bk.log(f"geomail-checks stored copy: {ar}")
        v = verdicts(ar)
        if not all(v.get(k) == "pass" for k in ("spf", "dkim", "dmarc") if k in v or not a.checks_extra):
            raise RuntimeError(f"geomail-checks did not pass spf/dkim/dmarc: {ar}")
        if res["stored"]["geomail"]["authentication_results"]:
            raise RuntimeError("the no-check geomail wrote Authentication-Results: it checked")
        # measured repetitions, order rotated
        for rep in range(a.reps):
            if rep and time.monotonic() - t_start > a.budget:
                bk.log(f"budget of {a.budget:.0f} s reached: stopping after {rep} repetitions")
                break
            order = TARGETS[rep % 3:] + TARGETS[:rep % 3]
            rnd = {}
            for name in order:
                t = targets[name]
                rnd[name] = load(t, a.messages, a.conc, msgfile, f"news@{SENDER_DOMAIN}",
                                 a.noop_interval if name != "postfix" else 0, 300)
                time.sleep(1)
            res["rounds"].append(rnd)
            bk.log(f"rep {rep + 1}: " + ", ".join(
                f"{n} {rnd[n]['e2e_rate'] or 0:.0f}/s" + (f" (NOOP max {rnd[n]['noop']['max_ms']:.1f} ms)"
                                                          if "noop" in rnd[n] else "") for n in order)
                + f"; load {bk.loadavg()}")
        gc = targets["geomail-checks"]
        if gc.junk():
            bk.log(f"WARNING: geomail-checks put {gc.junk()} messages in Junk")
        # slow DNS: DMARC of slow.bench waits for relay.dns_timeout
        if a.slow:
            s = load(gc, a.slow, a.slow, slowfile, f"news@{SLOW_DOMAIN}", a.noop_interval, 120)
            names, sar = check_stored(gc, slow_msg)
            s["authentication_results"] = sar
            res["slow"] = s
            bk.log(f"slow-DNS phase: {a.slow} messages in {s['seconds']:.1f} s, NOOP max "
                   f"{s['noop']['max_ms']:.1f} ms; AR: {sar}")
    finally:
        for t in targets.values():
            with contextlib.suppress(Exception):
                t.stop()
        if dns:
            dns.proc.stop()
        info["loadavg_at_end"] = bk.loadavg()
        info["seconds"] = time.monotonic() - t_start
        bk.write_json(os.path.join(run, "results.json"), {"info": info, "results": res})
    report = render(res, info, a)
    with open(os.path.join(run, "summary.md"), "w") as f:
        f.write(report + "\n")
    print(report)
    bk.log(f"results: {run}/results.json ({info['seconds']:.0f} s)")
    if not a.keep_data:
        for t in targets.values():
            if isinstance(t, Geomail):
                shutil.rmtree(t.data, ignore_errors=True)
        for sub in ("trash", "postfix-vmail", "postfix-queue"):
            shutil.rmtree(os.path.join(run, sub), ignore_errors=True)
        bk.mark_cleanup(os.path.basename(run))


def render(res, info, a):
    rounds = res["rounds"]

    def rates(n):
        return [r[n]["e2e_rate"] for r in rounds]

    def ratio(n, d):
        return [x / y for x, y in zip(rates(n), rates(d), strict=True) if x and y]

    def noop(n, key):
        return bk.med_range([r[n]["noop"][key] for r in rounds if r[n].get("noop")])

    def cpu(n, key):
        return bk.med_range([100 * r[n][key] for r in rounds if key in r[n]])

    out = [f"geomail {info['geomail_git']} ({info['geomail_cmd']}); {len(rounds)} reps x {a.messages} msgs, "
           f"c={a.conc}, signed message {info['message_octets']} octets (smtp-source -F); DNS: {info['dns']}; "
           f"load {info['loadavg'][0]} -> {info['loadavg_at_end']}", ""]
    rows = []
    for n in TARGETS:
        rows.append([n, bk.fmt_mr(bk.med_range(rates(n))), "-" if n == "postfix" else bk.fmt_mr(cpu(n, "cpu_main"), 0),
                     "-" if n == "postfix" else bk.fmt_mr(cpu(n, "cpu_threads"), 0),
                     *(("-", "-", "-") if n == "postfix" else
                       (bk.fmt_mr(noop(n, "p50_ms"), 2), bk.fmt_mr(noop(n, "p99_ms"), 1),
                        bk.fmt_mr(noop(n, "max_ms"), 1)))])
    out.append(bk.md_table(["target", "msgs/s in Maildir", "CPU % hub thread (postfix: all)", "CPU % other threads",
                            "NOOP p50 ms", "NOOP p99 ms", "NOOP max ms"], rows))
    ck = bk.med_range(ratio("geomail-checks", "geomail"))
    out += ["", "ratios per repetition, median [min..max]:",
            f"- geomail-checks / geomail (no checks): **{bk.fmt_mr(ck, 2)}** "
            f"(goal >= 0.75: {'met' if ck and ck['median'] >= 0.75 else 'not met'})",
            f"- geomail-checks / postfix: {bk.fmt_mr(bk.med_range(ratio('geomail-checks', 'postfix')), 2)}",
            f"- geomail / postfix: {bk.fmt_mr(bk.med_range(ratio('geomail', 'postfix')), 2)}"]
    if res["slow"]:
        s = res["slow"]
        nz = s["noop"]
        out += ["", f"slow DNS (_dmarc.{SLOW_DOMAIN} unanswered, relay.dns_timeout {DNS_TIMEOUT}): {s['messages']} "
                f"messages at once to geomail-checks, all in the Maildir after {s['seconds']:.1f} s; NOOP meanwhile "
                f"p50 {bk.fmt(nz['p50_ms'], 2)} / p99 {bk.fmt(nz['p99_ms'], 1)} / max {bk.fmt(nz['max_ms'], 1)} ms "
                f"({nz['noops']} NOOPs{', error ' + nz['error'] if nz['error'] else ''})",
                f"  AR: {s['authentication_results']}"]
    out += ["", f"geomail-checks stored copy: {res['stored']['geomail-checks']['authentication_results']}",
            "per rep msgs/s (" + "/".join(TARGETS) + "): " + ", ".join(
                "/".join(f"{r[n]['e2e_rate'] or 0:.0f}" for n in TARGETS) for r in rounds)]
    errs = [f"{n} rep {i + 1}: {r[n]['noop']['error']}" for i, r in enumerate(rounds) for n in TARGETS
            if r[n].get("noop", {}).get("error")]
    if errs:
        out.append("NOOP probe errors: " + "; ".join(errs))
    return "\n".join(out)


def on_sigterm(_signum, _frame):
    raise SystemExit(143)  # the finally block stops everything


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even where started with SIGINT ignored
    main()
