#!/usr/bin/env python3
"""data_memory - issue 10 item 5: server memory per connection held in the middle of DATA.

Opens N connections (default 1,000) to each target, one after the other; each does EHLO, then
MAIL/RCPT/DATA pipelined, gets its 354 and sends 4 KiB (--body-kib) of body without the final dot, then
stays there. After a hold (3 s: geomail parks a connection silent for 1 s) the server's PSS,
summed over its processes from /proc/PID/smaps_rollup, is read;
PSS per connection = (PSS with N pending - PSS before) / N. "Before" is read after a warm-up of
20 such connections (closed again), so first-use costs (imports, the spool directory) are not
charged to the connections.

Targets (all on 127.0.0.1, private, stopped by PID or by `postfix -c DIR stop`):
  geomail   `python -m geomail serve` from --geomail-src (default: this checkout), so the old
            code can be measured with --geomail-src /work/base
  aiosmtpd  aiosmtpd 1.4's CLI (asyncio, one process)
  postfix   a private Postfix instance built by mailbench.PostfixTarget, with the smtpd and
            cleanup process limits raised to N + 100 so that every connection gets its smtpd
            (needs root)

    bench/data_memory.py                          # 1,000 connections, geomail only
    bench/data_memory.py --targets geomail,aiosmtpd,postfix
    bench/data_memory.py --geomail-src /work/base --conns 1000

Bounded: N sockets at most, each step with a 10 s client timeout, the whole run under --budget
seconds (default 300); loopback only.
"""

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(BENCH)
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
import mailbench  # noqa: E402 - the team harness: Postfix instance, mem_of, process helpers

HOST = "127.0.0.1"
PORTS = {"geomail": 2541, "aiosmtpd": 2542, "postfix": 2543}
BODY_KIB = 4  # --body-kib: the body each connection sends before it stops (no end dot)
HOLD_S = 3.0
WARMUP = 20
RCPT = mailbench.RCPT


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def read_reply(sock, buf):
    """Read one whole SMTP reply; returns (code, rest of the buffer)."""
    while True:
        while b"\n" not in buf:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("closed")
            buf += data
        line, _, buf = buf.partition(b"\n")
        if line[3:4] != b"-":
            return int(line[:3]), buf


def body(kib):
    """``kib`` KiB of message: a header, then 64-octet lines."""
    return (b"Subject: pending\r\n\r\n" + (b"z" * 62 + b"\r\n") * (16 * kib + 1))[:1024 * kib]


def open_pending(port, data, timeout=10.0):
    """One connection left in the middle of DATA, or an exception."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        code, buf = read_reply(sock, b"")
        if code != 220:
            raise ConnectionError(f"banner {code}")
        sock.sendall(b"EHLO client.bench.test\r\n")
        code, buf = read_reply(sock, buf)
        if code != 250:
            raise ConnectionError(f"EHLO {code}")
        sock.sendall(f"MAIL FROM:<{mailbench.SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode())
        codes = []
        for _ in range(3):
            code, buf = read_reply(sock, buf)
            codes.append(code)
        if codes != [250, 250, 354]:
            raise ConnectionError(f"MAIL/RCPT/DATA {codes}")
        sock.sendall(data)
        return sock
    except BaseException:
        sock.close()
        raise


def hold(port, n, data, deadline):
    """Open n pending connections (fewer if the deadline passes), hold, return them."""
    socks, failed = [], 0
    t0 = time.monotonic()
    while len(socks) + failed < n and time.monotonic() < deadline:
        try:
            socks.append(open_pending(port, data))
        except (OSError, ConnectionError) as exc:
            failed += 1
            if failed <= 3:
                log(f"  connection failed: {exc}")
            if failed >= 20:
                break
    return socks, failed, time.monotonic() - t0


def measure(target, n, kib, deadline):
    data = body(kib)
    for s in hold(target.port, WARMUP, data, deadline)[0]:
        s.close()
    time.sleep(1.5)
    before = mailbench.mem_of(target.pids())
    socks, failed, opened_s = hold(target.port, n, data, deadline)
    time.sleep(HOLD_S)
    after = mailbench.mem_of(target.pids())
    alive = 0
    for s in socks:
        s.setblocking(False)  # with a timeout set, recv would wait for data first
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b"":
                alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    held = len(socks)
    per = (after["pss_kib"] - before["pss_kib"]) / held if held else None
    per_rss = (after["rss_kib"] - before["rss_kib"]) / held if held else None
    return {"target": target.name, "requested": n, "body_kib": kib, "held": held, "failed": failed,
            "alive_after_hold": alive, "open_s": round(opened_s, 2),
            "pss_before_kib": before["pss_kib"], "pss_after_kib": after["pss_kib"],
            "rss_before_kib": before["rss_kib"], "rss_after_kib": after["rss_kib"],
            "procs_after": after["procs"], "pss_kib_per_conn": per, "rss_kib_per_conn": per_rss}


class GeomailTarget:
    name = "geomail"

    def __init__(self, src, run):
        self.src = os.path.abspath(src)
        self.port = PORTS["geomail"]
        self.dir = os.path.join(run, "geomail")
        self.proc = None

    def start(self):
        os.makedirs(self.dir)
        data = os.path.join(self.dir, "data")
        user = "user: root\n" if os.geteuid() == 0 else ""
        config = os.path.join(self.dir, "geomail.yaml")
        with open(config, "w") as f:
            f.write(f"""\
# written by bench/data_memory.py
hostname: mx.{mailbench.DOMAIN}
domains: [{mailbench.DOMAIN}]
data_dir: {data}
{user}users: {{{RCPT}: {{}}}}
listen: {{smtp: ["{HOST}:{self.port}"]}}
relay: {{nameservers: ["{HOST}:9"]}}
limits: {{max_connections: 20000, max_connections_per_ip: 20000, shutdown_grace: 2s,
          command_timeout: 10m, data_timeout: 10m}}
""")
        mailbench.ensure_free(self.port)
        env = {**os.environ, "PYTHONPATH": self.src}
        self.logf = open(os.path.join(self.dir, "geomail.log"), "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "geomail", "serve", "-c", config],
                                     cwd=self.src, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not mailbench.wait_port(self.port):
            raise RuntimeError("geomail did not start")

    def pids(self):
        return [self.proc.pid] if self.proc else []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.logf.close()
        self.proc = None


class AiosmtpdTarget(mailbench.AiosmtpdTarget):
    def __init__(self):
        super().__init__(port=PORTS["aiosmtpd"])


class PostfixTarget(mailbench.PostfixTarget):
    """mailbench's private Postfix, with room for every pending connection."""

    def __init__(self, n):
        super().__init__(port=PORTS["postfix"], maxproc=n + 100)
        self.n = n

    def configure(self):
        super().configure()
        with open(os.path.join(self.etc, "main.cf"), "a") as f:
            # each smtpd in DATA holds a cleanup(8) process; the default limit is 100
            f.write(f"default_process_limit = {self.n + 100}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--targets", default="geomail")
    ap.add_argument("--body-kib", type=int, default=BODY_KIB, help="KiB of body each connection sends (1..1024)")
    ap.add_argument("--geomail-src", default=PROJECT, help="checkout whose geomail/ package is run")
    ap.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds for the whole run")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not 1 <= args.conns <= 5000 or not 1 <= args.body_kib <= 1024:
        raise SystemExit("--conns must be 1..5000, --body-kib 1..1024")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.conns + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    run = tempfile.mkdtemp(prefix="data-memory-")
    os.chmod(run, 0o755)  # Postfix's daemons run as postfix and must reach their directories
    mailbench.RUN = run  # where mailbench's targets keep their files and logs
    deadline = time.monotonic() + args.budget
    results = []
    for name in args.targets.split(","):
        target = {"geomail": lambda: GeomailTarget(args.geomail_src, run),
                  "aiosmtpd": AiosmtpdTarget,
                  "postfix": lambda: PostfixTarget(args.conns)}[name]()
        try:
            try:
                target.start()
                r = measure(target, args.conns, args.body_kib, deadline)
            except RuntimeError as exc:  # report it and go on with the next target
                log(f"{name}: ERROR {exc}")
                continue
            if name == "geomail":
                r["geomail_src"] = os.path.abspath(args.geomail_src)
            results.append(r)
            log(f"{name}: held {r['held']}/{args.conns} (alive {r['alive_after_hold']}) in {r['open_s']} s; "
                f"PSS {r['pss_before_kib'] / 1024:.1f} -> {r['pss_after_kib'] / 1024:.1f} MiB, "
                f"{r['pss_kib_per_conn']:.1f} KiB/conn (RSS {r['rss_kib_per_conn']:.1f} KiB/conn, "
                f"{r['procs_after']} processes)")
        finally:
            with contextlib.suppress(Exception):
                target.stop()
    print("| target | connections held mid-DATA | body sent, KiB | PSS before / after, MiB | PSS per connection, KiB "
          "| RSS per connection, KiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['target']} | {r['held']} | {r['body_kib']} "
              f"| {r['pss_before_kib'] / 1024:.1f} / {r['pss_after_kib'] / 1024:.1f} "
              f"| **{r['pss_kib_per_conn']:.1f}** | {r['rss_kib_per_conn']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    log(f"files and logs in {run}")


if __name__ == "__main__":
    main()
