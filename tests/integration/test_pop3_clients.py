"""Real POP3 clients from Debian (fetchmail, getmail6, mpop) against geomail on 127.0.0.1: each
downloads every message, over STLS (RFC 2595 4) or implicit TLS (RFC 8314 3.1) checked against
the test CA, deletes them when asked (RFC 1939 6), and what it stored matches what geomail
holds, apart from the trace field the client itself adds. Maildir and mbox stores."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fetchmail import fetchmail, without_field
from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE, CRLF, Ports, make_message, send, session
from tests.support.pop3 import unstuff as unstuff_body

pytest_plugins = ["tests.support.pop3_fixtures"]

GETMAIL = shutil.which("getmail") or "/usr/bin/getmail"
MPOP = shutil.which("mpop") or "/usr/bin/mpop"
COUNT = 3


@pytest.fixture
def ports(pop3_app) -> Ports:
    return Ports(pop3_app.ports)


@pytest.fixture
def mailbox(ports) -> list[bytes]:
    """COUNT messages delivered by SMTP; returns their content as the store holds them (LF)."""
    for n in range(1, COUNT + 1):
        send(ports.smtp, make_message(n))
    with session(ports.pop3) as client:
        contents = [unstuff_body(client.multi(f"RETR {n}")[1]) for n in range(1, COUNT + 1)]
    return sorted(content.replace(CRLF, b"\n") for content in contents)


def left_on_server(ports: Ports) -> int:
    with session(ports.pop3) as client:
        return client.stat()[0]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)
    assert result.returncode == 0, f"{command[0]} exited {result.returncode}:\n" \
        f"{result.stdout}\n{result.stderr}"
    return result


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)  # fetchmail and mpop refuse a readable file holding a password
    return path


# --------------------------------------------------------------------------------------------
# fetchmail
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pop3s-keep", "stls-delete"])
def test_fetchmail(tmp_path, ports, pop3_tls, mailbox, mode):
    """fetchmail over implicit TLS keeping the mail, and over STLS (RFC 2595 4) deleting it:
    every message arrives, equal to the stored one but for fetchmail's Received field."""
    if mode == "pop3s-keep":
        fetched, log = fetchmail(tmp_path, "POP3", ports.pop3s, pop3_tls, 'ssl sslproto "TLS1.2+"',
                                 keep=True)
    else:
        fetched, log = fetchmail(tmp_path, "POP3", ports.pop3_strict, pop3_tls,
                                 'sslproto "TLS1.2+"', keep=False)
        assert "POP3> STLS" in log and "upgrade to TLS succeeded" in log
    assert sorted(without_field(m, b"(fetchmail-") for m in fetched) == mailbox
    assert left_on_server(ports) == (COUNT if mode == "pop3s-keep" else 0)


# --------------------------------------------------------------------------------------------
# getmail6
# --------------------------------------------------------------------------------------------


@pytest.fixture
def world_maildir() -> Iterator[Path]:
    """A Maildir getmail may write: it refuses to deliver as root, so when the tests run as
    root it switches to ``nobody`` (``user =``), which must reach the directory."""
    base = Path(tempfile.mkdtemp(prefix="geomail-getmail-"))
    try:
        base.chmod(0o755)
        maildir = base / "Maildir"
        for sub in ("", "new", "cur", "tmp"):
            (maildir / sub).mkdir(exist_ok=True)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.chown(maildir / sub, nobody.pw_uid, nobody.pw_gid)
        yield maildir
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("mode", ["pop3s-delete", "plain-keep"])
def test_getmail(tmp_path, ports, pop3_tls, mailbox, world_maildir, mode):
    """getmail6's SimplePOP3SSLRetriever (RFC 8314 3.1, CA checked) deleting the mail, and its
    SimplePOP3Retriever on the plaintext-login listener keeping it: the Maildir it fills holds
    exactly the stored messages (getmail's own Received/Delivered-To are switched off)."""
    secure = mode == "pop3s-delete"
    retriever = (f"type = SimplePOP3SSLRetriever\nport = {ports.pop3s}\n"
                 f"ca_certs = {pop3_tls['ca']}\nssl_cert_hostname = localhost\n" if secure
                 else f"type = SimplePOP3Retriever\nport = {ports.pop3}\n")
    user = "user = nobody\n" if os.geteuid() == 0 else ""
    rc = private_file(tmp_path / "getmailrc", f"""\
[retriever]
{retriever}server = 127.0.0.1
username = {ALICE}
password = {PASSWORD}

[destination]
type = Maildir
path = {world_maildir}/
{user}
[options]
read_all = true
delete = {str(secure).lower()}
received = false
delivered_to = false
verbose = 2
""")
    state = tmp_path / "getmail-state"
    state.mkdir()
    result = run([GETMAIL, "--rcfile", str(rc), "--getmaildir", str(state)])
    assert f"{COUNT} messages" in result.stdout
    fetched = sorted(path.read_bytes() for path in (world_maildir / "new").iterdir())
    assert fetched == mailbox
    assert left_on_server(ports) == (0 if secure else COUNT)


# --------------------------------------------------------------------------------------------
# mpop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stls-user-maildir-delete", "pop3s-plain-mda-keep"])
def test_mpop(tmp_path, ports, pop3_tls, mailbox, mode):
    """mpop over STLS with USER/PASS into a Maildir, deleting (RFC 2595 4, RFC 1939 6), and over
    implicit TLS with AUTH PLAIN (RFC 5034) into an MDA, keeping: it pipelines its commands
    (RFC 2449 6.6), and what it delivers is exactly what geomail stored."""
    out = tmp_path / "mpop-out"
    for sub in ("new", "cur", "tmp"):
        (out / sub).mkdir(parents=True)
    if mode == "stls-user-maildir-delete":
        settings = (f"port {ports.pop3_strict}\ntls_starttls on\nauth user\n"
                    f"delivery maildir {out}\nkeep off\n")
    else:
        settings = (f"port {ports.pop3s}\ntls_starttls off\nauth plain\n"
                    f"delivery mda \"/bin/sh -c 'cat > $(mktemp {out}/new/msg.XXXXXX)'\"\n"
                    "keep on\n")
    rc = private_file(tmp_path / "mpoprc", f"""\
account default
host 127.0.0.1
{settings}tls on
tls_trust_file {pop3_tls["ca"]}
tls_host_override localhost
user {ALICE}
password {PASSWORD}
received_header off
uidls_file {tmp_path}/mpop-uidls
""")
    result = run([MPOP, "-C", str(rc), "-d"])
    log = result.stdout + result.stderr
    assert ("--> STLS" in log) == mode.startswith("stls")
    assert ("--> AUTH PLAIN" in log) == ("plain" in mode)
    fetched = sorted(path.read_bytes() for path in (out / "new").iterdir())
    assert fetched == mailbox
    assert left_on_server(ports) == (0 if "delete" in mode else COUNT)
