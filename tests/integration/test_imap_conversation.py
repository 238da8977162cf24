"""IMAP served by geomail over real sockets, with Python's imaplib as the client (RFC 9051
IMAP4rev2 / RFC 3501 IMAP4rev1): STARTTLS and LOGINDISABLED, implicit TLS on imaps (RFC 8314),
logins and their throttle, LIST with special use (RFC 6154), SELECT/FETCH/STORE/APPEND/COPY/
MOVE/EXPUNGE over mail delivered by SMTP to the same server, IDLE (RFC 2177) woken by delivery."""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from geomail.config import ConfigError, parse_config
from tests.support.geomail import PASSWORD, base_config
from tests.support.pop3 import ALICE, make_message, send

TIMEOUT = 10


@pytest.fixture
def imap_app(make_app: Callable[..., Any], tls_files: dict[str, str]) -> Any:
    """smtp; imap[0] allows plaintext login (loopback), imap[1] needs STARTTLS; imaps; pop3."""
    return make_app(
        tls={"cert": tls_files["cert"], "key": tls_files["key"]},
        listen={"smtp": ["127.0.0.1:0"],
                "imap": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True},
                         "127.0.0.1:0"],
                "imaps": ["127.0.0.1:0"],
                "pop3": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]},
        limits={"max_auth_failures": 2, "shutdown_grace": "2s"},
    )


def connect(app: Any, index: int = 0) -> imaplib.IMAP4:
    return imaplib.IMAP4("127.0.0.1", app.ports["imap"][index], timeout=TIMEOUT)


def login(app: Any) -> imaplib.IMAP4:
    imap = connect(app)
    assert imap.login(ALICE, PASSWORD)[0] == "OK"
    return imap


def ok(response: tuple[str, list[Any]]) -> list[Any]:
    status, data = response
    assert status == "OK", data
    return data


def logout(imap: imaplib.IMAP4) -> None:
    """RFC 9051 6.1.3: imaplib returns the untagged BYE that comes before the tagged OK."""
    assert imap.logout() == ("BYE", [b"Logging out"])


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_logindisabled_until_starttls(imap_app, client_tls):
    """RFC 9051 6.2.1 and 6.2.3, RFC 8314 4.1: without TLS the capabilities carry STARTTLS and
    LOGINDISABLED and LOGIN is refused; after STARTTLS (the certificate verified against the
    test CA) the new list has AUTH=PLAIN, neither STARTTLS nor LOGINDISABLED, and LOGIN works."""
    imap = connect(imap_app, 1)
    assert "STARTTLS" in imap.capabilities and "LOGINDISABLED" in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(ALICE, PASSWORD)
    ok(imap.starttls(ssl_context=client_tls))
    assert "LOGINDISABLED" not in imap.capabilities and "STARTTLS" not in imap.capabilities
    assert "AUTH=PLAIN" in imap.capabilities
    assert ok(imap.login(ALICE, PASSWORD))
    logout(imap)


def test_starttls_with_pipelined_plaintext_closes(imap_app):
    """RFC 9051 6.2.1 / CVE-2011-0411: a command sent behind STARTTLS before the handshake is
    not run: the server says BYE and closes instead of starting TLS."""
    sock = socket.create_connection(("127.0.0.1", imap_app.ports["imap"][1]), TIMEOUT)
    sock.recv(4096)
    sock.sendall(f"a STARTTLS\r\nb LOGIN {ALICE} x\r\n".encode())
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    assert b"* BYE" in received and b"b OK" not in received and b"b NO" not in received
    sock.close()


def test_imaps_implicit_tls(imap_app, client_tls):
    """RFC 8314 3.1: imaps speaks TLS from the first byte (certificate verified); the greeting's
    capabilities offer AUTH=PLAIN and not STARTTLS (RFC 9051 6.2.1)."""
    imap = imaplib.IMAP4_SSL("127.0.0.1", imap_app.ports["imaps"][0], ssl_context=client_tls,
                             timeout=TIMEOUT)
    assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert "STARTTLS" not in imap.capabilities and "AUTH=PLAIN" in imap.capabilities
    ok(imap.login(ALICE, PASSWORD))
    assert ok(imap.select("INBOX")) == [b"0"]
    imap.send(b"a1 IDLE\r\n")  # RFC 2177 over TLS: the same wake-up
    assert imap.readline().startswith(b"+")
    send(imap_app.ports["smtp"][0], make_message(3))
    assert imap.readline() == b"* 1 EXISTS\r\n"
    imap.send(b"DONE\r\n")
    assert imap.readline().startswith(b"a1 OK")
    logout(imap)


def test_bad_logins_are_throttled(imap_app, caplog):
    """RFC 9051 6.2.3 and 7.1 AUTHENTICATIONFAILED: a wrong password is NO; after
    ``limits.max_auth_failures`` failures from the client network even the right one is
    refused (the same throttle as SMTP AUTH and POP3)."""
    imap = connect(imap_app)
    for _ in range(2):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(ALICE, "wrong")
    with pytest.raises(imaplib.IMAP4.error):  # the third failure also ends the session
        imap.login(ALICE, PASSWORD)
    with contextlib.suppress(OSError):
        imap.shutdown()
    assert any("auth-failed" in r.getMessage() and "reason=blocked" in r.getMessage()
               for r in caplog.records)


def test_conversation(imap_app):
    """RFC 9051 6.3.9 LIST (RFC 6154 special use), 6.3.2 SELECT, 6.4.5 FETCH, 6.4.6 STORE,
    6.4.4 SEARCH,
    6.3.12 APPEND (RFC 4315 APPENDUID), 6.4.7 COPY, 6.4.8 MOVE, 6.4.3 EXPUNGE, 6.1.3 LOGOUT,
    over a message delivered by SMTP to the same server."""
    message = make_message(1)
    send(imap_app.ports["smtp"][0], message)
    imap = login(imap_app)
    folders = b"\n".join(ok(imap.list()))
    for name, use in (("Sent", "Sent"), ("Drafts", "Drafts"), ("Trash", "Trash"),
                      ("Junk", "Junk"), ("Archive", "Archive")):
        assert re.search(rb"\(.*\\" + use.encode() + rb".*\) \"/\" \"?" + name.encode(),
                         folders), folders
    assert b"INBOX" in folders
    assert ok(imap.select("INBOX")) == [b"1"]
    data = ok(imap.fetch("1", "(FLAGS UID RFC822.SIZE ENVELOPE BODY.PEEK[])"))
    head, body = data[0]
    assert b"FLAGS ()" in head and b"UID 1" in head
    assert b"message 1" in head and b"msg1@elsewhere.org" in head  # ENVELOPE subject, id
    assert body.endswith(message)
    size = int(re.search(rb"RFC822.SIZE (\d+)", head).group(1))  # type: ignore[union-attr]
    assert size == len(body)
    assert b"\\Seen" in ok(imap.store("1", "+FLAGS", "\\Seen"))[0]
    assert b"\\Seen" in ok(imap.fetch("1", "(FLAGS)"))[0]
    assert ok(imap.search(None, "SEEN")) == [b"1"]  # RFC 9051 6.4.4
    assert ok(imap.search(None, "UNSEEN")) == [b""]
    assert ok(imap.uid("SEARCH", "SUBJECT", '"message 1"')) == [b"1"]

    typ, data = imap.append("Sent", "(\\Seen)", None, b"Subject: sent\r\n\r\nhello\r\n")
    assert typ == "OK" and b"APPENDUID" in data[0]
    ok(imap.copy("1", "Archive"))
    ok(imap._simple_command("MOVE", "1", "Trash"))  # imaplib has no move()
    assert ok(imap.select("INBOX")) == [b"0"]
    assert ok(imap.select("Archive")) == [b"1"]
    assert ok(imap.select("Trash")) == [b"1"]
    ok(imap.store("1", "+FLAGS", "\\Deleted"))
    assert ok(imap.expunge()) == [b"1"]
    assert ok(imap.select("Trash")) == [b"0"]
    assert ok(imap.select("Sent", readonly=True)) == [b"1"]
    assert ok(imap.fetch("1", "(BODY.PEEK[])"))[0][1] == b"Subject: sent\r\n\r\nhello\r\n"
    logout(imap)


def test_idle_woken_by_delivery(imap_app):
    """RFC 9051 6.3.13 / RFC 2177: during IDLE a message delivered by SMTP is reported as an
    untagged EXISTS without any command; DONE ends IDLE with a tagged OK."""
    imap = login(imap_app)
    assert ok(imap.select("INBOX")) == [b"0"]
    imap.send(b"a1 IDLE\r\n")
    assert imap.readline().startswith(b"+")
    send(imap_app.ports["smtp"][0], make_message(2))
    assert imap.readline() == b"* 1 EXISTS\r\n"
    imap.send(b"DONE\r\n")
    line = imap.readline()
    while line.startswith(b"*"):
        line = imap.readline()
    assert line.startswith(b"a1 OK")
    ok(imap.noop())
    logout(imap)


def test_logout_is_logged(imap_app, caplog):
    """RFC 9051 6.1.3: LOGOUT ends with BYE and the tagged OK; the mail log has one connect and
    one disconnect line (service=imap, reason=logout)."""
    caplog.set_level("INFO")
    imap = login(imap_app)
    logout(imap)
    wait_for(lambda: any("disconnect" in r.getMessage() and "reason=logout" in r.getMessage()
                         for r in caplog.records))
    assert any("connect" in r.getMessage() and "service=imap" in r.getMessage()
               for r in caplog.records)


def test_imap_needs_maildir(tmp_path):
    """IMAP folders, flags and UIDs live in Maildir++ (docs/imap.md): with the mbox store an
    imap listener is a config error naming it."""
    raw = base_config(tmp_path, store={"format": "mbox"},
                      listen={"smtp": ["127.0.0.1:0"],
                              "imap": [{"address": "127.0.0.1:0",
                                        "allow_plaintext_auth": True}]})
    problem = "listen.imap: IMAP needs store.format: maildir"
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_config(raw, source="<test>")


def test_idle_ends_at_its_deadline(make_app, tls_files):
    """RFC 9051 5.4: the autologout timer (``limits.imap_idle_timeout``) also ends an IDLE the
    client never ends: untagged BYE, then the server closes."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"],
                           "imap": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]},
                   limits={"imap_idle_timeout": "1s"})
    imap = login(app)
    ok(imap.select("INBOX"))
    imap.send(b"a1 IDLE\r\n")
    assert imap.readline().startswith(b"+")
    started = time.monotonic()
    assert imap.readline() == b"* BYE Autologout; idle for too long\r\n"
    assert imap.readline() == b""
    assert time.monotonic() - started < 5
    imap.shutdown()


def test_drain_ends_idle_at_once(imap_app):
    """RFC 9051 7.1.5: at a graceful stop an idling client is told BYE [UNAVAILABLE] at once
    (nothing is in progress), not after the grace period."""
    imap = login(imap_app)
    ok(imap.select("INBOX"))
    imap.send(b"a1 IDLE\r\n")
    assert imap.readline().startswith(b"+")
    started = time.monotonic()
    stopper = gevent.spawn(imap_app.stop, 5)
    assert imap.readline() == b"* BYE [UNAVAILABLE] Server shutting down\r\n"
    stopper.join(10)
    assert time.monotonic() - started < 3
    imap.shutdown()


def test_append_over_the_message_size_is_refused(make_app):
    """RFC 9051 6.3.12 and 7.1 TOOBIG: an APPEND whose literal is over
    ``limits.max_message_size`` is refused before its octets are read (RFC 7888 4: the
    synchronizing literal gets NO instead of the continuation); the session goes on."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"],
                           "imap": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]},
                   limits={"max_message_size": 2000})
    imap = login(app)
    ok(imap.list())  # makes the special-use folders
    typ, data = imap.append("Sent", None, None, b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")
    assert typ == "NO" and b"TOOBIG" in data[0]
    assert ok(imap.append("Sent", None, None, b"Subject: small\r\n\r\nok\r\n"))
    logout(imap)


def test_idle_polls_without_a_watch(imap_app, monkeypatch):
    """RFC 2177 3: where the folder cannot be watched (no inotify), IDLE still reports a new
    message, by looking every few seconds."""
    monkeypatch.setattr(imap_app.imap_access, "watch", lambda store, name, wake: None)
    imap = login(imap_app)
    assert ok(imap.select("INBOX")) == [b"0"]
    imap.send(b"a1 IDLE\r\n")
    assert imap.readline().startswith(b"+")
    send(imap_app.ports["smtp"][0], make_message(4))
    assert imap.readline() == b"* 1 EXISTS\r\n"
    imap.send(b"DONE\r\n")
    assert imap.readline().startswith(b"a1 OK")
    logout(imap)


def test_connections_over_the_users_budget_get_bye(make_app):
    """RFC 9051 7.1.5: a connection over ``limits.max_user_connections_per_ip`` (the budget
    IMAP shares with submission and POP3) is greeted with BYE and closed."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"],
                           "imap": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]},
                   limits={"max_user_connections_per_ip": 1})
    first = connect(app)
    with pytest.raises(imaplib.IMAP4.error, match="Too many connections from your address"):
        connect(app)
    logout(first)


def test_authenticate_plain(imap_app, client_tls):
    """RFC 9051 6.2.2 with RFC 4616 PLAIN (after STARTTLS, as a client that prefers SASL does):
    the tagged OK carries the new capabilities (RFC 9051 7.1 CAPABILITY code)."""
    imap = connect(imap_app, 1)
    ok(imap.starttls(ssl_context=client_tls))
    typ, data = imap.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
    assert typ == "OK" and b"CAPABILITY" in data[0]
    assert ok(imap.select("INBOX")) == [b"0"]
    logout(imap)


def idle(imap: imaplib.IMAP4) -> None:
    imap.send(b"a1 IDLE\r\n")
    assert imap.readline().startswith(b"+")


def done(imap: imaplib.IMAP4) -> None:
    imap.send(b"DONE\r\n")
    line = imap.readline()
    while line.startswith(b"*"):
        line = imap.readline()
    assert line.startswith(b"a1 OK")


def test_idle_sees_other_sessions_and_pop3(imap_app):
    """RFC 9051 7.5.2 / 7.5.1 during IDLE (RFC 2177): a flag set by another IMAP session comes
    as an untagged FETCH FLAGS, and a message POP3 deleted (RFC 1939 6) as an untagged EXPUNGE:
    one Maildir shared by delivery, POP3 and IMAP."""
    send(imap_app.ports["smtp"][0], make_message(5))
    watcher, other = login(imap_app), login(imap_app)
    assert ok(watcher.select("INBOX")) == [b"1"]
    assert ok(other.select("INBOX")) == [b"1"]
    idle(watcher)
    ok(other.store("1", "+FLAGS", "\\Flagged"))
    line = watcher.readline()
    assert line.startswith(b"* 1 FETCH (") and b"\\Flagged" in line, line
    logout(other)
    pop = poplib.POP3("127.0.0.1", imap_app.ports["pop3"][0], timeout=TIMEOUT)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    pop.dele(1)
    pop.quit()
    assert watcher.readline() == b"* 1 EXPUNGE\r\n"
    done(watcher)
    logout(watcher)


def test_silent_client_is_logged_out_before_login(make_app):
    """RFC 9051 5.4: before login the server may log a silent client out sooner than 30
    minutes; geomail uses ``limits.pop3_timeout`` there, with an untagged BYE."""
    app = make_app(listen={"smtp": ["127.0.0.1:0"], "imap": ["127.0.0.1:0"]},
                   limits={"pop3_timeout": "1s"})
    with socket.create_connection(("127.0.0.1", app.ports["imap"][0]), TIMEOUT) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK [CAPABILITY ")
        started = time.monotonic()
        assert reader.readline() == b"* BYE Autologout; idle for too long\r\n"
        assert reader.readline() == b""
        assert time.monotonic() - started < 5
        reader.close()


def test_folders_and_status(imap_app):
    """RFC 9051 6.3.4 CREATE, 6.3.6 RENAME, 6.3.5 DELETE, 6.3.7 SUBSCRIBE, 6.3.11 STATUS,
    6.3.10 NAMESPACE, and a UID FETCH of BODYSTRUCTURE (6.4.5, 6.4.9), all through the store's
    threads: the folder tree is the Maildir++ one delivery and POP3 use."""
    send(imap_app.ports["smtp"][0], make_message(6))
    imap = login(imap_app)
    ok(imap.create("Projects/2026"))
    ok(imap.subscribe("Projects/2026"))
    assert any(b"Projects/2026" in line for line in ok(imap.lsub()))
    ok(imap.rename("Projects/2026", "Projects/Done"))
    names = b"\n".join(ok(imap.list('""', "Projects/*")))
    assert b"Projects/Done" in names and b"Projects/2026" not in names
    ok(imap.delete("Projects/Done"))
    status = ok(imap.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)"))[0]
    assert b"MESSAGES 1" in status and b"UIDNEXT 2" in status and b"UNSEEN 1" in status
    assert b'(("" "/"))' in ok(imap.namespace())[0]
    ok(imap.select("INBOX"))
    head = ok(imap.uid("FETCH", "1", "(BODYSTRUCTURE)"))[0]
    assert b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "UTF-8")' in head.upper(), head
    logout(imap)
