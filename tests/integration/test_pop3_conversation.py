"""POP3 over real sockets on 127.0.0.1: mail delivered by SMTP comes back exactly (RFC 1939), the
maildrop lock, UPDATE-state semantics, throttling; every test runs with Maildir and with mbox."""

from __future__ import annotations

import base64
import logging
import os
import poplib
import socket
from pathlib import Path

import pytest

from tests.support import stored, wait_for
from tests.support.geomail import PASSWORD, running_app
from tests.support.pop3 import (
    ALICE,
    CRLF,
    Ports,
    RawPOP3,
    make_message,
    pop3_config,
    pop3_overrides,
    send,
    session,
    stuff,
    top,
    unstuff,
)

pytest_plugins = ["tests.support.pop3_fixtures"]

BOB = "bob@example.com"


def deliver(ports: Ports, count: int, start: int = 1, **kwargs) -> list[bytes]:
    messages = [make_message(n, **kwargs) for n in range(start, start + count)]
    for message in messages:
        send(ports.smtp, message)
    return messages


def retrieve_all(ports: Ports) -> list[bytes]:
    """Every message's content (CRLF, unstuffed) from one session, which then QUITs."""
    with session(ports.pop3) as client:
        count, _ = client.stat()
        return [unstuff(client.multi(f"RETR {n}")[1]) for n in range(1, count + 1)]


def check_content(content: bytes, message: bytes, mailbox: str = ALICE) -> None:
    """``content`` is geomail's trace prefix (RFC 5321 4.4) then ``message``, byte for byte."""
    split = stored.split(content.replace(CRLF, b"\n"))
    assert split.fields["mailbox"] == mailbox
    assert content.endswith(message)
    assert content[: -len(message)].replace(CRLF, b"\n") == split.raw[: -len(split.body)]


@pytest.fixture
def ports(pop3_app) -> Ports:
    return Ports(pop3_app.ports)


# --------------------------------------------------------------------------------------------
# Content: RETR, LIST, STAT, TOP, UIDL
# --------------------------------------------------------------------------------------------


def test_retr_is_byte_exact(ports):
    """RFC 1939 5 (RETR, LIST, STAT) and 3 (byte-stuffing): each message comes back as SMTP
    delivered it, in CRLF form with 8-bit octets intact; on the wire lines starting with '.' are
    stuffed and the response ends with '.'; the sizes in LIST and STAT are the exact octet
    counts of the unstuffed content, and the +OK line of RETR repeats them."""
    messages = deliver(ports, 3)
    with session(ports.pop3) as client:
        sizes = {n: int(size) for n, size in client.listing("LIST").items()}
        assert sorted(sizes) == [1, 2, 3]
        total = 0
        for n, message in enumerate(messages, 1):
            status, raw = client.multi(f"RETR {n}")
            content = unstuff(raw)
            check_content(content, message)
            assert raw == stuff(content)  # every '.' line stuffed, nothing else touched
            assert b"\r\n..leading dot\r\n..\r\n...two dots\r\n" in raw
            assert "héllo wörld ✓".encode() in content
            assert sizes[n] == len(content)
            assert status == f"+OK {len(content)} octets\r\n".encode()
            assert client.ok(f"LIST {n}") == f"+OK {n} {len(content)}\r\n".encode()
            total += len(content)
        assert client.stat() == (3, total)


def test_poplib_reads_the_same(ports):
    """RFC 1939 3: a stock client (poplib) that undoes the byte-stuffing gets the content the
    raw reader sees, line for line."""
    [message] = deliver(ports, 1)
    pop = poplib.POP3("127.0.0.1", ports.pop3, timeout=10)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    _, lines, octets = pop.retr(1)
    pop.quit()
    content = retrieve_all(ports)[0]
    assert b"\r\n".join(lines) + CRLF == content
    assert octets == len(content)  # poplib counts the octets after unstuffing
    check_content(content, message)


@pytest.mark.parametrize("lines", [0, 1, 5, 100])
def test_top_is_exact(ports, lines):
    """RFC 1939 7: TOP n m sends the header, the blank line and the first m body lines, all of
    the body when it is shorter, stuffed like RETR."""
    deliver(ports, 2)
    contents = retrieve_all(ports)
    with session(ports.pop3) as client:
        for n, content in enumerate(contents, 1):
            status, raw = client.multi(f"TOP {n} {lines}")
            assert status.startswith(b"+OK")
            assert raw == stuff(top(content, lines))
        if lines == 100:
            assert unstuff(raw) == contents[-1]


def test_uidl_unique_and_stable_between_sessions(ports):
    """RFC 1939 7: UIDL ids are 1-70 characters 0x21-0x7E, unique in the maildrop, and the same
    in every session; UIDL n agrees with the listing; deleting one leaves the others' ids."""
    deliver(ports, 4)
    with session(ports.pop3) as client:
        first = client.listing("UIDL")
        for n, uid in first.items():
            assert client.ok(f"UIDL {n}") == f"+OK {n} {uid}\r\n".encode()
    assert len(set(first.values())) == 4
    for uid in first.values():
        assert 1 <= len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid)
    with session(ports.pop3) as client:
        assert client.listing("UIDL") == first
        client.ok("DELE 2")
    with session(ports.pop3) as client:
        assert list(client.listing("UIDL").values()) == [first[1], first[3], first[4]]


def test_every_command_over_the_wire(ports):
    """RFC 1939 4-7, RFC 2449 5, RFC 5034 4: one conversation through every command and error
    path over a socket: wrong state, bad and missing numbers, deleted messages, unknown verbs."""
    deliver(ports, 2)
    client = RawPOP3.connect(ports.pop3)
    assert client.greeting.startswith(b"+OK ")
    _, caps = client.multi("CAPA")
    assert {"USER", "SASL PLAIN", "TOP", "UIDL", "PIPELINING", "RESP-CODES", "STLS",
            "AUTH-RESP-CODE"} <= set(unstuff(caps).decode().split("\r\n"))
    assert client.cmd("STAT").startswith(b"-ERR")  # RFC 1939 4: not before login
    assert client.cmd("PASS x").startswith(b"-ERR")  # RFC 1939 7: USER first
    assert client.cmd("APOP alice 0123").startswith(b"-ERR")
    assert client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert client.cmd("*") == b"-ERR Authentication cancelled\r\n"
    assert client.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHdyb25n").startswith(b"-ERR [AUTH]")
    plain = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert client.cmd(plain).startswith(b"+OK")
    assert client.cmd("USER x").startswith(b"-ERR")  # RFC 1939 5: no USER in TRANSACTION
    assert client.ok("NOOP") == b"+OK\r\n"
    for bad in ("RETR", "RETR 0", "RETR 3", "RETR x", "DELE 9", "LIST 3", "UIDL 0", "TOP 1",
                "TOP 9 0", "TOP 1 x", "FOO"):
        assert client.cmd(bad).startswith(b"-ERR"), bad
    assert client.ok("DELE 1") == b"+OK Message 1 deleted\r\n"
    for gone in ("RETR 1", "TOP 1 0", "DELE 1", "LIST 1", "UIDL 1"):
        assert client.cmd(gone) == b"-ERR Message 1 is deleted\r\n", gone
    assert client.stat()[0] == 1
    assert list(client.listing()) == [2]
    assert client.ok("RSET").startswith(b"+OK 2 messages")
    assert client.stat()[0] == 2
    assert client.quit() == b"+OK Bye, 0 messages deleted\r\n"
    assert retrieve_all(ports)[0].endswith(make_message(1))


def test_pipelined_commands(ports):
    """RFC 2449 6.6 PIPELINING: a client may send many commands at once; the answers come back
    complete and in order (here LIST, UIDL, every RETR, QUIT in one write)."""
    deliver(ports, 5)
    contents = retrieve_all(ports)
    client = RawPOP3.connect(ports.pop3)
    commands = [f"USER {ALICE}", f"PASS {PASSWORD}", "STAT", "LIST", "UIDL"]
    commands += [f"RETR {n}" for n in range(1, 6)] + ["QUIT"]
    client.send("".join(c + "\r\n" for c in commands).encode())
    assert client.line().startswith(b"+OK")
    assert client.line().startswith(b"+OK Logged in")
    assert client.line() == f"+OK 5 {sum(map(len, contents))}\r\n".encode()
    for _listing in ("LIST", "UIDL"):
        assert client.line().startswith(b"+OK 5 messages")
        assert len(unstuff(client.body()).split(CRLF)) == 6  # 5 lines and the empty tail
    for content in contents:
        assert client.line() == f"+OK {len(content)} octets\r\n".encode()
        assert unstuff(client.body()) == content
    assert client.line().startswith(b"+OK Bye")
    assert client.closed_by_server() == b""


def test_too_many_bad_commands_close(make_app, pop3_tls, store_format):
    """RFC 1939 3 leaves misbehaving clients to the server: after ``limits.max_bad_commands``
    unknown or out-of-state commands it says -ERR and closes the connection."""
    app = make_app(**pop3_overrides(pop3_tls, store_format, limits={"max_bad_commands": 3}))
    client = RawPOP3.connect(Ports(app.ports).pop3)
    for command in ("FOO", "STAT"):
        assert client.cmd(command).startswith(b"-ERR")
    client.send(b"BAR\r\n")
    assert client.closed_by_server().startswith(b"-ERR")


# --------------------------------------------------------------------------------------------
# UPDATE state (RFC 1939 6)
# --------------------------------------------------------------------------------------------


def test_dele_quit_removes(ports):
    """RFC 1939 6: messages marked by DELE are removed when QUIT enters the UPDATE state."""
    deliver(ports, 3)
    with session(ports.pop3) as client:
        uids = client.listing("UIDL")
        client.ok("DELE 1")
        client.ok("DELE 3")
        assert client.quit() == b"+OK Bye, 2 messages deleted\r\n"
    with session(ports.pop3) as client:
        assert client.listing("UIDL") == {1: uids[2]}
    assert retrieve_all(ports)[0].endswith(make_message(2))


def test_dele_rset_keeps(ports):
    """RFC 1939 5 RSET: deletion marks are dropped, so QUIT removes nothing."""
    deliver(ports, 2)
    with session(ports.pop3) as client:
        client.ok("DELE 1")
        client.ok("DELE 2")
        client.ok("RSET")
        assert client.quit() == b"+OK Bye, 0 messages deleted\r\n"
    with session(ports.pop3) as client:
        assert client.stat()[0] == 2


@pytest.mark.parametrize("how", ["close", "reset"])
def test_dele_then_dropped_connection_keeps(ports, how):
    """RFC 1939 6: a session that ends without QUIT (client closes or the connection is reset)
    never enters UPDATE: nothing is deleted, and the lock is released for the next login."""
    deliver(ports, 2)
    client = RawPOP3.connect(ports.pop3)
    assert client.login().startswith(b"+OK")
    client.ok("DELE 1")
    client.ok("DELE 2")
    client.sock.close() if how == "close" else client.reset()
    again = RawPOP3.connect(ports.pop3)
    wait_for(lambda: again.login().startswith(b"+OK"), 5, message="the lock to be released")
    assert again.stat()[0] == 2
    again.quit()


def test_maildrop_snapshot_at_login(ports):
    """RFC 1939 5 ("message numbers ... stay the same"): the session works on the
    listing made at login; mail delivered meanwhile is not seen, survives the QUIT that deletes
    other messages, and appears at the next login."""
    deliver(ports, 2)
    with session(ports.pop3) as client:
        before = client.listing("UIDL")
        client.ok("DELE 1")
        [late] = deliver(ports, 1, start=3)
        assert client.stat()[0] == 1
        assert client.cmd("RETR 3") == b"-ERR No such message\r\n"
        assert client.listing("UIDL") == {2: before[2]}
    with session(ports.pop3) as client:
        after = client.listing("UIDL")
        assert after[1] == before[2]
        assert after[2] not in before.values()
        check_content(unstuff(client.multi("RETR 2")[1]), late)


def test_large_message_streams_exactly(ports):
    """RFC 1939 5 RETR of a 5 MiB message (streamed from the store in chunks): every octet
    arrives, stuffed where needed, and the size in LIST matches."""
    body_lines = 5 * 1024 * 1024 // 30
    [message] = deliver(ports, 1, body_lines=body_lines)
    assert len(message) > 5 * 1024 * 1024
    with session(ports.pop3) as client:
        size = int(client.listing()[1])
        _, raw = client.multi("RETR 1")
        content = unstuff(raw)
        assert raw == stuff(content)
        check_content(content, message)
        assert size == len(content)
        _, head = client.multi("TOP 1 2")
        assert unstuff(head) == top(content, 2)


# --------------------------------------------------------------------------------------------
# The maildrop lock (RFC 1939 8, RFC 2449 8.2 IN-USE)
# --------------------------------------------------------------------------------------------


def test_concurrent_login_in_use(ports):
    """RFC 2449 8.2: while one session holds the maildrop a second login for the same user gets
    ``-ERR [IN-USE]`` and stays in AUTHORIZATION; once the first QUITs the same connection can
    log in. Another user is not affected."""
    deliver(ports, 1)
    size = len(retrieve_all(ports)[0])
    first = RawPOP3.connect(ports.pop3)
    assert first.login().startswith(b"+OK")
    second = RawPOP3.connect(ports.pop3)
    assert second.login().startswith(b"-ERR [IN-USE]")
    assert second.cmd("STAT").startswith(b"-ERR")  # still AUTHORIZATION
    with session(ports.pop3, user=BOB) as bob:
        assert bob.stat() == (0, 0)
    first.quit()
    assert second.login() == b"+OK Logged in, 1 messages (%d octets)\r\n" % size
    second.quit()


def test_killed_client_lock_recovered(ports):
    """RFC 1939 8: a client that dies mid-session (connection reset) does not keep the
    maildrop locked: the next login succeeds as soon as the server has seen the reset."""
    deliver(ports, 1)
    client = RawPOP3.connect(ports.pop3)
    assert client.login().startswith(b"+OK")
    client.reset()
    again = RawPOP3.connect(ports.pop3)
    wait_for(lambda: again.login().startswith(b"+OK"), 5, message="the lock to be released")
    assert again.stat()[0] == 1
    again.quit()


def test_silent_client_autologout_releases_lock(make_app, pop3_tls, store_format):
    """RFC 1939 3 (inactivity autologout timer): a client that vanishes without a
    reset holds the lock only until the autologout (``limits.pop3_timeout``); then it is told
    -ERR, disconnected without UPDATE, and the user can log in again."""
    app = make_app(**pop3_overrides(pop3_tls, store_format, limits={"pop3_timeout": "1s"}))
    ports = Ports(app.ports)
    deliver(ports, 1)
    silent = RawPOP3.connect(ports.pop3)
    assert silent.login().startswith(b"+OK")
    silent.ok("DELE 1")
    other = RawPOP3.connect(ports.pop3)
    assert other.login().startswith(b"-ERR [IN-USE]")
    assert silent.closed_by_server(timeout=5).startswith(b"-ERR")
    wait_for(lambda: other.login().startswith(b"+OK"), 5, message="the lock to be released")
    assert other.stat()[0] == 1  # the DELE without QUIT was not applied
    other.quit()


# --------------------------------------------------------------------------------------------
# Failures: throttling, store faults
# --------------------------------------------------------------------------------------------


def test_failed_logins_throttled_and_logged(make_app, pop3_tls, store_format, caplog):
    """RFC 3206 4/5: wrong passwords get ``-ERR [AUTH]``; after
    ``limits.max_auth_failures`` the client IP is blocked: even the right password then gets
    ``-ERR [SYS/TEMP]`` and the connection closes, on this and on new connections. Each failure
    is logged with the client IP (for fail2ban), and so is the block."""
    app = make_app(**pop3_overrides(pop3_tls, store_format, limits={"max_auth_failures": 2}))
    port = Ports(app.ports).pop3
    caplog.set_level(logging.INFO)
    client = RawPOP3.connect(port)
    assert client.login(password="wrong one") == b"-ERR [AUTH] Invalid username or password\r\n"
    assert client.login(password="wrong two") == b"-ERR [AUTH] Invalid username or password\r\n"
    assert client.login().startswith(b"-ERR [SYS/TEMP]")
    assert client.closed_by_server() == b""
    fresh = RawPOP3.connect(port)
    assert fresh.login().startswith(b"-ERR [SYS/TEMP]")
    failures = [r.getMessage() for r in caplog.records if "auth-failed" in r.getMessage()]
    assert failures[:2] == [f"auth-failed client=127.0.0.1 user={ALICE} reason=bad-password"] * 2
    assert f"auth-failed client=127.0.0.1 user={ALICE} reason=blocked" in failures
    assert any("auth-blocked client=127.0.0.1" in r.getMessage() for r in caplog.records)
    assert not any("auth-ok" in r.getMessage() for r in caplog.records)


def test_unreadable_mailbox_is_sys_temp(pop3_app, store_format, caplog):
    """RFC 3206 4: when the store cannot open the mailbox (here the domain directory is a file)
    the login answers ``-ERR [SYS/TEMP]`` instead of dropping the connection, the fault is
    logged, and the session stays usable."""
    store = Path(pop3_app.config.store.path)
    store.mkdir(parents=True, exist_ok=True)
    (store / "example.com").write_bytes(b"not a directory")
    client = RawPOP3.connect(Ports(pop3_app.ports).pop3)
    assert client.login() == b"-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"
    client.multi("CAPA")
    assert client.quit() == b"+OK Bye\r\n"
    assert any("pop3-open-failed" in r.getMessage() and ALICE in r.getMessage()
               for r in caplog.records)


# --------------------------------------------------------------------------------------------
# Maildir specifics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("store_format", ["maildir"], indirect=True)
def test_maildir_retrieved_moved_to_cur_seen(ports, pop3_app):
    """Maildir spec ("info" 2,S): after QUIT the messages that were RETRieved move from
    new/ to cur/ with the S (seen) flag, so an IMAP server sees them as read; TOP alone does not
    count; the UIDLs stay the same."""
    deliver(ports, 3)
    root = stored.maildir(pop3_app.config.store.path, ALICE)
    names = sorted(os.listdir(root / "new"))
    with session(ports.pop3) as client:
        uids = client.listing("UIDL")
        client.multi("RETR 1")
        client.multi("TOP 2 0")
        client.multi("RETR 3")
        assert sorted(os.listdir(root / "new")) == names  # nothing moves before UPDATE
    assert sorted(os.listdir(root / "new")) == [names[1]]
    assert sorted(os.listdir(root / "cur")) == [names[0] + ":2,S", names[2] + ":2,S"]
    with session(ports.pop3) as client:
        assert client.listing("UIDL") == uids
        client.multi("RETR 1")  # again: already seen, stays as it is
    assert sorted(os.listdir(root / "cur")) == [names[0] + ":2,S", names[2] + ":2,S"]


@pytest.mark.parametrize("store_format", ["maildir"], indirect=True)
def test_maildir_message_removed_by_another_program(ports, pop3_app):
    """RFC 1939 5: a message another program removed during the session cannot be sent: RETR
    and TOP answer ``-ERR`` (not a dropped connection), the other messages are still served,
    and QUIT works."""
    messages = deliver(ports, 2)
    root = stored.maildir(pop3_app.config.store.path, ALICE)
    with session(ports.pop3) as client:
        assert client.stat()[0] == 2
        (root / "new" / sorted(os.listdir(root / "new"))[0]).unlink()
        assert client.cmd("RETR 1").startswith(b"-ERR")
        assert client.cmd("TOP 1 0").startswith(b"-ERR")
        check_content(unstuff(client.multi("RETR 2")[1]), messages[1])
        client.ok("DELE 1")
        assert client.quit().startswith(b"+OK")
    assert len(retrieve_all(ports)) == 1


def test_unknown_user_answered_like_wrong_password(ports):
    """RFC 1939 13 (security: do not tell which names exist) / RFC 3206 5: an unknown user and
    a wrong password get the same ``-ERR [AUTH]`` line; USER itself accepts any name."""
    client = RawPOP3.connect(ports.pop3)
    unknown = client.login(user="nobody@example.com")
    assert unknown == b"-ERR [AUTH] Invalid username or password\r\n"
    assert client.login(password="wrong") == unknown
    assert client.login(user="nobody@example.com").startswith(b"-ERR [SYS/TEMP]")  # 3rd: closed


def test_connection_limit_is_sys_temp(make_app, pop3_tls, store_format):
    """RFC 3206 4: a connection over ``limits.max_connections_per_ip`` is greeted with
    ``-ERR [SYS/TEMP]`` and closed; the first connection is unaffected."""
    app = make_app(**pop3_overrides(pop3_tls, store_format,
                                    limits={"max_connections_per_ip": 1}))
    port = Ports(app.ports).pop3
    first = RawPOP3.connect(port)
    second = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert second.recv(4096).startswith(b"-ERR [SYS/TEMP] ")
    assert second.recv(4096) == b""
    second.close()
    assert first.ok("CAPA")
    first.body()
    first.quit()


def test_graceful_stop_keeps_mail(tmp_path, pop3_tls, store_format):
    """RFC 3206 4 and RFC 1939 6: when the server stops, an idle session is told
    ``-ERR [SYS/TEMP]`` and closed without entering UPDATE, so its deletions are not applied."""
    raw = pop3_config(tmp_path, pop3_tls, store_format)
    with running_app(raw) as app:
        ports = Ports(app.ports)
        deliver(ports, 2)
        client = RawPOP3.connect(ports.pop3)
        assert client.login().startswith(b"+OK")
        client.ok("DELE 1")
        app.stop(grace=5)
        assert client.closed_by_server() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
    with running_app(raw) as app:
        assert retrieve_all(Ports(app.ports))[0].endswith(make_message(1))
