"""A real Dovecot imapd for tests and benchmarks (issue 14): Debian's dovecot-imapd, started
privately in the foreground (``dovecot -F -c <dir>/dovecot.conf``) on 127.0.0.1 at a free port,
serving one user's Maildir (usually a copy of a maildir geomail wrote).

Everything lives in a temporary directory (base_dir, state_dir, the log file, a passwd-file
with one user); no system config is read, no SSL, plaintext LOGIN on loopback. The mail
location is Dovecot's default Maildir++ layout (``.A.B`` folders, ``dovecot-uidlist``,
``dovecot-keywords``, ``subscriptions``) with ``/`` as the hierarchy separator (geomail's) and
geomail's special-use folders declared (Dovecot takes special use from its config, not from
the maildir; Debian's ``15-mailboxes.conf`` declares Drafts, Junk, Trash and Sent, not
Archive). Indexes go to the temporary directory unless ``index_in_maildir`` (Dovecot's
default, what a real install does).

As a normal user every process runs as that user. As root (CI), Dovecot refuses root for
imap-login and for mail access: imap-login runs as dovenull (dovecot-core's user) and mail
access as nobody, who is given the maildir (``chown -R``) and must be able to reach it:
``copy=True`` serves a copy in the temporary directory (0755), which also keeps the
original as it was.

    with Dovecot(maildir, copy=True) as dovecot:
        imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
        imap.login(dovecot.user, dovecot.password)
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from . import free_port, wait_for
from .tools import program

SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
               "Junk": "\\Junk", "Archive": "\\Archive"}

CONFIG = """\
# Written by tests/support/dovecot.py: a private imapd on loopback, no system config included.
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = geomail-test-{port}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
debug_log_path = {dir}/dovecot.log
ssl = no
auth_mechanisms = plain login
disable_plaintext_auth = no
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{maildir}:LAYOUT=maildir++{index}
mail_plugins =
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{mailboxes}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


class Dovecot:
    """Dovecot's imapd on 127.0.0.1 (``port``) serving ``maildir`` for one user; ``start()``
    waits until it greets, ``stop()`` ends it, ``close()`` also removes its directory. A
    missing dovecot skips the test (fails it in CI)."""

    def __init__(self, maildir: str | os.PathLike[str], user: str = "alice@example.com",
                 password: str = "dovecot-test-password", copy: bool = False,
                 index_in_maildir: bool = False) -> None:
        self.binary = program("dovecot", "dovecot-imapd")
        self.user = user
        self.password = password
        self.directory = tempfile.mkdtemp(prefix="dovecot-")
        self.maildir = os.fspath(maildir)
        if copy:  # mtimes (INTERNALDATE) kept; hard links become copies
            self.maildir = shutil.copytree(self.maildir, os.path.join(self.directory, "Maildir"),
                                           symlinks=True)
        self.config = os.path.join(self.directory, "dovecot.conf")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self._write_config(index_in_maildir)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def _write_config(self, index_in_maildir: bool) -> None:
        uid, gid = os.getuid(), os.getgid()
        user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
        login_user, mail_uid, mail_gid = user, uid, gid
        for sub in ("run", "state", "index", "home"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        if uid == 0:
            # imap-login refuses to run as root and imap refuses mail access as root: the
            # login process runs as dovecot-core's dovenull, the mail process as nobody, who
            # is given the maildir, its index and home directories.
            login_user = _unprivileged("dovenull").pw_name
            nobody = _unprivileged("nobody")
            mail_uid, mail_gid = nobody.pw_uid, nobody.pw_gid
            os.chmod(self.directory, 0o755)
            _reachable(self.maildir)
            for top in (self.maildir, os.path.join(self.directory, "index"),
                        os.path.join(self.directory, "home")):
                _chown_tree(top, mail_uid, mail_gid)
        mailboxes = "\n".join(
            f'  mailbox "{name}" {{\n    special_use = {use}\n  }}'
            for name, use in SPECIAL_USE.items())
        index = "" if index_in_maildir else f":INDEX={self.directory}/index"
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(CONFIG.format(
                dir=self.directory, port=self.port, user=user, group=group, uid=mail_uid,
                gid=mail_gid, maildir=self.maildir, index=index, mailboxes=mailboxes,
                login_user=login_user))
        home = os.path.join(self.directory, "home")
        with open(os.path.join(self.directory, "passwd"), "w", encoding="utf-8") as handle:
            handle.write(f"{self.user}:{{PLAIN}}{self.password}:::::{home}::\n")

    def start(self, timeout: float = 30.0) -> Dovecot:
        with open(os.path.join(self.directory, "stdout.log"), "ab") as output:
            self.process = subprocess.Popen(
                [self.binary, "-F", "-c", self.config], stdout=output,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def greeting() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"dovecot exited ({self.process.returncode}): "
                                     f"{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    return sock.makefile("rb").readline().startswith(b"* OK")
            except OSError:
                return False

        wait_for(greeting, timeout, interval=0.02, message="dovecot to listen")
        return self

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "dovecot.log"):
            with contextlib.suppress(FileNotFoundError), \
                    open(os.path.join(self.directory, name), encoding="utf-8",
                         errors="replace") as handle:
                parts.append(handle.read())
        return "\n".join(parts)

    def complaints(self) -> list[str]:
        """The log's warnings, errors, fatal and panic lines, but the master's note that it
        was stopped: Dovecot's word on files it found broken or unexpected."""
        return [line for line in self.log().splitlines()
                if any(word in line for word in ("Warning:", "Error:", "Fatal:", "Panic:"))
                and "Killed with signal 15" not in line]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the master (what ``dovecot stop`` sends, without its slow polling), which
        ends its children; the process group is killed if anything lingers past ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        try:
            wait_for(lambda: not _alive_in_group(process.pid), timeout,
                     message="dovecot's processes to exit")
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def close(self) -> None:
        """stop() and remove the temporary directory (with a copied maildir)."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive_in_group(group: int) -> bool:
    """Whether a process of ``group`` still runs (zombies, left to init to reap, do not)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(group):
            return True
    return False


def _unprivileged(name: str) -> pwd.struct_passwd:
    """A system user for Dovecot's processes when we are root (skips the test if missing)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no user {name!r} for dovecot's processes")


def _reachable(path: str) -> None:
    """As root the mail process is nobody: every directory above ``path`` must let it pass."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            raise AssertionError(f"{parent} is closed to dovecot's mail user (nobody): "
                                 "use Dovecot(..., copy=True)")
        parent = os.path.dirname(parent)


def _chown_tree(top: str, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
