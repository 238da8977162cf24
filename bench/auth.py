#!/usr/bin/env python3
"""auth.py - issue 3's benchmark: AUTH PLAIN over TLS logins/s, and NOOP latency beside them.

Starts geomail (``$GEOMAIL_CMD``, default the venv's) on 127.0.0.1 with an ``smtp`` listener,
a ``submission`` listener (587-style, STARTTLS) and a ``submissions`` listener (465-style,
implicit TLS), a throwaway CA and server certificate made here with trustme (ECDSA P-256 by
default, like certbot's), and ``--users`` users whose argon2id hashes come from
``geomail passwd`` on stdin. Then, from client processes separate from the server:

  noop client   ``--noop-clients`` (500) connections to the smtp listener, EHLO once, then each
                sends NOOP, waits for the 250, sleeps ``--noop-interval`` (0.5 s, +-50 % jitter),
                again. Every NOOP's latency (write -> reply line read) is recorded with its time.
  login client  ``--conc`` (50) greenlets, each logging in over and over for ``--phase`` seconds:
                connect, banner, [EHLO, STARTTLS,] TLS handshake (verifying the certificate),
                EHLO, AUTH PLAIN with the initial response, 235, QUIT, close. A new full TLS
                handshake every time (no session resumption): the worst case.

Each round runs a baseline phase (noop client alone) and one login phase per ``--modes`` entry
(implicit = 465-style, starttls = 587-style; ``implicit-nice``/``starttls-nice``: the same while
this script renices every server thread but the hub to ``--worker-nice``, an experiment from
outside geomail), in an order rotated per round. Reported: logins/s,
login latency, NOOP p50/p99/max per phase, per-round ratio of the NOOP p99 with logins to the
baseline's, and the CPU of the server and of both clients (to show the clients are not the limit).
Before that, ``--calibrate`` seconds of the same noop client against smtp-sink give the floor of
the client and loopback. Both clients bind source addresses spread over 127.0.2.x (noop, 10
connections per address) and 127.0.3.x (logins, one per greenlet), so geomail's default
per-IP limits (20 connections, 5 logins in flight) apply as they would to real clients.

    .venv/bin/python bench/auth.py                      # 3 rounds, ~4 min
    .venv/bin/python bench/auth.py --rounds 1 --phase 8 --calibrate 0   # smoke, ~1 min
    GEOMAIL_CMD=$PWD/dist/geomail .venv/bin/python bench/auth.py

Run as root (geomail binds, then drops to the bench user, as in bench/README.md) or as an
ordinary user (then geomail runs as that user). Results: bench/run/auth-<stamp>/.
"""

import sys

ROLE = sys.argv[sys.argv.index("--role") + 1] if "--role" in sys.argv else "main"
if ROLE != "main":
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

HOST = "127.0.0.1"
PORTS = {"smtp": 2725, "submission": 2787, "submissions": 2765, "sink": 2726}
DOMAIN = "auth.test"
PASSWORD_FMT = "bench-password-{i}"


# ----------------------------------------------------------------------------------------------
# client side (gevent, run in their own processes)
# ----------------------------------------------------------------------------------------------
class Conn:
    """A minimal SMTP client connection: reply reading over a plain or TLS socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One (possibly multi-line) reply: (code, [lines])."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, text, expect):
        self.sock.sendall(text.encode() + b"\r\n")
        code, lines = self.reply()
        if code != expect:
            raise RuntimeError(f"{text.split()[0]}: {b' '.join(lines)[:120]!r}")
        return lines


def cpu_self():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def role_noop(a):
    import gevent
    from gevent.event import Event

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    ready = Event()
    connected = [0]
    samples = []  # (t_send, latency)
    lags = []  # (t, how late the client woke up after its sleep: the client's own delay)
    errors = []

    def client(i):
        src = f"{a.src_prefix}{1 + i // a.per_ip}"
        try:
            s = socket.create_connection((a.host, a.port), timeout=30, source_address=(src, 0))
            c = Conn(s)
            if c.reply()[0] != 220:
                raise RuntimeError("no 220 banner")
            c.cmd(f"EHLO noop{i}.client.test", 250)
        except Exception as e:
            errors.append(f"connect: {e}")
            connected[0] += 1
            if connected[0] == a.n:
                ready.set()
            return
        connected[0] += 1
        if connected[0] == a.n:
            ready.set()
        ready.wait()
        rnd = random.Random(i)
        gevent.sleep(rnd.uniform(0, a.interval))  # spread the clients over the interval
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                s.sendall(b"NOOP\r\n")
                code, _ = c.reply()
            except Exception as e:
                errors.append(f"noop: {e}")
                return
            t1 = time.monotonic()
            if code != 250:
                errors.append(f"noop reply {code}")
            samples.append((t0, t1 - t0))
            pause = a.interval * rnd.uniform(0.5, 1.5)
            want = t1 + pause
            if stop.wait(pause):
                break
            lags.append((want, time.monotonic() - want))
        try:
            s.sendall(b"QUIT\r\n")
            c.reply()
        except Exception:
            pass
        s.close()

    cpu0, t_start = cpu_self(), time.monotonic()
    greenlets = [gevent.spawn(client, i) for i in range(a.n)]
    ready.wait(120)
    print(json.dumps({"ready": True, "connected": a.n - len(errors), "t": time.monotonic()}), flush=True)
    stop.wait(a.max_duration)
    stop.set()
    gevent.joinall(greenlets, timeout=30)
    with open(a.out, "w") as f:
        json.dump({"samples": [[round(t, 6), round(x, 7)] for t, x in samples],
                   "lags": [[round(t, 6), round(x, 7)] for t, x in lags]}, f)
    print(json.dumps({"done": True, "samples": len(samples), "errors": len(errors), "first_errors": errors[:5],
                      "cpu_s": cpu_self() - cpu0, "wall_s": time.monotonic() - t_start}), flush=True)


def role_login(a):
    import gevent

    with open(a.users) as f:
        users = json.load(f)
    ctx = ssl.create_default_context(cafile=a.cafile)
    ctx.check_hostname = True
    ok = [0]
    latencies = []
    errors = []
    versions = {}
    deadline = [0.0]

    def login(i, user, password):
        t0 = time.monotonic()
        s = socket.create_connection((a.host, a.port), timeout=60, source_address=(f"{a.src_prefix}{i + 1}", 0))
        try:
            if a.mode == "implicit":
                s = ctx.wrap_socket(s, server_hostname=a.server_name)
                c = Conn(s)
                if c.reply()[0] != 220:
                    raise RuntimeError("banner")
            else:
                c = Conn(s)
                if c.reply()[0] != 220:
                    raise RuntimeError("banner")
                c.cmd("EHLO login.client.test", 250)
                c.cmd("STARTTLS", 220)
                s = ctx.wrap_socket(s, server_hostname=a.server_name)
                c = Conn(s)
            ehlo = c.cmd("EHLO login.client.test", 250)
            if not any(x.upper().startswith(b"250-AUTH") or x.upper().startswith(b"250 AUTH") for x in ehlo):
                raise RuntimeError("no AUTH in EHLO")
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            c.cmd(f"AUTH PLAIN {token}", 235)
            t_auth = time.monotonic()
            versions[s.version()] = versions.get(s.version(), 0) + 1
            c.cmd("QUIT", 221)
        finally:
            s.close()
        return t_auth - t0

    def worker(i):
        user, password = users[i % len(users)]
        while time.monotonic() < deadline[0]:
            try:
                latencies.append(login(i, user, password))
                ok[0] += 1
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
                gevent.sleep(0.1)

    cpu0 = cpu_self()
    t_start = time.monotonic()
    deadline[0] = t_start + a.duration
    greenlets = [gevent.spawn(worker, i) for i in range(a.conc)]
    gevent.joinall(greenlets, timeout=a.duration + 120)
    t_end = time.monotonic()
    lat = sorted(latencies)

    def q(p):
        return lat[max(0, min(len(lat) - 1, math.ceil(p / 100 * len(lat)) - 1))] if lat else None

    print(json.dumps({"mode": a.mode, "conc": a.conc, "ok": ok[0], "errors": len(errors), "first_errors": errors[:5],
                      "t_start": t_start, "t_end": t_end, "rate": ok[0] / (t_end - t_start),
                      "lat_p50": q(50), "lat_p99": q(99), "tls": versions, "cpu_s": cpu_self() - cpu0,
                      "wall_s": t_end - t_start}), flush=True)


# ----------------------------------------------------------------------------------------------
# orchestration (no gevent here)
# ----------------------------------------------------------------------------------------------
class Renicer:
    """An experiment from outside geomail, for the ``<mode>-nice`` phases: every 0.1 s, give every
    thread of the server but its main thread (the hub) the nice value ``nice`` (Linux: per
    thread); on stop, set them back to 0. Shows whether the hub waits for a CPU behind the
    argon2 workers rather than for the GIL."""

    def __init__(self, pid, nice):
        import threading

        self.pid, self.nice = pid, nice
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _apply(self, value):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
        except FileNotFoundError:
            return
        for tid in tids:
            if tid != self.pid:
                try:
                    if os.getpriority(os.PRIO_PROCESS, tid) != value:
                        os.setpriority(os.PRIO_PROCESS, tid, value)
                except (ProcessLookupError, PermissionError):
                    pass

    def _run(self):
        while not self.done.wait(0.1):
            self._apply(self.nice)

    def stop(self):
        self.done.set()
        self.thread.join(5)
        self._apply(0)


def main(a):
    import benchkit as bk

    for p in PORTS.values():
        bk.free_or_die(HOST, p)
    cmd = os.environ.get("GEOMAIL_CMD", bk.VENV_GEOMAIL)
    run = bk.make_run_dir("auth")
    info = bk.sysinfo()
    info.update({"geomail_cmd": cmd, "args": vars(a), "run": run})
    bk.log("run dir", run, json.dumps({k: v for k, v in info.items() if k != "args"}))
    owner = bk.geomail_owner() if os.geteuid() == 0 else None

    # a throwaway CA and a server certificate for the listeners (trustme: the venv's dev extra)
    import trustme

    tls_dir = os.path.join(run, "tls")
    os.makedirs(tls_dir)
    ca = trustme.CA(key_type=getattr(trustme.KeyType, a.key_type.upper()))
    cert = ca.issue_cert("mx." + DOMAIN, HOST, key_type=getattr(trustme.KeyType, a.key_type.upper()))
    with open(os.path.join(tls_dir, "fullchain.pem"), "wb") as f:
        f.write(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(os.path.join(tls_dir, "key.pem"))
    ca.cert_pem.write_to_path(os.path.join(tls_dir, "ca.pem"))
    os.chmod(os.path.join(tls_dir, "key.pem"), 0o600)
    bk.chown_tree(tls_dir, owner)  # SIGHUP reloads it after the privilege drop

    # users: one argon2id hash per user, each from `geomail passwd` on stdin
    t0 = time.monotonic()
    users = [(f"user{i:02d}@{DOMAIN}", PASSWORD_FMT.format(i=i)) for i in range(a.users)]
    procs = []
    hashes = []
    for i, (_u, pw) in enumerate(users):
        procs.append(subprocess.Popen([cmd, "passwd"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        procs[-1].stdin.write(pw + "\n")
        procs[-1].stdin.close()
        if len(procs) >= 4 or i == len(users) - 1:
            for p in procs:
                out = p.stdout.read().strip()
                p.wait(120)
                if p.returncode != 0 or not out.startswith("$argon2id$"):
                    raise SystemExit(f"geomail passwd failed: {p.stderr.read()[-300:]}")
                hashes.append(out.splitlines()[-1])
            procs = []
    bk.log(f"{len(hashes)} argon2id hashes from `geomail passwd` in {time.monotonic() - t0:.1f}s; "
           f"e.g. {hashes[0][:40]}...")
    users_file = os.path.join(run, "users.json")
    with open(users_file, "w") as f:
        json.dump(users, f)

    data = os.path.join(run, "data")
    os.makedirs(data, mode=0o700)
    if owner:
        os.chown(data, *owner)
    conf = os.path.join(run, "geomail.yaml")
    user_lines = "".join(f'  {u}: {{password: "{h}"}}\n' for (u, _), h in zip(users, hashes, strict=True))
    with open(conf, "w") as f:
        f.write(f"""\
# written by bench/auth.py
hostname: mx.{DOMAIN}
domains: [{DOMAIN}]
data_dir: {data}
{"user: " + bk.geomail_user_name() if owner else "# user: the invoking user"}
users:
{user_lines}listen:
  smtp: ["{HOST}:{PORTS['smtp']}"]
  submission: ["{HOST}:{PORTS['submission']}"]
  submissions: ["{HOST}:{PORTS['submissions']}"]
tls: {{cert: {tls_dir}/fullchain.pem, key: {tls_dir}/key.pem}}
relay: {{nameservers: ["{HOST}:9"]}}   # nothing leaves loopback
limits: {{shutdown_grace: 5s}}         # everything else at its default (max_connections_per_ip: 20, ...)
log: {{level: info}}
""")
    server = bk.Proc([cmd, "serve", "-c", conf], os.path.join(run, "geomail.log"))
    started = []
    try:
        for kind in ("smtp", "submission"):
            if not bk.wait_banner(HOST, PORTS[kind], 60):
                raise SystemExit(f"geomail {kind} did not answer; see {run}/geomail.log")
        ctx = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.pem"))
        with socket.create_connection((HOST, PORTS["submissions"]), timeout=10) as s, \
                ctx.wrap_socket(s, server_hostname="mx." + DOMAIN) as t:
            first = t.recv(512)
            if not first.startswith(b"220"):
                raise SystemExit(f"465-style listener: {first!r}")
            info["tls_on_465"] = f"{t.version()} {t.cipher()[0]}"
        bk.log("geomail up:", info["tls_on_465"])

        py = sys.executable
        me = os.path.abspath(__file__)
        results = {"calibration": None, "rounds": []}

        def noop_client(port, out, max_duration):
            argv = [py, me, "--role", "noop", "--host", HOST, "--port", str(port), "--n", str(a.noop_clients),
                    "--interval", str(a.noop_interval), "--per-ip", "10", "--src-prefix", "127.0.2.",
                    "--max-duration", str(max_duration), "--out", out]
            if a.noop_nice:
                argv = ["nice", "-n", str(a.noop_nice), *argv]
            p = bk.Proc(argv, os.path.join(run, "noop-client.log"), stdout=subprocess.PIPE)
            line = p.p.stdout.readline()
            if not line or not json.loads(line).get("ready"):
                p.stop()
                raise SystemExit(f"noop client did not get ready: {line!r}; see {run}/noop-client.log")
            ready = json.loads(line)
            if ready["connected"] != a.noop_clients:
                bk.log(f"WARNING: noop client connected {ready['connected']}/{a.noop_clients}")
            return p, ready

        def finish_noop(p):
            p.signal(signal.SIGTERM)
            out = p.p.stdout.read()
            p.stop()
            return json.loads(out.strip().splitlines()[-1])

        # ---- calibration: the same noop client against smtp-sink (C): the client + loopback floor
        if a.calibrate > 0:
            sink = bk.Proc(["smtp-sink", *(["-u", "nobody"] if os.geteuid() == 0 else []), "-m", "2000",
                            f"{HOST}:{PORTS['sink']}", "1024"], os.path.join(run, "smtp-sink.log"))
            started.append(sink)
            if not bk.wait_banner(HOST, PORTS["sink"], 10):
                raise SystemExit("smtp-sink did not start")
            out = os.path.join(run, "noop-sink.json")
            p, _ready = noop_client(PORTS["sink"], out, a.calibrate + 60)
            cpu0 = bk.cpu_seconds(p.pid)
            t0 = time.monotonic()
            time.sleep(2 + a.calibrate)
            cpu1 = bk.cpu_seconds(p.pid)
            t1 = time.monotonic()
            summary = finish_noop(p)
            with open(out) as f:
                samples = [x for t, x in json.load(f)["samples"] if t0 + 2 <= t <= t1]
            results["calibration"] = {"n": len(samples), "p50_ms": 1e3 * bk.pct(samples, 50),
                                      "p99_ms": 1e3 * bk.pct(samples, 99), "max_ms": 1e3 * max(samples),
                                      "client_cpu": (cpu1 - cpu0) / (t1 - t0), "errors": summary["errors"]}
            bk.log("calibration vs smtp-sink:", json.dumps(results["calibration"]))
            sink.stop()
            started.remove(sink)

        # ---- the rounds
        phases = ["baseline", *a.modes.split(",")]
        per_round = len(phases) * (a.phase + 15) + 30
        out = os.path.join(run, "noop-geomail.json")
        noop, _ready = noop_client(PORTS["smtp"], out, a.rounds * per_round + 60)
        started.append(noop)
        time.sleep(3)  # warm-up: every client has sent a few NOOPs
        windows = []
        for rnd in range(a.rounds):
            k = rnd % len(phases)
            order = phases[k:] + phases[:k]
            for ph in order:
                c0 = {"server": bk.tree_cpu_seconds(server.pid), "noop": bk.cpu_seconds(noop.pid),
                      "threads": bk.thread_cpu_seconds(server.pid), "t": time.monotonic()}
                if ph == "baseline":
                    t0 = time.monotonic()
                    time.sleep(a.phase)
                    t1 = time.monotonic()
                    login = None
                else:
                    mode = ph.split("-")[0]
                    port = PORTS["submissions"] if mode == "implicit" else PORTS["submission"]
                    renicer = Renicer(bk.python_pid(server.pid), a.worker_nice) if ph.endswith("-nice") else None
                    try:
                        r = subprocess.run([py, me, "--role", "login", "--host", HOST, "--port", str(port), "--mode",
                                            mode, "--conc", str(a.conc), "--duration", str(a.phase), "--users",
                                            users_file, "--cafile", os.path.join(tls_dir, "ca.pem"), "--server-name",
                                            "mx." + DOMAIN, "--src-prefix", "127.0.3."], capture_output=True,
                                           text=True, timeout=a.phase + 200)
                    finally:
                        if renicer:
                            renicer.stop()
                    if r.returncode != 0:
                        raise SystemExit(f"login client failed: {r.stderr[-2000:]}")
                    login = json.loads(r.stdout.strip().splitlines()[-1])
                    t0, t1 = login["t_start"], login["t_end"]
                c1 = {"server": bk.tree_cpu_seconds(server.pid), "noop": bk.cpu_seconds(noop.pid),
                      "threads": bk.thread_cpu_seconds(server.pid), "t": time.monotonic()}
                t_cpu = c1["t"] - c0["t"]  # CPU shares over the phase, the login client's start-up included
                w = {"round": rnd + 1, "phase": ph, "t0": t0, "t1": t1, "login": login,
                     "server_cpu": (c1["server"] - c0["server"]) / t_cpu,
                     "noop_cpu": (c1["noop"] - c0["noop"]) / t_cpu,
                     "server_hub_cpu": (c1["threads"][0] - c0["threads"][0]) / t_cpu,
                     "server_threads_cpu": (c1["threads"][1] - c0["threads"][1]) / t_cpu,
                     "loadavg": bk.loadavg()}
                windows.append(w)
                bk.log(f"round {rnd + 1} {ph}: " + (
                    f"{login['ok']} logins in {t1 - t0:.1f}s = {login['rate']:.1f}/s, errors {login['errors']}, "
                    f"login p50 {1e3 * login['lat_p50']:.0f} ms, client cpu {login['cpu_s'] / login['wall_s']:.0%}"
                    if login else f"{t1 - t0:.1f}s") + f"; server cpu {w['server_cpu']:.0%} "
                    f"(hub {w['server_hub_cpu']:.0%}, other threads {w['server_threads_cpu']:.0%}), "
                    f"noop client cpu {w['noop_cpu']:.0%}, load {w['loadavg']}")
                time.sleep(2)
        summary = finish_noop(noop)
        started.remove(noop)
        bk.log("noop client:", json.dumps(summary))
        with open(out) as f:
            dump = json.load(f)
        for w in windows:
            xs = [x for t, x in dump["samples"] if w["t0"] <= t <= w["t1"]]
            lg = [x for t, x in dump["lags"] if w["t0"] <= t <= w["t1"]]
            w["noop"] = {"n": len(xs), "p50_ms": 1e3 * bk.pct(xs, 50), "p99_ms": 1e3 * bk.pct(xs, 99),
                         "p999_ms": 1e3 * bk.pct(xs, 99.9), "max_ms": 1e3 * max(xs),
                         "client_wake_lag_p99_ms": 1e3 * bk.pct(lg, 99) if lg else None}
        results["rounds"] = windows
        results["noop_client"] = summary
    finally:
        for p in started:
            p.stop()
        server.stop()
    with open(os.path.join(run, "geomail.log"), errors="replace") as f:
        glog = f.read()
    info["server_log"] = {"auth_ok": glog.count("auth-ok"), "auth_failed": glog.count("auth-failed"),
                          "errors": sum(1 for ln in glog.splitlines() if " ERROR " in ln)}
    results["info"] = info
    bk.write_json(os.path.join(run, "results.json"), results)
    report = render(results, a, bk)
    with open(os.path.join(run, "summary.md"), "w") as f:
        f.write(report + "\n")
    print(report)
    bk.log("results:", os.path.join(run, "results.json"))


def render(res, a, bk):
    rounds = res["rounds"]
    modes = a.modes.split(",")
    lines = [f"geomail {res['info']['geomail_git']} ({res['info']['geomail_cmd']}), {res['info']['cpus']} CPUs, "
             f"TLS {res['info'].get('tls_on_465')}, cert key {a.key_type}; {a.noop_clients} NOOP clients every "
             f"{a.noop_interval}s +-50%; {a.conc} login greenlets; {a.rounds} rounds x {a.phase}s per phase; "
             f"server log: {res['info']['server_log']}", ""]
    name = {"implicit": "implicit TLS (465-style listener)", "starttls": "STARTTLS (587-style listener)",
            "implicit-nice": "implicit TLS, server's worker threads at nice " + str(a.worker_nice) + " (experiment)",
            "starttls-nice": "STARTTLS, server's worker threads at nice " + str(a.worker_nice) + " (experiment)"}
    rows = []
    for m in modes:
        ws = [w for w in rounds if w["phase"] == m]
        rows.append([f"logins/s, AUTH PLAIN, {name.get(m, m)}, c={a.conc}",
                     bk.fmt_mr(bk.med_range([w["login"]["rate"] for w in ws]), 1),
                     bk.fmt_mr(bk.med_range([1e3 * w["login"]["lat_p50"] for w in ws])),
                     bk.fmt_mr(bk.med_range([1e3 * w["login"]["lat_p99"] for w in ws])),
                     sum(w["login"]["errors"] for w in ws),
                     bk.fmt_mr(bk.med_range([100 * w["server_cpu"] for w in ws]), 0),
                     bk.fmt_mr(bk.med_range([100 * w["login"]["cpu_s"] / w["login"]["wall_s"] for w in ws]), 0)])
    lines.append(bk.md_table(["figure", "median [min..max]", "login latency p50, ms", "p99, ms", "errors",
                              "server CPU %", "login client CPU %"], rows))
    lines.append("")
    rows = []
    if res.get("calibration"):
        c = res["calibration"]
        rows.append(["noop client vs smtp-sink (floor)", c["n"], bk.fmt(c["p50_ms"], 2), bk.fmt(c["p99_ms"], 2),
                     bk.fmt(c["max_ms"], 1), "-", "-", f"{100 * c['client_cpu']:.0f}", "-"])
    base = {w["round"]: w for w in rounds if w["phase"] == "baseline"}
    for ph in ["baseline", *modes]:
        ws = [w for w in rounds if w["phase"] == ph]
        ratio = [w["noop"]["p99_ms"] / base[w["round"]]["noop"]["p99_ms"] for w in ws] if ph != "baseline" else None
        rows.append([f"geomail, {'no logins' if ph == 'baseline' else 'during logins, ' + name.get(ph, ph)}",
                     sum(w["noop"]["n"] for w in ws),
                     bk.fmt_mr(bk.med_range([w["noop"]["p50_ms"] for w in ws]), 2),
                     bk.fmt_mr(bk.med_range([w["noop"]["p99_ms"] for w in ws]), 2),
                     bk.fmt_mr(bk.med_range([w["noop"]["max_ms"] for w in ws]), 1),
                     bk.fmt_mr(bk.med_range(ratio), 2) if ratio else "-",
                     bk.fmt_mr(bk.med_range([w["noop"]["client_wake_lag_p99_ms"] for w in ws]), 2),
                     bk.fmt_mr(bk.med_range([100 * w["noop_cpu"] for w in ws]), 0),
                     bk.fmt_mr(bk.med_range([100 * w["server_cpu"] for w in ws]), 0)])
    lines.append(bk.md_table(["NOOP latency, 500 connections", "samples", "p50 ms", "p99 ms", "max ms",
                              "p99 / baseline p99 (per round)", "client wake lag p99 ms", "noop client CPU %",
                              "server CPU %"], rows))
    lines.append("")
    lines.append("per round: " + "; ".join(
        f"r{w['round']} {w['phase']}: p99 {w['noop']['p99_ms']:.2f} ms"
        + (f", {w['login']['rate']:.1f} logins/s" if w["login"] else "") for w in rounds))
    return "\n".join(lines)


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="main", choices=["main", "noop", "login"], help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phase", type=float, default=20.0, help="seconds per phase (baseline, each login mode)")
    ap.add_argument("--modes", default="implicit,starttls",
                    help="login phases: implicit (465), starttls (587); with '-nice' (e.g. implicit-nice): the "
                         "same with the server's non-hub threads reniced to --worker-nice during the phase")
    ap.add_argument("--worker-nice", type=int, default=10, help="nice value for the '-nice' phases")
    ap.add_argument("--conc", type=int, default=50, help="concurrent logins")
    ap.add_argument("--users", default="50", help="users (each its own argon2id hash); the login role: a JSON file")
    ap.add_argument("--noop-clients", type=int, default=500)
    ap.add_argument("--noop-interval", type=float, default=0.5, help="mean pause between a client's NOOPs, s")
    ap.add_argument("--noop-nice", type=int, default=0, help="nice value of the noop client (0: none)")
    ap.add_argument("--calibrate", type=float, default=10.0, help="seconds of noop client vs smtp-sink (0: skip)")
    ap.add_argument("--key-type", default="ecdsa", choices=["ecdsa", "rsa"], help="certificate key (trustme)")
    # client roles
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--port", type=int)
    ap.add_argument("--n", type=int)
    ap.add_argument("--interval", type=float)
    ap.add_argument("--per-ip", type=int, default=10)
    ap.add_argument("--src-prefix", default="127.0.2.")
    ap.add_argument("--max-duration", type=float, default=600)
    ap.add_argument("--out")
    ap.add_argument("--mode")
    ap.add_argument("--duration", type=float)
    ap.add_argument("--cafile")
    ap.add_argument("--server-name")
    a = ap.parse_args()
    for h in (a.host, a.src_prefix + "1"):
        if not h.startswith("127."):
            raise SystemExit("loopback only")
    if a.role == "main":
        a.users = int(a.users)
        if not (1 <= a.rounds <= 20 and 1 <= a.phase <= 120 and 1 <= a.conc <= 250 and 1 <= a.noop_clients <= 2500
                and 1 <= a.users <= 250):
            raise SystemExit("bounds: rounds 1..20, phase 1..120 s, conc 1..250, noop-clients 1..2500, users 1..250")
    return a


if __name__ == "__main__":
    args = parse()
    if args.role == "noop":
        role_noop(args)
    elif args.role == "login":
        role_login(args)
    else:
        main(args)
