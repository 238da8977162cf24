"""benchkit - what bench/auth.py, bench/outbound_postfix.py and bench/binary_vs_venv.py share.

Run directories (one per invocation, ``chattr +T`` like mailbench.py's, so ext4 spreads them over
block groups), geomail start/stop by PID, per-process CPU from /proc, password hashes from
``geomail passwd``, percentiles and markdown tables. Everything stays on 127.0.0.0/8.
The geomail user and the Postfix instance come from mailbench.py (the team harness).
"""

import contextlib
import datetime
import ipaddress
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(BENCH)
RUN_BASE = os.path.join(BENCH, "run")
VENV_GEOMAIL = os.path.join(PROJECT, ".venv", "bin", "geomail")
BINARY_GEOMAIL = os.path.join(PROJECT, "dist", "geomail")
CLK_TCK = os.sysconf("SC_CLK_TCK")

if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
import mailbench  # noqa: E402 - the team harness: geomail's bench user, Postfix instance, helpers


def log(*a):
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def loopback(host):
    """Refuse anything outside 127.0.0.0/8."""
    if ipaddress.ip_address(host) not in ipaddress.ip_network("127.0.0.0/8"):
        raise SystemExit(f"refusing non-loopback address {host!r}")
    return host


def make_run_dir(name):
    """RUN_BASE/<name>-<stamp>, marked +T; warns when the last mass delete is < 5 min old."""
    marker = os.path.join(RUN_BASE, ".last-cleanup")
    if os.path.exists(marker) and time.time() - os.path.getmtime(marker) < 300:
        log(f"WARNING: a bench run deleted its files {time.time() - os.path.getmtime(marker):.0f} s ago; "
            "file creates stay slow for up to 5 min after mass deletes on this disk (bench/README.md)")
    os.makedirs(RUN_BASE, exist_ok=True)
    run = os.path.join(RUN_BASE, f"{name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(run)
    subprocess.run(["chattr", "+T", run], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


_seq = [0]


def fresh_dir(run, kind):
    """A new directory run/<kind>/<n>; run/<kind> is +T too (one block group per <n>)."""
    _seq[0] += 1
    parent = os.path.join(run, kind)
    if not os.path.isdir(parent):
        os.makedirs(parent)
        subprocess.run(["chattr", "+T", parent], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = os.path.join(parent, str(_seq[0]))
    os.makedirs(d)
    return d


def mark_cleanup(stamp):
    with open(os.path.join(RUN_BASE, ".last-cleanup"), "w") as f:
        f.write(stamp + "\n")


def git_revision():
    rev = subprocess.run(["git", "-C", PROJECT, "log", "-1", "--format=%h %ci"], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    dirty = subprocess.run(["git", "-C", PROJECT, "status", "--porcelain", "--", "geomail"], capture_output=True,
                           text=True, timeout=30).stdout.strip()
    return rev + (" + uncommitted changes in geomail/" if dirty else "")


def sysinfo():
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpus": os.cpu_count(), "loadavg": load, "kernel": os.uname().release, "geomail_git": git_revision(),
            "python": sys.version.split()[0]}


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def python_pid(pid):
    """The process that runs geomail's Python: ``pid`` itself (venv), or the child of the
    PyInstaller one-file bootloader (dist/geomail forks once, the child serves)."""
    try:
        if "python" in os.path.basename(os.readlink(f"/proc/{pid}/exe")):
            return pid  # the venv: pid is Python itself (its children: DKIM verify workers)
    except OSError:
        return pid
    kids = mailbench.children_of(pid)
    return kids[0] if len(kids) == 1 else pid


def tree_cpu_seconds(pid):
    """CPU seconds of pid and its live children (the bootloader and its Python child)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(c) or 0 for c in mailbench.children_of(pid))


def thread_cpu_seconds(pid):
    """(main thread's CPU seconds, all other threads' CPU seconds) of geomail's Python process
    (python_pid), None once gone."""
    pid = python_pid(pid)
    total = cpu_seconds(pid)  # the process's figure keeps the CPU of threads that have exited
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            st = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if total is None:
        return None
    fields = st[st.rindex(")") + 2:].split()
    main = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return main, total - main


def pct(xs, p):
    """Nearest-rank percentile (p in 0..100) of a list; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def med_range(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "values": xs}


def fmt(x, nd=None):
    if x is None:
        return "-"
    if nd is None:
        nd = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else (2 if abs(x) >= 1 else 3))
    return f"{x:,.{nd}f}"


def fmt_mr(r, nd=None):
    """'median [min..max]'."""
    if not r:
        return "-"
    return f"{fmt(r['median'], nd)} [{fmt(r['min'], nd)}..{fmt(r['max'], nd)}]"


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def geomail_owner():
    """(uid, gid) geomail drops to (mailbench's GEOMAIL_BENCH_USER, created if missing); None for root."""
    return mailbench.geomail_owner()


def geomail_user_name():
    return mailbench.GEOMAIL_BENCH_USER


def geomail_hash(cmd, password):
    """`geomail passwd` with the password piped on stdin: an argon2id hash."""
    r = subprocess.run([cmd, "passwd"], input=password + "\n", capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not r.stdout.strip().startswith("$argon2"):
        raise RuntimeError(f"geomail passwd failed: {r.stderr.strip()[-300:]}")
    return r.stdout.strip().splitlines()[-1]


def chown_tree(path, owner):
    if not owner:
        return
    for d, _dirs, files in os.walk(path):
        os.chown(d, *owner)
        for n in files:
            os.chown(os.path.join(d, n), *owner)


def free_or_die(host, port):
    """Refuse to measure a stranger's server: host:port must be free (TCP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError as e:
        raise SystemExit(f"{host}:{port} is in use ({e}); choose other ports") from e
    finally:
        s.close()


def banner(host, port, timeout=1.0):
    """True when host:port accepts and sends a 220 line."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


def wait_banner(host, port, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if banner(host, port):
            return True
        time.sleep(0.05)
    return False


class Proc:
    """A child we started (own session, output to a log file); stopped by PID only."""

    def __init__(self, argv, logpath, env=None, stdout=None):
        self.argv = argv
        self.logf = open(logpath, "ab")  # noqa: SIM115 - closed in stop()
        self.t_exec = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=stdout if stdout is not None else self.logf, stderr=self.logf,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, signum):
        if self.p.poll() is None:
            self.p.send_signal(signum)

    def stop(self, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        with contextlib.suppress(Exception):
            self.logf.close()
        return self.p.returncode


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)
