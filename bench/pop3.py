"""POP3 fetch speed: log in, STAT + LIST + UIDL, and RETR of every message pipelined.

Fills a Maildir with N messages of S octets (through the store, as SMTP delivery would), starts
``geomail serve`` as a child process, and times a plain blocking client on 127.0.0.1 (warm:
one untimed round first; the median of ``--runs`` is reported). With ``--dovecot`` the same
Maildir is also served by Debian's dovecot-pop3d on a high port and timed the same way, and the
ratios are printed. Prints one JSON line.

    .venv/bin/python bench/pop3.py [--messages 1000] [--size 10240] [--runs 5] [--dovecot]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import free_port, port_open, wait_for
from tests.support.geomail import (
    PASSWORD,
    GeomailProcess,
    base_config,
    write_config,
)

USER = "alice@example.com"
CRLF = b"\r\n"


# ---- filling the mailbox ---------------------------------------------------------------------


def fill(store_path: Path, count: int, size: int) -> None:
    """``count`` messages of about ``size`` octets in alice's Maildir, via MaildirStore."""
    from geomail.spool import BytesBody
    from geomail.store.base import Copy
    from geomail.store.maildir import MaildirStore

    store = MaildirStore(str(store_path), "bench.example.com")
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\n"
    for n in range(count):
        head = (f"From: bench@elsewhere.org\nTo: {USER}\nSubject: message {n}\n"
                f"Message-ID: <bench{n}@elsewhere.org>\n\n").encode()
        body = head + line * max(1, (size - len(head)) // len(line))
        store.deliver([Copy(USER, b"Return-Path: <bench@elsewhere.org>\n")], BytesBody(body))


# ---- a blocking POP3 client ------------------------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.line()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    def line(self) -> bytes:
        while (end := self.buf.find(CRLF)) < 0:
            self._fill()
        line = bytes(self.buf[: end + 2])
        del self.buf[: end + 2]
        return line

    def body(self) -> int:
        """Skip a multi-line body; return its raw octets."""
        if self.buf.startswith(b".\r\n"):
            del self.buf[:3]
            return 0
        start = 0
        while (end := self.buf.find(b"\r\n.\r\n", start)) < 0:
            start = max(0, len(self.buf) - 4)
            self._fill()
        del self.buf[: end + 5]
        return end + 2

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + CRLF)
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text!r} -> {reply!r}")
        return reply

    def close(self) -> None:
        self.cmd("QUIT")
        self.sock.close()


def one_round(port: int, user: str, password: str) -> dict[str, float]:
    """One session: the phases' times in seconds, and the octets RETR brought."""
    t0 = time.perf_counter()
    client = Client(port)
    client.cmd(f"USER {user}")
    client.cmd(f"PASS {password}")
    t1 = time.perf_counter()
    count = int(client.cmd("STAT").split()[1])
    client.cmd("LIST")
    client.body()
    client.cmd("UIDL")
    client.body()
    t2 = time.perf_counter()
    client.sock.sendall(b"".join(b"RETR %d\r\n" % n for n in range(1, count + 1)))
    octets = 0
    for _ in range(count):
        if not client.line().startswith(b"+OK"):
            raise RuntimeError("RETR failed")
        octets += client.body()
    t3 = time.perf_counter()
    client.close()
    return {"login": t1 - t0, "stat_list_uidl": t2 - t1, "retr_all": t3 - t2,
            "octets": octets, "messages": count}


def measure(port: int, user: str, password: str, runs: int) -> dict[str, float]:
    one_round(port, user, password)  # warm the page cache and the server
    rounds = [one_round(port, user, password) for _ in range(runs)]
    median: Callable[[str], float] = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    retr = median("retr_all")
    return {
        "login_ms": round(median("login") * 1000, 2),
        "stat_list_uidl_ms": round(median("stat_list_uidl") * 1000, 2),
        "retr_all_ms": round(retr * 1000, 1),
        "retr_mb_per_s": round(rounds[0]["octets"] / retr / 1e6, 1),
        "messages": rounds[0]["messages"],
    }


# ---- servers ---------------------------------------------------------------------------------


def start_geomail(work: Path) -> GeomailProcess:
    raw = base_config(work, listen={"pop3": [{"address": "127.0.0.1:0",
                                              "allow_plaintext_auth": True}]},
                      store={"format": "maildir", "path": str(work / "mail")})
    if os.geteuid() == 0:
        raw["user"] = "root"
    return GeomailProcess(write_config(work / "geomail.yaml", raw)).start()


DOVECOT_CONF = """\
protocols = pop3
listen = 127.0.0.1
base_dir = {work}/dovecot-run
state_dir = {work}/dovecot-state
log_path = {work}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {user}
default_login_user = {login_user}
mail_location = maildir:{maildir}
pop3_uidl_format = %f
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {work}/dovecot-users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={work}/dovecot-home
}}
"""


def start_dovecot(work: Path, maildir: Path) -> tuple[subprocess.Popen[bytes], int]:
    import grp
    import pwd

    port = free_port()
    if os.geteuid() == 0:  # dovecot runs neither its login nor its mail processes as root
        internal, login = "dovecot", "dovenull"
        owner = pwd.getpwnam("nobody")
        uid, gid = owner.pw_uid, owner.pw_gid
        for path in [maildir, *maildir.rglob("*")]:
            os.chown(path, uid, gid)
        os.chmod(work, 0o755)
        for path in (maildir.parent, maildir.parent.parent):
            os.chmod(path, 0o755)
    else:
        uid, gid = os.getuid(), os.getgid()
        internal = login = pwd.getpwuid(uid).pw_name
    users = work / "dovecot-users"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    users.chmod(0o644)
    conf = work / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(
        work=work, maildir=maildir, port=port, uid=uid, gid=gid,
        user=internal, login_user=login, group=grp.getgrgid(os.getgid()).gr_name))
    proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open("127.0.0.1", port) or proc.poll() is not None, 20,
             message="dovecot")
    if proc.poll() is not None:
        log = (work / "dovecot.log").read_text() if (work / "dovecot.log").exists() else ""
        raise RuntimeError(f"dovecot exited {proc.returncode}: {log}")
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dovecot", action="store_true", help="also time dovecot-pop3d")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geomail-bench-pop3-"))
    result: dict[str, object] = {"messages": args.messages, "size": args.size}
    try:
        fill(work / "mail", args.messages, args.size)
        server = start_geomail(work)
        try:
            result["geomail"] = measure(server.port("pop3"), USER, PASSWORD, args.runs)
        finally:
            server.stop()
        if args.dovecot:
            maildir = work / "mail" / "example.com" / "alice"
            proc, port = start_dovecot(work, maildir)
            try:
                result["dovecot"] = measure(port, USER, PASSWORD, args.runs)
            finally:
                proc.terminate()
                proc.wait(10)
            mine, theirs = result["geomail"], result["dovecot"]
            assert isinstance(mine, dict) and isinstance(theirs, dict)
            result["speed_ratio"] = {  # geomail speed / dovecot speed: > 1 is faster
                key: round(theirs[key] / mine[key], 2)
                for key in ("login_ms", "stat_list_uidl_ms", "retr_all_ms")}
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
