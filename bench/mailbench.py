#!/usr/bin/env python3
"""mailbench - side-by-side load harness for mail servers on loopback: geomail and its peers.

Measures, in one run and on the same box:
  physical  - durable small-file create rate (C tool, Maildir-style) and loopback TCP
              round trips (C echo server vs a minimal gevent echo server, C client)
  smtp      - SMTP inbound msgs/sec with smtp-source (Postfix's C load generator) against
              every SMTP target, per (concurrency, size), interleaved round-robin, plus the
              end-to-end figure (all messages in the Maildir) for targets that deliver and the
              server's peak memory during the load; then the same grid with tools/smtplat (C,
              same shape of load) for the latency of the final reply (end of DATA -> 250),
              p50/p99 per target
  idle      - how many idle SMTP connections (sitting after the banner) a target holds and
              what they cost in server memory (RSS and PSS summed over its processes)
  pop3      - POP3 over a preloaded Maildir (2,000 x 10 KiB): login, STAT+LIST+UIDL, RETR all
              (poplib and pipelined), logins/s; 50 users fetching at once; LIST+UIDL and
              RETR-all at 200 / 2,000 / 20,000 messages (does anything grow faster than linearly?)

Targets are classes below. The peers are smtp-sink (C, discards mail: the ceiling),
Postfix (private instance, virtual(8) Maildir delivery), aiosmtpd (Mailbox handler) and
Dovecot POP3; geomail is started from this project (GeomailTarget, see bench/README.md).

Safety: every target listens on 127.0.0.1 only; every load is bounded in count and time;
the whole run has a wall-clock budget (--budget); only processes this script started
are stopped, by PID (or by the peer's own stop command for the instance it started).
"""

import argparse
import contextlib
import datetime
import ipaddress
import itertools
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(BENCH)  # the geomail checkout this bench/ belongs to
RUN_BASE = os.path.join(BENCH, "run")
# Each invocation works in its own RUN_BASE/<stamp>/ (set in main) marked `chattr +T`, so
# ext4 spreads the targets' directories over different block groups. Why: the work disk is ext4
# WITHOUT a journal, and there every file create scans past inodes deleted in the last
# 1-5 minutes in the same group (ialloc.c recently_deleted()): deleting thousands of files
# makes the next creates 10x slower. Separate groups keep one target's (or one run's)
# deletions from slowing the next; and the bench itself deletes nothing until the end.
RUN = RUN_BASE
TOOLS = os.path.join(BENCH, "tools")
PY = sys.executable
HOST = os.environ.get("BENCH_HOST", "127.0.0.1")  # any 127.0.0.0/8 address
DOMAIN = "bench.test"
USER = "bench"
PASSWORD = "benchpass"
RCPT = f"{USER}@{DOMAIN}"
SENDER = "load@client.test"
VMAIL_UID = VMAIL_GID = 5000  # owner of delivered mail; needs no /etc/passwd entry

PORTS = {
    "postfix": 2525,
    "aiosmtpd": 2526,
    "smtp-sink": 2527,
    "geomail": 2528,  # SMTP
    "geomail-ref": 2529,  # SMTP of the reference build (GEOMAIL_REF_CMD)
    "geomail-ref-pop3": 1112,
    "dovecot": 1110,  # POP3
    "geomail-pop3": 1111,
    "tcp-c": 2531,
    "tcp-gevent": 2532,
}
# all ports sit below the ephemeral range (32768-60999): a client socket's source port
# can never squat on them

DEADLINE = None  # monotonic time at which the run must wrap up


def now():
    return time.monotonic()


def left():
    return DEADLINE - now()


def log(*a):
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def check_loopback(host):
    """Only numeric 127.0.0.0/8 addresses may be targets."""
    try:
        ok = ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"refusing non-loopback target {host!r} (BENCH_HOST must be in 127.0.0.0/8)")


check_loopback(HOST)


def summ(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "values": xs}


_seq = [0]


def fresh_dir(kind):
    """A new, empty directory RUN/<kind>/<n> (never reused within a run). RUN/<kind> is
    marked +T too, so each <n> gets a block group of its own where ext4 can manage it."""
    _seq[0] += 1
    parent = os.path.join(RUN, kind)
    if not os.path.isdir(parent):
        os.makedirs(parent)
        subprocess.run(["chattr", "+T", parent], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = os.path.join(parent, str(_seq[0]))
    os.makedirs(d)
    return d


def trash_maildir(md, owner=None):
    """Empty a Maildir without deleting anything now: move new/cur/tmp into RUN/trash and
    recreate them. Only while the target is idle (everything delivered)."""
    dest = fresh_dir("trash")
    for sub in ("new", "cur", "tmp"):
        p = os.path.join(md, sub)
        if os.path.isdir(p):
            os.rename(p, os.path.join(dest, sub))
        os.makedirs(p, exist_ok=True)
        if owner:
            os.chown(p, *owner)


def count_files(d):
    try:
        with os.scandir(d) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def wait_port(port, timeout=20.0, banner=True):
    """Wait until HOST:port accepts and (optionally) sends a line. Bounded by timeout."""
    end = now() + timeout
    while now() < end:
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if banner:
                    s.recv(512)
                return True
        except OSError:
            time.sleep(0.1)
    return False


def ensure_free(port):
    """Refuse to start (and so to measure) if something else already listens on HOST:port:
    this box is shared, and wait_port() would happily benchmark a stranger's server."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
    except OSError as e:
        raise RuntimeError(f"{HOST}:{port} is already in use ({e}); pick other ports (PORTS in mailbench.py)") from e
    finally:
        s.close()


def mem_of(pids):
    """Sum of RSS and PSS (KiB) over pids; processes that vanished are skipped."""
    rss = pss = 0
    n = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            n += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return {"rss_kib": rss, "pss_kib": pss, "procs": n}


def process_children():
    """ppid -> [pid], from one pass over /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            # the command name (in parentheses) may hold spaces: the parent pid follows ") S "
            children.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return children


def children_of(ppid):
    return process_children().get(ppid, [])


def kill_pid(pid, timeout=10.0):
    """Stop one process this script started: SIGTERM, then SIGKILL after timeout."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = now() + timeout
    while now() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        # a zombie still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def pid_from_file(path, comm, marker):
    """Read a daemon's pid file; return the pid only if that process is alive, is named
    comm and has marker (our private config path) on its command line or in its environment
    (Postfix's master carries MAIL_CONFIG) - never a stranger."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() != comm:
                return None
        blob = b""
        for part in ("cmdline", "environ"):
            with open(f"/proc/{pid}/{part}", "rb") as f:
                blob += f.read()
        if marker.encode() not in blob:
            return None
        return pid if pid_alive(pid) else None
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


class Popened:
    """A child process started by us, with its own log file; stopped by PID."""

    def __init__(self, argv, logname, env=None):
        self.logf = open(os.path.join(RUN, logname), "ab")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pid = self.p.pid

    def stop(self):
        """SIGTERM our child by PID, reap it; SIGKILL if it is still there after 10 s."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.logf.close()


def maildir_create(path, uid=None, gid=None):
    for sub in ("", "new", "cur", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
        if uid is not None:
            os.chown(os.path.join(path, sub), uid, gid)


# --------------------------------------------------------------------------------------
# SMTP targets
# --------------------------------------------------------------------------------------
class SmtpTarget:
    name = "?"
    port = 0
    delivers = False  # True if accepted mail lands in maildir_new()

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def pids(self):
        """Server processes whose memory is charged to this target."""
        return []

    def maildir(self):
        return None

    mail_owner = None  # (uid, gid) of delivered mail, when the server writes it as another user

    def reset_maildir(self):
        md = self.maildir()
        if md and os.path.isdir(md):
            trash_maildir(md, self.mail_owner)

    def delivered(self):
        md = self.maildir()
        return count_files(os.path.join(md, "new")) + count_files(os.path.join(md, "cur")) if md else 0

    def settled(self):
        """True when the target has nothing left in flight (queues empty)."""
        return True


class SmtpSinkTarget(SmtpTarget):
    """Postfix's smtp-sink: pure C, single process, discards mail. The ceiling."""
    name = "smtp-sink"

    def __init__(self, port=PORTS["smtp-sink"]):
        self.port = port
        self.proc = None

    def start(self):
        ensure_free(self.port)
        self.proc = Popened(["smtp-sink", "-u", "nobody", "-m", "30000", f"{HOST}:{self.port}", "4096"],
                            "smtp-sink.log")
        if not wait_port(self.port):
            raise RuntimeError("smtp-sink did not start")

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def pids(self):
        return [self.proc.pid] if self.proc else []


class AiosmtpdTarget(SmtpTarget):
    """aiosmtpd 1.4 CLI with its Mailbox handler (mailbox.Maildir: write tmp, fsync, link into new/)."""
    name = "aiosmtpd"
    delivers = True

    def __init__(self, port=PORTS["aiosmtpd"]):
        self.port = port
        self.dir = os.path.join(RUN, "aiosmtpd")
        self.proc = None

    def maildir(self):
        return os.path.join(self.dir, "Maildir")

    def start(self):
        maildir_create(self.maildir())
        ensure_free(self.port)
        self.proc = Popened([PY, "-m", "aiosmtpd", "-n", "-l", f"{HOST}:{self.port}",
                             "-c", "aiosmtpd.handlers.Mailbox", self.maildir()], "aiosmtpd.log")
        if not wait_port(self.port):
            raise RuntimeError("aiosmtpd did not start")

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def pids(self):
        return [self.proc.pid] if self.proc else []


POSTFIX_MASTER_CF = """\
# private bench instance: every service unchained (chroot n), SMTP on loopback only
{host}:{port} inet n - n - {maxproc} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_MAIN_CF = """\
# private bench instance (generated by mailbench.py) - Postfix defaults except where noted
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{domain}
mydomain = {domain}
myorigin = $mydomain
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_banner = $myhostname ESMTP
# durable local delivery: virtual(8) writes Maildir (tmp, fsync, link into new/)
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 100
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
"""


class PostfixTarget(SmtpTarget):
    """A private Postfix instance: postfix -c RUN/postfix/etc, own queue, virtual(8) Maildir."""
    name = "postfix"
    delivers = True
    mail_owner = (VMAIL_UID, VMAIL_GID)

    def __init__(self, port=PORTS["postfix"], maxproc=100):
        self.port = port
        self.maxproc = maxproc
        self.root = os.path.join(RUN, "postfix")
        self.etc = os.path.join(self.root, "etc")
        # queue and mailboxes in separate top-level dirs (separate ext4 groups), as on a
        # real system (/var/spool/postfix vs /home or /var/mail)
        self.queue = os.path.join(RUN, "postfix-queue")
        self.vmail = os.path.join(RUN, "postfix-vmail")
        self.started = False

    def maildir(self):
        return os.path.join(self.vmail, USER, "Maildir")

    def pf(self, *args, timeout=60):
        """Run `postfix -c ETC ARGS`; output goes to run/postfix-cmd.log (a daemon child could
        otherwise keep a pipe open). Returns the exit status."""
        with open(os.path.join(RUN, "postfix-cmd.log"), "ab") as lf:
            return subprocess.run(["postfix", "-c", self.etc, *args], stdout=lf, stderr=lf,
                                  stdin=subprocess.DEVNULL, timeout=timeout).returncode

    def configure(self):
        os.makedirs(self.etc, exist_ok=True)
        os.makedirs(self.queue, exist_ok=True)
        os.makedirs(os.path.join(self.root, "data"), exist_ok=True)
        shutil.chown(os.path.join(self.root, "data"), "postfix", "postfix")
        vroot = self.vmail
        os.makedirs(vroot, exist_ok=True)
        os.chown(vroot, VMAIL_UID, VMAIL_GID)
        os.makedirs(os.path.join(vroot, USER), exist_ok=True)
        os.chown(os.path.join(vroot, USER), VMAIL_UID, VMAIL_GID)
        maildir_create(self.maildir(), VMAIL_UID, VMAIL_GID)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN_CF.format(root=self.root, etc=self.etc, queue=self.queue, vmail=self.vmail,
                                           domain=DOMAIN, host=HOST, uid=VMAIL_UID, gid=VMAIL_GID))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF.format(host=HOST, port=self.port, maxproc=self.maxproc))
        with open(os.path.join(self.etc, "vmailbox"), "w") as f:
            f.write(f"{RCPT} {USER}/Maildir/\n")

    def master_pid(self):
        """PID of the master of THIS instance, or None (a stale pid file is ignored)."""
        return pid_from_file(os.path.join(self.queue, "pid", "master.pid"), "master", self.etc)

    def start(self):
        self.configure()
        ensure_free(self.port)
        if self.pf("check") != 0:
            raise RuntimeError("postfix check failed, see run/postfix-cmd.log")
        if self.pf("start") != 0:
            raise RuntimeError("postfix start failed, see run/postfix-cmd.log")
        self.started = True
        if not wait_port(self.port):
            raise RuntimeError("postfix smtpd did not answer")

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        self.pf("stop")
        end = now() + 20
        while pid and pid_alive(pid) and now() < end:
            time.sleep(0.1)
        if pid and pid_alive(pid):
            kill_pid(pid)
        self.started = False

    def pids(self):
        pid = self.master_pid()
        return [pid, *children_of(pid)] if pid else []

    def settled(self):
        # nothing in incoming/active/deferred/maildrop
        q = self.queue
        for sub in ("maildrop", "incoming", "active", "deferred"):
            for _dp, _dn, files in os.walk(os.path.join(q, sub)):
                if files:
                    return False
        return True


# ======================================================================================
# geomail (this project)
# Started as `$GEOMAIL_CMD serve -c RUN/geomail/geomail.yaml` (foreground, logs to stderr ->
# RUN/geomail.log). Three things tie this file to geomail; check them when geomail changes:
#   1. write_geomail_config(): the YAML keys match geomail/config/ (schema.py);
#   2. geomail_password_hash(): `geomail passwd` reads the password on stdin, prints the hash;
#   3. GEOMAIL_MAILDIR_REL: geomail/store/maildir.py keeps <store.path>/<domain>/<local>/.
# ======================================================================================
GEOMAIL_CMD = os.environ.get("GEOMAIL_CMD", os.path.join(PROJECT, ".venv", "bin", "geomail"))
# Another geomail build (e.g. an older revision) to measure side by side as target `geomail-ref`,
# interleaved round by round with `geomail`, for before/after comparisons in one run.
GEOMAIL_REF_CMD = os.environ.get("GEOMAIL_REF_CMD", "")
GEOMAIL_MAILDIR_REL = f"{DOMAIN}/{{user}}"  # below store.path; {user} is the local part
# geomail refuses to stay root unless told to (`user: root`). The bench runs it the way
# production does (conf/geomail.service): started as root, it binds, then drops to an
# unprivileged account that owns data_dir. That account is GEOMAIL_BENCH_USER, created here
# as a system user without home or shell if it does not exist (set GEOMAIL_BENCH_USER=root
# to keep root instead; the figures do not depend on it).
GEOMAIL_BENCH_USER = os.environ.get("GEOMAIL_BENCH_USER", "geomail-bench")
# POP3 mailboxes served by both POP3 servers: the main one (USER), the scaling ones, and the
# users of the concurrent-fetch test
POP3_SCALE_USERS = {200: "scale200", 20000: "scale20000"}  # 2,000 is USER's main mailbox
POP3_CONC_USERS = [f"pop{i:02d}" for i in range(50)]
POP3_USERS = [USER, *POP3_SCALE_USERS.values(), *POP3_CONC_USERS]


def geomail_owner():
    """(uid, gid) geomail runs as, creating GEOMAIL_BENCH_USER if needed; None for root."""
    import pwd
    if GEOMAIL_BENCH_USER == "root":
        return None
    try:
        pw = pwd.getpwnam(GEOMAIL_BENCH_USER)
    except KeyError:
        log(f"geomail: creating system user {GEOMAIL_BENCH_USER} (no home, no shell) to run as")
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", GEOMAIL_BENCH_USER], check=True, timeout=30,
                       stdout=subprocess.DEVNULL)
        pw = pwd.getpwnam(GEOMAIL_BENCH_USER)
    return pw.pw_uid, pw.pw_gid


def geomail_password_hash(password):
    """`geomail passwd` prints the hash of a password piped on stdin."""
    r = subprocess.run([GEOMAIL_CMD, "passwd"], input=password + "\n", capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"geomail passwd failed: {r.stderr.strip()[-300:]}")
    return r.stdout.strip().splitlines()[-1]


def write_geomail_config(path, smtp_port, pop3_port, data_dir):
    """YAML per geomail/config/ (schema.py).

    Configures: SMTP inbound on HOST:smtp_port accepting mail for DOMAIN; durable Maildir
    delivery (geomail fsyncs file and directory before 250: no option turns that off); POP3
    on HOST:pop3_port, plaintext USER/PASS allowed (the peers' Dovecot has ssl = no too) for
    POP3_USERS, all with PASSWORD (one argon2id hash serves them all); limits raised so that
    the load generator (one source IP) is not throttled, as the peers are (Postfix exempts
    mynetworks from its per-client limits, aiosmtpd has none); nothing leaves loopback.
    """
    pw = geomail_password_hash(PASSWORD)
    users = "".join(f'  {u}@{DOMAIN}: {{password: "{pw}"}}\n' for u in POP3_USERS)
    cfg = f"""\
# written by bench/mailbench.py for a benchmark run
hostname: mx.{DOMAIN}
domains: [{DOMAIN}]
data_dir: {data_dir}
user: {GEOMAIL_BENCH_USER}
store: {{format: maildir, path: {data_dir}/mail}}
users:
{users}listen:
  smtp: ["{HOST}:{smtp_port}"]
  pop3: [{{address: "{HOST}:{pop3_port}", allow_plaintext_auth: true}}]
relay:
  nameservers: ["{HOST}:9"]          # nothing is relayed in the bench; never leave loopback
limits: {{max_connections: 20000, max_connections_per_ip: 20000, shutdown_grace: 5s}}
log: {{level: info}}
"""
    with open(path, "w") as f:
        f.write(cfg)


class GeomailTarget(SmtpTarget):
    """geomail SMTP inbound + the same process's POP3."""
    name = "geomail"
    delivers = True
    cmd = GEOMAIL_CMD

    def __init__(self, port=PORTS["geomail"], pop3_port=PORTS["geomail-pop3"]):
        self.port = port
        self.pop3_port = pop3_port
        self.root = os.path.join(RUN, self.name)
        self.data = os.path.join(self.root, "data")
        self.proc = None
        self.mail_owner = geomail_owner()

    @classmethod
    def available(cls):
        return bool(cls.cmd) and shutil.which(cls.cmd) is not None

    def maildir(self, user=USER):
        return os.path.join(self.data, "mail", GEOMAIL_MAILDIR_REL.format(user=user))

    def make_maildir(self, user):
        """Create the user's Maildir (and its parents below data_dir) owned by geomail's user."""
        path = self.maildir(user)
        d, parents = path, []
        while d != self.data and not os.path.isdir(d):
            parents.append(d)
            d = os.path.dirname(d)
        for p in reversed(parents):
            os.makedirs(p, exist_ok=True)
            os.chmod(p, 0o700)
            if self.mail_owner:
                os.chown(p, *self.mail_owner)
        maildir_create(path, *(self.mail_owner or (None, None)))

    def start(self):
        if not self.available():
            raise RuntimeError(f"'{self.cmd}' not found (set GEOMAIL_CMD or run `make` in the project)")
        os.makedirs(self.data, mode=0o700, exist_ok=True)
        if self.mail_owner:
            os.chown(self.data, *self.mail_owner)  # geomail would do it too (system.prepare_data_dir)
        conf = os.path.join(self.root, "geomail.yaml")
        write_geomail_config(conf, self.port, self.pop3_port, self.data)
        ensure_free(self.port)
        ensure_free(self.pop3_port)
        self.proc = Popened([self.cmd, "serve", "-c", conf], f"{self.name}.log")
        if not wait_port(self.port, timeout=30):
            self.stop()
            raise RuntimeError("geomail SMTP did not answer, see run/geomail.log")

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def pids(self):
        # the main process plus any workers it forks
        return [self.proc.pid, *children_of(self.proc.pid)] if self.proc else []


class GeomailRefTarget(GeomailTarget):
    """The reference geomail build (GEOMAIL_REF_CMD), SMTP only, on its own ports."""
    name = "geomail-ref"
    cmd = GEOMAIL_REF_CMD

    def __init__(self):
        super().__init__(PORTS["geomail-ref"], PORTS["geomail-ref-pop3"])


# --------------------------------------------------------------------------------------
# POP3 targets
# --------------------------------------------------------------------------------------
DOVECOT_CONF = """\
# private bench instance (generated by mailbench.py)
instance_name = bench-dovecot
base_dir = {root}/base
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = pop3
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
mail_location = maildir:{root}/mail/%u/Maildir
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {port}
  }}
}}
"""


class DovecotTarget:
    """Dovecot POP3, private config via dovecot -c FILE; passwd-file passdb; maildir."""
    name = "dovecot"
    mail_owner = (VMAIL_UID, VMAIL_GID)

    def __init__(self, port=PORTS["dovecot"]):
        self.port = port
        self.root = os.path.join(RUN, "dovecot")
        self.conf = os.path.join(self.root, "dovecot.conf")
        self.started = False

    def login(self, user=USER):
        return user

    def maildir(self, user=USER):
        return os.path.join(self.root, "mail", user, "Maildir")

    def make_maildir(self, user):
        home = os.path.join(self.root, "mail", user)
        os.makedirs(home, exist_ok=True)
        os.chown(home, VMAIL_UID, VMAIL_GID)
        maildir_create(self.maildir(user), VMAIL_UID, VMAIL_GID)

    def master_pid(self):
        """PID of the master of THIS instance, or None (a stale pid file is ignored)."""
        return pid_from_file(os.path.join(self.root, "base", "master.pid"), "dovecot", self.conf)

    def start(self):
        for d in ("base", "state", "mail"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(root=self.root, host=HOST, port=self.port, uid=VMAIL_UID, gid=VMAIL_GID))
        with open(os.path.join(self.root, "passwd"), "w") as f:
            for user in POP3_USERS:
                f.write(f"{user}:{{PLAIN}}{PASSWORD}::::::\n")
        ensure_free(self.port)
        # the daemon's children would hold a pipe open forever: log to a file instead
        with open(os.path.join(RUN, "dovecot-start.log"), "ab") as lf:
            r = subprocess.run(["dovecot", "-c", self.conf], stdout=lf, stderr=lf, stdin=subprocess.DEVNULL,
                               timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"dovecot failed (exit {r.returncode}), see run/dovecot-start.log")
        self.started = True
        if not wait_port(self.port):
            raise RuntimeError("dovecot pop3 did not answer")

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        subprocess.run(["doveadm", "-c", self.conf, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=30)
        end = now() + 15
        while pid and pid_alive(pid) and now() < end:
            time.sleep(0.1)
        if pid and pid_alive(pid):
            kill_pid(pid)
        self.started = False

    def pids(self):
        pid = self.master_pid()
        return [pid, *children_of(pid)] if pid else []

    def reset_index(self, user=USER):
        """Remove Dovecot's index/uidlist so the next session is a cold one."""
        md = self.maildir(user)
        for fn in os.listdir(md):
            if fn.startswith("dovecot"):
                p = os.path.join(md, fn)
                if os.path.isfile(p):
                    os.unlink(p)


class GeomailPop3Target:
    """geomail POP3: served by the geomail process (GeomailTarget), which it starts if needed."""
    name = "geomail"

    def __init__(self, smtp_target):
        self.smtp = smtp_target
        self.port = smtp_target.pop3_port
        self.mail_owner = smtp_target.mail_owner
        self.own = False

    def login(self, user=USER):
        return f"{user}@{DOMAIN}"

    def maildir(self, user=USER):
        return self.smtp.maildir(user)

    def make_maildir(self, user):
        self.smtp.make_maildir(user)

    def start(self):
        if not self.smtp.proc:
            self.smtp.start()
            self.own = True
        if not wait_port(self.port):
            raise RuntimeError("geomail POP3 did not answer")

    def stop(self):
        if self.own:
            self.smtp.stop()
            self.own = False

    def pids(self):
        return self.smtp.pids()

    def reset_index(self, user=USER):
        pass  # geomail keeps no index: every session lists the Maildir (sizes from the names)


# --------------------------------------------------------------------------------------
# physical limits
# --------------------------------------------------------------------------------------
def kv_of(stdout):
    return dict(x.split("=", 1) for x in stdout.split() if "=" in x)


def bench_physical(res, reps, reps_tcp, quick):
    """Durable small-file creates: C (tools/fsyncbench) in three modes and Python off the gevent
    hub (tools/gevent_fsync.py, the path geomail's design prescribes), interleaved per round."""
    fsb = os.path.join(TOOLS, "fsyncbench")
    gfs = os.path.join(TOOLS, "gevent_fsync.py")
    mf = str(1000 if quick else 2000)
    shm = "/dev/shm/mailbench-fsync"

    def d():
        return fresh_dir("fsync")

    def shm_d():
        _seq[0] += 1
        os.makedirs(shm, exist_ok=True)
        return os.path.join(shm, str(_seq[0]))
    variants = [  # (label, argv builder, writer counts)
        ("C: write+fsync+rename (Postfix virtual / Python mailbox)",
         lambda w: [fsb, d(), str(w), mf, "10", "4096", "1"], (1, 2, 4, 8)),
        ("C: write+fsync+rename+fsync(dir)", lambda w: [fsb, d(), str(w), mf, "10", "4096", "2"], (1, 2, 4, 8)),
        ("Python, gevent threadpool: write+fsync+rename+fsync(dir)",
         lambda w: [PY, gfs, d(), str(w), mf, "10", "4096"], (1, 2, 4, 8)),
        # its deletions go to a directory of their own (own ext4 group): they must not slow the others
        ("C: write+fsync+rename+fsync(dir), with churn (unlink the file made 100 earlier)",
         lambda w: [fsb, fresh_dir("fsync-churn"), str(w), mf, "10", "4096", "2", "100"], (1, 4)),
        ("C: write+rename, no fsync (page cache only)", lambda w: [fsb, d(), str(w), mf, "10", "4096", "0"], (1, 4)),
        ("C: write+rename on tmpfs /dev/shm (kernel floor, no ext4)",
         lambda w: [fsb, shm_d(), str(w), mf, "10", "4096", "0"], (1, 4)),
    ]
    for w in (1, 2, 4, 8):
        vals = {lab: [] for lab, _, _ in variants}
        p50 = {lab: [] for lab, _, _ in variants}
        for _ in range(reps):
            if left() < 30:
                break
            for lab, argv, ws in variants:
                if w not in ws:
                    continue
                r = subprocess.run(argv(w), capture_output=True, text=True, timeout=40)
                kv = kv_of(r.stdout)
                if r.returncode != 0 or "files_per_sec" not in kv:
                    raise RuntimeError(f"{argv(w)} failed: {r.stderr.strip()[-300:]}")
                vals[lab].append(float(kv["files_per_sec"]))
                if "p50_ms" in kv:
                    p50[lab].append(float(kv["p50_ms"]))
        c2 = vals["C: write+fsync+rename+fsync(dir)"]
        for lab, _, _ in variants:
            if not vals[lab]:
                continue
            ratios = None
            if lab.startswith("Python") and len(vals[lab]) == len(c2):
                ratios = [a / b for a, b in zip(vals[lab], c2, strict=True)]
            res.append(row("physical", f"4 KiB file, {lab}, {w} writer(s)",
                           "tmpfs" if "tmpfs" in lab else "disk", "files/s", vals[lab],
                           ratios=ratios, ratio_to="C same mode" if ratios else None,
                           extra={"p50_ms_writer0": summ(p50[lab])} if p50[lab] else None))
        log(f"fsync w={w}: " + "; ".join(f"{lab[:40]}: {fmt_s(summ(v))}" for lab, v in vals.items() if v))
    shutil.rmtree(shm, ignore_errors=True)

    # loopback TCP ping-pong: C server vs minimal gevent server, same C client, interleaved
    rtt = os.path.join(TOOLS, "tcprtt")
    dur = 1.0
    for port in (PORTS["tcp-c"], PORTS["tcp-gevent"]):
        ensure_free(port)
    srvs = {
        "C epoll echo": Popened([rtt, "server", HOST, str(PORTS["tcp-c"]), "300"], "tcp-c.log"),
        "gevent echo": Popened([PY, os.path.join(TOOLS, "gevent_echo.py"), HOST, str(PORTS["tcp-gevent"]), "300"],
                               "tcp-gevent.log"),
    }
    ports = {"C epoll echo": PORTS["tcp-c"], "gevent echo": PORTS["tcp-gevent"]}
    try:
        for name, port in ports.items():
            if not wait_port(port, banner=False):
                raise RuntimeError(f"{name} did not start")
        for conns in (1, 10, 100):
            vals = {n: [] for n in ports}
            for _ in range(reps_tcp):
                for name, port in ports.items():
                    r = subprocess.run([rtt, "client", HOST, str(port), str(conns), str(dur), "64"],
                                       capture_output=True, text=True, timeout=dur + 20)
                    kv = dict(x.split("=") for x in r.stdout.split())
                    vals[name].append(float(kv["rtt_per_sec"]))
            ratios = [g / c for g, c in zip(vals["gevent echo"], vals["C epoll echo"], strict=True)]
            for name in ports:
                res.append(row("physical", f"TCP 64 B ping-pong, {conns} conn(s)", name, "round trips/s",
                               vals[name], ratios=ratios if name == "gevent echo" else None,
                               ratio_to="C epoll echo" if name == "gevent echo" else None))
            log(f"tcp conns={conns}: C {fmt_s(summ(vals['C epoll echo']))}  gevent {fmt_s(summ(vals['gevent echo']))}")
        vals = {n: [] for n in ports}
        for _ in range(reps_tcp):
            for name, port in ports.items():
                r = subprocess.run([rtt, "connect", HOST, str(port), "3000", "10"],
                                   capture_output=True, text=True, timeout=30)
                kv = dict(x.split("=") for x in r.stdout.split())
                vals[name].append(float(kv["connects_per_sec"]))
        ratios = [g / c for g, c in zip(vals["gevent echo"], vals["C epoll echo"], strict=True)]
        for name in ports:
            res.append(row("physical", "TCP connect + 1 B ping-pong + close, sequential", name, "conns/s",
                           vals[name], ratios=ratios if name == "gevent echo" else None,
                           ratio_to="C epoll echo" if name == "gevent echo" else None))
    finally:
        for p in srvs.values():
            p.stop()


def bench_smtp_ceiling(res, reps, quick):
    """SMTP transactions/s with no TCP connect per message: smtp-source -d against smtp-sink,
    both C. The protocol ceiling of this box (the 1-connection-per-message ceiling is the
    smtp-sink row of the SMTP section)."""
    sink = SmtpSinkTarget()
    sink.start()
    try:
        for conc in (1, 10, 100):
            m = 2500 if quick else 5000
            vals = []
            for _ in range(reps):
                argv = ["smtp-source", "-d", "-s", str(conc), "-m", str(m), "-l", "1024",
                        "-f", SENDER, "-t", RCPT, f"{HOST}:{sink.port}"]
                t0 = now()
                r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                if r.returncode == 0:
                    vals.append(m / (now() - t0))
            res.append(row("physical", f"SMTP ceiling: smtp-source -d (reused conns) -> smtp-sink, c={conc}, 1 KiB",
                           "smtp-sink", "msgs/s", vals))
            log(f"smtp ceiling -d c={conc}: {fmt_s(summ(vals))}")
    finally:
        sink.stop()


# --------------------------------------------------------------------------------------
# SMTP throughput
# --------------------------------------------------------------------------------------
def msg_count(conc, size, quick):
    base = {(1, 1024): 600, (10, 1024): 1500, (100, 1024): 1500,
            (1, 102400): 300, (10, 102400): 600, (100, 102400): 600}.get((conc, size), 500)
    return max(conc, base // 2 if quick else base)


def smtp_source(port, conc, m, size, timeout):
    check_loopback(HOST)
    argv = ["smtp-source", "-s", str(conc), "-m", str(m), "-l", str(size),
            "-f", SENDER, "-t", RCPT, f"{HOST}:{port}"]
    t0 = now()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return t0, now(), r, argv


class MemSampler:
    """Peak memory of a target's processes while a load runs: a thread samples mem_of(pids)
    every `every` seconds (RSS and PSS summed over the processes, see mem_of)."""

    def __init__(self, target, every=0.25):
        self.target, self.every = target, every
        self.peak_rss = self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            m = mem_of(self.target.pids())
            self.peak_rss = max(self.peak_rss, m["rss_kib"])
            self.peak_pss = max(self.peak_pss, m["pss_kib"])
            self.samples += 1
            if self._stop.wait(self.every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def smtplat(port, conc, m, size, timeout):
    """tools/smtplat: the same load shape as smtp-source, with per-message reply latency."""
    check_loopback(HOST)
    argv = [os.path.join(TOOLS, "smtplat"), HOST, str(port), str(conc), str(m), str(size), SENDER, RCPT,
            str(int(timeout))]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 15)
    kv = kv_of(r.stdout)
    if "msgs" not in kv:
        raise RuntimeError(f"smtplat failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return kv


def wait_delivered(t, m, budget_s):
    """Wait until target t has m messages in its Maildir and nothing in flight; bounded (also
    ends after 10 s without progress). Returns the count delivered."""
    end = now() + budget_s
    last, last_change = -1, now()
    while now() < end:
        got = t.delivered()
        if got >= m and t.settled():
            return got
        if got != last:
            last, last_change = got, now()
        elif now() - last_change > 10:
            break
        time.sleep(0.02)
    return t.delivered()


def pair_ratios(a, b):
    """Per-round ratios a[i]/b[i] when both lists have a value for every round."""
    if a and b and len(a) == len(b):
        return [x / y for x, y in zip(a, b, strict=True)]
    return None


def bench_smtp(res, targets, reps, quick, grid, lat_reps):
    for conc, size in grid:
        m = msg_count(conc, size, quick)
        acc = {t.name: [] for t in targets}
        e2e = {t.name: [] for t in targets}
        lag = {t.name: [] for t in targets}
        rss = {t.name: [] for t in targets}
        pss = {t.name: [] for t in targets}
        lat = {t.name: {"dot_p50_ms": [], "dot_p90_ms": [], "dot_p99_ms": [], "txn_p50_ms": [], "msgs_per_sec": []}
               for t in targets}
        errors = {}
        # warm-up, not counted: lets Postfix fork its smtpd/cleanup/virtual processes and the
        # Python servers warm their code paths, so the reps measure the steady state
        for t in targets:
            try:
                smtp_source(t.port, conc, min(m, 2 * conc), size, timeout=60)
                if t.delivers:
                    wait_delivered(t, min(m, 2 * conc), 30)
            except subprocess.TimeoutExpired:
                pass
            t.reset_maildir()
        for rep in range(reps):
            if left() < 60:
                log("time budget: skipping remaining SMTP reps")
                break
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]  # rotate start
            for t in order:
                t.reset_maildir()
                try:
                    with MemSampler(t) as mem:
                        t0, t1, r, _argv = smtp_source(t.port, conc, m, size, timeout=max(30, min(180, left() - 30)))
                        if r.returncode == 0 and t.delivers:
                            got = wait_delivered(t, m, max(30, min(180, left() - 30)))
                            t_end = now()
                except subprocess.TimeoutExpired:
                    errors[t.name] = "smtp-source timed out"
                    continue
                if r.returncode != 0:
                    errors[t.name] = (r.stderr or r.stdout).strip()[-300:]
                    continue
                acc[t.name].append(m / (t1 - t0))
                rss[t.name].append(mem.peak_rss / 1024)
                pss[t.name].append(mem.peak_pss / 1024)
                if t.delivers:
                    if got >= m:
                        e2e[t.name].append(m / (t_end - t0))
                        lag[t.name].append(t_end - t1)
                    else:
                        errors[t.name] = f"only {got}/{m} in {t.maildir()} (stalled or timed out)"
        # latency of the final reply: the same grid with tools/smtplat, interleaved the same way
        for rep in range(lat_reps):
            if left() < 60:
                log("time budget: skipping remaining SMTP latency reps")
                break
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]
            for t in order:
                t.reset_maildir()
                try:
                    kv = smtplat(t.port, conc, m, size, timeout=max(30, min(180, left() - 30)))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    errors[t.name] = f"smtplat: {e}"
                    continue
                if int(kv["msgs"]) != m:
                    errors[t.name] = f"smtplat: {kv.get('msgs')}/{m} acknowledged, {kv.get('first_error', '')}"
                    continue
                for k in lat[t.name]:
                    lat[t.name][k].append(float(kv[k]))
                if t.delivers:
                    wait_delivered(t, m, max(30, min(120, left() - 30)))  # quiet box for the next target
        base = acc.get("smtp-sink")
        test = f"SMTP c={conc} size={size // 1024} KiB ({m} msgs, 1 conn/msg)"
        for t in targets:
            ratios = pair_ratios(acc[t.name], base) if t.name != "smtp-sink" else None
            res.append(row("smtp", test, t.name, "msgs/s accepted", acc[t.name], ratios=ratios,
                           ratio_to="smtp-sink" if ratios else None, error=errors.get(t.name)))
            if t.delivers:
                res.append(row("smtp", test, t.name, "msgs/s in Maildir (e2e)", e2e[t.name],
                               error=errors.get(t.name), extra={"lag_s": summ(lag[t.name])}))
            res.append(row("smtp", test, t.name, "final reply latency p50 (smtplat), ms",
                           lat[t.name]["dot_p50_ms"], extra={"lat": {k: summ(v) for k, v in lat[t.name].items()}}))
            res.append(row("smtp", test, t.name, "final reply latency p99 (smtplat), ms", lat[t.name]["dot_p99_ms"]))
            res.append(row("smtp", test, t.name, "msgs/s accepted (smtplat)", lat[t.name]["msgs_per_sec"]))
            res.append(row("smtp", test, t.name, "server RSS peak during load, MiB", rss[t.name],
                           extra={"pss_mib": summ(pss[t.name])}))
            # per-round ratios between servers: aiosmtpd vs postfix, geomail vs both
            refs = {"aiosmtpd": ["postfix"], "geomail": ["postfix", "aiosmtpd", "geomail-ref"],
                    "geomail-ref": ["postfix"]}.get(t.name, [])
            for ref in refs:
                if ref not in acc:
                    continue
                rr = pair_ratios(acc[t.name], acc[ref])
                if rr:
                    res.append(row("smtp", test, t.name, f"x {ref} (accepted msgs/s, per round)", rr))
                rr = pair_ratios(e2e[t.name], e2e[ref])
                if rr and t.delivers:
                    res.append(row("smtp", test, t.name, f"x {ref} (e2e msgs/s, per round)", rr))
            log(f"smtp c={conc} size={size}: {t.name} accept {fmt_s(summ(acc[t.name]))}"
                + (f" e2e {fmt_s(summ(e2e[t.name]))}" if t.delivers else "")
                + f" p50 {fmt_s(summ(lat[t.name]['dot_p50_ms']))}ms p99 {fmt_s(summ(lat[t.name]['dot_p99_ms']))}ms"
                + f" rss {fmt_s(summ(rss[t.name]))}MiB"
                + (f" ERROR {errors[t.name]}" if t.name in errors else ""))
        for t in targets:
            t.reset_maildir()


# --------------------------------------------------------------------------------------
# idle connections
# --------------------------------------------------------------------------------------
def hold_idle(port, n, connect_timeout, hold_s, on_held, max_inflight=64, stall_s=5.0):
    """Open n connections to port, read each banner, hold them idle, call on_held(), close.

    Bounded: at most n sockets, at most max_inflight connects/banners pending at once (kept
    below the servers' listen backlogs so the kernel does not drop SYNs and the figure is not
    a SYN-retry artefact), and the connect phase ends after connect_timeout seconds or after
    stall_s seconds without progress (a server at its process/connection limit).
    """
    check_loopback(HOST)
    sel = selectors.DefaultSelector()
    socks, held = [], []
    bufs = {}
    started = established = banners = failed = 0
    pending = 0  # connect or banner outstanding
    t0 = now()
    end = t0 + connect_timeout
    last_progress = t0
    t_all = None
    stalled = False
    while now() < end:
        while started < n and pending < max_inflight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((HOST, port))
            started += 1
            if err not in (0, 115):  # EINPROGRESS
                failed += 1
                s.close()
                continue
            socks.append(s)
            bufs[s] = b""
            pending += 1
            sel.register(s, selectors.EVENT_WRITE, "connect")
        if banners + failed >= n:
            t_all = now() - t0
            break
        if now() - last_progress > stall_s:
            stalled = True
            break
        for key, _ev in sel.select(timeout=0.2):
            s = key.fileobj
            last_progress = now()
            if key.data == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failed += 1
                    pending -= 1
                    sel.unregister(s)
                    continue
                established += 1
                sel.modify(s, selectors.EVENT_READ, "banner")
            else:
                try:
                    data = s.recv(1024)
                except OSError:
                    data = b""
                if not data:
                    failed += 1
                    pending -= 1
                    sel.unregister(s)
                    continue
                bufs[s] += data
                if b"\n" in bufs[s]:
                    pending -= 1
                    if bufs[s].startswith(b"220"):
                        banners += 1
                        held.append(s)
                    else:
                        failed += 1
                    sel.unregister(s)
    connect_phase = now() - t0
    time.sleep(hold_s)
    alive = 0  # banner connections the server has not closed during the hold
    for s in held:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        alive += 1
    mem = on_held()
    for s in socks:
        s.close()
    sel.close()
    return {"requested": n, "started": started, "established": established, "banners": banners,
            "failed": failed, "alive_after_hold": alive, "seconds_to_all_banners": t_all,
            "stalled": stalled, "connect_phase_s": connect_phase, **mem}


def bench_idle(res, make_targets, sizes, hold_s):
    for name, make in make_targets:
        for n in sizes:
            if left() < 90:
                log("time budget: skipping remaining idle tests")
                return
            t = make()
            try:
                t.start()
                time.sleep(1.0)
                base = mem_of(t.pids())
                timeout = 30 + n / 200  # Postfix forks ~100 smtpd/s here; a stall ends it sooner
                r = hold_idle(t.port, n, timeout, hold_s, lambda t=t: mem_of(t.pids()))
                r["base_rss_kib"], r["base_pss_kib"] = base["rss_kib"], base["pss_kib"]
                per = (r["pss_kib"] - base["pss_kib"]) / r["banners"] if r["banners"] else None
                r["pss_kib_per_conn"] = per
                res.append(row("idle", f"{n} idle SMTP conns after banner", name, "banners held",
                               [r["banners"]], extra=r))
                log(f"idle {name} n={n}: banners={r['banners']} alive={r['alive_after_hold']} "
                    f"rss={r['rss_kib'] / 1024:.0f}MiB pss={r['pss_kib'] / 1024:.0f}MiB "
                    f"procs={r['procs']} pss/conn={per and round(per, 1)}KiB t_all={r['seconds_to_all_banners']}")
            except Exception as e:  # report and go on with the next target
                res.append(row("idle", f"{n} idle SMTP conns after banner", name, "banners held", [],
                               error=str(e)))
                log(f"idle {name} n={n}: ERROR {e}")
            finally:
                t.stop()


# --------------------------------------------------------------------------------------
# POP3
# --------------------------------------------------------------------------------------
def preload(maildir, n, size, owner=None):
    """n messages of ~size bytes (LF line ends, like Postfix delivery) into Maildir/new, named
    as Dovecot and geomail name delivered mail, with S=<octets> and W=<octets with CRLF>, so
    neither server has to read a file to know its size (both do read it when W= is missing)."""
    maildir_create(maildir, *(owner or (None, None)))
    trash_maildir(maildir, owner)
    body_line = ("x" * 76 + "\n")
    t = int(time.time())
    newdir = os.path.join(maildir, "new")
    for i in range(n):
        hdr = (f"Return-Path: <{SENDER}>\nDelivered-To: {RCPT}\nFrom: {SENDER}\nTo: {RCPT}\n"
               f"Subject: bench message {i}\nMessage-ID: <{i}.{t}@{DOMAIN}>\n\n")
        data = (hdr + body_line * max(1, (size - len(hdr)) // len(body_line))).encode()
        wsize = len(data) + data.count(b"\n")
        fn = os.path.join(newdir, f"{t}.M{i}P1.bench,S={len(data)},W={wsize}")
        fd = os.open(fn, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        if owner:
            os.fchown(fd, *owner)
        os.close(fd)


TERM = b"\r\n.\r\n"


class RawPop3:
    """A minimal blocking POP3 client that costs little per byte (poplib parses every line in
    Python and becomes the bottleneck at a few 10 MB/s), so the figures are the server's."""

    def __init__(self, port, timeout=60):
        check_loopback(HOST)
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.ok(self.line())

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError("server closed the connection")
        self.buf += data

    def line(self):
        start = 0
        while (i := self.buf.find(b"\r\n", start)) < 0:
            start = max(0, len(self.buf) - 1)
            self._fill()
        out = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return out

    @staticmethod
    def ok(line):
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"server said {line[:120]!r}")
        return line

    def cmd(self, c):
        self.sock.sendall(c.encode() + b"\r\n")
        return self.ok(self.line())

    def multi(self, c):
        """A multi-line command; the body (without the final '.' line)."""
        self.cmd(c)
        if self.buf[:3] == b".\r\n":
            del self.buf[:3]
            return b""
        start = 0
        while (i := self.buf.find(TERM, start)) < 0:
            start = max(0, len(self.buf) - 4)
            self._fill()
        body = bytes(self.buf[:i])
        del self.buf[:i + 5]
        return body

    def login(self, name):
        self.cmd(f"USER {name}")
        self.cmd(f"PASS {PASSWORD}")

    def retr_pipelined(self, n):
        """RETR 1..n written at once (from a thread when large: the commands and the replies
        would otherwise fill both socket buffers); count the terminators. Returns octets."""
        blob = b"".join(b"RETR %d\r\n" % i for i in range(1, n + 1))
        writer = None
        if len(blob) > 32768:
            writer = threading.Thread(target=self.sock.sendall, args=(blob,), daemon=True)
            writer.start()
        else:
            self.sock.sendall(blob)
        seen, total, tail = bytes(self.buf).count(TERM), len(self.buf), bytes(self.buf[-4:])
        self.buf.clear()
        while seen < n:
            data = self.sock.recv(1 << 20)
            if not data:
                raise RuntimeError("server closed during pipelined RETR")
            total += len(data)
            chunk = tail + data
            seen += chunk.count(TERM)
            tail = chunk[-4:]
        if writer:
            writer.join(timeout=30)
        return total

    def quit(self):
        try:
            self.cmd("QUIT")
        finally:
            self.sock.close()

    def close(self):
        self.sock.close()


def pop3_session(t, user, n, retr):
    """One session: login; STAT, LIST, UIDL; RETR every message (retr = 'one' one command at a
    time, 'pipelined', or None); QUIT (the server's UPDATE state: messages read move to cur/).
    Times each part; checks the counts and that no message came back shorter than LIST said."""
    out = {}
    t0 = now()
    c = RawPop3(t.port)
    try:
        c.login(t.login(user))
        out["login_s"] = now() - t0
        t1 = now()
        stat = c.cmd("STAT").split()
        lst = c.multi("LIST").split(b"\r\n")
        uidl = c.multi("UIDL").split(b"\r\n")
        out["list_uidl_s"] = now() - t1
        out["login_list_uidl_s"] = now() - t0
        count = int(stat[1])
        if count != n or len(lst) != n or len(uidl) != n:
            raise RuntimeError(f"{t.name} {user}: expected {n} messages, STAT {count}, LIST {len(lst)}, "
                               f"UIDL {len(uidl)}")
        octets = int(stat[2])
        t2 = now()
        total = 0
        if retr == "pipelined":
            total = c.retr_pipelined(n)
        elif retr == "one":
            for i in range(1, n + 1):
                total += len(c.multi(f"RETR {i}")) + 2  # + the CRLF ending the last line
        if retr:
            out["retr_all_s"] = now() - t2
            out["retr_bytes"] = total
            if total < octets:
                raise RuntimeError(f"{t.name}: RETR returned {total} octets, STAT says {octets}")
        t3 = now()
        c.quit()
        out["quit_s"] = now() - t3
        out["total_s"] = now() - t0
    except BaseException:
        c.close()
        raise
    return out


def pop3_logins(t, count, maxsec):
    """Sequential USER/PASS/STAT/QUIT sessions per second."""
    t0 = now()
    done = 0
    while done < count and now() - t0 < maxsec:
        c = RawPop3(t.port, timeout=30)
        c.login(t.login(USER))
        c.cmd("STAT")
        c.quit()
        done += 1
    return done / (now() - t0)


def pop3_concurrent(t, users, n_each):
    """len(users) clients at once: each connects and logs in (all started together: the wall
    time of the logins gives concurrent logins/s); once ALL are logged in they are released
    together to STAT+LIST+UIDL, RETR all pipelined and QUIT (wall time of the fetch phase)."""
    k = len(users)
    barrier = threading.Barrier(k + 1, timeout=120)
    done_at, errors, octets = [0.0] * k, [], [0] * k
    t0 = now()
    login_at = [0.0] * k

    def client(i, user):
        c = None
        try:
            c = RawPop3(t.port)
            c.login(t.login(user))
            login_at[i] = now()
        except BaseException as e:  # reported below; the barrier must not wait for us
            errors.append(f"{user}: login: {e}")
            barrier.abort()
            if c:
                c.close()
            return
        try:
            barrier.wait()
            c.cmd("STAT")
            c.multi("LIST")
            c.multi("UIDL")
            octets[i] = c.retr_pipelined(n_each)
            c.quit()
            done_at[i] = now()
        except BaseException as e:
            errors.append(f"{user}: {e}")
            c.close()

    threads = [threading.Thread(target=client, args=(i, u), daemon=True) for i, u in enumerate(users)]
    for th in threads:
        th.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    t_release = now()
    for th in threads:
        th.join(timeout=120)
    if errors:
        raise RuntimeError(f"{len(errors)} of {k} concurrent sessions failed, first: {errors[0]}")
    return {"login_wall_s": max(login_at) - t0, "logins_per_s": k / (max(login_at) - t0),
            "fetch_wall_s": max(done_at) - t_release, "octets": sum(octets)}


def bench_pop3(res, targets, reps, quick, nmsgs, size, scale, conc_users, conc_msgs):
    """All POP3 targets run side by side; every measurement is taken round-robin (start rotated
    per round), so the ratios compare figures taken seconds apart."""
    n = nmsgs // 2 if quick else nmsgs
    users = POP3_CONC_USERS[:conc_users]
    scale_users = {}  # message count -> mailbox
    for c in scale:
        if c == nmsgs:
            scale_users[n] = USER  # the main mailbox (half of it with --quick)
        elif c in POP3_SCALE_USERS:
            scale_users[c] = POP3_SCALE_USERS[c]
        else:
            raise SystemExit(f"--pop3-scale {c}: no such mailbox (have {sorted(POP3_SCALE_USERS)} and --pop3-msgs)")
    live = []
    for t in targets:
        try:
            t.start()
            live.append(t)
        except Exception as e:
            res.append(row("pop3", "POP3", t.name, "-", [], error=str(e)))
            log(f"pop3 {t.name}: ERROR {e}")
    if not live:
        return
    t_pre = now()
    for t in live:
        for u, cnt in [(USER, n), *[(u, c) for c, u in scale_users.items() if u != USER],
                       *[(u, conc_msgs) for u in users]]:
            t.make_maildir(u)
            preload(t.maildir(u), cnt, size, t.mail_owner)
            t.reset_index(u)
    os.sync()  # write the mailboxes back now, not during the measurements
    per_target = n + sum(c for c, u in scale_users.items() if u != USER) + len(users) * conc_msgs
    log(f"pop3: preloaded {len(live)} x {per_target} messages in {now() - t_pre:.1f} s")
    pre = f"POP3 {n} x {size // 1024} KiB"
    errors = {}

    def guarded(t, fn, *a):
        try:
            return fn(*a)
        except Exception as e:
            errors.setdefault(t.name, str(e)[:300])
            log(f"pop3 {t.name}: ERROR {e}")
            return None

    # cold: the first session on each mailbox (Dovecot builds its index; every server moves the
    # messages it handed out from new/ to cur/ at QUIT)
    for t in live:
        r = guarded(t, pop3_session, t, USER, n, "one")
        if r:
            res.append(row("pop3", f"{pre}: login+STAT+LIST+UIDL, cold (first session, no index)", t.name, "ms",
                           [r["login_list_uidl_s"] * 1e3]))
            res.append(row("pop3", f"{pre}: RETR all one at a time, cold", t.name, "s", [r["retr_all_s"]]))
        for c, u in scale_users.items():
            if u != USER:
                guarded(t, pop3_session, t, u, c, "pipelined")
        if users:
            guarded(t, pop3_concurrent, t, users, conc_msgs)
    keys = ("login", "stat_list_uidl", "login_list_uidl", "retr_one", "retr_pipe", "logins", "quit")
    vals = {t.name: {k: [] for k in keys} for t in live}
    for rep in range(reps):
        if left() < 40:
            log("time budget: skipping remaining POP3 reps")
            break
        for t in live[rep % len(live):] + live[:rep % len(live)]:
            w = guarded(t, pop3_session, t, USER, n, "one")
            wp = guarded(t, pop3_session, t, USER, n, "pipelined")
            lg = guarded(t, pop3_logins, t, 50 if quick else 100, 10)
            if w and wp and lg:
                v = vals[t.name]
                v["login"].append(w["login_s"] * 1e3)
                v["stat_list_uidl"].append(w["list_uidl_s"] * 1e3)
                v["login_list_uidl"].append(w["login_list_uidl_s"] * 1e3)
                v["retr_one"].append(w["retr_all_s"])
                v["retr_pipe"].append(wp["retr_all_s"])
                v["quit"].append(w["quit_s"] * 1e3)
                v["logins"].append(lg)
    mb = lambda k, name: {"MB_per_s": summ([n * size / 1e6 / x for x in vals[name][k]])}  # noqa: E731
    defs = [  # key, test, unit, higher is better, extra
        ("stat_list_uidl", f"{pre}: STAT+LIST+UIDL after login, warm", "ms", False, None),
        ("login_list_uidl", f"{pre}: connect+login+STAT+LIST+UIDL, warm", "ms", False, None),
        ("retr_one", f"{pre}: RETR all, one command at a time, warm", "s", False, "mb"),
        ("retr_pipe", f"{pre}: RETR all, pipelined, warm", "s", False, "mb"),
        ("quit", f"{pre}: QUIT (UPDATE state) after reading all, warm", "ms", False, None),
        ("login", "POP3 login (connect to +OK after PASS), warm", "ms", False, None),
        ("logins", "POP3 USER/PASS/STAT/QUIT sessions, sequential", "sessions/s", True, None),
    ]
    pop3_rows(res, live, vals, defs, errors, mb)

    # mailbox size scaling: warm STAT+LIST+UIDL and pipelined RETR-all at each size
    svals = {t.name: {c: {"login": [], "list": [], "retr": []} for c in scale_users} for t in live}
    for rep in range(max(1, min(reps, 3))):
        if left() < 40:
            log("time budget: skipping remaining POP3 scaling reps")
            break
        for t in live[rep % len(live):] + live[:rep % len(live)]:
            for c, u in scale_users.items():
                r = guarded(t, pop3_session, t, u, c, "pipelined")
                if r:
                    svals[t.name][c]["login"].append(r["login_list_uidl_s"] * 1e3)
                    svals[t.name][c]["list"].append(r["list_uidl_s"] * 1e3)
                    svals[t.name][c]["retr"].append(r["retr_all_s"])
    sdefs, sv = [], {t.name: {} for t in live}
    for c in scale_users:
        for k, lab, unit in (("login", "connect+login+STAT+LIST+UIDL", "ms"),
                             ("list", "STAT+LIST+UIDL after login", "ms"), ("retr", "RETR all, pipelined", "s")):
            key = f"{k}{c}"
            sdefs.append((key, f"POP3 scaling {c} x {size // 1024} KiB: {lab}, warm", unit, False, None))
            for t in live:
                sv[t.name][key] = svals[t.name][c][k]
    pop3_rows(res, live, sv, sdefs, errors, None, section="pop3-scale")
    # growth: time(largest)/time(smallest) against the size ratio (linear = 1.0)
    cs = sorted(scale_users)
    if len(cs) >= 2:
        for t in live:
            for k, lab in (("login", "connect+login+STAT+LIST+UIDL"), ("list", "STAT+LIST+UIDL after login"),
                           ("retr", "RETR all pipelined")):
                parts = []
                for lo, hi in itertools.pairwise(cs):
                    a, b = summ(svals[t.name][lo][k]), summ(svals[t.name][hi][k])
                    if a and b:
                        parts.append((b["median"] / a["median"]) / (hi / lo))
                if parts:
                    res.append(row("pop3-scale", f"POP3 scaling {lab}: (time ratio / size ratio) per step "
                                   f"{' -> '.join(str(c) for c in cs)} (1.0 = linear)", t.name, "x linear",
                                   parts))

    # 50 users fetching at once
    if users:
        cvals = {t.name: {"wall": [], "logins": []} for t in live}
        for rep in range(max(1, min(reps, 3))):
            if left() < 40:
                log("time budget: skipping remaining POP3 concurrent reps")
                break
            for t in live[rep % len(live):] + live[:rep % len(live)]:
                r = guarded(t, pop3_concurrent, t, users, conc_msgs)
                if r:
                    cvals[t.name]["wall"].append(r["fetch_wall_s"])
                    cvals[t.name]["logins"].append(r["logins_per_s"])
        tot = len(users) * conc_msgs * size / 1e6
        cdefs = [
            ("wall", f"POP3 {len(users)} users at once, {conc_msgs} x {size // 1024} KiB each: STAT+LIST+UIDL+"
                     "RETR all pipelined+QUIT, wall time (all logged in first)", "s", False, "tot"),
            ("logins", f"POP3 {len(users)} logins at once (connect to +OK after PASS): logins/s", "logins/s",
             True, None),
        ]
        pop3_rows(res, live, cvals, cdefs, errors,
                  lambda k, name: {"MB_per_s": summ([tot / x for x in cvals[name][k]])})
    for t in live:
        t.stop()


def pop3_rows(res, live, vals, defs, errors, mbfn, section="pop3"):
    """Rows for every (figure, target), with geomail's ratio to the other POP3 server per round,
    expressed as speed (>1: geomail is faster, whatever the unit)."""
    for key, test, unit, higher, extra in defs:
        for t in live:
            xs = vals[t.name][key]
            ex = mbfn(key, t.name) if (extra and mbfn and xs) else None
            ratios, ref = None, None
            if t.name == "geomail":
                for o in live:
                    if o.name != "geomail":
                        ref = o.name
                        ys = vals[o.name][key]
                        ratios = pair_ratios(xs, ys) if higher else pair_ratios(ys, xs)
            res.append(row(section, test, t.name, unit, xs, ratios=ratios,
                           ratio_to=f"{ref} (speed)" if ratios else None,
                           error=None if xs else errors.get(t.name), extra=ex))
        log(f"{section}: {test}: " + "; ".join(f"{t.name} {fmt_s(summ(vals[t.name][key]))}" for t in live))


# --------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------
def row(section, test, target, unit, values, ratios=None, ratio_to=None, error=None, extra=None):
    return {"section": section, "test": test, "target": target, "unit": unit, "stats": summ(values),
            "ratio_to": ratio_to, "ratio": summ(ratios) if ratios else None, "error": error,
            "extra": extra or {}}


def fmt(x):
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def fmt_s(s):
    if not s:
        return "-"
    return f"{fmt(s['median'])} [{fmt(s['min'])}..{fmt(s['max'])}]"


def table(rows):
    lines = ["| section | test | target | median | [min..max] | n | unit | ratio (median, same rounds) | note |",
             "|---|---|---|---:|---|---:|---|---|---|"]
    for r in rows:
        s = r["stats"]
        note = r["error"] or ""
        x = r["extra"]
        if r["section"] == "idle" and s:
            note = (f"established {x.get('established')}, alive after hold {x.get('alive_after_hold')}; "
                    f"server RSS {x.get('rss_kib', 0) / 1024:.0f} MiB, PSS {x.get('pss_kib', 0) / 1024:.0f} MiB "
                    f"(idle: RSS {x.get('base_rss_kib', 0) / 1024:.0f} MiB) in {x.get('procs')} procs; "
                    f"PSS/conn {fmt(x.get('pss_kib_per_conn'))} KiB; all banners in "
                    f"{fmt(x.get('seconds_to_all_banners'))} s")
        elif x.get("MB_per_s"):
            note = f"{fmt_s(x['MB_per_s'])} MB/s"
        elif x.get("lat"):
            lat = x["lat"]
            note = (f"p90 {fmt(lat['dot_p90_ms']['median']) if lat.get('dot_p90_ms') else '-'} ms; "
                    f"whole transaction (connect -> 250) p50 "
                    f"{fmt(lat['txn_p50_ms']['median']) if lat.get('txn_p50_ms') else '-'} ms")
        elif x.get("pss_mib"):
            note = f"PSS peak {fmt_s(x['pss_mib'])} MiB"
        elif x.get("lag_s"):
            note = f"last message in Maildir {fmt(x['lag_s']['median'])} s after the last 250"
        elif x.get("p50_ms_writer0"):
            note = f"p50 latency {fmt(x['p50_ms_writer0']['median'])} ms"
        ratio = ""
        if r["ratio"]:
            ratio = f"{r['ratio']['median']:.2f} x {r['ratio_to']} [{r['ratio']['min']:.2f}..{r['ratio']['max']:.2f}]"
        lines.append(f"| {r['section']} | {r['test']} | {r['target']} | {fmt(s and s['median'])} | "
                     f"{'[' + fmt(s['min']) + '..' + fmt(s['max']) + ']' if s else '-'} | {s['n'] if s else 0} | "
                     f"{r['unit']} | {ratio} | {note} |")
    return "\n".join(lines)


def pick(rows, section, target, unit=None, test_has=None, test_start=None):
    for r in rows:
        if r["section"] == section and r["target"] == target and (unit is None or r["unit"] == unit) \
                and (test_has is None or test_has in r["test"]) \
                and (test_start is None or r["test"].startswith(test_start)):
            return r
    return None


def med(r):
    return r["stats"]["median"] if r and r["stats"] else None


def rng(r):
    return f"{fmt(med(r))} [{fmt(r['stats']['min'])}..{fmt(r['stats']['max'])}]" if r and r["stats"] else "-"


def rat(r):
    if not r or not r["stats"]:
        return "-"
    return rng(r)


def summary(rows, info):
    """geomail against its peers: the figures the issues ask for, and their goals."""
    out = [f"## geomail vs peers - {info.get('date_utc', '?')} UTC", "",
           f"{info.get('nproc')} x {info.get('cpu', '?')}, {info.get('mem_total_kib', 0) // 1048576} GiB, kernel "
           f"{info.get('kernel')}; {info.get('geomail', 'geomail ?')} ({info.get('geomail_cmd', '?')}"
           f"{', git ' + info['geomail_git'] if info.get('geomail_git') else ''}, runs as "
           f"{info.get('geomail_user', '?')}); Postfix {info.get('postfix', '?')}, Dovecot {info.get('dovecot', '?')}, "
           f"aiosmtpd {info.get('aiosmtpd', '?')}, gevent {info.get('gevent', '?')}, Python {info.get('python', '?')}; "
           f"load average at start {' '.join(info.get('loadavg_at_start', []))}, at end "
           f"{' '.join(info.get('loadavg_at_end', []))}", ""]
    goals = []
    smtp_tests = []
    for r in rows:
        if r["section"] == "smtp" and r["test"] not in smtp_tests:
            smtp_tests.append(r["test"])
    if smtp_tests:
        tg = [t for t in ("smtp-sink", "postfix", "aiosmtpd", "geomail") if any(
            r["section"] == "smtp" and r["target"] == t for r in rows)]
        load = {test: test.replace("SMTP ", "").replace(", 1 conn/msg)", ")") for test in smtp_tests}
        out += ["### SMTP inbound, one connection per message: msgs/s (median [min..max] over rounds)", "",
                "smtp-source load; counted until the last message is in the Maildir (smtp-sink: accepted, it "
                "discards). Ratios are taken round by round (targets interleaved), then the median [min..max].", "",
                "| load | " + " | ".join(tg) + " | geomail / postfix | geomail / aiosmtpd |",
                "|---|" + "---:|" * (len(tg) + 2)]
        lat_tab = ["### SMTP final reply latency: end of DATA (`.` sent) -> `250`, p50 / p99 in ms (smtplat, "
                   "median over rounds)", "", "| load | " + " | ".join(tg) + " |", "|---|" + "---:|" * len(tg)]
        mem_tab = ["### Server memory during the SMTP load: peak RSS / PSS in MiB (summed over the server's "
                   "processes; PSS counts shared pages once)", "", "| load | " + " | ".join(tg) + " |",
                   "|---|" + "---:|" * len(tg)]
        for test in smtp_tests:
            cells, lats, mem = [], [], []
            for t in tg:
                r = pick(rows, "smtp", t, "msgs/s in Maildir (e2e)", test_start=test) or \
                    pick(rows, "smtp", t, "msgs/s accepted", test_start=test)
                cells.append(rng(r) if not (r and r["error"]) else f"{rng(r)} (error: {r['error'][:80]})")
                p50 = pick(rows, "smtp", t, "final reply latency p50 (smtplat), ms", test_start=test)
                p99 = pick(rows, "smtp", t, "final reply latency p99 (smtplat), ms", test_start=test)
                lats.append(f"{fmt(med(p50))} / {fmt(med(p99))}")
                r = pick(rows, "smtp", t, "server RSS peak during load, MiB", test_start=test)
                p = r["extra"].get("pss_mib") if r else None
                mem.append(f"{fmt(med(r))} / {fmt(p['median']) if p else '-'}")
            ratios = [rat(pick(rows, "smtp", "geomail", f"x {ref} (e2e msgs/s, per round)", test_start=test))
                      for ref in ("postfix", "aiosmtpd")]
            out.append(f"| {load[test]} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
            lat_tab.append(f"| {load[test]} | " + " | ".join(lats) + " |")
            mem_tab.append(f"| {load[test]} | " + " | ".join(mem) + " |")
            if test.startswith("SMTP c=100 size=1 KiB"):
                r = pick(rows, "smtp", "geomail", "x postfix (e2e msgs/s, per round)", test_start=test)
                if r and r["stats"]:
                    goals.append(("SMTP c=100, 1 KiB: end-to-end rate >= 2x Postfix's",
                                  f"{fmt(med(r))}x [{fmt(r['stats']['min'])}..{fmt(r['stats']['max'])}]",
                                  med(r) >= 2.0))
        out += ["", *lat_tab, "", *mem_tab, ""]
    idle = [r for r in rows if r["section"] == "idle"]
    if idle:
        out += ["### Idle SMTP connections held after the banner", "",
                "| test | target | banners held | server PSS (RSS) MiB | PSS per connection KiB | all greeted in s |",
                "|---|---|---:|---:|---:|---:|"]
        for r in idle:
            x = r["extra"]
            if not r["stats"]:
                out.append(f"| {r['test']} | {r['target']} | error: {r['error']} | | | |")
                continue
            out.append(f"| {r['test']} | {r['target']} | {fmt(med(r))} | {x.get('pss_kib', 0) / 1024:.0f} "
                       f"({x.get('rss_kib', 0) / 1024:.0f}) | {fmt(x.get('pss_kib_per_conn'))} | "
                       f"{fmt(x.get('seconds_to_all_banners'))} |")
            if r["target"] == "geomail" and r["test"].startswith("10000 "):
                per = x.get("pss_kib_per_conn")
                held = med(r)
                goals.append(("10,000 idle connections, <= 8 KiB each",
                              f"{fmt(held)} held, {fmt(per)} KiB PSS each",
                              bool(per is not None and held >= 10000 and per <= 8)))
        out.append("")
    pops = [r for r in rows if r["section"] in ("pop3", "pop3-scale") and r["target"] == "geomail"]
    if pops:
        out += ["### POP3 (median [min..max]); ratio = geomail's speed / Dovecot's, per round (> 1: geomail faster)",
                "", "| figure | unit | dovecot | geomail | geomail speed / dovecot |", "|---|---|---:|---:|---:|"]
        judged = []  # (ratio, test) of the figures the 0.8x goal applies to
        for r in pops:
            d = pick(rows, r["section"], "dovecot", r["unit"], test_start=r["test"])
            ratio = rat({"stats": r["ratio"]}) if r["ratio"] else "-"
            out.append(f"| {r['test']} | {r['unit']} | {rng(d)} | {rng(r)} | {ratio} |")
            is_login = "login" in r["test"] and "STAT+LIST+UIDL after login" not in r["test"]
            is_login = is_login or "USER/PASS/STAT/QUIT" in r["test"]
            informational = "QUIT (UPDATE" in r["test"] or "cold" in r["test"]
            if r["ratio"] and not is_login and not informational:
                judged.append((r["ratio"]["median"], r["test"]))
        out.append("")
        if judged:
            below = sorted(j for j in judged if j[0] < 0.8)
            goals.append(("POP3: every figure >= 0.8x Dovecot's except login (warm, per-round medians)",
                          (f"{len(judged) - len(below)} of {len(judged)} figures >= 0.8x; below: "
                           + "; ".join(f"{fmt(v)}x {t}" for v, t in below)) if below
                          else f"all {len(judged)} figures >= 0.8x (lowest {fmt(min(judged)[0])}x: {min(judged)[1]})",
                          not below))
        grow = [r for r in pops if r["unit"] == "x linear"]
        if grow:
            bad = [r for r in grow if r["stats"] and r["stats"]["max"] > 1.5]
            goals.append(("POP3: no figure grows faster than linearly (200 -> 2,000 -> 20,000)",
                          "; ".join(f"{r['test'].split(':')[0].replace('POP3 scaling ', '')}: "
                                    f"{'/'.join(fmt(v) for v in r['stats']['values'])}x linear" for r in grow),
                          not bad))
    if goals:
        out += ["### Goals (issues 2 and 4)", "", "| goal | measured | met? |", "|---|---|---|"]
        out += [f"| {g} | {m} | {'**met**' if ok else '**not met**'} |" for g, m, ok in goals]
        out.append("")
    return "\n".join(out)


def sysinfo():
    info = {"date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "nproc": os.cpu_count(), "kernel": os.uname().release}
    try:
        for pkg in ("postfix", "dovecot-core"):
            info[pkg] = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                                       text=True).stdout.strip()
        info["dovecot"] = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
        import aiosmtpd
        import gevent
        info["aiosmtpd"] = aiosmtpd.__version__
        info["gevent"] = gevent.__version__
        info["python"] = sys.version.split()[0]
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
    except Exception as e:  # informational only
        info["error"] = str(e)
    return info


# --------------------------------------------------------------------------------------
def main():
    global DEADLINE, RUN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="physical,smtp,idle,pop3",
                    help="comma list of phases: physical,smtp,idle,pop3")
    ap.add_argument("--targets", default="smtp-sink,postfix,aiosmtpd,dovecot,geomail",
                    help="comma list: smtp-sink,postfix,aiosmtpd,dovecot,geomail")
    ap.add_argument("--reps", type=int, default=5, help="repeats per SMTP measurement (medians reported)")
    ap.add_argument("--reps-cheap", type=int, default=5, help="repeats for the short physical and POP3 measurements")
    ap.add_argument("--quick", action="store_true", help="half-size loads (smoke test)")
    ap.add_argument("--budget", type=float, default=1080, help="wall-clock budget in seconds for the whole run")
    ap.add_argument("--conc", default="1,10,100", help="SMTP concurrencies")
    ap.add_argument("--sizes", default="1024,102400", help="SMTP message payload sizes (bytes)")
    ap.add_argument("--idle", default="10000", help="idle connection counts (comma list)")
    ap.add_argument("--idle-targets", default=None,
                    help="SMTP targets of the idle test (default: all SMTP targets in --targets)")
    ap.add_argument("--lat-reps", type=int, default=2,
                    help="rounds of the smtplat latency load per (concurrency, size); 0 skips it")
    ap.add_argument("--idle-hold", type=float, default=3.0, help="seconds to hold idle connections")
    ap.add_argument("--postfix-maxproc", type=int, default=100,
                    help="smtpd process limit for throughput runs (Postfix default 100)")
    ap.add_argument("--postfix-idle-maxproc", type=int, default=2000,
                    help="smtpd process limit for the idle-connection test (one process per connection)")
    ap.add_argument("--pop3-msgs", type=int, default=2000, help="messages in the main POP3 mailbox")
    ap.add_argument("--pop3-size", type=int, default=10240)
    ap.add_argument("--pop3-scale", default="200,2000,20000",
                    help="mailbox sizes of the scaling test (200, 20000 and --pop3-msgs, the main mailbox)")
    ap.add_argument("--pop3-users", type=int, default=50, help="users fetching at once (<= 50; 0 skips it)")
    ap.add_argument("--pop3-user-msgs", type=int, default=100, help="messages in each of those users' mailboxes")
    ap.add_argument("--json", default=None, help="write raw results here (default run/results-<stamp>.json)")
    ap.add_argument("--keep-data", action="store_true",
                    help="keep queues, Maildirs and fsync files of this run (default: delete them at the end; "
                         "configs and logs are always kept in run/<stamp>/)")
    args = ap.parse_args()
    DEADLINE = now() + args.budget
    if not (1 <= args.reps <= 20 and 1 <= args.reps_cheap <= 20 and 0 <= args.lat_reps <= 20):
        raise SystemExit("--reps and --reps-cheap must be 1..20, --lat-reps 0..20")
    if not (0 <= args.pop3_users <= len(POP3_CONC_USERS) and 1 <= args.pop3_user_msgs <= 10000
            and 1 <= args.pop3_msgs <= 100000):
        raise SystemExit(f"--pop3-users must be 0..{len(POP3_CONC_USERS)}, --pop3-user-msgs 1..10000")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    marker = os.path.join(RUN_BASE, ".last-cleanup")
    if os.path.exists(marker) and time.time() - os.path.getmtime(marker) < 300:
        log(f"WARNING: the previous run deleted its files {time.time() - os.path.getmtime(marker):.0f} s ago; "
            "on this journal-less ext4, file creates stay slow for up to 5 min after mass deletes "
            "(see README). The 'no fsync' physical row shows it: ~30,000 files/s when unaffected.")
    RUN = os.path.join(RUN_BASE, stamp)
    os.makedirs(RUN)
    # spread this run's directories over ext4 block groups (see RUN_BASE above)
    subprocess.run(["chattr", "+T", RUN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # idle tests need many descriptors in this process and in the servers it starts
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    phases = set(args.only.split(","))
    names = args.targets.split(",")
    info = sysinfo()
    info["args"] = vars(args)
    info["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)
    log("start", json.dumps({k: v for k, v in info.items() if k != "args"}))
    res = []
    started = []

    def cleanup(*_a):
        for t in started:
            try:
                t.stop()
            except Exception as e:
                log("stop failed", t.name, e)
        started.clear()

    def on_signal(signum, _frame):
        cleanup()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    geo = None
    if "geomail" in names:
        if not GeomailTarget.available():
            log(f"geomail: '{GEOMAIL_CMD}' not found - geomail target skipped (set GEOMAIL_CMD or run make)")
            names.remove("geomail")
        else:
            geo = GeomailTarget()
            info["geomail"] = subprocess.run([GEOMAIL_CMD, "--version"], capture_output=True, text=True,
                                             timeout=60).stdout.strip()
            info["geomail_cmd"] = GEOMAIL_CMD
            if GEOMAIL_CMD.startswith(PROJECT + os.sep):  # this checkout: which revision ran
                info["geomail_git"] = subprocess.run(
                    ["git", "-C", PROJECT, "log", "-1", "--format=%h %ci"], capture_output=True, text=True,
                    timeout=30).stdout.strip() + (" + uncommitted changes" if subprocess.run(
                        ["git", "-C", PROJECT, "status", "--porcelain", "--", "geomail"], capture_output=True,
                        text=True, timeout=30).stdout.strip() else "")
            info["geomail_user"] = GEOMAIL_BENCH_USER

    def make_smtp(name, maxproc):
        return {"smtp-sink": SmtpSinkTarget, "aiosmtpd": AiosmtpdTarget,
                "postfix": lambda: PostfixTarget(maxproc=maxproc), "geomail": GeomailTarget,
                "geomail-ref": GeomailRefTarget}[name]()

    if "geomail-ref" in names and not GeomailRefTarget.available():
        log("geomail-ref: set GEOMAIL_REF_CMD to another geomail build - target skipped")
        names.remove("geomail-ref")
    smtp_names = [n for n in names if n in ("smtp-sink", "postfix", "aiosmtpd", "geomail", "geomail-ref")]
    try:
        if "physical" in phases:
            log("== physical limits")
            bench_physical(res, args.reps, args.reps_cheap, args.quick)
            bench_smtp_ceiling(res, args.reps_cheap, args.quick)
        if "smtp" in phases and smtp_names:
            log("== SMTP throughput")
            targets = [make_smtp(n, args.postfix_maxproc) for n in smtp_names]
            for t in targets:
                t.start()
                started.append(t)
            grid = [(int(c), int(s)) for s in args.sizes.split(",") for c in args.conc.split(",")]
            bench_smtp(res, targets, args.reps, args.quick, grid, args.lat_reps)
            cleanup()
        if "idle" in phases and smtp_names:
            log("== idle connections")
            holders = []

            def mk(n):
                def f():
                    t = make_smtp(n, args.postfix_idle_maxproc)
                    holders.append(t)
                    started.append(t)
                    return t
                return f
            idle_names = smtp_names if args.idle_targets is None else \
                [n for n in args.idle_targets.split(",") if n in smtp_names]
            bench_idle(res, [(n, mk(n)) for n in idle_names], [int(x) for x in args.idle.split(",")],
                       args.idle_hold)
            cleanup()
        pop_targets = []
        if "dovecot" in names:
            pop_targets.append(DovecotTarget())
        if "geomail" in names:
            pop_targets.append(GeomailPop3Target(geo))
        if "pop3" in phases and pop_targets:
            log("== POP3")
            started.extend(pop_targets)
            bench_pop3(res, pop_targets, args.reps_cheap, args.quick, args.pop3_msgs, args.pop3_size,
                       [int(x) for x in args.pop3_scale.split(",") if x], args.pop3_users, args.pop3_user_msgs)
            cleanup()
    finally:
        cleanup()
        with open("/proc/loadavg") as f:
            info["loadavg_at_end"] = f.read().split()[:3]
        path = args.json or os.path.join(RUN_BASE, f"results-{stamp}.json")
        with open(path, "w") as f:
            json.dump({"info": info, "rows": res}, f, indent=1)
        md = table(res)
        for p in (os.path.join(RUN, "table.md"), os.path.join(RUN_BASE, "last-table.md")):
            with open(p, "w") as f:
                f.write(md + "\n")
        sm = summary(res, info)
        for p in (os.path.join(RUN, "summary.md"), os.path.join(RUN_BASE, "last-summary.md")):
            with open(p, "w") as f:
                f.write(sm + "\n")
        print(md)
        print()
        print(sm)
        if not args.keep_data:
            # the only deletions of the run, after the last measurement
            for sub in ("fsync", "fsync-churn", "trash", "postfix-queue", "postfix-vmail", "aiosmtpd/Maildir",
                        "dovecot/mail", "geomail/data"):
                shutil.rmtree(os.path.join(RUN, sub), ignore_errors=True)
            with open(os.path.join(RUN_BASE, ".last-cleanup"), "w") as f:
                f.write(stamp + "\n")
        log(f"raw results: {path}; table: {os.path.join(RUN_BASE, 'last-table.md')}; logs: {RUN}; "
            f"elapsed {args.budget - left():.0f}s")


if __name__ == "__main__":
    main()
