"""The command line as an operator uses it: check, --version, dns (and --check against a real DNS
server), dkim keygen, sendmail, queue; each run as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dkim as dkimpy
import pytest
import yaml

from geomail import __version__
from tests.support.dns import Dnsmasq
from tests.support.geomail import base_config, running_app, write_config

GEOMAIL = [sys.executable, "-m", "geomail"]


def run(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*GEOMAIL, *args], input=stdin, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def test_version():
    """``geomail --version`` prints the version and exits 0."""
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"geomail {__version__}"


def test_check_reports_every_problem_with_its_key(tmp_path: Path):
    """``geomail check`` prints every problem, each naming its key path, and exits 1."""
    config = tmp_path / "bad.yaml"
    config.write_text("domains: [example.com]\nlisten: {smtp: ['0.0.0.0:99999']}\n"
                      "limits: {max_message_size: lots}\nbogus: 1\n")
    result = run("check", "-c", str(config))
    assert result.returncode == 1
    assert "listen.smtp[0]: '0.0.0.0:99999' is not a valid port" in result.stderr
    assert "limits.max_message_size: expected a size" in result.stderr
    assert "bogus: unknown key" in result.stderr


def test_check_summarises_a_good_config(tmp_path: Path):
    """A valid config: exit 0 and a summary naming the domains and listeners."""
    config = write_config(tmp_path / "good.yaml", base_config(tmp_path))
    result = run("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "test.com, example.com" in result.stdout
    assert "smtp" in result.stdout and "127.0.0.1:0" in result.stdout


def test_check_refuses_plaintext_passwords(tmp_path: Path):
    """Plain-text passwords in the config are refused with a clear message."""
    raw = base_config(tmp_path)
    raw["users"]["carol@example.com"] = {"password": "hunter2"}
    result = run("check", "-c", str(write_config(tmp_path / "g.yaml", raw)))
    assert result.returncode == 1
    assert "users.carol@example.com.password: looks like a plain-text password" in result.stderr


def test_check_refuses_duplicate_keys(tmp_path: Path):
    """A key given twice is an error (YAML would silently keep the last one)."""
    config = tmp_path / "dup.yaml"
    config.write_text("domains: [a.test]\ndomains: [b.test]\nlisten: {smtp: ['127.0.0.1:0']}\n")
    result = run("check", "-c", str(config))
    assert result.returncode == 1
    assert "duplicate key 'domains'" in result.stderr


def dns_config(tmp_path: Path, key: Path) -> Path:
    raw = base_config(tmp_path, hostname="mail.example.test", domains=["example.test"])
    raw["users"] = {"alice@example.test": {}}
    raw["aliases"] = {}
    raw["dkim"] = {"selector": "s1", "key": str(key)}
    return write_config(tmp_path / "dns.yaml", raw)


def test_dkim_keygen_writes_a_private_key_and_prints_its_record(tmp_path: Path):
    """``geomail dkim keygen`` writes a 2048-bit key (mode 0600) and prints the TXT record to
    publish at <selector>._domainkey.<domain> (RFC 6376 3.6.2); a second run keeps the key."""
    key = tmp_path / "dkim" / "example.test.key"
    config = dns_config(tmp_path, key)
    result = run("dkim", "keygen", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    assert "s1._domainkey.example.test. IN TXT" in result.stdout
    assert '"v=DKIM1; k=rsa; p=' in result.stdout
    before = key.read_bytes()
    again = run("dkim", "keygen", "-c", str(config))
    assert again.returncode == 0 and key.read_bytes() == before
    assert "exists" in again.stdout


def test_dns_prints_the_records_to_publish(tmp_path: Path):
    """``geomail dns`` prints MX, A, SPF, DKIM, DMARC and PTR lines ready to paste."""
    key = tmp_path / "k.key"
    config = dns_config(tmp_path, key)
    assert run("dkim", "keygen", "-c", str(config)).returncode == 0
    result = run("dns", "-c", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "example.test.  " in out and "IN MX   10 mail.example.test." in out
    assert '"v=spf1 mx -all"' in out
    assert "s1._domainkey.example.test." in out and "v=DKIM1; k=rsa; p=" in out
    assert '_dmarc.example.test.' in out and "p=reject; rua=mailto:postmaster@" in out
    assert "IN PTR  mail.example.test." in out


def test_dns_suggests_a_dmarc_policy_that_protects(tmp_path: Path):
    """Issue 12 item 5: with a DKIM key the suggested DMARC policy is ``p=reject`` (RFC 7489
    6.3), without one ``p=quarantine`` with a note to add DKIM; ``--check`` calls a published
    ``p=none`` weak (exit 1): it asks receivers to deliver forgeries."""
    key = tmp_path / "k.key"
    config = dns_config(tmp_path, key)
    raw = yaml.safe_load(config.read_text())
    del raw["dkim"]
    unsigned = yaml.safe_dump(raw)
    (tmp_path / "plain.yaml").write_text(unsigned)
    result = run("dns", "-c", str(tmp_path / "plain.yaml"))
    assert result.returncode == 0, result.stderr
    assert "p=quarantine; rua=mailto:postmaster@" in result.stdout
    assert "dkim keygen" in result.stdout
    server = Dnsmasq().txt("_dmarc.example.test", "v=DMARC1; p=none")
    with server:
        text = unsigned + f"relay: {{nameservers: ['{server.nameserver}']}}\n"
        (tmp_path / "plain.yaml").write_text(text)
        result = run("dns", "--check", "-c", str(tmp_path / "plain.yaml"))
    assert result.returncode == 1
    assert any(line.startswith("weak") and "_dmarc.example.test." in line
               for line in result.stdout.splitlines()), result.stdout


def test_dns_check_against_a_real_dns_server(tmp_path: Path):
    """``geomail dns --check`` looks every record up: all present -> exit 0; a missing DMARC
    record and a wrong MX -> exit 1 naming them (RFC 7208 SPF, RFC 6376 DKIM, RFC 7489; SRV
    "not available" RFC 6186 3.4)."""
    from geomail.dkim import dns_txt_record, keygen

    key = tmp_path / "k.key"
    keygen(str(key))
    dkim_value = dns_txt_record(str(key))
    raw_path = dns_config(tmp_path, key)
    server = (Dnsmasq().mx("example.test", "mail.example.test").host("mail.example.test",
              "192.0.2.10").ptr("192.0.2.10", "mail.example.test")
              .txt("example.test", "v=spf1 mx -all").txt("s1._domainkey.example.test", dkim_value)
              .txt("_dmarc.example.test", "v=DMARC1; p=reject")
              .txt("_smtp._tls.example.test", "v=TLSRPTv1; rua=mailto:postmaster@example.test")
              .srv("_submissions._tcp.example.test").srv("_submission._tcp.example.test")
              .srv("_imaps._tcp.example.test").srv("_imap._tcp.example.test")
              .srv("_pop3s._tcp.example.test").srv("_pop3._tcp.example.test"))
    with server:
        text = raw_path.read_text() + f"relay: {{nameservers: ['{server.nameserver}']}}\n"
        raw_path.write_text(text)
        result = run("dns", "--check", "-c", str(raw_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "missing" not in result.stdout and "wrong" not in result.stdout
    assert result.stdout.count("ok ") >= 6
    broken = Dnsmasq().mx("example.test", "other.example.test").host(
        "mail.example.test", "192.0.2.10").txt("example.test", "v=spf1 mx -all")
    with broken:
        text = raw_path.read_text().replace(server.nameserver, broken.nameserver)
        raw_path.write_text(text)
        result = run("dns", "--check", "-c", str(raw_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("wrong") and " MX " in line for line in lines)
    assert any(line.startswith("missing") and "_dmarc.example.test." in line for line in lines)
    assert any(line.startswith("missing") and "_domainkey" in line for line in lines)


def test_dkim_key_from_keygen_signs_and_verifies(tmp_path: Path):
    """A key made by keygen signs a message that dkimpy verifies against the printed record
    (RFC 6376 3.5, 6.1)."""
    from geomail.config import DKIMConfig
    from geomail.dkim import DKIMSigner, dns_txt_record, keygen

    key = tmp_path / "k.key"
    keygen(str(key))
    signer = DKIMSigner(DKIMConfig("s1", {"example.test": str(key)}))
    message = b"From: a@example.test\nTo: b@elsewhere.test\nSubject: hi\n\nbody\n"
    signed = signer.sign("example.test", message) + message
    record = dns_txt_record(str(key)).encode()
    assert dkimpy.verify(signed.replace(b"\n", b"\r\n"),
                         dnsfunc=lambda name, timeout=5: record)


@pytest.fixture
def sendmail_server(tmp_path: Path):
    raw = base_config(tmp_path, relay={"allow_networks": ["127.0.0.0/8"]})
    with running_app(raw) as app:
        raw["listen"] = {"smtp": [f"127.0.0.1:{app.ports['smtp'][0]}"]}
        yield app, write_config(tmp_path / "sendmail.yaml", raw)


def stored_bodies(app, mailbox: str) -> list[bytes]:
    local, domain = mailbox.split("@")
    new = Path(app.config.store.path) / domain / local / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


def test_sendmail_with_t_reads_recipients_and_drops_bcc(sendmail_server):
    """sendmail -t: recipients from To, Cc and Bcc; the Bcc header is not delivered; without
    -i a line of a single dot ends the message (sendmail(1))."""
    app, config = sendmail_server
    message = (b"To: alice@example.com\nCc: test1@test.com\nBcc: bob@example.com\n"
               b"Subject: cron\n\nline one\n.\nnot sent\n")
    result = subprocess.run([*GEOMAIL, "sendmail", "-c", str(config), "-t"], input=message,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for mailbox in ("alice@example.com", "test1@test.com", "bob@example.com"):
        [body] = stored_bodies(app, mailbox)
        assert b"Bcc:" not in body
        assert body.endswith(b"Subject: cron\n\nline one\n") or b"\nline one\n" in body
        assert b"not sent" not in body


def test_sendmail_i_keeps_dot_lines_and_f_sets_the_sender(sendmail_server):
    """-i (-oi): a single dot is content; -f sets the envelope sender (Return-Path)."""
    app, config = sendmail_server
    result = subprocess.run([*GEOMAIL, "sendmail", "-c", str(config), "-oi", "-f",
                             "robot@example.com", "alice@example.com"],
                            input=b"Subject: dots\n\n.\nafter\n", capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [body] = stored_bodies(app, "alice@example.com")
    assert body.startswith(b"Return-Path: <robot@example.com>\n")
    assert body.endswith(b"\n.\nafter\n")


def test_sendmail_unknown_recipient_and_server_down(sendmail_server, tmp_path: Path):
    """A refused recipient exits 67 (EX_NOUSER) with the server's reply; no server exits 69
    (EX_UNAVAILABLE) with a clear message."""
    _, config = sendmail_server
    result = subprocess.run([*GEOMAIL, "sendmail", "-c", str(config), "nobody@example.com"],
                            input=b"Subject: x\n\nx\n", capture_output=True, timeout=60)
    assert result.returncode == 67
    assert b"550 5.1.1" in result.stderr
    down = base_config(tmp_path)
    down["listen"] = {"smtp": ["127.0.0.1:9"]}
    result = subprocess.run([*GEOMAIL, "sendmail", "-c", str(write_config(tmp_path / "d.yaml",
                            down)), "alice@example.com"], input=b"x\n", capture_output=True,
                            timeout=60)
    assert result.returncode == 69
    assert b"cannot reach the geomail server" in result.stderr


def test_sendmail_name_speaks_sendmail_options(sendmail_server, tmp_path: Path):
    """Called as ``sendmail`` (the /usr/sbin/sendmail symlink), argv takes sendmail's syntax."""
    app, config = sendmail_server
    link = tmp_path / "sendmail"
    link.write_text(f"#!/bin/sh\nexec -a sendmail {sys.executable} -m geomail \"$@\"\n")
    os.chmod(link, 0o755)
    code = (f"import sys; sys.argv[0] = 'sendmail'; from geomail.__main__ import main; "
            f"sys.argv[1:] = ['-C', {str(config)!r}, '-oi', 'alice@example.com']; main()")
    result = subprocess.run([sys.executable, "-c", code], input=b"Subject: via link\n\nhi\n",
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert any(b"Subject: via link" in b for b in stored_bodies(app, "alice@example.com"))
