#!/usr/bin/env python3
"""outbound_postfix.py - issue 5's benchmark: geomail's outbound queue beside Postfix's, same run.

Both servers relay ``--messages`` (2,000) messages of ``--size`` (10 KiB) to ``--domains`` (20)
destination domains, found the same way: an MX lookup in DNS. One dnsmasq on 127.0.53.1:53 serves
``MX 10 mx.dN.out.test`` and ``mx.dN.out.test A 127.0.10.(N+1)`` for each domain; behind each
address an ``smtp-sink`` (discards mail, counts it with ``-c``) listens on port 25. geomail gets
the resolver through ``relay.nameservers: ["127.0.53.1:53"]`` and ``relay.mx_port: 25``. Postfix
(a private instance built like mailbench.py's ``PostfixTarget``: ``postfix -c DIR``, own queue,
loopback only) uses the C library's resolver, which reads /etc/resolv.conf: its master is
started in a private mount namespace (``unshare --mount``) where a one-line resolv.conf
(``nameserver 127.0.53.1``) is bind-mounted over /etc/resolv.conf; the system's file is not
touched and no other process sees it. No transport maps: both do MX lookups, port 25, no TLS
(smtp-sink offers none).

Each round, for each server (order alternated), on a fresh instance with a fresh queue directory:
  1. fill: the sinks are down; 20 ``smtp-source`` processes (one per domain, ``-s 2 -m 100 -l
     10240``) submit the messages over SMTP from 127.0.0.1 (trusted: Postfix ``mynetworks``,
     geomail ``relay.allow_networks``); each server tries, gets "connection refused", defers;
     wait until every message is deferred (Postfix: all in ``deferred/``; geomail: every item
     has ``attempts >= 1``);
  2. start the 20 sinks, then flush: ``postqueue -c DIR -f`` / ``geomail queue flush -c FILE``;
  3. poll (every 50 ms) until the queue is empty; count what the sinks received (must be
     ``--messages``); the servers' CPU over the delivery, from /proc.

Reported: messages delivered per second (from the end of the flush command to the empty queue),
time until the queue is empty (from the start of the flush command), per-round ratio
geomail / Postfix, and both servers' CPU. Out of the box settings on both sides: Postfix's smtp
up to 100 processes and 20 per destination (initial 5, growing); geomail ``relay.max_connections:
50`` and ``max_connections_per_domain: 5`` (``--geomail-limits`` changes them).

    .venv/bin/python bench/outbound_postfix.py              # 3 rounds, ~1.5 min
    .venv/bin/python bench/outbound_postfix.py --rounds 1 --messages 400   # smoke
    GEOMAIL_CMD=$PWD/dist/geomail .venv/bin/python bench/outbound_postfix.py

Needs root (Postfix instance, smtp-sink on port 25, dnsmasq on port 53, mount namespace).
Results: bench/run/outbound-<stamp>/. The queue directories are deleted at the end (the run's
only mass delete; wait 5 minutes before the next file-heavy run, bench/README.md).
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import benchkit as bk

sys.path.insert(0, bk.PROJECT)
from tests.support.dns import Dnsmasq  # the tests' dnsmasq runner

mb = bk.mailbench
DNS_ADDR = "127.0.53.1"
SINK_NET = "127.0.10."
POSTFIX_PORT = 2625
GEOMAIL_PORT = 2628
SENDER = "sender@client.test"


def domain(i):
    return f"d{i}.out.test"


# ---------------------------------------------------------------------------------------- sinks
class Sinks:
    """One smtp-sink per destination address, 127.0.10.(N+1):25, counting messages (-c)."""

    def __init__(self, run, n):
        self.run, self.n = run, n
        self.procs = []
        self.outs = []

    def start(self, tag):
        for i in range(self.n):
            host = bk.loopback(f"{SINK_NET}{i + 1}")
            bk.free_or_die(host, 25)
            out = os.path.join(self.run, "sinks", f"{tag}-{i}.out")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            f = open(out, "wb")  # noqa: SIM115 - closed in stop()
            p = subprocess.Popen(["smtp-sink", "-c", "-u", "nobody", "-m", "1000", f"{host}:25", "1024"],
                                 stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self.procs.append((p, f))
            self.outs.append(out)
        for i in range(self.n):
            if not bk.wait_banner(f"{SINK_NET}{i + 1}", 25, 10):
                raise RuntimeError(f"smtp-sink on {SINK_NET}{i + 1}:25 did not start")

    def cpu(self):
        return sum(bk.cpu_seconds(p.pid) or 0 for p, _ in self.procs)

    def stop(self):
        """Stop the sinks; return the messages they counted (sum of the last 'mesg=N')."""
        for p, _f in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, f in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            f.close()
        total = 0
        for out in self.outs:
            with open(out, "rb") as f:
                data = f.read().replace(b"\r", b"\n").split()
            counts = [int(w.split(b"=")[1]) for w in data if w.startswith(b"mesg=")]
            total += counts[-1] if counts else 0
        self.procs, self.outs = [], []
        return total


# -------------------------------------------------------------------------------------- servers
def fill(port, n_msgs, n_domains, size, logdir, tag):
    """20 smtp-source processes in parallel, one per domain; all must exit 0."""
    per = n_msgs // n_domains
    procs = []
    t0 = time.monotonic()
    for i in range(n_domains):
        m = per + (1 if i < n_msgs % n_domains else 0)
        argv = ["smtp-source", "-s", "2", "-m", str(m), "-l", str(size), "-f", SENDER, "-t", f"user{i}@{domain(i)}",
                f"127.0.0.1:{port}"]
        f = open(os.path.join(logdir, f"smtp-source-{tag}-{i}.log"), "wb")  # noqa: SIM115
        procs.append((subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), f, argv))
    for p, f, argv in procs:
        p.wait(300)
        f.close()
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}; see {f.name}")
    return time.monotonic() - t0


class PostfixOut(mb.PostfixTarget):
    """mailbench's private Postfix instance, relaying to the MX hosts that dnsmasq names."""

    name = "postfix"

    def __init__(self, root, resolv):
        mb.RUN = root  # PostfixTarget keeps everything below mailbench.RUN
        super().__init__(port=POSTFIX_PORT, maxproc=100)
        self.resolv = resolv

    def configure(self):
        super().configure()  # main.cf/master.cf exactly as mailbench writes them, plus:
        with open(os.path.join(self.etc, "main.cf"), "a") as f:
            f.write("# outbound bench (bench/outbound_postfix.py): MX lookups through the libc resolver, which\n"
                    "# reads the private resolv.conf bind-mounted in this instance's mount namespace\n"
                    "smtp_host_lookup = dns\n")

    def start(self):
        self.configure()
        mb.ensure_free(self.port)
        if self.pf("check") != 0:
            raise RuntimeError(f"postfix check failed, see {mb.RUN}/postfix-cmd.log")
        with open(os.path.join(mb.RUN, "postfix-cmd.log"), "ab") as lf:
            r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                'mount --bind "$1" /etc/resolv.conf && exec postfix -c "$2" start', "sh",
                                self.resolv, self.etc], stdout=lf, stderr=lf, stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed, see {mb.RUN}/postfix-cmd.log")
        self.started = True
        if not mb.wait_port(self.port):
            raise RuntimeError("postfix smtpd did not answer")

    def queue_counts(self):
        c = {}
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            c[sub] = sum(len(files) for _dp, _dn, files in os.walk(os.path.join(self.queue, sub)))
        return c

    def all_deferred(self, n):
        c = self.queue_counts()
        return c["deferred"] >= n and c["incoming"] == 0 and c["active"] == 0 and c["maildrop"] == 0

    def empty(self):
        return not any(self.queue_counts().values())

    def flush(self):
        return subprocess.run(["postqueue", "-c", self.etc, "-f"], capture_output=True, text=True, timeout=60)

    def cpu(self):
        """master (itself + its reaped children) + live children: grows monotonically."""
        pid = self.master_pid()
        if not pid:
            return None
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        fl = st[st.rindex(")") + 2:].split()
        total = sum(int(x) for x in fl[11:15]) / bk.CLK_TCK
        return total + sum(bk.cpu_seconds(c) or 0 for c in mb.children_of(pid))

    def delivered_in_log(self):
        try:
            with open(os.path.join(self.root, "maillog"), errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return {"sent": text.count("status=sent"), "deferred": text.count("status=deferred"),
                "bounced": text.count("status=bounced")}

    def data_dirs(self):
        return [self.queue]


class GeomailOut:
    name = "geomail"

    def __init__(self, root, cmd, limits):
        self.root, self.cmd = root, cmd
        self.data = os.path.join(root, "data")
        self.queue = os.path.join(self.data, "queue")
        self.conf = os.path.join(root, "geomail.yaml")
        self.owner = bk.geomail_owner() if os.geteuid() == 0 else None
        self.limits = limits
        self.proc = None

    def start(self):
        os.makedirs(self.data, mode=0o700)
        if self.owner:
            os.chown(self.data, *self.owner)
        user = f"user: {bk.geomail_user_name()}" if self.owner else ""
        with open(self.conf, "w") as f:
            f.write(f"""\
# written by bench/outbound_postfix.py
hostname: mx.geomail.test
domains: [geomail.test]
data_dir: {self.data}
{user}
listen:
  smtp: ["127.0.0.1:{GEOMAIL_PORT}"]
relay:
  nameservers: ["{DNS_ADDR}:53"]
  mx_port: 25
  allow_networks: ["127.0.0.0/8"]   # the submitting smtp-source may relay, like Postfix's mynetworks
  retry: [1h]                       # the deferred messages wait for the flush (Postfix: 300 s backoff)
  max_connections: {self.limits[0]}
  max_connections_per_domain: {self.limits[1]}
limits: {{max_connections_per_ip: 1000, shutdown_grace: 5s}}   # the fill comes from one IP (Postfix: mynetworks)
log: {{level: info}}
""")
        bk.free_or_die("127.0.0.1", GEOMAIL_PORT)
        self.proc = bk.Proc([self.cmd, "serve", "-c", self.conf], os.path.join(self.root, "geomail.log"))
        if not bk.wait_banner("127.0.0.1", GEOMAIL_PORT, 60):
            raise RuntimeError(f"geomail did not answer; see {self.root}/geomail.log")

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def items(self):
        try:
            names = os.listdir(self.queue)
        except FileNotFoundError:
            return [], 0
        return [n for n in names if n.endswith(".json")], sum(1 for n in names if n.endswith(".msg"))

    def all_deferred(self, n):
        names, _ = self.items()
        if len(names) < n:
            return False
        for name in names:
            try:
                with open(os.path.join(self.queue, name)) as f:
                    if json.load(f).get("attempts", 0) < 1:
                        return False
            except (FileNotFoundError, ValueError):
                return False
        return True

    def empty(self):
        names, bodies = self.items()
        return not names and not bodies

    def flush(self):
        return subprocess.run([self.cmd, "queue", "flush", "-c", self.conf], capture_output=True, text=True, timeout=60)

    def cpu(self):
        return bk.tree_cpu_seconds(self.proc.pid) if self.proc else None

    def threads_cpu(self):
        return bk.thread_cpu_seconds(self.proc.pid) if self.proc else None

    def delivered_in_log(self):
        with open(os.path.join(self.root, "geomail.log"), errors="replace") as f:
            text = f.read()
        return {"delivered": text.count(" delivered "), "deferred": text.count(" deferred "),
                "errors": sum(1 for ln in text.splitlines() if " ERROR " in ln)}

    def data_dirs(self):
        return [self.data]


# ------------------------------------------------------------------------------------- one cell
def measure(server, sinks, a, run, rnd):
    tag = f"r{rnd}-{server.name}"
    server.start()
    try:
        fill_s = fill(GEOMAIL_PORT if server.name == "geomail" else POSTFIX_PORT, a.messages, a.domains, a.size,
                      server.root, tag)
        t_fill = time.monotonic()
        end = t_fill + 300
        while not server.all_deferred(a.messages):
            if time.monotonic() > end:
                raise RuntimeError(f"{server.name}: not all {a.messages} messages deferred after 300 s")
            time.sleep(0.2)
        settle_s = time.monotonic() - t_fill
        time.sleep(1)
        sinks.start(tag)
        cpu0, sink0, thr0 = server.cpu(), sinks.cpu(), getattr(server, "threads_cpu", lambda: None)()
        t0 = time.monotonic()
        r = server.flush()
        t1 = time.monotonic()
        if r.returncode != 0:
            raise RuntimeError(f"{server.name} flush failed: {r.stdout} {r.stderr}")
        deadline = t0 + a.timeout
        while not server.empty():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        t2 = time.monotonic()
        cpu1, sink1, thr1 = server.cpu(), sinks.cpu(), getattr(server, "threads_cpu", lambda: None)()
        emptied = server.empty()
        time.sleep(0.5)
        got = sinks.stop()
    finally:
        with contextlib.suppress(Exception):
            sinks.stop()
        server.stop()
    res = {"server": server.name, "round": rnd, "fill_s": fill_s, "defer_settle_s": settle_s, "flush_cmd_s": t1 - t0,
           "until_empty_s": t2 - t0, "deliver_s": t2 - t1, "rate": a.messages / (t2 - t1) if emptied else None,
           "rate_from_cmd_start": a.messages / (t2 - t0) if emptied else None, "emptied": emptied,
           "sink_count": got, "server_cpu": (cpu1 - cpu0) / (t2 - t0) if cpu0 is not None and cpu1 else None,
           "sinks_cpu": (sink1 - sink0) / (t2 - t0), "log": server.delivered_in_log(), "loadavg": bk.loadavg()}
    if thr0 and thr1:
        res["hub_cpu"] = (thr1[0] - thr0[0]) / (t2 - t0)
        res["threads_cpu"] = (thr1[1] - thr0[1]) / (t2 - t0)
    bk.log(f"round {rnd} {server.name}: fill {fill_s:.1f}s (+{settle_s:.1f}s until all deferred); flush cmd "
           f"{t1 - t0:.2f}s; empty after {t2 - t0:.2f}s -> {res['rate'] or 0:.0f} msgs/s; sinks got {got}; "
           f"server cpu {res['server_cpu'] or 0:.0%}" + (f" (hub {res['hub_cpu']:.0%})" if "hub_cpu" in res else "")
           + f"; log {res['log']}; load {res['loadavg']}")
    if not emptied:
        bk.log(f"WARNING: {server.name} queue not empty after {a.timeout}s")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--domains", type=int, default=20)
    ap.add_argument("--size", type=int, default=10240, help="payload bytes per message (smtp-source -l)")
    ap.add_argument("--targets", default="geomail,postfix")
    ap.add_argument("--geomail-limits", default="50,5", help="relay.max_connections,max_connections_per_domain")
    ap.add_argument("--timeout", type=float, default=300, help="longest wait for a queue to empty, s")
    ap.add_argument("--keep-data", action="store_true", help="keep the queue directories")
    a = ap.parse_args()
    if not (1 <= a.rounds <= 10 and 1 <= a.domains <= 200 and a.domains <= a.messages <= 20000 and a.size <= 1 << 20):
        raise SystemExit("bounds: rounds 1..10, domains 1..200, messages domains..20000, size <= 1 MiB")
    if os.geteuid() != 0:
        raise SystemExit("run as root (Postfix instance, port 25 and 53 on loopback, mount namespace)")
    cmd = os.environ.get("GEOMAIL_CMD", bk.VENV_GEOMAIL)
    limits = tuple(int(x) for x in a.geomail_limits.split(","))
    run = bk.make_run_dir("outbound")
    info = bk.sysinfo()
    info.update({"geomail_cmd": cmd, "args": vars(a), "run": run,
                 "postfix": subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                                           text=True).stdout.strip()})
    bk.log("run dir", run, json.dumps({k: v for k, v in info.items() if k != "args"}))
    for p in (POSTFIX_PORT, GEOMAIL_PORT):
        bk.free_or_die("127.0.0.1", p)

    dns = Dnsmasq(port=53, ttl=300)
    dns.address = bk.loopback(DNS_ADDR)
    for i in range(a.domains):
        dns.mx(domain(i), f"mx.{domain(i)}").host(f"mx.{domain(i)}", f"{SINK_NET}{i + 1}")
    dns.start()
    resolv = os.path.join(run, "resolv.conf")
    with open(resolv, "w") as f:
        f.write(f"nameserver {DNS_ADDR}\n")
    answer = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             'mount --bind "$1" /etc/resolv.conf && exec getent ahostsv4 mx.d0.out.test', "sh", resolv],
                            capture_output=True, text=True, timeout=30).stdout.split()
    bk.log("dnsmasq up; through the private resolv.conf mx.d0.out.test ->", answer[:1])
    sinks = Sinks(run, a.domains)
    results = []
    dirs = []
    try:
        names = a.targets.split(",")
        for rnd in range(1, a.rounds + 1):
            order = names if rnd % 2 else list(reversed(names))
            for name in order:
                root = bk.fresh_dir(run, name)
                server = PostfixOut(root, resolv) if name == "postfix" else GeomailOut(root, cmd, limits)
                dirs += server.data_dirs()
                results.append(measure(server, sinks, a, run, rnd))
    finally:
        with contextlib.suppress(Exception):
            sinks.stop()
        dns.stop()
        info["loadavg_at_end"] = bk.loadavg()
        bk.write_json(os.path.join(run, "results.json"), {"info": info, "results": results})
    report = render(results, info, a)
    with open(os.path.join(run, "summary.md"), "w") as f:
        f.write(report + "\n")
    print(report)
    if not a.keep_data:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        bk.mark_cleanup(os.path.basename(run))


def render(results, info, a):
    out = [f"{a.messages} messages x {a.size} B to {a.domains} domains; geomail {info['geomail_git']} "
           f"({info['geomail_cmd']}, relay limits {a.geomail_limits}); Postfix {info['postfix']}; "
           f"{a.rounds} rounds, load {info['loadavg'][0]} -> {info.get('loadavg_at_end')}", ""]
    rows = []
    by = {}
    for r in results:
        by.setdefault(r["server"], []).append(r)
    for name, rs in by.items():
        rows.append([name, bk.fmt_mr(bk.med_range([r["rate"] for r in rs])),
                     bk.fmt_mr(bk.med_range([r["rate_from_cmd_start"] for r in rs])),
                     bk.fmt_mr(bk.med_range([r["until_empty_s"] for r in rs]), 2),
                     bk.fmt_mr(bk.med_range([r["flush_cmd_s"] for r in rs]), 2),
                     "/".join(str(r["sink_count"]) for r in rs),
                     bk.fmt_mr(bk.med_range([100 * r["server_cpu"] for r in rs if r["server_cpu"] is not None]), 0),
                     bk.fmt_mr(bk.med_range([100 * r["sinks_cpu"] for r in rs]), 0)])
    out.append(bk.md_table(["server", "delivered msgs/s (after flush cmd)", "msgs/s from flush cmd start",
                            "queue empty after, s", "flush cmd, s", "received by sinks", "server CPU %",
                            "sinks CPU %"], rows))
    if "geomail" in by and "postfix" in by and len(by["geomail"]) == len(by["postfix"]):
        ratios = [g["rate"] / p["rate"] for g, p in zip(by["geomail"], by["postfix"], strict=True)
                  if g["rate"] and p["rate"]]
        ratios2 = [g["rate_from_cmd_start"] / p["rate_from_cmd_start"]
                   for g, p in zip(by["geomail"], by["postfix"], strict=True) if g["rate"] and p["rate"]]
        out += ["", f"geomail / postfix, per round: delivered msgs/s {bk.fmt_mr(bk.med_range(ratios), 2)} "
                f"({', '.join(f'{x:.2f}' for x in ratios)}); from flush cmd start "
                f"{bk.fmt_mr(bk.med_range(ratios2), 2)}"]
    return "\n".join(out)


if __name__ == "__main__":
    main()
