"""Real mail programs as clients: swaks delivers to the MX port and submits with STARTTLS and
AUTH; msmtp submits with STARTTLS and with implicit TLS. Mail arrives byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.geomail import PASSWORD
from tests.support.smtp import check_trace, stored
from tests.support.tools import program

# Headers a client would otherwise add (msmtp: Date, Message-ID, From) are present; a dotted line
# checks dot-stuffing; no '%' or backslash, which swaks would take for tokens.
MESSAGE = (b"From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\n"
           b"Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <clients.1@example.com>\n"
           b"Subject: from a real client\n\nHello Bob,\n.a line with a leading dot\n..and two\n"
           b"\n-- \nAlice\n")


@pytest.fixture
def swaks() -> str:
    return program("swaks", "swaks libnet-ssleay-perl")


@pytest.fixture
def msmtp() -> str:
    return program("msmtp", "msmtp")


@pytest.fixture
def tls_all(make_app, tls_files):
    return make_app(tls={"cert": tls_files["cert"], "key": tls_files["key"]},
                    listen={"smtp": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"],
                            "submissions": ["127.0.0.1:0"]})


def _run(command: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=30)
    assert done.returncode == 0, (done.stdout.decode(errors="replace")
                                  + done.stderr.decode(errors="replace"))
    return done


def test_swaks_delivers_to_port_25(app, tmp_path, swaks):
    """RFC 5321 (a real MTA-style client): swaks delivers over plain SMTP to the MX port; the
    message is stored byte for byte after the trace fields."""
    sent = MESSAGE.replace(b"From: Alice <alice@example.com>", b"From: s@remote.example")
    data = tmp_path / "message.eml"
    data.write_bytes(sent[:-1])  # swaks always ends the data with CRLF before the dot
    done = _run([swaks, "--server", "127.0.0.1", "--port", str(app.ports["smtp"][0]),
                 "--helo", "client.example", "--from", "s@remote.example",
                 "--to", "test1@test.com", "--data", f"@{data}"])
    assert b"<-  250 2.0.0 Ok: queued as" in done.stdout
    [message] = stored(app, "test1@test.com")
    assert message.body == sent
    check_trace(message, sender="s@remote.example", mailbox="test1@test.com",
                rcpt="test1@test.com")


@pytest.mark.parametrize("kind, tls_option", [("submission", "--tls"),
                                              ("submissions", "--tls-on-connect")])
def test_swaks_submits_with_tls_and_auth(tls_all, tls_files, tmp_path, kind, tls_option, swaks):
    """RFC 3207 / RFC 8314 / RFC 4954 / RFC 6409: swaks with STARTTLS (587) or implicit TLS
    (465), verifying the certificate against the test CA, logs in and submits; the message
    arrives byte for byte."""
    data = tmp_path / "message.eml"
    data.write_bytes(MESSAGE[:-1])  # swaks always ends the data with CRLF before the dot
    done = _run([swaks, "--server", "localhost", "--port", str(tls_all.ports[kind][0]),
                 tls_option, "--tls-verify", "--tls-ca-path", tls_files["ca"],
                 "--auth", "PLAIN", "--auth-user", "alice@example.com",
                 "--auth-password", PASSWORD, "--helo", "client.example",
                 "--from", "alice@example.com", "--to", "bob@example.com", "--data", f"@{data}"])
    assert b"<~  235 2.7.0" in done.stdout  # '~' marks lines swaks read over TLS
    [message] = stored(tls_all, "bob@example.com")
    assert message.body == MESSAGE
    check_trace(message, sender="alice@example.com", mailbox="bob@example.com",
                rcpt="bob@example.com", protocol="ESMTPSA", tls=True)


def _msmtprc(path: Path, port: int, ca: str, starttls: bool) -> Path:
    path.write_text(f"""defaults
tls_trust_file {ca}

account geomail
host localhost
port {port}
domain client.example
from alice@example.com
auth plain
user alice@example.com
password {PASSWORD}
tls on
tls_starttls {"on" if starttls else "off"}

account default : geomail
""")
    path.chmod(0o600)  # msmtp refuses a password in a file others can read
    return path


@pytest.mark.parametrize("kind, starttls", [("submission", True), ("submissions", False)])
def test_msmtp_submits(tls_all, tls_files, tmp_path, kind, starttls, msmtp):
    """RFC 3207 / RFC 8314 3.3 / RFC 4954 / RFC 6409: msmtp submits with STARTTLS on 587 and
    with implicit TLS on 465, trusting only the test CA; the mail arrives byte for byte."""
    rc = _msmtprc(tmp_path / "msmtprc", tls_all.ports[kind][0], tls_files["ca"], starttls)
    _run([msmtp, "-C", str(rc), "bob@example.com", "test1@test.com"], stdin=MESSAGE)
    for mailbox in ("bob@example.com", "test1@test.com"):
        [message] = stored(tls_all, mailbox)
        assert message.body == MESSAGE
        check_trace(message, sender="alice@example.com", mailbox=mailbox, rcpt=mailbox,
                    protocol="ESMTPSA", tls=True)
