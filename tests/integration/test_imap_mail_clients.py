"""Real mail clients from Debian against geomail's IMAP server on 127.0.0.1 over implicit TLS
(RFC 8314 3.1, the certificate checked against the test CA): mutt, driven under a
pseudo-terminal with pushed keystrokes, copies, deletes, expunges and flags messages (RFC 9051
6.4.7 COPY, 6.4.6 STORE, 6.4.3 EXPUNGE), opens other folders from its command line and its
folder browser (6.3.9 LIST, modified UTF-7 names), and saves sent mail and drafts by APPEND
(6.3.12); getmail6 downloads into a Maildir, deleting the mail, or keeping it and fetching only
new mail on its next run (6.4.5 FETCH, 2.3.1.1 UIDs), from one folder or all of them. Each
result is checked on the server with imaplib."""

from __future__ import annotations

import errno
import fcntl
import imaplib
import os
import pwd
import shutil
import ssl
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import gevent.os
import gevent.socket
import pytest

from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE, make_message, send

pytest_plugins = ["tests.support.pop3_fixtures"]

MUTT = shutil.which("mutt") or "/usr/bin/mutt"
GETMAIL = shutil.which("getmail") or "/usr/bin/getmail"
TIMEOUT = 30

needs_mutt = pytest.mark.skipif(not os.path.exists(MUTT),
                                reason="mutt is a Debian package (.ci/run)")
needs_getmail = pytest.mark.skipif(not os.path.exists(GETMAIL),
                                   reason="getmail6 is a Debian package (.ci/run)")


@pytest.fixture
def imaps_app(make_app: Any, pop3_tls: dict[str, str]) -> Any:
    """smtp and imaps over the Maildir store."""
    return make_app(tls={"cert": pop3_tls["cert"], "key": pop3_tls["key"]},
                    listen={"smtp": ["127.0.0.1:0"], "imaps": ["127.0.0.1:0"]})


def imap_login(app: Any, tls: dict[str, str]) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=tls["ca"])
    imap = imaplib.IMAP4_SSL("127.0.0.1", app.ports["imaps"][0], ssl_context=context,
                             timeout=10)
    imap.login(ALICE, PASSWORD)
    return imap


def folder_state(app: Any, tls: dict[str, str], folder: str) -> dict[bytes, set[bytes]]:
    """Subject -> flags of every message in ``folder``, read-only."""
    imap = imap_login(app, tls)
    status, [count] = imap.select(folder, readonly=True)
    assert status == "OK", count
    state: dict[bytes, set[bytes]] = {}
    if int(count or 0):
        _, data = imap.fetch(f"1:{int(count)}",
                             "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for item in data:
            if isinstance(item, tuple):
                flags = item[0].split(b"FLAGS (", 1)[1].split(b")", 1)[0].split()
                subject = item[1].strip().split(b": ", 1)[1]
                state[subject] = set(flags)
    imap.logout()
    return state


# --------------------------------------------------------------------------------------------
# mutt
# --------------------------------------------------------------------------------------------


def muttrc(tmp_path: Path, port: int, tls: dict[str, str]) -> Path:
    rc = tmp_path / "muttrc"
    rc.write_text(f"""\
set folder="imaps://127.0.0.1:{port}/"
set spoolfile="+INBOX"
set imap_user="{ALICE}"
set imap_pass="{PASSWORD}"
set ssl_ca_certificates_file="{tls["ca"]}"
set certificate_file="{tmp_path / "mutt-certificates"}"
set ssl_verify_host=yes
set ssl_force_tls=yes
set header_cache=""
set message_cachedir=""
set imap_check_subscribed=no
set imap_passive=yes
set sort=mailbox-order
set delete=yes
set quit=yes
set confirmappend=no
set confirmcreate=no
set move=no
set mark_old=no
set wait_key=no
set pipe_decode=no
set beep=no
set record=""
set postponed="+Drafts"
set sendmail="/bin/false"
set timeout=0
set mail_check=0
set sleep_time=0
""")
    rc.chmod(0o600)
    return rc


def run_mutt(tmp_path: Path, rc: Path, push: str, *extra: str) -> str:
    """Run mutt under a pseudo-terminal with ``push`` as its keystrokes; read its screen until
    the terminal closes and wait for it to exit 0. Returns the screen output (for messages)."""
    home = tmp_path / "mutt-home"
    home.mkdir(exist_ok=True)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {"HOME": str(home), "TERM": "vt100", "LINES": "24", "COLUMNS": "100",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([MUTT, "-n", "-F", str(rc), *extra, "-e", f"push \"{push}\""],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    gevent.os.make_nonblocking(master)
    screen = bytearray()
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("mutt did not finish in time; screen:\n"
                                     + screen.decode(errors="replace"))
            try:
                gevent.socket.wait_read(master, timeout=remaining)
                chunk = os.read(master, 65536)
            except BlockingIOError:
                continue
            except TimeoutError:
                continue
            except OSError as error:  # EIO: every slave end is closed, mutt is gone
                if error.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            screen += chunk
        returncode = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = screen.decode(errors="replace")
    assert returncode == 0, f"mutt exited {returncode}; screen:\n{text}"
    return text


@pytest.fixture
def three_messages(imaps_app: Any) -> Iterator[None]:
    for n in range(1, 4):
        send(imaps_app.ports["smtp"][0], make_message(n))
    yield


@needs_mutt
def test_mutt_copy_delete_flag(tmp_path, imaps_app, pop3_tls, three_messages):
    """mutt over imaps: a tagged message copied to =Archive (RFC 9051 6.4.7 COPY), another
    to a folder that does not exist yet (NO [TRYCREATE], 7.1, then CREATE 6.3.4), one deleted
    and expunged at <sync-mailbox> (6.4.6 STORE +FLAGS \\Deleted, 6.4.3 EXPUNGE), one flagged
    and synced at <quit> (STORE \\Flagged); the server holds exactly that afterwards."""
    rc = muttrc(tmp_path, imaps_app.ports["imaps"][0], pop3_tls)
    push = ("<tag-pattern>~s message.1<enter><tag-prefix><copy-message>=Archive<enter>"
            "<untag-pattern>~A<enter>"
            "<search>message.3<enter><copy-message>=Projects/2026<enter>"
            "<delete-pattern>~s message.2<enter><sync-mailbox>"
            "<tag-pattern>~s message.3<enter><tag-prefix><flag-message><untag-pattern>~A<enter>"
            "<quit>")
    screen = run_mutt(tmp_path, rc, push)
    inbox = folder_state(imaps_app, pop3_tls, "INBOX")
    assert set(inbox) == {b"message 1", b"message 3"}, screen
    assert b"\\Flagged" in inbox[b"message 3"] and b"\\Flagged" not in inbox[b"message 1"]
    assert b"\\Deleted" not in inbox[b"message 1"] | inbox[b"message 3"]
    archive = folder_state(imaps_app, pop3_tls, "Archive")
    assert set(archive) == {b"message 1"}, screen
    # a COPY to a missing folder: NO [TRYCREATE], then mutt's CREATE and the COPY again
    assert set(folder_state(imaps_app, pop3_tls, "Projects/2026")) == {b"message 3"}, screen


@needs_mutt
def test_mutt_reads_other_folder(tmp_path, imaps_app, pop3_tls, three_messages):
    """mutt opens a non-INBOX folder given on its command line (RFC 9051 6.3.2 SELECT) and pipes
    a message from it (6.4.5 FETCH BODY[]): the octets are the stored message's."""
    imap = imap_login(imaps_app, pop3_tls)
    imap.select("INBOX")
    assert imap.copy("2", "Archive")[0] == "OK"
    _, data = imap.fetch("2", "(BODY.PEEK[])")
    stored = data[0][1]
    imap.logout()
    rc = muttrc(tmp_path, imaps_app.ports["imaps"][0], pop3_tls)
    out = tmp_path / "piped.eml"
    run_mutt(tmp_path, rc, f"<pipe-message>cat > {out}<enter><quit>", "-f", "=Archive")
    assert out.read_bytes().replace(b"\n", b"\r\n") == stored



@needs_mutt
def test_mutt_folder_browser(tmp_path, imaps_app, pop3_tls, three_messages):
    """mutt's folder browser lists the server's mailboxes (RFC 9051 6.3.9 LIST), shows the
    modified UTF-7 name Re&AOc-us decoded as Reçus (5.1.3), descends into its child and opens
    Reçus/2026 (mutt encodes the name back for SELECT); the message piped from it is the one
    copied there."""
    imap = imap_login(imaps_app, pop3_tls)
    assert imap.create("Re&AOc-us/2026")[0] == "OK"
    imap.select("INBOX")
    assert imap.copy("3", "Re&AOc-us/2026")[0] == "OK"
    _, data = imap.fetch("3", "(BODY.PEEK[])")
    stored = data[0][1]
    imap.logout()
    rc = muttrc(tmp_path, imaps_app.ports["imaps"][0], pop3_tls)
    out = tmp_path / "piped.eml"
    screen = run_mutt(tmp_path, rc, "<change-folder>?<search>Re<enter><select-entry>"
                      f"<search>2026<enter><select-entry><pipe-message>cat > {out}<enter><quit>")
    assert "Reçus/2026" in screen
    assert out.read_bytes().replace(b"\n", b"\r\n") == stored


@needs_mutt
def test_mutt_qresync_with_header_cache(tmp_path, imaps_app, pop3_tls, three_messages):
    """mutt with a header cache and imap_qresync: its second visit asks only for changes
    (RFC 7162 3.2.6 UID FETCH (CHANGEDSINCE n VANISHED), 3.2.10 VANISHED (EARLIER)) and acts
    on them: the message expunged meanwhile by another session is gone from its index (only
    two messages piped), the one flagged meanwhile is found by ~F and copied to =Archive."""
    rc = muttrc(tmp_path, imaps_app.ports["imaps"][0], pop3_tls)
    with rc.open("a") as out:
        out.write(f'set header_cache="{tmp_path / "hcache"}"\nset imap_qresync=yes\n'
                  'set pipe_split=yes\n')
    run_mutt(tmp_path, rc, "<quit>")
    imap = imap_login(imaps_app, pop3_tls)
    imap.select("INBOX")
    assert imap.store("2", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert imap.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert imap.expunge()[0] == "OK"
    imap.logout()
    out = tmp_path / "piped.txt"
    run_mutt(tmp_path, rc, "<tag-pattern>~F<enter><tag-prefix><copy-message>=Archive<enter>"
                           "<untag-pattern>~A<enter><tag-pattern>~A<enter>"
                           f"<tag-prefix><pipe-message>cat >> {out}<enter><quit>", "-d", "2")
    trace = (tmp_path / "mutt-home" / ".muttdebug0").read_text(errors="replace")
    assert "(CHANGEDSINCE" in trace and "* VANISHED (EARLIER) 1" in trace, trace[-4000:]
    assert set(folder_state(imaps_app, pop3_tls, "Archive")) == {b"message 2"}
    piped = out.read_bytes()
    assert piped.count(b"\nSubject: ") == 2 and b"Subject: message 1\n" not in piped


@needs_mutt
def test_mutt_fcc_and_postpone_append(tmp_path, imaps_app, pop3_tls):
    """mutt composes two messages: the sent one is saved to =Sent and the postponed one to
    =Drafts, both by APPEND over IMAP (RFC 9051 6.3.12); the copy in Sent is the message mutt
    handed to its sendmail, and the draft carries \\Draft."""
    rc = muttrc(tmp_path, imaps_app.ports["imaps"][0], pop3_tls)
    sent = tmp_path / "sendmail-out.eml"
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!/bin/sh\ncat > {sent}\n")
    sendmail.chmod(0o755)
    with rc.open("a") as out:
        out.write(f'set sendmail="{sendmail}"\nset record="+Sent"\nset editor="/bin/true"\n'
                  f'set abort_unmodified=no\nset fcc_attach=yes\nset from="{ALICE}"\n'
                  'set use_from=yes\nset askcc=no\nset hostname="example.com"\n')
    run_mutt(tmp_path, rc, "<mail>bob@example.org<enter>sent by mutt<enter><send-message>"
                           "<mail>carol@example.org<enter>draft by mutt<enter>"
                           "<postpone-message><quit>")
    sent_folder = folder_state(imaps_app, pop3_tls, "Sent")
    assert set(sent_folder) == {b"sent by mutt"}
    drafts = folder_state(imaps_app, pop3_tls, "Drafts")
    assert set(drafts) == {b"draft by mutt"} and b"\\Draft" in drafts[b"draft by mutt"], drafts
    imap = imap_login(imaps_app, pop3_tls)
    imap.select("Sent", readonly=True)
    _, data = imap.fetch("1", "(BODY.PEEK[TEXT] BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    imap.logout()
    handed = sent.read_bytes().replace(b"\n", b"\r\n")
    assert b"To: bob@example.org" in handed
    message_ids = [item[1] for item in data if isinstance(item, tuple) and b"HEADER" in item[0]]
    assert message_ids and message_ids[0].strip() in handed


# --------------------------------------------------------------------------------------------
# getmail6
# --------------------------------------------------------------------------------------------


@pytest.fixture
def getmail_maildir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An empty Maildir for getmail and the ``user =`` line of its destination: getmail refuses
    to deliver as root, so under root the Maildir is made in a directory of its own owned by
    ``nobody`` (tmp_path's parents are not open to others) and getmail delivers as nobody."""
    if os.geteuid() != 0:
        maildir = tmp_path / "Maildir"
        user, owner = "", None
    else:
        nobody = pwd.getpwnam("nobody")
        base = Path(tempfile.mkdtemp(prefix="geomail-getmail-"))
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        maildir = base / "Maildir"
        user, owner = "user = nobody", nobody
    for sub in ("", "cur", "new", "tmp"):
        (maildir / sub).mkdir(exist_ok=True)
        if owner is not None:
            os.chown(maildir / sub, owner.pw_uid, owner.pw_gid)
    yield maildir, user
    if owner is not None:
        shutil.rmtree(maildir.parent)


def getmail(tmp_path: Path, port: int, tls: dict[str, str], destination: tuple[Path, str], *,
            delete: bool, mailboxes: str = '("INBOX",)',
            record: bool = False) -> tuple[list[bytes], str]:
    """One getmail run into the Maildir (read_all = false: only mail it has not seen,
    remembered by UID in its getmaildir). Returns every message in the Maildir so far, sorted."""
    maildir, user = destination
    state = tmp_path / "getmail-state"
    state.mkdir(exist_ok=True)
    rc = tmp_path / "getmailrc"
    rc.write_text(f"""\
[retriever]
type = SimpleIMAPSSLRetriever
server = 127.0.0.1
port = {port}
username = {ALICE}
password = {PASSWORD}
ca_certs = {tls["ca"]}
mailboxes = {mailboxes}
record_mailbox = {"true" if record else "false"}

[destination]
type = Maildir
path = {maildir}/
{user}

[options]
verbose = 2
read_all = false
delete = {"true" if delete else "false"}
delivered_to = false
received = false
""")
    rc.chmod(0o600)
    result = subprocess.run([GETMAIL, "--rcfile", str(rc), "--getmaildir", str(state)],
                            capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "HOME": str(tmp_path)})
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"getmail exited {result.returncode}:\n{log}"
    fetched = sorted(path.read_bytes() for sub in ("new", "cur")
                     for path in (maildir / sub).iterdir())
    return fetched, log


def inbox_messages(app: Any, tls: dict[str, str]) -> list[bytes]:
    imap = imap_login(app, tls)
    _, [count] = imap.select("INBOX", readonly=True)
    found = []
    if int(count or 0):
        _, data = imap.fetch(f"1:{int(count)}", "(BODY.PEEK[])")
        found = [item[1] for item in data if isinstance(item, tuple)]
    imap.logout()
    return sorted(found)


def crlf(messages: list[bytes]) -> list[bytes]:
    return sorted(m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for m in messages)


@needs_getmail
def test_getmail_delete(tmp_path, imaps_app, pop3_tls, three_messages, getmail_maildir):
    """getmail6 with delete = true: every message arrives byte for byte (RFC 9051 6.4.5
    FETCH BODY.PEEK[]) and is gone from the server afterwards (6.4.6 STORE \\Deleted,
    6.4.3 EXPUNGE)."""
    stored = inbox_messages(imaps_app, pop3_tls)
    assert len(stored) == 3
    fetched, log = getmail(tmp_path, imaps_app.ports["imaps"][0], pop3_tls, getmail_maildir,
                           delete=True)
    assert crlf(fetched) == stored, log
    assert inbox_messages(imaps_app, pop3_tls) == []


@needs_getmail
def test_getmail_only_new(tmp_path, imaps_app, pop3_tls, three_messages, getmail_maildir):
    """getmail6 with read_all = false and delete = false: the first run takes the three
    messages and leaves them; after a fourth is delivered, the second run takes only that one
    (it remembers UIDVALIDITY/UID pairs, RFC 9051 2.3.1.1), and the server still has all."""
    port = imaps_app.ports["imaps"][0]
    fetched, log = getmail(tmp_path, port, pop3_tls, getmail_maildir, delete=False)
    assert len(fetched) == 3, log
    send(imaps_app.ports["smtp"][0], make_message(4))
    fetched, log = getmail(tmp_path, port, pop3_tls, getmail_maildir, delete=False)
    assert len(fetched) == 4, log
    assert "msg 4/4" in log and "1 messages (" in log and "retrieved, 3 skipped" in log, log
    stored = inbox_messages(imaps_app, pop3_tls)
    assert crlf(fetched) == stored


@needs_getmail
def test_getmail_all_mailboxes(tmp_path, imaps_app, pop3_tls, getmail_maildir):
    """getmail6 with mailboxes = ALL lists the folders (RFC 9051 6.3.9 LIST), decodes the
    modified UTF-7 name Re&AOc-us/2026 (5.1.3), selects each folder by its encoded name and
    takes every message once, noting the folder it came from."""
    imap = imap_login(imaps_app, pop3_tls)
    assert imap.create("Re&AOc-us/2026")[0] == "OK"
    for folder, n in (("INBOX", 1), ("Re&AOc-us/2026", 2), ("Archive", 3)):
        status, _ = imap.append(folder, None, None, make_message(n))
        assert status == "OK"
    imap.logout()
    fetched, log = getmail(tmp_path, imaps_app.ports["imaps"][0], pop3_tls, getmail_maildir,
                           delete=False, mailboxes="ALL", record=True)
    origins = {}
    for message in fetched:
        fields = dict(line.split(b": ", 1) for line in message.split(b"\n\n", 1)[0].split(b"\n")
                      if b": " in line and not line.startswith((b" ", b"\t")))
        origin = fields[b"X-getmail-retrieved-from-mailbox"].decode()
        origins[fields[b"Subject"]] = str(make_header(decode_header(origin)))  # RFC 2047
    assert origins == {b"message 1": "INBOX", b"message 2": "Reçus/2026",
                       b"message 3": "Archive"}, log
