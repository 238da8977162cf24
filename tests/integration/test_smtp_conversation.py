"""SMTP conversations over raw sockets: every verb and every error path of the inbound server
(RFC 5321 and the extensions geomail offers), one dialog per rule, on the port 25 listener."""

from __future__ import annotations

import pytest

from tests.support import wait_for
from tests.support.dialog import Dialog
from tests.support.stored import maildir_messages


@pytest.fixture
def smtp(app):
    """A raw connection to the smtp listener, greeting read."""
    with Dialog(app.ports["smtp"][0]) as dialog:
        dialog.greeting()
        yield dialog


@pytest.fixture
def store(app) -> str:
    return app.config.store.path


# ---- greeting, HELO, EHLO -------------------------------------------------------------------


def test_greeting_names_the_host(app):
    """RFC 5321 4.3.1 / 4.1.3: the 220 greeting comes first and names the server."""
    with Dialog(app.ports["smtp"][0]) as dialog:
        reply = dialog.greeting()
    assert reply.lines == ("220 mx.test.com ESMTP geomail",)


def test_helo(smtp):
    """RFC 5321 4.1.1.1: HELO with a domain gets 250 and the server's name; without one, 501."""
    smtp.converse("""
        C: HELO
        S: 501 5.5.4
        C: HELO client.example
        S: 250 mx.test.com
    """)


def test_ehlo_lists_extensions(smtp, app):
    """RFC 5321 4.1.1.1 / 2.2.2: EHLO lists PIPELINING (RFC 2920), SIZE with the limit
    (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), CHUNKING (RFC 3030), DSN (RFC 3461
    4) and ENHANCEDSTATUSCODES (RFC 2034); no STARTTLS without a certificate and never AUTH on
    25."""
    smtp.cmd("EHLO", "501 5.5.4")
    reply = smtp.cmd("EHLO client.example", "250 ")
    assert reply.lines[0] == "250-mx.test.com"
    keywords = {line[4:] for line in reply.lines[1:]}
    assert keywords == {"PIPELINING", f"SIZE {app.config.limits.max_message_size}", "8BITMIME",
                        "SMTPUTF8", "CHUNKING", "DSN", "ENHANCEDSTATUSCODES"}


def test_ehlo_in_a_transaction_resets_it(smtp):
    """RFC 5321 4.1.4: EHLO in the middle of a transaction clears it, like RSET."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
    smtp.ehlo()
    smtp.cmd("DATA", "503 5.5.1")
    smtp.cmd("RCPT TO:<test1@test.com>", "503 5.5.1")


# ---- MAIL -----------------------------------------------------------------------------------


def test_mail_before_helo(smtp):
    """RFC 5321 4.1.4: MAIL before HELO/EHLO is a bad sequence: 503 5.5.1."""
    smtp.cmd("MAIL FROM:<a@remote.example>", "503 5.5.1")


def test_mail_accepts_sender_and_null_path(smtp):
    """RFC 5321 4.1.1.2 and 4.5.5: MAIL FROM:<addr> and the null reverse-path <> get 250 2.1.0."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RSET", "250 2.0.0")
    smtp.cmd("MAIL FROM:<>", "250 2.1.0")


def test_nested_mail(smtp):
    """RFC 5321 4.1.4: a second MAIL inside a transaction is refused with 503 5.5.1."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("MAIL FROM:<b@remote.example>", "503 5.5.1")


@pytest.mark.parametrize("command", ["MAIL", "MAIL FROM", "MAIL TO:<a@remote.example>",
                                     "MAIL FROM:<a@remote.example"])
def test_mail_syntax_errors(smtp, command):
    """RFC 5321 4.1.1.2 / 4.2.2: MAIL without a well-formed FROM:<path> gets 501 5.5.4."""
    smtp.ehlo()
    smtp.cmd(command, "501 5.5.4")


def test_mail_bad_address(smtp):
    """RFC 5321 4.1.2 / 4.2.2 (553): a reverse-path that is not a mailbox gets 553 5.1.3."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<no at sign>", "553 5.1.3")


def test_mail_unknown_parameter(smtp):
    """RFC 5321 4.1.1.11 / 4.2.3: an unrecognised MAIL parameter gets 555 5.5.4."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example> FROBNICATE=yes", "555 5.5.4")


def test_mail_parameters_need_ehlo(smtp):
    """RFC 5321 4.1.1.1 / RFC 1869 4.4: after HELO (not EHLO) no MAIL parameters: 555."""
    smtp.cmd("HELO client.example", "250 ")
    smtp.cmd("MAIL FROM:<a@remote.example> SIZE=100", "555 5.5.4")
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")


def test_mail_size_parameter(smtp, app):
    """RFC 1870 6.1 / 4: SIZE above the limit gets 552 5.3.4 at MAIL; a non-number gets 501."""
    limit = app.config.limits.max_message_size
    smtp.ehlo()
    smtp.cmd(f"MAIL FROM:<a@remote.example> SIZE={limit + 1}", "552 5.3.4")
    smtp.cmd("MAIL FROM:<a@remote.example> SIZE=lots", "501 5.5.4")
    smtp.cmd(f"MAIL FROM:<a@remote.example> SIZE={limit}", "250 2.1.0")


def test_mail_body_parameter(smtp):
    """RFC 6152 2: BODY=8BITMIME and BODY=7BIT are accepted; BINARYMIME (RFC 3030 3) is not
    offered, so it is refused (501 5.5.4)."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example> BODY=BINARYMIME", "501 5.5.4")
    smtp.cmd("MAIL FROM:<a@remote.example> BODY=8BITMIME", "250 2.1.0")
    smtp.cmd("RSET", "250 2.0.0")
    smtp.cmd("MAIL FROM:<a@remote.example> BODY=7BIT", "250 2.1.0")


def test_non_ascii_sender_needs_smtputf8(smtp):
    """RFC 6531 3.4: a UTF-8 address without the SMTPUTF8 parameter gets 553 5.6.7."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<jöran@remote.example>", "553 5.6.7")
    smtp.cmd("MAIL FROM:<jöran@remote.example> SMTPUTF8", "250 2.1.0")


def test_invalid_utf8_command(smtp):
    """RFC 6531 3.3 / RFC 5321 4.2.4: a command that is not valid UTF-8 is not understood: 500."""
    smtp.ehlo()
    smtp.line(b"MAIL FROM:<\xff\xfe@remote.example> SMTPUTF8")
    smtp.expect("500 5.5.2")
    smtp.cmd("NOOP", "250 2.0.0")


# ---- RCPT -----------------------------------------------------------------------------------


def test_rcpt_before_mail(smtp):
    """RFC 5321 4.1.4: RCPT before MAIL is a bad sequence: 503 5.5.1 (also before EHLO)."""
    smtp.cmd("RCPT TO:<test1@test.com>", "503 5.5.1")
    smtp.ehlo()
    smtp.cmd("RCPT TO:<test1@test.com>", "503 5.5.1")


def test_rcpt_local_user_and_unknown_user(smtp):
    """RFC 5321 3.6.2 / 4.2.2: a local user gets 250 2.1.5; an unknown one 550 5.1.1 at RCPT
    time (no backscatter); the transaction survives the refusal."""
    smtp.ehlo()
    smtp.converse("""
        C: MAIL FROM:<a@remote.example>
        S: 250 2.1.0
        C: RCPT TO:<nobody@test.com>
        S: 550 5.1.1
        C: RCPT TO:<test1@test.com>
        S: 250 2.1.5
    """)


def test_rcpt_case_insensitive_suffix_and_alias(smtp):
    """RFC 5321 2.4 (local parts may be case-insensitive by the server's choice): TEST1@TEST.COM,
    suffix addressing alice+tag@ and the alias team@ are all accepted."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    for rcpt in ("TEST1@TEST.COM", "Alice+news@Example.com", "team@example.com"):
        smtp.cmd(f"RCPT TO:<{rcpt}>", "250 2.1.5")


def test_rcpt_postmaster(smtp, store):
    """RFC 5321 4.5.1: "postmaster" without a domain and postmaster@ every local domain are
    accepted even when not configured, and the message reaches a mailbox."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<Postmaster>", "250 2.1.5")
    smtp.cmd("RCPT TO:<postmaster@test.com>", "250 2.1.5")
    smtp.cmd("DATA", "354")
    smtp.send(b"Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
    smtp.expect("250 2.0.0")
    # postmaster@example.com is an alias of alice; test.com has none: the first user gets it
    assert [m.body for m in maildir_messages(store, "alice@example.com")] == [
        b"Subject: to the postmaster\n\nhello\n"]


def test_rcpt_relay_denied(smtp):
    """RFC 5321 3.6.1 / 7.1: a remote recipient from an unauthenticated client is refused
    (554 5.7.1): geomail is not an open relay."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<victim@elsewhere.example>", "554 5.7.1")


def test_rcpt_syntax_and_parameters(smtp):
    """RFC 5321 4.1.1.3 / 4.2.3: RCPT without TO:<path> gets 501, a bad address 553 5.1.3, an
    unknown parameter 555 5.5.4, a UTF-8 address without SMTPUTF8 553 5.6.7 (RFC 6531 3.4)."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT FROM:<test1@test.com>", "501 5.5.4")
    smtp.cmd("RCPT TO:<not an address>", "553 5.1.3")
    smtp.cmd("RCPT TO:<test1@test.com> X-NOTIFY=NEVER", "555 5.5.4")
    smtp.cmd("RCPT TO:<jöran@test.com>", "553 5.6.7")


# ---- DATA -----------------------------------------------------------------------------------


def test_data_sequence_errors(smtp):
    """RFC 5321 4.1.4 / 3.3: DATA before MAIL is 503 5.5.1; with no accepted recipient it is
    554 ("no valid recipients"); with arguments 501."""
    smtp.ehlo()
    smtp.cmd("DATA", "503 5.5.1")
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<nobody@test.com>", "550 5.1.1")
    smtp.cmd("DATA", "554 5.5.1")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
    smtp.cmd("DATA now", "501 5.5.4")


def test_data_delivers(smtp, store):
    """RFC 5321 4.1.1.4: 354, content up to CRLF.CRLF, then 250 once the message is stored."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
    smtp.cmd("DATA", "354 ")
    smtp.send(b"Subject: x\r\n\r\nline 1\r\n")
    smtp.send(b"..stuffed\r\n.\r\n")
    reply = smtp.expect("250 2.0.0")
    [stored] = maildir_messages(store, "test1@test.com")
    assert stored.body == b"Subject: x\n\nline 1\n.stuffed\n"
    assert stored.fields["id"] in reply.last


def test_data_line_length_boundary(smtp, store):
    """RFC 5321 4.5.3.1.6: a text line may be 1000 octets with its CRLF, not counting a dot
    doubled for transparency (RFC 5321 4.5.2); such lines are accepted and stored."""
    full = b"a" * 998
    dotted = b"." + b"b" * 997  # sent as ".." + 997: 1001 octets on the wire, 1000 counted
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
    smtp.cmd("DATA", "354 ")
    smtp.send(b"Subject: long lines\r\n\r\n" + full + b"\r\n." + dotted + b"\r\n.\r\n")
    smtp.expect("250 2.0.0")
    [message] = maildir_messages(store, "test1@test.com")
    assert message.body == b"Subject: long lines\n\n" + full + b"\n" + dotted + b"\n"


def test_data_line_too_long(make_app):
    """RFC 5321 4.5.3.1.6, when configured (``limits.max_line_length: 1000``; the default is
    no limit): a text line over 1000 octets refuses the message (554 5.6.0)
    and nothing is stored; the connection stays usable."""
    app = make_app(limits={"max_line_length": 1000})
    store = app.config.store.path
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        _refuse_long_line(smtp)
    assert maildir_messages(store, "test1@test.com") == []


def _refuse_long_line(smtp: Dialog) -> None:
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
    smtp.cmd("DATA", "354 ")
    smtp.send(b"Subject: x\r\n\r\n" + b"a" * 999 + b"\r\nmore\r\n.\r\n")
    smtp.expect("554 5.6.0")
    smtp.cmd("NOOP", "250 2.0.0")


def test_connection_lost_in_data(app, store):
    """RFC 5321 4.1.1.4 / 6.1: a message is only delivered after the final dot and the 250; a
    client that disconnects in the middle of DATA leaves nothing, and the server goes on."""
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: cut off\r\n\r\nhalf")
    wait_for(lambda: app.tracker.total == 0, timeout=5, message="the session to end")
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.cmd("HELO client.example", "250 ")
    assert maildir_messages(store, "test1@test.com") == []


# ---- PIPELINING and CHUNKING -----------------------------------------------------------------


def test_pipelining(smtp, store):
    """RFC 2920 3.1: a client may send MAIL, RCPT... and DATA in one batch; replies come back in
    order, a refused RCPT does not stop the rest."""
    smtp.ehlo()
    smtp.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<test1@test.com>\r\n"
              b"RCPT TO:<nobody@test.com>\r\nDATA\r\n")
    smtp.expect("250 2.1.0")
    smtp.expect("250 2.1.5")
    smtp.expect("550 5.1.1")
    smtp.expect("354 ")
    smtp.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
    smtp.expect("250 2.0.0")
    smtp.expect("250 2.0.0")
    smtp.expect("221 2.0.0")
    smtp.expect_closed()
    assert [m.body for m in maildir_messages(store, "test1@test.com")] == [
        b"Subject: piped\n\nbody\n"]


def test_bdat_sequence_errors(smtp, store):
    """RFC 3030 2: BDAT is refused before MAIL (503) and with no recipient (554), but its chunk
    is still read so the stream stays in step; DATA and RCPT cannot follow BDAT (503)."""
    smtp.ehlo()
    smtp.send(b"BDAT 4\r\nNOOPBDAT 3 LAST\r\nabcNOOP\r\n")
    smtp.expect("503 5.5.1")
    smtp.expect("503 5.5.1")
    smtp.expect("250 2.0.0")
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.send(b"BDAT 2 LAST\r\nhi")
    smtp.expect("554 5.5.1")
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
    smtp.send(b"BDAT 4\r\nab\r\n")
    smtp.expect("250 2.0.0")
    smtp.cmd("DATA", "503 5.5.1")
    smtp.cmd("RCPT TO:<test1@test.com>", "503 5.5.1")
    smtp.send(b"BDAT 0 LAST\r\n")
    smtp.expect("250 2.0.0")
    assert [m.body for m in maildir_messages(store, "test1@test.com")] == [b"ab\n"]


def test_bdat_bad_size_closes(smtp):
    """RFC 3030 2: a BDAT without a valid size cannot be framed: 501, then the server closes."""
    smtp.ehlo()
    smtp.converse("""
        C: BDAT lots LAST
        S: 501 5.5.4
        S: <closed>
    """)


# ---- RSET, NOOP, VRFY, EXPN, HELP, QUIT --------------------------------------------------------


def test_rset(smtp):
    """RFC 5321 4.1.1.5: RSET drops the transaction (RCPT then needs MAIL again: 503)."""
    smtp.ehlo()
    smtp.converse("""
        C: MAIL FROM:<a@remote.example>
        S: 250 2.1.0
        C: RCPT TO:<test1@test.com>
        S: 250 2.1.5
        C: RSET
        S: 250 2.0.0
        C: RCPT TO:<test1@test.com>
        S: 503 5.5.1
        C: MAIL FROM:<a@remote.example>
        S: 250 2.1.0
    """)


def test_noop(smtp):
    """RFC 5321 4.1.1.9: NOOP gets 250 in any state, an argument is ignored."""
    smtp.cmd("NOOP", "250 2.0.0")
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("NOOP something", "250 2.0.0")
    smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")


def test_vrfy_discloses_nothing(smtp):
    """RFC 5321 3.5.3 / 7.3: VRFY gets the same 252 for a user and a non-user (no address
    harvesting); without an argument, 501."""
    smtp.ehlo()
    existing = smtp.cmd("VRFY test1@test.com", "252 2.5.2")
    missing = smtp.cmd("VRFY nobody@test.com", "252 2.5.2")
    assert existing == missing
    smtp.cmd("VRFY", "501 5.5.4")


def test_expn_not_offered(smtp):
    """RFC 5321 3.5.2 / 7.3: list expansion is not offered: 502 5.5.1."""
    smtp.cmd("EXPN team@example.com", "502 5.5.1")


def test_help(smtp):
    """RFC 5321 4.1.1.8: HELP gets a 214 reply."""
    reply = smtp.cmd("HELP", "214 2.0.0")
    assert "MAIL" in reply.text


def test_quit(smtp):
    """RFC 5321 4.1.1.10: QUIT gets 221 and the server closes the connection."""
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@remote.example>", "250 2.1.0")
    smtp.cmd("QUIT", "221 2.0.0")
    smtp.expect_closed()


def test_unknown_command(smtp):
    """RFC 5321 4.2.4: an unrecognised command gets 500 5.5.2 and the session goes on."""
    smtp.cmd("FROB", "500 5.5.2")
    smtp.cmd("EHLO client.example", "250 ")


def test_http_request_closes(smtp):
    """RFC 5321 4.2.4 / 3.8: an HTTP request (cross-protocol attack) gets 502 and a close."""
    smtp.converse("""
        C: GET / HTTP/1.1
        S: 502 5.5.1
        S: <closed>
    """)


def test_starttls_without_certificate(smtp):
    """RFC 3207 4: STARTTLS is not offered without a certificate, and refused: 502 5.5.1."""
    assert "STARTTLS" not in smtp.ehlo()
    smtp.cmd("STARTTLS", "502 5.5.1")


def test_auth_not_on_port_25(smtp):
    """RFC 6409 4.3 / RFC 4954 3: the MX port 25 offers no AUTH; AUTH gets 502 5.5.1."""
    assert "AUTH" not in smtp.ehlo()
    smtp.cmd("AUTH PLAIN AHRlc3QxQHRlc3QuY29tAHg=", "502 5.5.1")


# ---- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [b"NOOP\n", b"NOOP\rNOOP\r\n", b"EHLO a\n"])
def test_bare_newline_in_command_closes(smtp, command):
    """RFC 5321 2.3.8: lines end in CRLF only; a bare LF or CR in a command gets 521 and the
    connection is closed (the client is not speaking SMTP)."""
    smtp.send(command)
    smtp.expect("521 5.5.2")
    smtp.expect_closed()


def test_every_reply_has_an_enhanced_code(smtp):
    """RFC 2034 3: once ENHANCEDSTATUSCODES is offered, every reply but the greeting and the
    HELO/EHLO replies carries an x.y.z code (RFC 3463 2: its class matches the reply's)."""
    smtp.ehlo()
    commands = ["NOOP", "HELP", "VRFY x", "EXPN x", "FROB", "MAIL FROM:<a@remote.example>",
                "RCPT TO:<nobody@test.com>", "RCPT TO:<test1@test.com>", "RSET", "DATA",
                "QUIT"]
    for command in commands:
        smtp.line(command)
        reply = smtp.reply()
        for line in reply.lines:
            code, enhanced = line[:3], line[4:].split(" ")[0]
            assert enhanced[:1] == code[:1] and enhanced.count(".") == 2, (command, line)
