"""Start-up leaves nothing to chance. The spool files of transactions a crash
interrupted are swept at start; everything the server needs is imported before it drops root,
so that a service user who cannot read the interpreter, the venv or geomail still serves."""

from __future__ import annotations

import imaplib
import os
import poplib
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import geomail
from geomail.dkim import keygen
from tests.support import free_port_on, wait_for
from tests.support.geomail import PASSWORD, GeomailProcess, base_config, write_config
from tests.support.mta import SmtpdPeer
from tests.support.outbound import SELECTOR, dnsfunc, mailbox, make_zone, parse_report
from tests.support.smtp import process_config


def _spool(data_dir: Path) -> list[str]:
    directory = data_dir / "spool"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def test_spool_of_a_transaction_killed_mid_data_is_swept_at_start(tmp_path: Path) -> None:
    """RFC 5321 6.1 (no 250, so the client still owns the message): a body
    larger than the in-memory threshold spills to data_dir/spool; SIGKILL the server mid-DATA and
    the file stays; the restarted server removes it and logs ``spool-swept``."""
    server = GeomailProcess(process_config(tmp_path))
    data_dir = tmp_path / "data"
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            for line in (b"EHLO client.example", b"MAIL FROM:<s@remote.example>",
                         b"RCPT TO:<test1@test.com>", b"DATA"):
                sock.sendall(line + b"\r\n")
                while (reply := reader.readline())[3:4] == b"-":
                    pass
                assert reply[:1] in (b"2", b"3"), reply
            line = b"x" * 998 + b"\r\n"
            for _ in range(1024):  # 1 MiB, well past the 256 KiB kept in memory; no final dot
                sock.sendall(line)
            wait_for(lambda: _spool(data_dir), 10, message="the body spilled to the spool")
            server.kill()
        assert _spool(data_dir), "the killed transaction's spool file is there"
        server.start()
        assert _spool(data_dir) == []
        assert "spool-swept" in server.log() and "files=1" in server.log()
    finally:
        server.kill()


# ------------------------------------------------------------------------------------------
# Started as root, serving as a user who can read nothing of the code.

MX = {"remote.test": "127.0.0.61"}
MESSAGE = b"From: alice@example.com\r\nTo: x@remote.test\r\nSubject: after the drop\r\n\r\nhi\r\n"
CAN_TEST_AS_NOBODY = os.geteuid() == 0


@pytest.fixture
def unreadable_code() -> Iterator[list[str]]:
    """A copy of the venv's packages and of geomail in a directory only root may enter (the
    files are hard links where the file system allows, the shared venv is left untouched); the
    command that runs geomail from there with Python's own site-packages turned off."""
    root = Path(tempfile.mkdtemp(prefix="geomail-root-only-"))  # mode 0700, owned by root
    try:
        site = Path(sysconfig.get_paths()["purelib"])
        shutil.copytree(site, root / "site", copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns("__editable__*", "geomail*", "_pytest",
                                                      "mypy*", "hypothesis*", "PyInstaller"))
        shutil.copytree(Path(geomail.__file__).parent, root / "src" / "geomail",
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.chmod(root, 0o700)
        yield [sys.executable, "-S", "-P", "-c",
               f"import sys; sys.path[:0] = [{str(root / 'src')!r}, {str(root / 'site')!r}];"
               "import runpy; runpy.run_module('geomail', run_name='__main__')"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.mark.skipif(not CAN_TEST_AS_NOBODY, reason="needs root (to start as root and drop to "
                    "nobody); CI runs as root")
def test_every_path_works_after_dropping_to_a_user_who_cannot_read_the_code(
        unreadable_code: list[str], tls_files: dict[str, str]) -> None:
    """Dropping root (``user:``; it died with ``ModuleNotFoundError: gevent.threadpool`` at its
    first threadpool use): geomail started as root with ``user: nobody`` from a directory nobody
    cannot read delivers inbound mail (RFC 5321), takes a submission over implicit TLS with AUTH
    PLAIN (argon2id; RFC 8314, RFC 4954), signs it with DKIM (RFC 6376) and relays it by MX lookup
    over STARTTLS, bounces a 5xx with a DSN (RFC 3464), serves POP3 over TLS with a login (RFC 1939,
    RFC 8314), spools a large body, answers /metrics and reloads on SIGHUP; no import fails."""
    nobody = pwd.getpwnam("nobody")
    work = Path(tempfile.mkdtemp(prefix="geomail-as-nobody-"))
    os.chmod(work, 0o755)  # nobody must reach data_dir; the code stays unreadable
    try:
        key_path = str(work / "dkim.key")
        txt = keygen(key_path)
        zone = make_zone(MX, dkim_txt=txt)
        mx_port = free_port_on(sorted(MX.values()))
        peer = SmtpdPeer(MX["remote.test"], mx_port, tls="starttls", cert=tls_files["cert"],
                         key=tls_files["key"]).start()
        raw = base_config(work, user="nobody", tls={"cert": tls_files["cert"],
                                                    "key": tls_files["key"]},
                          listen={"smtp": ["127.0.0.1:0"], "submissions": ["127.0.0.1:0"],
                                  "pop3s": ["127.0.0.1:0"], "imaps": ["127.0.0.1:0"],
                                  "http": ["127.0.0.1:0"]},
                          dkim={"selector": SELECTOR, "key": key_path},
                          relay={"nameservers": [zone.nameserver], "mx_port": mx_port,
                                 "retry": ["1s"], "delay_warning": 0, "dns_timeout": "2s"})
        server = GeomailProcess(write_config(work / "geomail.yaml", raw), unreadable_code)
        try:
            server.start()
            data_dir = work / "data"
            assert data_dir.stat().st_uid == nobody.pw_uid
            context = ssl.create_default_context(cafile=tls_files["ca"])

            with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=20) as client:
                client.sendmail("s@remote.example", ["alice@example.com"],
                                b"Subject: inbound\r\n\r\n" + (b"y" * 998 + b"\r\n") * 400)
            with smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), timeout=20,
                                  context=context) as client:
                client.login("alice@example.com", PASSWORD)
                client.sendmail("alice@example.com", ["x@remote.test", "reject@remote.test"],
                                MESSAGE)

            [relayed] = wait_for(peer.messages, 20, message="the relayed message at the MX")
            assert relayed.rcpt_tos == ["x@remote.test"] and relayed.meta["tls"]
            import dkim as dkimpy

            assert dkimpy.verify(relayed.content.replace(b"\n", b"\r\n"), dnsfunc=dnsfunc(zone))
            store = data_dir / "mail"
            found = wait_for(lambda: len(mailbox(store, "alice@example.com")) >= 2 and
                             mailbox(store, "alice@example.com"), 20,
                             message="the inbound message and the bounce for alice")
            bounce = next(m for m in found if b"multipart/report" in m)
            _, _, [block], _ = parse_report(bounce)
            assert block["Final-Recipient"] == "rfc822; reject@remote.test"

            pop = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), timeout=20,
                                  context=context)
            try:
                pop.user("alice@example.com")
                pop.pass_(PASSWORD)
                assert pop.stat()[0] == 2
                assert b"inbound" in b"\n".join(pop.retr(1)[1] + pop.retr(2)[1])
            finally:
                pop.quit()
            imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), timeout=20,
                                     ssl_context=context)
            try:  # RFC 9051: folders, a fetch and IDLE's inotify watch, after the drop
                imap.login("alice@example.com", PASSWORD)
                assert imap.select("INBOX") == ("OK", [b"2"])
                assert b"inbound" in b"".join(imap.fetch("1:2", "(BODY.PEEK[])")[1][0])  # type: ignore[arg-type]
                imap.send(b"i IDLE\r\n")
                assert imap.readline().startswith(b"+")
                imap.send(b"DONE\r\n")
                assert imap.readline().startswith(b"i OK")
            finally:
                imap.logout()
            url = f"http://127.0.0.1:{server.port('http')}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert b"geomail_queue_messages" in answer.read()
            server.signal(signal.SIGHUP)  # reload: the config parser and TLS, after the drop
            wait_for(lambda: " reloaded " in server.log(), 10, message="the reload")
        except BaseException:
            print(server.log())  # shown with the failure
            raise
        finally:
            code = server.stop(timeout=5) if server.proc else None
            peer.stop()
            zone.stop()
        log = server.log()
        assert "ModuleNotFoundError" not in log and "ImportError" not in log, log
        assert "preload-missing" not in log, log
        assert "Traceback" not in log, log
        assert code == 0, log
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
