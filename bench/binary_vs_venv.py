#!/usr/bin/env python3
"""binary_vs_venv.py - issue 6's benchmark: the PyInstaller one-file binary against the venv install.

A = ``.venv/bin/geomail`` (the editable install of this checkout), B = ``dist/geomail`` (``make
binary``; ``--build`` runs it first). Same configuration for both (SMTP on 127.0.0.1, Maildir
store, limits per IP raised as in mailbench.py because the load comes from one address, started
as root and dropping to the bench user like bench/README.md describes), each with its own fresh
``data_dir``. Interleaved, the order alternating every round:

  start-up   exec -> first SMTP banner: the time from just before ``Popen`` (fork+exec) until a
             TCP connection to the SMTP listener reads a ``220`` line (polled every 2 ms), then
             SIGTERM; ``--startup-rounds`` rounds. Also ``geomail --version`` under
             /usr/bin/time (wall and peak RSS), and each server's memory once idle.
  inbound    both servers running; per round and server: ``smtp-source -s 100 -m M -l 1024``
             (one connection per message), then wait until the M-th file is in the Maildir:
             M / (time until then) is the e2e rate (geomail fsyncs before 250, so accepted ~= e2e);
             the server's CPU over the load. ``--tput-rounds`` rounds after a warm-up of 200
             messages each. Delivered files are moved aside, never deleted, until the end.

Reported: medians [min..max], per-round ratios B/A, the goal (B not slower than A by more than
5 %: start-up time ratio <= 1.05, throughput ratio >= 0.95), and the binary's size.

    .venv/bin/python bench/binary_vs_venv.py --build     # rebuild dist/geomail first, ~4 min in all
    .venv/bin/python bench/binary_vs_venv.py --startup-rounds 2 --tput-rounds 1 --messages 500   # smoke

Needs smtp-source (postfix package). Results: bench/run/binary-<stamp>/.
"""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import benchkit as bk

mb = bk.mailbench
PORTS = {"venv": 2828, "binary": 2829}
DOMAIN = "bench.test"
RCPT = f"bench@{DOMAIN}"


def sources_digest():
    h = hashlib.sha256()
    newest = 0.0
    for d, _dirs, files in sorted(os.walk(os.path.join(bk.PROJECT, "geomail"))):
        for n in sorted(files):
            if n.endswith(".py"):
                p = os.path.join(d, n)
                newest = max(newest, os.path.getmtime(p))
                with open(p, "rb") as f:
                    h.update(p.encode() + b"\0" + f.read())
    return h.hexdigest()[:12], newest


class Server:
    def __init__(self, name, cmd, run, owner, port=None):
        self.name, self.cmd, self.port = name, cmd, port or PORTS[name]
        self.root = bk.fresh_dir(run, name)
        self.data = os.path.join(self.root, "data")
        os.makedirs(self.data, mode=0o700)
        if owner:
            os.chown(self.data, *owner)
        self.owner = owner
        self.conf = os.path.join(self.root, "geomail.yaml")
        user = f"user: {bk.geomail_user_name()}" if owner else ""
        with open(self.conf, "w") as f:
            f.write(f"""\
# written by bench/binary_vs_venv.py (as mailbench.py's geomail target, SMTP only)
hostname: mx.{DOMAIN}
domains: [{DOMAIN}]
data_dir: {self.data}
{user}
store: {{format: maildir, path: {self.data}/mail}}
users:
  {RCPT}: {{}}
listen:
  smtp: ["127.0.0.1:{self.port}"]
relay: {{nameservers: ["127.0.0.1:9"]}}   # nothing leaves loopback
limits: {{max_connections: 20000, max_connections_per_ip: 20000, shutdown_grace: 5s}}
log: {{level: info}}
""")
        self.proc = None
        self.logpath = os.path.join(self.root, "geomail.log")

    def maildir(self):
        return os.path.join(self.data, "mail", DOMAIN, "bench")

    def delivered(self):
        md = self.maildir()
        return mb.count_files(os.path.join(md, "new")) + mb.count_files(os.path.join(md, "cur"))

    def start_timed(self, timeout=60.0):
        """exec -> first 220 banner, seconds."""
        t0 = time.monotonic()
        self.proc = bk.Proc([self.cmd, "serve", "-c", self.conf], self.logpath)
        end = t0 + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    buf = b""
                    while b"\n" not in buf:
                        chunk = s.recv(512)
                        if not chunk:
                            break
                        buf += chunk
                    if buf.startswith(b"220"):
                        return time.monotonic() - t0
            except OSError:
                pass
            if not self.proc.alive():
                raise RuntimeError(f"{self.name} exited {self.proc.p.returncode}; see {self.logpath}")
            time.sleep(0.002)
        raise RuntimeError(f"{self.name}: no banner within {timeout}s")

    def stop(self):
        if self.proc:
            t0 = time.monotonic()
            self.proc.stop()
            self.proc = None
            return time.monotonic() - t0
        return None

    def pids(self):
        return [self.proc.pid, *mb.children_of(self.proc.pid)] if self.proc else []


def version_time(cmd):
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", cmd, "--version"], capture_output=True, text=True,
                       timeout=60)
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("TIME ")][-1].split()
    return float(line[1]), int(line[2])


def smtp_load(srv, m, conc, size, timeout):
    argv = ["smtp-source", "-s", str(conc), "-m", str(m), "-l", str(size), "-f", "load@client.test", "-t", RCPT,
            f"127.0.0.1:{srv.port}"]
    before = srv.delivered()
    cpu0 = bk.tree_cpu_seconds(srv.proc.pid)
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    t1 = time.monotonic()
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source: {(r.stderr or r.stdout)[-300:]}")
    end = t0 + timeout
    while srv.delivered() - before < m and time.monotonic() < end:
        time.sleep(0.01)
    t2 = time.monotonic()
    got = srv.delivered() - before
    cpu1 = bk.tree_cpu_seconds(srv.proc.pid)
    return {"accepted_rate": m / (t1 - t0), "e2e_rate": m / (t2 - t0) if got >= m else None, "got": got,
            "seconds": t2 - t0, "server_cpu": (cpu1 - cpu0) / (t2 - t0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="run `make binary` first")
    ap.add_argument("--venv", default=bk.VENV_GEOMAIL)
    ap.add_argument("--binary", default=bk.BINARY_GEOMAIL)
    ap.add_argument("--startup-rounds", type=int, default=8)
    ap.add_argument("--tput-rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--conc", type=int, default=100)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="another geomail executable for the start-up rows only (informational), e.g. a "
                         "one-dir or stripped PyInstaller build made elsewhere")
    ap.add_argument("--keep-data", action="store_true")
    a = ap.parse_args()
    # A user's venv has its modules' bytecode cached; where the environment forbids writing it
    # (this box sets PYTHONDONTWRITEBYTECODE), the venv would compile ~70 modules at every start.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if not (1 <= a.startup_rounds <= 30 and 0 <= a.tput_rounds <= 20 and a.conc <= a.messages <= 20000
            and 1 <= a.conc <= 500):
        raise SystemExit("bounds: startup-rounds 1..30, tput-rounds 0..20, messages conc..20000, conc 1..500")
    for p in PORTS.values():
        bk.free_or_die("127.0.0.1", p)
    if a.build:
        bk.log("make binary ...")
        t0 = time.monotonic()
        subprocess.run(["make", "-C", bk.PROJECT, "binary"], check=True, timeout=900, stdout=subprocess.DEVNULL)
        bk.log(f"built in {time.monotonic() - t0:.0f}s")
    digest, newest = sources_digest()
    bin_mtime = os.path.getmtime(a.binary)
    if newest > bin_mtime:
        bk.log("WARNING: geomail/ has sources newer than the binary: B runs older code than A (use --build)")
    run = bk.make_run_dir("binary")
    mb.RUN = run  # mailbench.trash_maildir() moves delivered mail below run/trash
    owner = bk.geomail_owner() if os.geteuid() == 0 else None
    info = bk.sysinfo()
    info.update({"args": vars(a), "run": run, "binary_bytes": os.path.getsize(a.binary),
                 "binary_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(bin_mtime)),
                 "sources_digest_at_start": digest, "sources_newer_than_binary": newest > bin_mtime,
                 "version": subprocess.run([a.venv, "--version"], capture_output=True, text=True).stdout.strip()})
    bk.log("run dir", run, json.dumps({k: v for k, v in info.items() if k != "args"}))
    servers = {"venv": Server("venv", a.venv, run, owner), "binary": Server("binary", a.binary, run, owner)}
    names = ["venv", "binary"]
    for i, spec in enumerate(a.variant):
        vname, _, vpath = spec.partition("=")
        bk.free_or_die("127.0.0.1", 2830 + i)
        servers[vname] = Server(vname, os.path.abspath(vpath), run, owner, port=2830 + i)
        info.setdefault("variants", {})[vname] = {"path": vpath, "bytes": os.path.getsize(vpath)}
    startup_names = list(servers)
    res = {"startup": {n: [] for n in startup_names}, "stop": {n: [] for n in startup_names},
           "version": {n: [] for n in startup_names}, "idle_mem": {n: [] for n in startup_names},
           "tput": {n: [] for n in names}}
    try:
        # ---- --version under /usr/bin/time, then start-up to the first banner
        for n in startup_names:
            version_time(servers[n].cmd)  # warm the page cache, not counted
            servers[n].start_timed()  # and the venv's bytecode cache (see main())
            servers[n].stop()
        for rnd in range(a.startup_rounds):
            order = startup_names if rnd % 2 == 0 else startup_names[::-1]
            for n in order:
                res["version"][n].append(version_time(servers[n].cmd))
            for n in order:
                s = servers[n]
                dt = s.start_timed()
                time.sleep(1.0)
                res["idle_mem"][n].append(mb.mem_of(s.pids()))
                res["startup"][n].append(dt)
                res["stop"][n].append(s.stop())
                time.sleep(0.5)
            bk.log(f"startup round {rnd + 1}: " + ", ".join(f"{n} {1e3 * res['startup'][n][-1]:.0f} ms" for n in order))
        # ---- inbound SMTP, both servers up
        if a.tput_rounds:
            for n in names:
                servers[n].start_timed()
            for n in names:  # warm-up, not counted
                smtp_load(servers[n], min(200, a.messages), a.conc, a.size, 120)
                mb.trash_maildir(servers[n].maildir(), owner)
            for rnd in range(a.tput_rounds):
                order = names if rnd % 2 == 0 else names[::-1]
                for n in order:
                    mb.trash_maildir(servers[n].maildir(), owner)
                    r = smtp_load(servers[n], a.messages, a.conc, a.size, 300)
                    r["loadavg"] = bk.loadavg()
                    res["tput"][n].append(r)
                    time.sleep(1)
                bk.log(f"inbound round {rnd + 1}: " + ", ".join(
                    f"{n} {res['tput'][n][-1]['e2e_rate'] or 0:.0f} msgs/s (cpu {res['tput'][n][-1]['server_cpu']:.0%})"
                    for n in order) + f", load {bk.loadavg()}")
    finally:
        for s in servers.values():
            with contextlib.suppress(Exception):
                s.stop()
        info["sources_digest_at_end"] = sources_digest()[0]
        info["loadavg_at_end"] = bk.loadavg()
        bk.write_json(os.path.join(run, "results.json"), {"info": info, "results": res})
    report = render(res, info, a)
    with open(os.path.join(run, "summary.md"), "w") as f:
        f.write(report + "\n")
    print(report)
    if not a.keep_data:
        for s in servers.values():
            shutil.rmtree(s.data, ignore_errors=True)
        shutil.rmtree(os.path.join(run, "trash"), ignore_errors=True)
        bk.mark_cleanup(os.path.basename(run))


def render(res, info, a):
    def ratios(xa, xb):
        return [b / x for x, b in zip(xa, xb, strict=True) if x and b] if len(xa) == len(xb) else []

    out = [f"geomail {info['geomail_git']}; binary {info['binary_bytes'] / 2**20:.1f} MiB "
           f"({info['binary_bytes']:,} bytes, built {info['binary_mtime']}); sources digest "
           f"{info['sources_digest_at_start']} -> {info['sources_digest_at_end']}"
           + ("; WARNING: sources newer than the binary" if info["sources_newer_than_binary"] else "")
           + f"; load {info['loadavg'][0]} -> {info['loadavg_at_end']}", ""]
    rows = []
    su = {n: [1e3 * x for x in res["startup"][n]] for n in res["startup"]}
    r = ratios(su["venv"], su["binary"])
    rows.append(["start-up: exec -> first SMTP banner, ms", bk.fmt_mr(bk.med_range(su["venv"])),
                 bk.fmt_mr(bk.med_range(su["binary"])), bk.fmt_mr(bk.med_range(r), 2),
                 "met" if r and bk.med_range(r)["median"] <= 1.05 else "not met"])
    ve = {n: [1e3 * x[0] for x in res["version"][n]] for n in res["version"]}
    rv = ratios(ve["venv"], ve["binary"])
    rows.append(["`geomail --version`, wall ms (/usr/bin/time)", bk.fmt_mr(bk.med_range(ve["venv"])),
                 bk.fmt_mr(bk.med_range(ve["binary"])), bk.fmt_mr(bk.med_range(rv), 2), "(info)"])
    vm = {n: [x[1] / 1024 for x in res["version"][n]] for n in res["version"]}
    rows.append(["`geomail --version`, peak RSS MiB", bk.fmt_mr(bk.med_range(vm["venv"])),
                 bk.fmt_mr(bk.med_range(vm["binary"])), "-", "(info)"])
    st = {n: [1e3 * x for x in res["stop"][n] if x is not None] for n in res["stop"]}
    rows.append(["SIGTERM -> exit (idle), ms", bk.fmt_mr(bk.med_range(st["venv"])),
                 bk.fmt_mr(bk.med_range(st["binary"])),
                 "-", "(info)"])
    for key, label in (("rss_kib", "RSS"), ("pss_kib", "PSS")):
        m = {n: [x[key] / 1024 for x in res["idle_mem"][n]] for n in res["idle_mem"]}
        rows.append([f"idle server {label} 1 s after the banner, MiB (all processes)",
                     bk.fmt_mr(bk.med_range(m["venv"])),
                     bk.fmt_mr(bk.med_range(m["binary"])), "-", "(info)"])
    if res["tput"]["venv"]:
        tp = {n: [x["e2e_rate"] for x in res["tput"][n]] for n in res["tput"]}
        r = ratios(tp["venv"], tp["binary"])
        rows.append([f"inbound SMTP c={a.conc}, {a.size} B, {a.messages} msgs: msgs/s in Maildir",
                     bk.fmt_mr(bk.med_range(tp["venv"])), bk.fmt_mr(bk.med_range(tp["binary"])),
                     bk.fmt_mr(bk.med_range(r), 2), "met" if r and bk.med_range(r)["median"] >= 0.95 else "not met"])
        ac = {n: [x["accepted_rate"] for x in res["tput"][n]] for n in res["tput"]}
        rows.append(["  same, msgs/s accepted (smtp-source exit)", bk.fmt_mr(bk.med_range(ac["venv"])),
                     bk.fmt_mr(bk.med_range(ac["binary"])),
                     bk.fmt_mr(bk.med_range(ratios(ac["venv"], ac["binary"])), 2),
                     "(info)"])
        cp = {n: [100 * x["server_cpu"] for x in res["tput"][n]] for n in res["tput"]}
        rows.append(["  server CPU % during the load", bk.fmt_mr(bk.med_range(cp["venv"]), 0),
                     bk.fmt_mr(bk.med_range(cp["binary"]), 0), "-", "(info)"])
    out.append(bk.md_table(["figure", "A: venv", "B: binary", "B/A per round", "goal (B within 5 %)"], rows))
    for v in [n for n in res["startup"] if n not in ("venv", "binary")]:
        sv = [1e3 * x for x in res["startup"][v]]
        out += ["", f"variant {v} ({info['variants'][v]['path']}, {info['variants'][v]['bytes'] / 2**20:.1f} MiB): "
                f"start-up {bk.fmt_mr(bk.med_range(sv))} ms, x venv per round "
                f"{bk.fmt_mr(bk.med_range(ratios(su['venv'], sv)), 2)}; --version "
                f"{bk.fmt_mr(bk.med_range([1e3 * x[0] for x in res['version'][v]]))} ms; idle PSS "
                f"{bk.fmt_mr(bk.med_range([x['pss_kib'] / 1024 for x in res['idle_mem'][v]]))} MiB"]
    out += ["", "per round start-up ms (venv/binary): " + ", ".join(
        f"{x:.0f}/{y:.0f}" for x, y in zip(su["venv"], su["binary"], strict=False))]
    if res["tput"]["venv"]:
        out.append("per round inbound msgs/s (venv/binary): " + ", ".join(
            f"{x['e2e_rate'] or 0:.0f}/{y['e2e_rate'] or 0:.0f}" for x, y in
            zip(res["tput"]["venv"], res["tput"]["binary"], strict=False)))
    return "\n".join(out)


def on_sigterm(_signum, _frame):
    raise SystemExit(143)  # the finally blocks stop the servers


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)
    main()
