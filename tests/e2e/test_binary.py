"""End to end, as an operator runs it: the PyInstaller binary (``GEOMAIL_BIN=dist/geomail``) or,
without it, ``python -m geomail`` from the venv. Real clients: swaks (submission with STARTTLS
and AUTH), fetchmail (POP3 with STLS), dnsmasq and smtp-sink (relay to a remote domain)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.support import free_port, free_port_on, wait_for
from tests.support.dns import Dnsmasq
from tests.support.geomail import PASSWORD, GeomailProcess, base_config, password_hash
from tests.support.mta import SmtpSink

BINARY = os.environ.get("GEOMAIL_BIN")
COMMAND = [BINARY] if BINARY else [sys.executable, "-m", "geomail"]
pytestmark = pytest.mark.binary


def geomail(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the executable (or the venv's module) like an operator would."""
    return subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "mail.example.test", common_name="localhost")
    directory = tmp_path_factory.mktemp("e2e-tls")
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    (directory / "cert.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return {"cert": str(directory / "cert.pem"), "key": str(directory / "key.pem"),
            "ca": str(directory / "ca.pem")}


@pytest.fixture
def world(tmp_path: Path, tls: dict[str, str]) -> Iterator[dict[str, Any]]:
    """dnsmasq with remote.test's MX on 127.0.0.3, smtp-sink there, and a config that uses them."""
    sink_port = free_port_on(["127.0.0.3"])
    sink = SmtpSink("127.0.0.3", sink_port).start()
    dns = Dnsmasq().mx("remote.test", "mx.remote.test").host("mx.remote.test", "127.0.0.3")
    dns.start()
    raw = base_config(tmp_path, hostname="mail.example.test")
    raw["user"] = pwd.getpwuid(os.geteuid()).pw_name
    raw["tls"] = {"cert": tls["cert"], "key": tls["key"]}
    raw["listen"] = {"smtp": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"],
                     "pop3": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}
    raw["relay"] = {"nameservers": [dns.nameserver], "mx_port": sink_port,
                    "retry": ["1s", "2s"]}
    config = tmp_path / "geomail.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    server = GeomailProcess(config, COMMAND)
    try:
        yield {"server": server, "config": config, "raw": raw, "sink": sink, "dns": dns,
               "tls": tls}
    finally:
        server.kill()
        sink.cleanup()
        dns.stop()


def test_every_subcommand_runs(tmp_path: Path):
    """Each subcommand works from the executable (no Python or venv needed): --version, check,
    passwd (piped), dkim keygen, dns, queue list, sendmail's usage error."""
    assert geomail("--version").stdout.decode().startswith("geomail ")
    hashed = geomail("passwd", stdin=b"s3cret\n")
    assert hashed.returncode == 0 and hashed.stdout.startswith(b"$argon2id$")
    raw = base_config(tmp_path)
    raw["dkim"] = {"selector": "s1", "key": str(tmp_path / "dkim.key")}
    config = tmp_path / "g.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert geomail("check", "-c", str(config)).returncode == 1  # the key is not made yet
    assert geomail("dkim", "keygen", "-c", str(config)).returncode == 0
    checked = geomail("check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    assert b"v=DKIM1" in geomail("dns", "-c", str(config)).stdout
    assert geomail("queue", "list", "-c", str(config)).stdout == b"Mail queue is empty\n"
    assert geomail("sendmail", "--bogus").returncode == 64


def test_mail_in_out_and_fetched(world: dict[str, Any]):
    """The whole path with real clients: swaks submits over 587 with STARTTLS and AUTH (RFC
    3207, 4954); fetchmail fetches it over POP3 with STLS (RFC 2595); a message to a remote
    domain is relayed to its MX found through DNS (RFC 5321 5.1)."""
    started = time.monotonic()
    server = world["server"].start()
    startup = time.monotonic() - started
    submission, pop3 = server.port("submission"), server.port("pop3")
    swaks = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{submission}", "--tls", "--tls-verify",
         "--tls-ca-path", world["tls"]["ca"], "--tls-sni", "localhost", "--auth", "PLAIN",
         "--auth-user", "alice@example.com", "--auth-password", PASSWORD,
         "--from", "alice@example.com", "--to", "bob@example.com,friend@remote.test",
         "--header", "Subject: e2e", "--body", "hello from swaks"],
        capture_output=True, timeout=60)
    assert swaks.returncode == 0, swaks.stdout.decode()[-2000:]
    [relayed] = wait_for(lambda: _sink_messages(world["sink"]), 20,
                         message="relay to the remote MX")
    assert relayed.rcpt_tos == ["friend@remote.test"]
    assert b"hello from swaks" in relayed.content
    out = Path(tempfile.mkdtemp())
    rcfile = out / "fetchmailrc"
    rcfile.write_text(
        f"poll localhost via 127.0.0.1 port {pop3} protocol POP3\n"
        f"  user 'bob@example.com' there password '{PASSWORD}' is 'bob' here\n"
        f"  sslproto tls1.2+ sslcertck sslcertfile {world['tls']['ca']} sslcommonname localhost\n"
        f"  mda \"/bin/sh -c 'cat > {out}/message.eml'\"\n")
    rcfile.chmod(0o600)
    fetched = subprocess.run(["fetchmail", "-f", str(rcfile), "--nodetach", "--nosyslog",
                              "-k", "-v"], capture_output=True, timeout=60,
                             env={**os.environ, "HOME": str(out)})
    assert fetched.returncode == 0, fetched.stdout.decode()[-2000:] + fetched.stderr.decode()
    message = (out / "message.eml").read_bytes()
    assert b"Subject: e2e" in message and b"hello from swaks" in message
    assert b"STLS" in fetched.stdout or b"TLS" in fetched.stdout
    print(f"startup to first accepted connection: {startup:.2f}s")  # reported in the README
    assert server.stop() == 0


def test_sighup_reloads_and_sigterm_drains(world: dict[str, Any], tmp_path: Path):
    """SIGHUP re-reads users (a new user can log in, no restart); SIGTERM makes the server
    finish and exit 0 ("stopped" logged), while an open SMTP session is told 421 (RFC 5321 3.8)."""
    server = world["server"].start()
    raw = world["raw"]
    raw["users"]["carol@example.com"] = {"password": password_hash()}
    world["config"].write_text(yaml.safe_dump(raw, sort_keys=False))
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in server.log(), 10, message="reload")
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10) as client:
        client.starttls(context=_client_context(world["tls"]["ca"]))
        client.login("carol@example.com", PASSWORD)
    idle = smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10)
    try:
        idle.ehlo()
        server.signal(signal.SIGTERM)
        code, _ = idle.getreply()  # the drain tells idle sessions at once, unasked
    finally:
        idle.close()
    assert code == 421
    assert server.proc is not None and server.proc.wait(20) == 0
    assert "stopped" in server.log()


def _sink_messages(sink: SmtpSink) -> list[Any]:
    """What smtp-sink captured, or [] while it is still writing its dump file."""
    try:
        return sink.messages()
    except AssertionError:
        return []


def _serving_pid(pid: int) -> int:
    """The process that serves: a one-file PyInstaller binary runs Python in a child of its
    bootloader (which only waits for it); under a Python interpreter it is ``pid`` itself (its
    children are DKIM verify workers, limits.verify_processes)."""
    if "python" in os.path.basename(os.readlink(f"/proc/{pid}/exe")):
        return pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def _uids(pid: int) -> list[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]


def _client_context(cafile: str) -> Any:
    import ssl

    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    return context


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_root_start_drops_to_the_configured_user(tls: dict[str, str]):
    """Started as root, geomail binds, then runs as ``user:`` before touching mail; data_dir
    is that user's, mode 0700, mailbox files 0600. Without ``user:`` it refuses to run as root."""
    base = Path(tempfile.mkdtemp(prefix="geomail-e2e-"))
    base.chmod(0o755)
    try:
        nobody = pwd.getpwnam("nobody")
        raw = base_config(base / "x", hostname="mail.example.test")
        raw["data_dir"] = str(base / "data")
        raw["listen"] = {"smtp": [f"127.0.0.1:{free_port()}"]}
        config = base / "geomail.yaml"
        config.write_text(yaml.safe_dump(raw))
        config.chmod(0o644)
        refused = geomail("serve", "-c", str(config), timeout=30)
        assert refused.returncode == 1 and b"user: geomail was started as root" in refused.stderr
        raw["user"] = "nobody"
        config.write_text(yaml.safe_dump(raw))
        server = GeomailProcess(config, COMMAND).start()
        try:
            serving = _serving_pid(server.proc.pid)  # type: ignore[union-attr]
            assert _uids(serving) == [str(nobody.pw_uid)] * 4
            # The DKIM verify worker, started as root before the drop, drops to user: itself.
            workers = Path(f"/proc/{serving}/task/{serving}/children").read_text().split()
            assert workers, "no verify worker (limits.verify_processes defaults to 1)"
            wait_for(lambda: all(_uids(int(w)) == [str(nobody.pw_uid)] * 4 for w in workers),
                     10, message="the verify worker to run as nobody")
            with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as client:
                client.sendmail("x@remote.test", ["alice@example.com"], b"Subject: x\r\n\r\nx\r\n")
            data = base / "data"
            assert data.stat().st_uid == nobody.pw_uid and data.stat().st_mode & 0o777 == 0o700
            [stored] = list((data / "mail" / "example.com" / "alice" / "new").iterdir())
            assert stored.stat().st_uid == nobody.pw_uid
            assert stored.stat().st_mode & 0o777 == 0o600
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_acme_certificate_and_autoconfig_from_the_binary(tmp_path: Path):
    """RFC 8555 7.4 / 8.3 from the executable: at first start the certificate for the
    hostname is ordered from a private pebble CA over http-01 on the binary's own web
    listener and served on 465; Thunderbird's autoconfig request on that plain-HTTP listener
    is redirected to HTTPS (the frozen binary carries certbot's acme library and the site)."""
    import http.client
    import socket
    import ssl

    from tests.support.pebble import Pebble

    hostname = "mx.e2e.test"
    web_port = free_port()
    dns = Dnsmasq().host(hostname, "127.0.0.1").host("autoconfig.example.com", "127.0.0.1")
    dns.start()
    pebble = Pebble(web_port, dns.nameserver).start()
    raw = base_config(tmp_path, hostname=hostname)
    raw["user"] = pwd.getpwuid(os.geteuid()).pw_name
    raw["listen"] = {"submissions": ["127.0.0.1:0"], "web": [f"127.0.0.1:{web_port}"],
                     "http": ["127.0.0.1:0"]}
    raw["tls"] = {"acme": {"email": "postmaster@example.test", "directory": pebble.directory,
                           "ca_file": pebble.ca_file}}
    config = tmp_path / "geomail.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    server = GeomailProcess(config, COMMAND)
    try:
        server.start()
        context = ssl.create_default_context(cadata=pebble.root_pem())

        def served_by_pebble() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", server.port("submissions")), 5) as s, \
                        context.wrap_socket(s, server_hostname=hostname):
                    return True
            except ssl.SSLError:
                return False  # still the self-signed placeholder

        wait_for(served_by_pebble, timeout=30, message="the pebble certificate on 465")
        conn = http.client.HTTPConnection("127.0.0.1", web_port, timeout=5)
        conn.request("GET", "/mail/config-v1.1.xml?emailaddress=alice%40example.com",
                     headers={"Host": "autoconfig.example.com"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        # Plain HTTP redirects everything but ACME challenges to HTTPS (issue 13, item 2).
        assert response.status == 301, body
        assert response.getheader("Location", "").startswith("https://autoconfig.example.com")
        assert "acme-certificate-issued" in server.log()
    finally:
        server.kill()
        pebble.close()
        dns.stop()
