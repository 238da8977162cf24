#!/usr/bin/env python3
"""imap - issue 14: geomail's IMAP beside Dovecot's imapd, same run, same Maildir corpus.

Builds a Maildir corpus once (a seeded generator: realistic messages, a fifth of them multipart,
some with attachments; flags in the names, INTERNALDATE = mtime spread over a year), copies the
tree for each server (each owns its copy: geomail writes dovecot-uidlist and its own files,
Dovecot its index), starts geomail (`GEOMAIL_CMD serve`, IMAP on 127.0.0.1, plaintext login
allowed) and a private Dovecot (`dovecot -F -c run/.../dovecot.conf`, imap on 127.0.0.1,
passwd-file, one imap process per connection as Dovecot ships), then times, round by round with
the servers alternating:

  a  login + SELECT of the big INBOX (and SELECT alone, after login)
  b  the initial sync: UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)
  c  FETCH 1:* BODY[] of the bulk mailbox (1,000 x 10 KiB, all already \\Seen)
  d  CONDSTORE resync after 100 flag changes made by another session:
     SELECT INBOX (CONDSTORE) + UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)
  e  N IDLE connections (one user each, gevent clients in this process): server memory per
     connection (RSS and PSS summed over all the server's processes, after - before, / N), and
     the wake-up latency: a message file written to the user's tmp/ and renamed into new/ ->
     the idling client reads `* n EXISTS` (median, p90 over a sample of idlers)

Speed ratio = dovecot time / geomail time per round (> 1: geomail faster). Results in
run/imap-<stamp>/ (summary.md, results.json, each server's log).

    .venv/bin/python bench/imap.py --quick       # smoke: 1,000 messages, 200 idlers, 1 round
    .venv/bin/python bench/imap.py               # 10,000 messages, 5,000 idlers, 5 rounds
    .venv/bin/python bench/imap.py --figures e --idlers 2000

As root (Dovecot's private instance, chown of the copies). Loopback only, every wait bounded,
only processes this script started are stopped (by PID).
"""

import argparse
import contextlib
import email.utils
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
import benchkit  # noqa: E402
import mailbench  # noqa: E402

HOST = "127.0.0.1"
DOMAIN = "bench.test"
PASSWORD = "benchpass"
MAIN_USER = "alice"  # the big INBOX (a, b, d)
BULK_USER = "bulk"  # 1,000 x 10 KiB (c)
FIGURE_NAMES = {
    "a_login_select": "a. login + SELECT INBOX",
    "a_select": "a. SELECT INBOX after login",
    "b_sync": "b. UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)",
    "c_bulk": "c. FETCH 1:* BODY[] (bulk)",
    "d_resync": "d. CONDSTORE resync after 100 flag changes",
}
LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")

log = benchkit.log


# ---- the corpus --------------------------------------------------------------------------------

_WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no will more can out up about "
         "meeting report budget quarter release server mail deploy schedule review draft invoice project team "
         "update please thanks regards tomorrow monday agenda notes attached question issue ticket customer "
         "order shipping delay version patch build test migration backup storage network cost plan")
WORDS = _WORDS.split()
NAMES = ("Alice Martin", "Bob Chen", "Carla Rossi", "David Okafor", "Emma Schmidt", "Farid Haddad", "Grace Kim",
         "Hugo Dupont", "Ines Garcia", "Jonas Berg", "Karin Novak", "Liam O'Brien", "Maya Patel", "Noah Levi")
ORGS = ("example.org", "corp.example", "lists.example.net", "mail.example.com", "shop.example")


def _sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _text(rng, size):
    """Paragraphs of ~72-column lines, about ``size`` octets."""
    out, total, line = [], 0, []
    while total < size:
        s = _sentence(rng, rng.randint(6, 16))
        for w in s.split():
            if sum(len(x) + 1 for x in line) + len(w) > 72:
                out.append(" ".join(line))
                total += len(out[-1]) + 1
                line = []
            line.append(w)
        if rng.random() < 0.2:
            out.append(" ".join(line))
            out.append("")
            total += len(out[-2]) + 2
            line = []
    if line:
        out.append(" ".join(line))
    return "\n".join(out) + "\n"


def _addr(rng):
    name = rng.choice(NAMES)
    return name, f"{name.split()[0].lower()}.{name.split()[-1].lower().replace(chr(39), '')}@{rng.choice(ORGS)}"


def _b64(rng, n):
    import base64
    raw = base64.encodebytes(rng.randbytes(n)).decode()
    return raw


def make_message(rng, i, to, when, size=None):
    """One message (LF line ends, as an MTA delivers). size=None: realistic mix of kinds and sizes;
    else a text/plain message of about ``size`` octets."""
    fname, faddr = _addr(rng)
    subj = _sentence(rng, rng.randint(3, 9))[:-1]
    if size is None and rng.random() < 0.1:
        import base64
        subj = "=?UTF-8?B?" + base64.b64encode(("Réunion: " + subj).encode()).decode() + "?="
    hdr = [f"Return-Path: <{faddr}>", f"Delivered-To: {to}",
           f"Received: from mx.{faddr.split('@')[1]} (mx.{faddr.split('@')[1]} [192.0.2.{i % 250 + 1}])\n"
           f"\tby mx.{DOMAIN} with ESMTPS id {i:08X}; {email.utils.formatdate(when)}",
           f"Date: {email.utils.formatdate(when - rng.randint(1, 300))}",
           f'From: "{fname}" <{faddr}>', f"To: {to}"]
    if rng.random() < 0.3:
        cn, ca = _addr(rng)
        hdr.append(f"Cc: {cn} <{ca}>, {_addr(rng)[1]}")
    hdr.append(f"Subject: {subj}")
    hdr.append(f"Message-ID: <{i}.{int(when)}.{rng.getrandbits(32):08x}@{faddr.split('@')[1]}>")
    if rng.random() < 0.3:
        ref = f"<{rng.getrandbits(40):010x}@{rng.choice(ORGS)}>"
        hdr += [f"In-Reply-To: {ref}", f"References: {ref}"]
    hdr.append("MIME-Version: 1.0")
    if size is None:
        size = min(int(rng.lognormvariate(8.2, 0.8)), 60000)  # median ~3.6 KiB
        kind = rng.random()
    else:
        kind = 0.0
    if kind < 0.8:
        hdr += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = _text(rng, max(200, size - sum(len(h) + 1 for h in hdr) - 1))
    elif kind < 0.93:
        b = f"=_alt_{i:06d}"
        text = _text(rng, max(200, size // 2))
        html = "<html><body>\n" + "".join(f"<p>{p}</p>\n" for p in text.split("\n\n")) + "</body></html>\n"
        hdr.append(f'Content-Type: multipart/alternative; boundary="{b}"')
        body = (f"--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{text}\n"
                f"--{b}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{html}\n"
                f"--{b}--\n")
    else:
        b = f"=_mix_{i:06d}"
        text = _text(rng, rng.randint(300, 1500))
        att = _b64(rng, rng.randint(5000, 60000))
        ext, ctype = rng.choice((("pdf", "application/pdf"), ("png", "image/png"), ("zip", "application/zip")))
        hdr.append(f'Content-Type: multipart/mixed; boundary="{b}"')
        body = (f"This is a multi-part message in MIME format.\n\n"
                f"--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{text}\n"
                f'--{b}\nContent-Type: {ctype}; name="file{i}.{ext}"\nContent-Transfer-Encoding: base64\n'
                f'Content-Disposition: attachment; filename="file{i}.{ext}"\n\n{att}\n--{b}--\n')
    return ("\n".join(hdr) + "\n\n" + body).encode()


def write_maildir(path, messages, now):
    """messages: [(bytes, mtime, flags or None (= in new/))]; names as both servers write them."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    for n, (data, mtime, flags) in enumerate(messages):
        wsize = len(data) + data.count(b"\n")
        base = f"{int(mtime)}.M{n}P{os.getpid()}.bench,S={len(data)},W={wsize}"
        fn = os.path.join(path, "new", base) if flags is None else os.path.join(path, "cur", f"{base}:2,{flags}")
        with open(fn, "wb") as f:
            f.write(data)
        os.utime(fn, (mtime, mtime))


def build_corpus(root, n_main, n_bulk, bulk_size, n_idle):
    """root/<domain>/<user>/ Maildirs: alice (n_main, realistic), bulk (n_bulk x bulk_size, all
    seen), idle00001.. (3 seen messages each). Returns octets written."""
    rng = random.Random(14)
    now = time.time()
    total = 0
    msgs = []
    for i in range(n_main):
        when = now - (n_main - i) * (365 * 86400 / n_main)
        data = make_message(rng, i, f"{MAIN_USER}@{DOMAIN}", when)
        r = rng.random()
        if i >= n_main - max(1, n_main // 50):
            flags = None  # the newest 2 %: unread, still in new/
        elif r < 0.04:
            flags = ""
        elif r < 0.09:
            flags = "FS"
        elif r < 0.25:
            flags = "RS"
        else:
            flags = "S"
        msgs.append((data, when, flags))
        total += len(data)
    write_maildir(os.path.join(root, DOMAIN, MAIN_USER), msgs, now)
    msgs = []
    for i in range(n_bulk):
        when = now - (n_bulk - i) * 60
        data = make_message(rng, i, f"{BULK_USER}@{DOMAIN}", when, size=bulk_size)
        msgs.append((data, when, "S"))
        total += len(data)
    write_maildir(os.path.join(root, DOMAIN, BULK_USER), msgs, now)
    for u in range(1, n_idle + 1):
        msgs = [(make_message(rng, k, f"{idle_user(u)}@{DOMAIN}", now - 86400 * (3 - k), size=2000),
                 now - 86400 * (3 - k), "S") for k in range(3)]
        write_maildir(os.path.join(root, DOMAIN, idle_user(u)), msgs, now)
    return total


def idle_user(u):
    return f"idle{u:05d}"


def copy_tree(src, dst, owner):
    """cp -a, then chown -R (each server owns its copy)."""
    subprocess.run(["cp", "-a", src + "/.", dst], check=True, timeout=1800)
    if owner:
        subprocess.run(["chown", "-R", f"{owner[0]}:{owner[1]}", dst], check=True, timeout=1800)


# ---- a raw IMAP client (blocking, or gevent sockets for the idlers) ----------------------------


class Imap:
    """Minimal IMAP client: reads responses with their literals, costs little per octet."""

    def __init__(self, port, sock_mod=socket, timeout=600):
        benchkit.loopback(HOST)
        self.sock = sock_mod.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.n = 0
        greeting = self.line()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting {greeting!r}")

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def line(self):
        """One raw line, CRLF included."""
        start = 0
        while (i := self.buf.find(b"\r\n", start)) < 0:
            start = max(0, len(self.buf) - 1)
            self._fill()
        out = bytes(self.buf[:i + 2])
        del self.buf[:i + 2]
        return out

    def response(self, keep=True):
        """One whole response: (text with literals replaced by their length, literal octets)."""
        parts, octets = [], 0
        while True:
            ln = self.line()
            m = LITERAL.search(ln)
            if not m:
                parts.append(ln)
                break
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            if keep:
                parts.append(ln)
            del self.buf[:n]
            octets += n
        return b"".join(parts), octets

    def send(self, text):
        self.n += 1
        tag = f"T{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        return tag

    def command(self, text, keep=True):
        """Send; read to the tagged reply. Returns (untagged responses, literal octets)."""
        tag = self.send(text).encode()
        untagged, octets = [], 0
        while True:
            resp, n = self.response(keep)
            octets += n
            if resp.startswith(tag + b" "):
                if not resp.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:60]!r} -> {resp[:200]!r}")
                return untagged, octets
            if keep:
                untagged.append(resp)
            else:
                untagged.append(None)

    def login(self, user):
        self.command(f'LOGIN "{user}" "{PASSWORD}"')

    def close(self):
        with contextlib.suppress(OSError, RuntimeError, ConnectionError):
            self.command("LOGOUT")
        self.sock.close()


# ---- servers -----------------------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_greeting(port, proc, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.alive():
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if s.recv(512).startswith(b"* OK"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def descendants(pid):
    """pid and every process below it, from one pass over /proc (a pass per process would be
    quadratic: 5,000 Dovecot imap processes took longer than the run)."""
    children = mailbench.process_children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


class Server:
    name = "?"
    proc = None
    port = 0
    owner = None

    def maildir(self, user):
        return os.path.join(self.mail, DOMAIN, user)

    def login_name(self, user):
        return f"{user}@{DOMAIN}"

    def pids(self):
        return descendants(self.proc.pid) if self.proc and self.proc.alive() else []

    def stop(self):
        if self.proc:
            self.proc.stop(timeout=30)
            self.proc = None


class Geomail(Server):
    name = "geomail"

    def __init__(self, run, corpus, idlers):
        self.root = os.path.join(run, "geomail")
        self.data = os.path.join(self.root, "data")
        self.mail = os.path.join(self.data, "mail")
        self.cmd = mailbench.GEOMAIL_CMD
        self.owner = benchkit.geomail_owner()
        os.makedirs(self.mail, mode=0o700)
        log(f"geomail: copying the corpus to {self.mail}")
        copy_tree(corpus, self.mail, self.owner)
        if self.owner:
            for d in (self.data, self.mail):
                os.chown(d, *self.owner)
        self.idlers = idlers

    def start(self):
        real, cheap = password_hashes()
        users = [f'  {u}@{DOMAIN}: {{password: "{real}"}}' for u in (MAIN_USER, BULK_USER)]
        users += [f'  {idle_user(u)}@{DOMAIN}: {{password: "{cheap}"}}' for u in range(1, self.idlers + 1)]
        self.port = free_port()
        smtp = free_port()
        who = benchkit.geomail_user_name() if self.owner else "root"
        conf = os.path.join(self.root, "geomail.yaml")
        with open(conf, "w") as f:
            f.write(f"""\
# written by bench/imap.py
hostname: mx.{DOMAIN}
domains: [{DOMAIN}]
data_dir: {self.data}
user: {who}
store: {{format: maildir, path: {self.mail}}}
users:
""" + "\n".join(users) + f"""
listen:
  smtp: ["{HOST}:{smtp}"]
  imap: [{{address: "{HOST}:{self.port}", allow_plaintext_auth: true}}]
relay:
  nameservers: ["{HOST}:9"]
limits: {{max_connections: 20000, max_connections_per_ip: 20000, max_user_connections: 20000,
          max_user_connections_per_ip: 20000, shutdown_grace: 5s}}
log: {{level: info}}
""")
        self.proc = benchkit.Proc([self.cmd, "serve", "-c", conf], os.path.join(self.root, "geomail.log"))
        if not wait_greeting(self.port, self.proc):
            raise RuntimeError(f"geomail IMAP did not answer, see {self.root}/geomail.log")


DOVECOT_CONF = """\
# private bench instance (written by bench/imap.py)
instance_name = bench-imap-dovecot
base_dir = {root}/base
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
mail_location = maildir:{root}/mail/%d/%n
mail_max_userip_connections = {procs}
default_process_limit = {procs}
default_client_limit = {clients}
passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = {procs}
}}
service imap {{
  process_limit = {procs}
  client_limit = {client_limit}
}}
"""


class Dovecot(Server):
    name = "dovecot"

    def __init__(self, run, corpus, idlers, client_limit):
        self.root = os.path.join(run, "dovecot")
        self.mail = os.path.join(self.root, "mail")
        self.owner = (mailbench.VMAIL_UID, mailbench.VMAIL_GID)
        os.makedirs(self.mail)
        log(f"dovecot: copying the corpus to {self.mail}")
        copy_tree(corpus, self.mail, self.owner)
        os.chown(self.mail, *self.owner)
        self.idlers = idlers
        self.client_limit = client_limit

    def start(self):
        for d in ("base", "state"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        os.chmod(self.root, 0o755)
        self.port = free_port()
        procs = self.idlers + 500
        conf = os.path.join(self.root, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(root=self.root, host=HOST, port=self.port, uid=self.owner[0],
                                        gid=self.owner[1], procs=procs, clients=2 * procs + 1000,
                                        client_limit=self.client_limit))
        real, cheap = password_hashes()
        with open(os.path.join(self.root, "passwd"), "w") as f:
            for u in [MAIN_USER, BULK_USER]:
                f.write(f"{u}@{DOMAIN}:{{ARGON2ID}}{real}::::::\n")
            for u in [idle_user(u) for u in range(1, self.idlers + 1)]:
                f.write(f"{u}@{DOMAIN}:{{ARGON2ID}}{cheap}::::::\n")
        self.proc = benchkit.Proc(["dovecot", "-F", "-c", conf], os.path.join(self.root, "dovecot-stderr.log"))
        if not wait_greeting(self.port, self.proc):
            raise RuntimeError(f"dovecot did not answer, see {self.root}/dovecot.log")


def password_hashes():
    """(the production argon2id hash geomail makes, a cheap argon2id hash for the idle users):
    both servers get the same ones, so a timed login costs both the same argon2 check. Idle
    users get the cheap one (verify takes its cost from the hash): 5,000 production logins
    would cost ~2 min before the measurement, which does not time logins."""
    real = benchkit.geomail_hash(mailbench.GEOMAIL_CMD, PASSWORD)
    cheap = subprocess.run([sys.executable, "-c", "import argon2,sys; print(argon2.PasswordHasher("
                            "time_cost=1, memory_cost=64, parallelism=1).hash(sys.argv[1]))", PASSWORD],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    return real, cheap


# ---- figures a-d -------------------------------------------------------------------------------


def fig_a(srv, **_):
    t0 = time.perf_counter()
    c = Imap(srv.port)
    c.login(srv.login_name(MAIN_USER))
    t1 = time.perf_counter()
    untagged, _ = c.command("SELECT INBOX")
    t2 = time.perf_counter()
    c.close()
    exists = next((int(u.split()[1]) for u in untagged if u.endswith(b" EXISTS\r\n")), None)
    return {"a_login_select": t2 - t0, "a_select": t2 - t1, "exists": exists}


def fig_b(srv, n_main, **_):
    c = Imap(srv.port)
    c.login(srv.login_name(MAIN_USER))
    c.command("SELECT INBOX")
    t0 = time.perf_counter()
    untagged, _ = c.command("UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    t1 = time.perf_counter()
    c.close()
    got = sum(1 for u in untagged if b" FETCH " in u[:30])
    if got != n_main:
        raise RuntimeError(f"{srv.name}: UID FETCH 1:* gave {got} FETCH responses, expected {n_main}")
    return {"b_sync": t1 - t0}


def fig_c(srv, n_bulk, **_):
    c = Imap(srv.port)
    c.login(srv.login_name(BULK_USER))
    c.command("SELECT INBOX")
    t0 = time.perf_counter()
    untagged, octets = c.command("FETCH 1:* BODY[]", keep=False)
    t1 = time.perf_counter()
    c.close()
    if len(untagged) < n_bulk:
        raise RuntimeError(f"{srv.name}: FETCH 1:* BODY[] gave {len(untagged)} responses, expected {n_bulk}")
    return {"c_bulk": t1 - t0, "c_mb_s": octets / (t1 - t0) / 1e6}


MODSEQ = re.compile(rb"HIGHESTMODSEQ (\d+)")


def fig_d(srv, n_main, rnd, **_):
    """Another session changes 100 messages' flags (untimed), then a new session resyncs."""
    c = Imap(srv.port)
    c.login(srv.login_name(MAIN_USER))
    untagged, _ = c.command("SELECT INBOX (CONDSTORE)")
    m = next((MODSEQ.search(u) for u in untagged if MODSEQ.search(u)), None)
    if not m:
        raise RuntimeError(f"{srv.name}: no HIGHESTMODSEQ at SELECT (CONDSTORE)")
    modseq = int(m.group(1))
    uids = random.Random(1000 + rnd).sample(range(1, n_main + 1), 100)
    t0 = time.perf_counter()
    for uid in uids:  # one STORE each, as a user clicking through: 100 changes, 100 modseqs
        c.command(f"UID STORE {uid} {'+' if rnd % 2 == 0 else '-'}FLAGS.SILENT (\\Flagged)")
    t_store = time.perf_counter() - t0
    c.close()
    c = Imap(srv.port)
    c.login(srv.login_name(MAIN_USER))
    t0 = time.perf_counter()
    c.command("SELECT INBOX (CONDSTORE)")
    untagged, _ = c.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    t1 = time.perf_counter()
    c.close()
    return {"d_resync": t1 - t0, "d_changed": sum(1 for u in untagged if b" FETCH " in u[:30]),
            "d_store_100": t_store}


FIGS = {"a": fig_a, "b": fig_b, "c": fig_c, "d": fig_d}


# ---- figure e: IDLE ----------------------------------------------------------------------------


def deliver(srv, user, n):
    """A new message the way an MDA does: write into tmp/, rename into new/. Returns the
    monotonic time right after the rename."""
    md = srv.maildir(user)
    data = (f"From: Wake Up <wake@example.org>\nTo: {user}@{DOMAIN}\nSubject: wake {n}\n"
            f"Message-ID: <wake{n}.{time.time()}@example.org>\nDate: {email.utils.formatdate()}\n\n"
            + "Hello, this is new mail.\n" * 20).encode()
    wsize = len(data) + data.count(b"\n")
    base = f"{int(time.time())}.M{n}P{os.getpid()}W.bench,S={len(data)},W={wsize}"
    tmp = os.path.join(md, "tmp", base)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if srv.owner:
            os.fchown(fd, *srv.owner)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(md, "new", base))
    return time.monotonic()


def fig_e(srv, n_idle, sample, wake_timeout, hold):
    """Open n_idle IDLE connections (gevent), read memory, wake a sample, close all."""
    import gevent
    import gevent.pool
    from gevent import socket as gsocket

    class Idler:
        def __init__(self, u):
            self.u, self.c, self.delivered, self.woke, self.err = u, None, None, None, None

        def open(self):
            try:
                c = Imap(srv.port, sock_mod=gsocket, timeout=120)
                c.login(srv.login_name(idle_user(self.u)))
                c.command("SELECT INBOX")
                c.send("IDLE")
                if not c.line().startswith(b"+"):
                    raise RuntimeError("IDLE refused")
                self.c = c
            except Exception as e:  # counted and reported
                self.err = repr(e)[:200]

        def watch(self):
            """Read untagged responses while idling; note the first EXISTS after a delivery."""
            try:
                while True:
                    ln = self.c.line()
                    if ln.endswith(b" EXISTS\r\n") and self.delivered is not None and self.woke is None:
                        self.woke = time.monotonic()
            except Exception:  # the socket closes at the end
                return

    def open_all(idlers):
        pool = gevent.pool.Pool(64)
        for i in idlers:
            pool.spawn(i.open)
        pool.join(timeout=max(120, len(idlers) / 10))

    # warm-up: a few idlers open and closed, so first-use costs are not charged to the connections
    warm = [Idler(u) for u in range(1, 11)]
    open_all(warm)
    for i in warm:
        if i.c:
            i.c.sock.close()
    gevent.sleep(3)
    before = mailbench.mem_of(srv.pids())
    idlers = [Idler(u) for u in range(1, n_idle + 1)]
    t0 = time.monotonic()
    open_all(idlers)
    t_open = time.monotonic() - t0
    held = [i for i in idlers if i.c]
    errors = [i.err for i in idlers if i.err]
    watchers = [gevent.spawn(i.watch) for i in held]
    gevent.sleep(hold)
    after = mailbench.mem_of(srv.pids())
    nprocs = len(srv.pids())
    step = max(1, len(held) // max(1, sample))
    chosen = held[::step][:sample]
    for n, i in enumerate(chosen):
        i.delivered = deliver(srv, idle_user(i.u), n)
        gevent.sleep(0.02)
    end = time.monotonic() + wake_timeout
    while time.monotonic() < end and any(i.woke is None for i in chosen):
        gevent.sleep(0.05)
    lat = sorted((i.woke - i.delivered) * 1000 for i in chosen if i.woke is not None)
    for i in held:
        i.c.sock.close()
    gevent.joinall(watchers, timeout=10)
    n = len(held)
    res = {
        "idlers": n_idle, "held": n, "errors": len(errors), "error_sample": errors[:3],
        "open_s": t_open, "processes": nprocs,
        "rss_before_kib": before["rss_kib"], "rss_after_kib": after["rss_kib"],
        "pss_before_kib": before["pss_kib"], "pss_after_kib": after["pss_kib"],
        "rss_per_conn_kib": (after["rss_kib"] - before["rss_kib"]) / n if n else None,
        "pss_per_conn_kib": (after["pss_kib"] - before["pss_kib"]) / n if n else None,
        "wake_sample": len(chosen), "woken": len(lat),
        "wake_p50_ms": benchkit.pct(lat, 50), "wake_p90_ms": benchkit.pct(lat, 90),
        "wake_max_ms": lat[-1] if lat else None, "wake_ms": lat,
    }
    log(f"{srv.name}: idle {n}/{n_idle} held ({len(errors)} errors) in {t_open:.1f} s, "
        f"RSS/conn {benchkit.fmt(res['rss_per_conn_kib'])} KiB, PSS/conn {benchkit.fmt(res['pss_per_conn_kib'])} KiB, "
        f"woken {len(lat)}/{len(chosen)}, p50 {benchkit.fmt(res['wake_p50_ms'])} ms, "
        f"p90 {benchkit.fmt(res['wake_p90_ms'])} ms")
    # let the server drop the connections (Dovecot: thousands of processes exit)
    end = time.monotonic() + 60
    while time.monotonic() < end and len(srv.pids()) > max(20, nprocs // 20) and srv.name == "dovecot":
        time.sleep(0.5)
    time.sleep(2)
    return res


# ---- main --------------------------------------------------------------------------------------


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(need, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


INOTIFY = "/proc/sys/fs/inotify/max_user_instances"


def read_inotify():
    with open(INOTIFY) as f:
        return int(f.read())


def write_inotify(n):
    log(f"fs.inotify.max_user_instances = {n}")
    with open(INOTIFY, "w") as f:
        f.write(f"{n}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke: 1,000 messages, 200 idlers, 1 round")
    ap.add_argument("--messages", type=int, default=10000, help="messages in the big INBOX (a, b, d)")
    ap.add_argument("--bulk", type=int, default=1000, help="messages fetched whole in c")
    ap.add_argument("--bulk-size", type=int, default=10240)
    ap.add_argument("--idlers", type=int, default=5000)
    ap.add_argument("--wake-sample", type=int, default=100, help="idlers woken by a delivery, one by one")
    ap.add_argument("--wake-timeout", type=float, default=40.0,
                    help="seconds to wait for the sample's EXISTS (Dovecot without inotify looks every 30 s)")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds between the last IDLE and the memory reading")
    ap.add_argument("--reps", type=int, default=5, help="rounds of a-d (servers alternating)")
    ap.add_argument("--figures", default="abcde")
    ap.add_argument("--targets", default="geomail,dovecot")
    ap.add_argument("--dovecot-client-limit", type=int, default=1,
                    help="Dovecot's service imap client_limit (1, its default: one process per connection)")
    ap.add_argument("--inotify-instances", type=int, default=0,
                    help="raise fs.inotify.max_user_instances to this for the run (restored at the end); "
                         "default: leave it (Debian: 128 per user)")
    ap.add_argument("--keep", action="store_true", help="keep the Maildir copies at the end")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.idlers, args.reps, args.wake_sample = 1000, 200, 1, 50
    # timeout(1) sends SIGTERM: unwind, so the servers we started are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        raise SystemExit("run as root (Dovecot's private instance, chown of the Maildir copies)")
    if "d" in args.figures and args.messages < 100:
        raise SystemExit("--messages must be >= 100 (d changes 100 messages)")
    nofile = raise_nofile(2 * args.idlers + 2000)
    run = benchkit.make_run_dir("imap")
    stamp = os.path.basename(run)
    info = benchkit.sysinfo()
    info.update({"dovecot": subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip(),
                 "nofile": nofile, "geomail_cmd": mailbench.GEOMAIL_CMD, "args": vars(args)})
    inotify_old = read_inotify()
    if args.inotify_instances > inotify_old:
        write_inotify(args.inotify_instances)
    info["inotify_max_user_instances"] = read_inotify()
    log(f"run {run}; {info['geomail_git']}; Dovecot {info['dovecot']}; load {info['loadavg']}")
    corpus = os.path.join(run, "corpus")
    os.makedirs(corpus)
    t0 = time.monotonic()
    octets = build_corpus(corpus, args.messages, args.bulk, args.bulk_size,
                          args.idlers if "e" in args.figures else 0)
    log(f"corpus: {args.messages} + {args.bulk} messages ({octets / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
    names = [t for t in args.targets.split(",") if t]
    servers = []
    results = {"info": info, "rounds": [], "cold": {}, "idle": {}}
    try:
        for name in names:
            if name == "geomail":
                servers.append(Geomail(run, corpus, args.idlers))
            elif name == "dovecot":
                servers.append(Dovecot(run, corpus, args.idlers, args.dovecot_client_limit))
            else:
                raise SystemExit(f"unknown target {name}")
        subprocess.run(["sync"], timeout=600)
        for s in servers:
            s.start()
            log(f"{s.name}: IMAP on {HOST}:{s.port}, pid {s.proc.pid}")
        kw = {"n_main": args.messages, "n_bulk": args.bulk}
        for fig in "abcd":
            if fig not in args.figures:
                continue
            for s in servers:  # one untimed round: caches, indexes, new/ -> cur/
                t = time.perf_counter()
                r = FIGS[fig](s, rnd=-1, **kw)
                results["cold"].setdefault(s.name, {})[fig] = {"s": time.perf_counter() - t, **r}
                log(f"{s.name} {fig}: first (cold) round {time.perf_counter() - t:.3f} s")
            for rnd in range(args.reps):
                order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
                for s in order:
                    r = FIGS[fig](s, rnd=rnd, **kw)
                    results["rounds"].append({"fig": fig, "round": rnd, "target": s.name, **r})
                    log(f"{s.name} {fig} round {rnd + 1}: "
                        + ", ".join(f"{k} {v:.4g}" for k, v in r.items() if isinstance(v, float)))
        if "e" in args.figures:
            for s in servers:  # a fresh process: a-d's freed heap would absorb the idlers' memory
                if any(f in args.figures for f in "abcd"):
                    s.stop()
                    s.start()
                    log(f"{s.name}: restarted for e, IMAP on {HOST}:{s.port}, pid {s.proc.pid}")
                results["idle"][s.name] = fig_e(s, args.idlers, args.wake_sample, args.wake_timeout, args.hold)
    finally:
        for s in servers:
            s.stop()
        if read_inotify() != inotify_old:
            write_inotify(inotify_old)
        for s in servers:
            if hasattr(s, "root") and s.name == "dovecot":
                with open(os.path.join(s.root, "dovecot.log"), errors="replace") as f:
                    text = f.read()
                results.setdefault("dovecot_log", {})["inotify_warnings"] = text.count("Inotify instance limit")
                results["dovecot_log"]["errors"] = [ln for ln in text.splitlines() if "Error" in ln][:5]
    summary = render(results, names, args)
    print(summary)
    with open(os.path.join(run, "summary.md"), "w") as f:
        f.write(summary + "\n")
    benchkit.write_json(os.path.join(run, "results.json"), results)
    if not args.keep:
        for d in ("corpus", "geomail/data/mail", "dovecot/mail"):
            shutil.rmtree(os.path.join(run, d), ignore_errors=True)
        benchkit.mark_cleanup(stamp)
    log(f"results: {run}/summary.md, results.json")


def render(results, names, args):
    info = results["info"]
    out = [f"## IMAP beside Dovecot ({info['geomail_git']}; Dovecot {info['dovecot']}; load {info['loadavg']})", "",
           f"{args.messages:,} messages in INBOX, {args.bulk:,} x {args.bulk_size:,} octets bulk, "
           f"{args.reps} round(s), servers alternating; speed ratio = dovecot time / geomail time per round "
           f"(> 1: geomail faster); median [min..max].", ""]
    rows, goals = [], []
    by = {}
    for r in results["rounds"]:
        by.setdefault((r["target"], r["round"]), {}).update(r)
    for key, label in FIGURE_NAMES.items():
        vals = {n: [by[(n, rnd)][key] for rnd in range(args.reps) if key in by.get((n, rnd), {})] for n in names}
        if not any(vals.values()):
            continue
        ratios = [by[("dovecot", rnd)][key] / by[("geomail", rnd)][key] for rnd in range(args.reps)
                  if key in by.get(("dovecot", rnd), {}) and key in by.get(("geomail", rnd), {})]
        ms = {n: benchkit.med_range([v * 1000 for v in vals[n]]) for n in names}
        rr = benchkit.med_range(ratios)
        rows.append([label, "ms", *(benchkit.fmt_mr(ms[n]) for n in names), benchkit.fmt_mr(rr, 2)])
        if rr:
            goals.append((label, rr["median"]))
    header = ["figure", "unit", *names, "speed ratio (dovecot / geomail time)"]
    if rows:
        out.append(benchkit.md_table(header, rows))
    extra = []
    for n in names if rows else ():
        c = [by[(n, rnd)].get("c_mb_s") for rnd in range(args.reps) if (n, rnd) in by]
        d = [by[(n, rnd)].get("d_changed") for rnd in range(args.reps) if (n, rnd) in by]
        st = [by[(n, rnd)].get("d_store_100") for rnd in range(args.reps) if (n, rnd) in by]
        cold = results["cold"].get(n, {})
        extra.append(f"- {n}: c {benchkit.fmt_mr(benchkit.med_range(c))} MB/s; d: FETCH responses after "
                     f"CHANGEDSINCE {[x for x in d if x is not None]}, the 100 STOREs took "
                     f"{benchkit.fmt_mr(benchkit.med_range([x * 1000 for x in st if x is not None]))} ms (untimed); "
                     "first (cold) rounds: " + ", ".join(f"{f} {v['s'] * 1000:,.0f} ms" for f, v in cold.items()))
    if extra:
        out += ["", *extra]
    if results["idle"]:
        out += ["", f"### {args.idlers:,} IDLE connections (one user each); fs.inotify.max_user_instances = "
                f"{info['inotify_max_user_instances']}", ""]
        irows = []
        for n, r in results["idle"].items():
            irows.append([n, f"{r['held']:,} ({r['errors']} errors)", f"{r['open_s']:.1f}", r["processes"],
                          f"{r['rss_before_kib'] / 1024:,.1f} / {r['rss_after_kib'] / 1024:,.1f}",
                          f"{r['pss_before_kib'] / 1024:,.1f} / {r['pss_after_kib'] / 1024:,.1f}",
                          benchkit.fmt(r["rss_per_conn_kib"]), benchkit.fmt(r["pss_per_conn_kib"]),
                          f"{r['woken']}/{r['wake_sample']}", benchkit.fmt(r["wake_p50_ms"]),
                          benchkit.fmt(r["wake_p90_ms"]), benchkit.fmt(r["wake_max_ms"])])
        out.append(benchkit.md_table(["target", "held", "opened in s", "processes", "RSS before / after MiB",
                                      "PSS before / after MiB", "RSS KiB/conn", "PSS KiB/conn", "woken",
                                      "wake p50 ms", "wake p90 ms", "max ms"], irows))
        g, d = results["idle"].get("geomail"), results["idle"].get("dovecot")
        if g and d and g["wake_p50_ms"] and d["wake_p50_ms"]:
            goals.append(("e. wake-up latency p50", d["wake_p50_ms"] / g["wake_p50_ms"]))
            goals.append(("e. wake-up latency p90", d["wake_p90_ms"] / g["wake_p90_ms"]))
        if g and d and g["pss_per_conn_kib"] and d["pss_per_conn_kib"] and g["pss_per_conn_kib"] > 0:
            # PSS: RSS counts the shared libraries once per Dovecot process, PSS charges them once
            goals.append(("e. memory per IDLE connection (PSS)", d["pss_per_conn_kib"] / g["pss_per_conn_kib"]))
        if g and g["rss_per_conn_kib"] is not None:
            v, p = g["rss_per_conn_kib"], g["pss_per_conn_kib"]
            out += ["", f"- goal <= 16 KiB per IDLE connection, geomail: RSS {v:.1f} KiB, PSS {p:.1f} KiB: "
                        f"{'met' if max(v, p) <= 16 else 'NOT met'}"]
    if goals:
        out += ["", "### Goal: >= 0.8x Dovecot on every figure", ""]
        out += [f"- {label}: {x:.2f}x {'met' if x >= 0.8 else 'NOT met'}" for label, x in goals]
    dl = results.get("dovecot_log")
    if dl:
        out += ["", f"- dovecot.log: {dl['inotify_warnings']} 'Inotify instance limit' warnings (those imap "
                    "processes look every 30 s instead); errors: " + (" / ".join(dl["errors"]) or "none")]
    return "\n".join(out)


if __name__ == "__main__":
    main()
