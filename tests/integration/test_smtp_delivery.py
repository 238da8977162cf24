"""Inbound delivery end to end: smtplib and raw BDAT clients send, and the stored mailbox file
is checked byte for byte, in Maildir and in mbox; SMTP smuggling payloads store nothing."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.support.dialog import Dialog
from tests.support.smtp import UTF8_USER, check_trace, send, stored
from tests.support.stored import mbox_messages


@pytest.fixture(params=["maildir", "mbox"])
def mail_app(request, make_app, tmp_path):
    """The port 25 listener with a Maildir or an mbox store, and a user with a UTF-8 name."""
    from tests.support.geomail import base_config

    users = base_config(tmp_path)["users"]
    return make_app(store={"format": request.param, "path": str(tmp_path / "mail")},
                    users={**users, UTF8_USER: {}})


@pytest.fixture
def port(mail_app) -> int:
    return mail_app.ports["smtp"][0]


def assert_stored_for_test1(mail_app, body: bytes, reply: str) -> None:
    """test1@test.com got one copy from s@remote.example: ``body`` (LF line endings) after the
    trace fields geomail writes (RFC 5321 4.4), naming the id of the final ``reply``."""
    [message] = stored(mail_app, "test1@test.com")
    assert message.body == body
    check_trace(message, sender="s@remote.example", mailbox="test1@test.com",
                rcpt="test1@test.com", reply=reply)


def test_seed_client(mail_app, port):
    """RFC 5321 4.1.1 / 4.4: the seed's own client, unchanged but for the port, delivers to the
    user test1@test.com with the trace fields prepended and LF line endings."""
    s = smtplib.SMTP('localhost', port)
    s.ehlo()
    s.mail('test@test.com')
    s.rcpt('test1@test.com')
    s.data('Subject: Test Mail\n\nThis is a test email.\n')
    s.quit()
    [message] = stored(mail_app, "test1@test.com")
    assert message.body == b"Subject: Test Mail\n\nThis is a test email.\n"
    assert message.fields["sender"] == "test@test.com"
    assert message.fields["mailbox"] == "test1@test.com"
    assert message.fields["protocol"] == "ESMTP"


def test_plain_message(mail_app, port):
    """RFC 5321 4.1.1.4 / 4.4 / 2.3.8: a plain message is stored as sent, CRLF turned into LF
    (as Maildir and mbox readers expect), after Return-Path, Delivered-To and Received."""
    data = (b"From: Sender <s@remote.example>\r\nTo: test1@test.com\r\nSubject: plain\r\n"
            b"Message-ID: <plain.1@remote.example>\r\n\r\nHello,\r\n\r\nFrom the start of a line"
            b"\r\n>From quoted already\r\n  indented\ttab\r\nbye\r\n")
    code, reply = send(port, "s@remote.example", ["test1@test.com"], data)
    assert code == 250
    assert_stored_for_test1(mail_app, data.replace(b"\r\n", b"\n"), reply)


def test_dot_stuffed_message(mail_app, port):
    """RFC 5321 4.5.2: the client doubles leading dots (smtplib does); the server removes one
    and stores the lines as written, a lone "." line included."""
    lines = [b"Subject: dots", b"", b".", b".one dot", b"..two dots", b"...", b"end ."]
    code, reply = send(port, "s@remote.example", ["test1@test.com"], b"\r\n".join(lines) + b"\r\n")
    assert code == 250
    assert_stored_for_test1(mail_app, b"\n".join(lines) + b"\n", reply)


def test_8bit_message(mail_app, port):
    """RFC 6152 2-3: with BODY=8BITMIME, octets above 127 (UTF-8 and Latin-1 alike) are kept
    byte for byte."""
    data = (b"Subject: caf\xc3\xa9\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            b"na\xc3\xafve \xe2\x82\xac\r\nlatin1 \xe9\xff\r\n")
    code, reply = send(port, "s@remote.example", ["test1@test.com"], data,
                       mail_options=["BODY=8BITMIME"])
    assert code == 250
    assert_stored_for_test1(mail_app, data.replace(b"\r\n", b"\n"), reply)


def test_smtputf8_message(mail_app, port):
    """RFC 6531 3.2-3.7: with SMTPUTF8, a UTF-8 sender and a UTF-8 local part reach the user,
    headers in UTF-8 are kept, and the Received header says UTF8SMTP (RFC 6531 3.7.3)."""
    data = ("From: Renée <renée@remote.example>\r\nTo: Jöran <jöran@example.com>\r\n"
            "Subject: Grüße\r\n\r\nHej Jöran! ✉\r\n").encode()
    code, reply = send(port, "renée@remote.example", ["Jöran@example.com"], data,
                       mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert code == 250
    [message] = stored(mail_app, UTF8_USER)
    assert message.body == data.replace(b"\r\n", b"\n")
    check_trace(message, sender="renée@remote.example", mailbox=UTF8_USER,
                rcpt="Jöran@example.com", protocol="UTF8SMTP", reply=reply)


def test_bdat_message(mail_app, port):
    """RFC 3030 2-3: BDAT chunks are taken octet for octet (no dot-stuffing, a CRLF may be split
    across chunks); BDAT LAST ends the message and gets the final 250."""
    chunks = [b"Subject: chunked\r\n\r\n..not unstuffed\r", b"\n.\r\nsecond", b" chunk\r\n"]
    with Dialog(port) as smtp:
        smtp.greeting()
        assert "CHUNKING" in smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example> BODY=8BITMIME", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.send(b"BDAT %d\r\n%s" % (len(chunks[0]), chunks[0]))
        smtp.expect(f"250 2.0.0 {len(chunks[0])} octets")
        smtp.send(b"BDAT %d\r\n%sBDAT %d LAST\r\n%s" % (len(chunks[1]), chunks[1],
                                                        len(chunks[2]), chunks[2]))
        smtp.expect("250 2.0.0")
        reply = smtp.expect("250 2.0.0")
        smtp.cmd("QUIT", "221")
    assert_stored_for_test1(mail_app, b"".join(chunks).replace(b"\r\n", b"\n"), reply.last)


def test_large_message_streamed(mail_app, port):
    """RFC 5321 4.5.3.1.7 / DESIGN rule 3: a 3 MiB message (spooled to disk while read, never
    held whole) is stored byte for byte, dot-stuffed lines included."""
    lines = [b"Subject: large", b""]
    lines += [b"%s%07d %s" % (b"." if n % 97 == 0 else b"", n, b"z" * 60) for n in range(45_000)]
    data = b"\r\n".join(lines) + b"\r\n"
    assert len(data) > 3 * 1024 * 1024
    code, reply = send(port, "s@remote.example", ["test1@test.com"], data)
    assert code == 250
    assert_stored_for_test1(mail_app, data.replace(b"\r\n", b"\n"), reply)


def test_alias_and_suffix_copies(mail_app, port):
    """RFC 5321 3.9.1: an alias expands to several mailboxes, each gets its own copy with its
    Delivered-To; a +suffix address reaches the user and is recorded in "for <...>"."""
    data = b"Subject: team\r\n\r\nhi all\r\n"
    code, _ = send(port, "s@remote.example", ["team@example.com"], data)
    assert code == 250
    code, _ = send(port, "s@remote.example", ["alice+lists@example.com"], data)
    assert code == 250
    alice = stored(mail_app, "alice@example.com")
    [bob] = stored(mail_app, "bob@example.com")
    assert [m.fields["rcpt"] for m in alice] == ["team@example.com", "alice+lists@example.com"]
    assert bob.fields["rcpt"] == "team@example.com"
    assert bob.fields["mailbox"] == "bob@example.com"
    assert {m.body for m in [*alice, bob]} == {b"Subject: team\n\nhi all\n"}
    assert alice[0].fields["id"] == bob.fields["id"]  # one message, two copies


def test_null_sender(mail_app, port):
    """RFC 5321 4.5.5 / 4.4: a bounce (MAIL FROM:<>) is delivered with "Return-Path: <>"."""
    code, _ = send(port, "", ["test1@test.com"], b"Subject: bounce\r\n\r\nDSN\r\n")
    assert code == 250
    [message] = stored(mail_app, "test1@test.com")
    assert message.raw.startswith(b"Return-Path: <>\n")


def test_mbox_quotes_from_lines(make_app, tmp_path):
    """RFC 4155 / mboxrd: in an mbox, body lines starting with "From " (or ">From ") get one
    more '>' so they cannot end the message; unquoted they are the message as sent."""
    app = make_app(store={"format": "mbox", "path": str(tmp_path / "mail")})
    data = b"Subject: q\r\n\r\nFrom here\r\n>From there\r\n"
    send(app.ports["smtp"][0], "s@remote.example", ["test1@test.com"], data)
    raw = (tmp_path / "mail" / "test.com" / "test1").read_bytes()
    assert raw.startswith(b"From s@remote.example ")
    assert b"\n>From here\n>>From there\n\n" in raw
    [(sender, message)] = mbox_messages(tmp_path / "mail", "test1@test.com")
    assert sender == b"s@remote.example"
    assert message.body == data.replace(b"\r\n", b"\n")


# ---- SMTP smuggling -----------------------------------------------------------------------

SMUGGLED = (b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<test1@test.com>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")


@pytest.mark.parametrize("payload", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"],
                         ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CR"])
def test_smuggling_refused_in_data(mail_app, port, payload):
    """RFC 5321 2.3.8 / 4.1.1.4 (CVE-2023-51764 class): only CRLF.CRLF ends DATA; a bare LF or
    CR in the data is refused (521, close), so no second message can be smuggled in and
    nothing at all is stored."""
    with Dialog(port) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: first\r\n\r\nhello" + payload + SMUGGLED)
        smtp.expect("521 5.5.2")
        smtp.expect_closed()
    assert stored(mail_app, "test1@test.com") == []


@pytest.mark.parametrize("payload", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"],
                         ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CR"])
def test_smuggling_refused_in_bdat(mail_app, port, payload):
    """RFC 3030 2 / RFC 5321 2.3.8: BDAT frames by octet count, and a bare CR or LF in a chunk
    still refuses the message (554 5.6.0), so geomail never stores or relays one."""
    chunk = b"Subject: first\r\n\r\nhello" + payload + SMUGGLED
    with Dialog(port) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.send(b"BDAT %d LAST\r\n%s" % (len(chunk), chunk))
        smtp.expect("554 5.6.0")
        smtp.cmd("NOOP", "250 2.0.0")
    assert stored(mail_app, "test1@test.com") == []


def _break_mailbox(app, mailbox: str) -> None:
    """Make ``mailbox`` unwritable in a way root cannot bypass: a file where the maildir's
    ``new/`` should be, or a directory where the mbox file should be."""
    store = app.config.store
    local, domain = mailbox.split("@")
    target = Path(store.path) / domain / local
    if store.format == "mbox":
        target.mkdir(parents=True)
    else:
        target.mkdir(parents=True)
        (target / "new").write_bytes(b"not a directory")


def test_failed_write_answers_451_and_keeps_nothing(mail_app, port):
    """RFC 5321 4.2.5 / 6.1: the message is accepted (250) only once every copy is durable;
    when one copy cannot be written the reply is 451 4.3.0, no recipient keeps a copy (the
    client will retry for all of them) and the session goes on."""
    _break_mailbox(mail_app, "test1@test.com")
    data = b"Subject: half\r\n\r\nfor two mailboxes, one of them broken\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("s@remote.example")
        assert client.rcpt("alice@example.com")[0] == 250  # Maildir: written, then undone
        assert client.rcpt("test1@test.com")[0] == 250
        code, text = client.data(data)
        assert (code, text[:5]) == (451, b"4.3.0")
        assert stored(mail_app, "alice@example.com") == []
        assert client.sendmail("s@remote.example", ["alice@example.com"], data) == {}
    [message] = stored(mail_app, "alice@example.com")
    assert message.body == data.replace(b"\r\n", b"\n")
    if mail_app.config.store.format == "maildir":
        tmp = Path(mail_app.config.store.path) / "example.com" / "alice" / "tmp"
        assert list(tmp.iterdir()) == []
