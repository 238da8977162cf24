"""Real IMAP sync clients from Debian (isync's ``mbsync``, ``offlineimap3``) run privately
against a geomail on 127.0.0.1, and small helpers over the Maildirs on both sides.

Each client gets its own HOME and config under the test's ``tmp_path``; the config is written
again before every run, because a restarted in-process App listens on a new ephemeral port.
The server certificate is checked against the test CA, with the host name ``localhost`` (the
name the ``pop3_tls`` certificate carries: mbsync 1.4 matches DNS names only, not IP SANs).
"""

from __future__ import annotations

import email.parser
import email.policy
import imaplib
import re
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE

MBSYNC = shutil.which("mbsync") or "/usr/bin/mbsync"
OFFLINEIMAP = shutil.which("offlineimap") or "/usr/bin/offlineimap"
CLIENT_TIMEOUT = 60
HOST = "localhost"


def run_client(command: list[str], home: Path, what: str) -> str:
    """Run a client with a private HOME; its exit status must be 0; returns its output."""
    result = subprocess.run(command, env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                                          "LANG": "C.UTF-8"},
                            capture_output=True, text=True, timeout=CLIENT_TIMEOUT, cwd=home)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{what} exited {result.returncode}:\n{output}"
    return output


@dataclass
class Mbsync:
    """One mbsync channel: geomail over imaps <-> a Maildir tree (``SubFolders Verbatim``)."""

    root: Path
    ca_file: str
    trash: str = ""

    def __post_init__(self) -> None:
        self.home = self.root / "mbsync-home"
        self.mail = self.root / "mbsync-mail"
        self.home.mkdir(mode=0o700)
        self.mail.mkdir()
        self.config = self.home / "mbsyncrc"

    def sync(self, port: int) -> str:
        """``mbsync -a`` both ways (new mail, flags, deletions, folders); returns the log."""
        self.config.write_text(f"""\
IMAPAccount geomail
Host {HOST}
Port {port}
User {ALICE}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {self.ca_file}
AuthMechs LOGIN
Timeout 20

IMAPStore remote
Account geomail
{f"Trash {self.trash}" if self.trash else ""}

MaildirStore local
Path {self.mail}/
Inbox {self.mail}/INBOX
SubFolders Verbatim

Channel geomail
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
CopyArrivalDate yes
""")
        self.config.chmod(0o600)
        return run_client([MBSYNC, "-c", str(self.config), "-V", "-a"], self.home, "mbsync")

    def state(self) -> dict[str, str]:
        """Every folder's ``.mbsyncstate``: UIDVALIDITY of both sides and the UID pairs."""
        return {str(path.parent.relative_to(self.mail)): path.read_text()
                for path in sorted(self.mail.rglob(".mbsyncstate"))}


@dataclass
class OfflineImap:
    """One offlineimap account: geomail over imaps (``sslcacertfile``) <-> a Maildir tree."""

    root: Path
    ca_file: str

    def __post_init__(self) -> None:
        self.home = self.root / "offlineimap-home"
        self.mail = self.root / "offlineimap-mail"
        self.home.mkdir(mode=0o700)
        self.mail.mkdir()
        self.config = self.home / "offlineimaprc"

    def sync(self, port: int) -> str:
        """One run (``-o``), the plain UI; errors must not be hidden behind exit status 0."""
        self.config.write_text(f"""\
[general]
accounts = geomail
metadata = {self.home}/metadata
ui = basic

[Account geomail]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {self.mail}

[Repository remote]
type = IMAP
remotehost = {HOST}
remoteport = {port}
remoteuser = {ALICE}
remotepass = {PASSWORD}
ssl = yes
sslcacertfile = {self.ca_file}
""")
        self.config.chmod(0o600)
        output = run_client([OFFLINEIMAP, "-c", str(self.config), "-o", "-u", "basic"],
                            self.home, "offlineimap")
        assert "ERROR" not in output and "WARNING" not in output, output
        return output


# --------------------------------------------------------------------------------------------
# Maildir files (either side)
# --------------------------------------------------------------------------------------------


def messages(folder: Path) -> list[Path]:
    """The message files of one Maildir folder (``new`` and ``cur``)."""
    return sorted(path for sub in ("new", "cur") if (folder / sub).is_dir()
                  for path in (folder / sub).iterdir() if not path.name.startswith("."))


def flags_of(path: Path) -> str:
    """The Maildir flag letters of a file name (RFC-less convention: ``:2,<letters>``)."""
    _, sep, info = path.name.rpartition(":2,")
    return info if sep else ""


def subject_of(path: Path) -> str:
    with path.open("rb") as file:
        message = email.parser.BytesHeaderParser(policy=email.policy.compat32).parse(file)
    return str(message["Subject"])


def by_subject(folder: Path) -> dict[str, Path]:
    """Subject -> file, for a folder whose subjects are unique."""
    found = {subject_of(path): path for path in messages(folder)}
    assert len(found) == len(messages(folder)), f"duplicate subjects in {folder}"
    return found


def set_flags(path: Path, flags: str) -> Path:
    """Change a message's flags as a Maildir reader does: one rename into ``cur``."""
    base = path.name.rpartition(":2,")[0] or path.name
    target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    path.rename(target)
    return target


def move_local(path: Path, folder: Path) -> Path:
    """Move a message to another local folder as a mail reader does: without mbsync's ``,U=``
    (the UID of the old folder means nothing in the new one)."""
    base, sep, info = path.name.rpartition(":2,")
    target = folder / "cur" / (re.sub(r",U=\d+", "", base) + sep + info)
    path.rename(target)
    return target


def write_local(folder: Path, name: str, subject: str, flags: str = "") -> Path:
    """A new message written into a local Maildir folder (LF line ends, as local tools do)."""
    path = folder / "cur" / f"{name}:2,{flags}"
    path.write_bytes(f"From: {ALICE}\nTo: bob@example.com\nSubject: {subject}\n"
                     f"Message-ID: <{name}@example.com>\nDate: Sun, 6 Dec 2026 20:00:00 +0000\n"
                     f"\nWritten locally: {subject}.\n".encode())
    return path


# --------------------------------------------------------------------------------------------
# The server's view, through IMAP
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    """One server folder: its UIDVALIDITY and each message's UID -> (subject, flags)."""

    uidvalidity: int
    messages: dict[int, tuple[str, frozenset[str]]]

    def subjects(self) -> dict[str, frozenset[str]]:
        return {subject: flags for subject, flags in self.messages.values()}


def server_view(port: int, context: ssl.SSLContext) -> dict[str, Folder]:
    """Every folder on the server, read with imaplib (EXAMINE, so nothing changes)."""
    imap = imaplib.IMAP4_SSL(HOST, port, ssl_context=context, timeout=10)
    try:
        imap.login(ALICE, PASSWORD)
        _, listing = imap.list()
        names = [re.search(rb'"([^"]*)"$', line).group(1).decode()  # type: ignore[union-attr]
                 for line in listing if isinstance(line, bytes)]
        view = {}
        for name in names:
            status, _ = imap.select(f'"{name}"', readonly=True)
            if status != "OK":
                continue  # a \Noselect level
            _, [validity] = imap.response("UIDVALIDITY")
            found: dict[int, tuple[str, frozenset[str]]] = {}
            _, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            for item in data:
                if not isinstance(item, tuple):
                    continue
                uid = int(re.search(rb"UID (\d+)", item[0]).group(1))  # type: ignore[union-attr]
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                subject = item[1].decode().partition(":")[2].strip()
                found[uid] = (subject, frozenset(flags.group(1).decode().split())
                              if flags else frozenset())
            view[name] = Folder(int(validity), found)
            imap.close()
        return view
    finally:
        imap.logout()


def server_change(port: int, context: ssl.SSLContext, changes: list[tuple[str, ...]]) -> None:
    """Server-side changes with imaplib, as another client would make them: each
    ``(folder, UID command, args...)``, then EXPUNGE in that folder (RFC 9051 6.4.3)."""
    imap = imaplib.IMAP4_SSL(HOST, port, ssl_context=context, timeout=10)
    try:
        imap.login(ALICE, PASSWORD)
        for folder, command, *args in changes:
            assert imap.select(folder)[0] == "OK"
            status, data = imap.uid(command, *args)
            assert status == "OK", data
            assert imap.expunge()[0] == "OK"
    finally:
        imap.logout()


def server_append(port: int, context: ssl.SSLContext, folder: str, message: bytes) -> None:
    """CREATE ``folder`` (a wire name: modified UTF-7) and APPEND ``message`` to it."""
    imap = imaplib.IMAP4_SSL(HOST, port, ssl_context=context, timeout=10)
    try:
        imap.login(ALICE, PASSWORD)
        assert imap.create(f'"{folder}"')[0] == "OK"
        assert imap.append(f'"{folder}"', None, None, message)[0] == "OK"
    finally:
        imap.logout()
