"""SMTPSession (geomail/proto/smtp.py) driven by a FakeHandler: bytes in, outputs out, no sockets.

Every conversation goes through ``converse``, which feeds the same bytes whole, byte by byte and
split in two at every offset (h11's ``tr()``) and requires identical outputs, hook calls and
stored content each time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from geomail.envelope import Envelope
from geomail.proto import reply as R
from geomail.proto.reply import Close, Delay, Reply, StartTLS
from geomail.proto.smtp import (
    PARAMETER_ALLOWANCE,
    SessionInfo,
    SMTPSession,
    SMTPSettings,
)
from geomail.proto.smtp_types import (
    Authenticate,
    CheckRecipient,
    CheckSender,
    MessageAborted,
    MessageComplete,
    MessageData,
    MessageStart,
    State,
)
from tests.support.smtp_session import (
    ALICE,
    EHLO,
    HELO,
    HOST,
    MAIL,
    PASSWORD,
    QUEUED,
    RCPT,
    SIZE,
    TXN,
    FakeHandler,
    Message,
    Output,
    Run,
    SessionDriver,
    make_session,
)
from tests.support.splits import every_way

EVIL = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nevil\r\n.\r\n"


def converse(data: bytes, setup: bytes = b"", handler: Callable[[], FakeHandler] = FakeHandler,
             **kwargs) -> Run:
    """Feed ``setup`` whole, then ``data`` every way; all ways must agree exactly."""

    def run(chunks: list[bytes]) -> Run:
        session = make_session(handler(), **kwargs)
        if setup:
            session.feed(setup)
        outputs = [out for chunk in chunks for out in session.feed(chunk)]
        return Run(session, session.handler, outputs)  # type: ignore[arg-type]

    return every_way(data, run)


def ehlo_reply(*extra: str, size: int = SIZE) -> Reply:
    lines = (HOST, "PIPELINING", f"SIZE {size}", "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN",
             "ENHANCEDSTATUSCODES", *extra)
    return Reply(250, None, lines)


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def plain(user: str = ALICE, password: str = PASSWORD, authzid: str = "") -> bytes:
    return b64(f"{authzid}\0{user}\0{password}")


def chunk_ok(total: int) -> Reply:
    return Reply(250, "2.0.0", f"{total} octets received")


# --------------------------------------------------------------------------------------------
# Greeting, the verb x state table, sequencing
# --------------------------------------------------------------------------------------------


def test_greeting():
    """The 220 banner names the host (RFC 5321 4.3.1); no enhanced code (RFC 2034 3)."""
    greeting = make_session().greeting()
    assert greeting == Reply(220, None, f"{HOST} ESMTP geomail")
    assert greeting.wire == b"220 mx.example.com ESMTP geomail\r\n"


SETUPS = {
    State.INITIAL: b"",
    State.READY: EHLO,
    State.MAIL: EHLO + MAIL,
    State.RCPT: TXN,
}
STARTTLS_OK = [R.R220_READY_TLS, StartTLS()]
IN_TXN = "not allowed during a transaction"
# verb: (command, outputs when allowed, state after, reply in INITIAL, READY, MAIL, RCPT);
# None in a state column means "allowed", as in the table heading geomail/proto/smtp.py.
VERB_TABLE: dict[str, tuple[bytes, list[Output], State | None, tuple[Reply | None, ...]]] = {
    "HELO": (HELO, [Reply(250, None, HOST)], State.READY, (None, None, None, None)),
    "EHLO": (EHLO, [ehlo_reply("STARTTLS")], State.READY, (None, None, None, None)),
    "MAIL": (MAIL, [R.R250_SENDER_OK], State.MAIL,
             (R.R503_HELO_FIRST, None, R.R503_NESTED_MAIL, R.R503_NESTED_MAIL)),
    "RCPT": (RCPT, [R.R250_RECIPIENT_OK], State.RCPT,
             (R.R503_HELO_FIRST, R.R503_NEED_MAIL, None, None)),
    "DATA": (b"DATA\r\n", [R.R354_START_DATA], State.DATA,
             (R.R503_HELO_FIRST, R.R503_NEED_MAIL, R.R554_NO_VALID_RECIPIENTS, None)),
    "BDAT": (b"BDAT 4 LAST\r\nhi\r\n", [QUEUED], State.READY,
             (R.R503_HELO_FIRST, R.R503_NEED_MAIL, R.R554_NO_VALID_RECIPIENTS, None)),
    "STARTTLS": (b"STARTTLS\r\n", STARTTLS_OK, State.READY,
                 (R.R503_HELO_FIRST, None,
                  R.R503_BAD_SEQUENCE.with_text(f"STARTTLS {IN_TXN}"),
                  R.R503_BAD_SEQUENCE.with_text(f"STARTTLS {IN_TXN}"))),
    "RSET": (b"RSET\r\n", [R.R250_RESET], None, (None, None, None, None)),
    "NOOP": (b"NOOP\r\n", [R.R250_OK], None, (None, None, None, None)),
    "HELP": (b"HELP\r\n", [R.R214_HELP], None, (None, None, None, None)),
    "VRFY": (b"VRFY alice\r\n", [R.R252_CANNOT_VRFY], None, (None, None, None, None)),
    "EXPN": (b"EXPN staff\r\n", [R.R502_NOT_IMPLEMENTED], None, (None, None, None, None)),
    "QUIT": (b"QUIT\r\n", [R.R221_BYE, Close()], State.CLOSED, (None, None, None, None)),
}


@pytest.mark.parametrize("state", list(SETUPS), ids=lambda s: s.name)
@pytest.mark.parametrize("verb", list(VERB_TABLE))
def test_verb_in_state(verb, state):
    """Every verb in every state per the table in proto/smtp.py (RFC 5321 4.1.4, 4.3.2:
    503 for a bad sequence; RFC 3030 2 for BDAT, RFC 3207 4 for STARTTLS)."""
    command, allowed, after, refusals = VERB_TABLE[verb]
    refusal = refusals[list(SETUPS).index(state)]
    run = converse(command, setup=SETUPS[state], tls_available=True)
    if refusal is None:
        assert run.outputs == allowed
        if verb == "RSET":
            after = State.INITIAL if state is State.INITIAL else State.READY
        assert run.session.state is (after or state)
    else:
        assert run.outputs == [refusal]
        assert refusal.code in (503, 554)  # RFC 5321 3.3: DATA without recipients is 554
        if verb == "BDAT":  # LAST ends the failed transaction (RFC 3030 2)
            state = State.INITIAL if state is State.INITIAL else State.READY
        assert run.session.state is state
        assert ("accept_message",) not in run.handler.calls


@pytest.mark.parametrize("state", list(SETUPS), ids=lambda s: s.name)
def test_auth_in_state(state):
    """AUTH is allowed only between transactions after EHLO (RFC 4954 4); on a submission
    listener MAIL needs a login first, so in MAIL/RCPT the client is already authenticated."""
    login = b"AUTH PLAIN " + plain() + b"\r\n"
    setup = {State.INITIAL: b"", State.READY: EHLO, State.MAIL: EHLO + login + MAIL,
             State.RCPT: EHLO + login + MAIL + RCPT}[state]
    run = converse(login, setup=setup, listener="submission", tls="TLSv1.3")
    expected = {State.INITIAL: R.R503_HELO_FIRST, State.READY: R.R235_AUTH_OK,
                State.MAIL: R.R503_ALREADY_AUTHENTICATED,
                State.RCPT: R.R503_ALREADY_AUTHENTICATED}[state]
    assert run.outputs == [expected]
    assert run.session.state is state


def test_unknown_command():
    """An unrecognised command gets 500 5.5.2 (RFC 5321 4.2.4) and the session goes on."""
    run = converse(b"FROB x\r\n\r\nNOOP\r\n", setup=EHLO)
    assert run.outputs == [R.R500_UNRECOGNIZED, R.R500_UNRECOGNIZED, R.R250_OK]


def test_verbs_are_case_insensitive():
    """Verbs and keywords are case-insensitive (RFC 5321 2.4)."""
    run = converse(b"ehlo x.example\r\nmail from:<a@example.org>\r\nrCpT tO:<alice@example.com>"
                   b"\r\nnoop\r\n")
    assert run.outputs == [ehlo_reply(), R.R250_SENDER_OK, R.R250_RECIPIENT_OK, R.R250_OK]


@pytest.mark.parametrize("verb", [b"GET", b"POST", b"CONNECT", b"get"])
def test_http_verb_closes(verb):
    """An HTTP request (cross-protocol attack) gets 502 and a close (STYLE 5.2, as chasquid)."""
    run = converse(verb + b" / HTTP/1.1\r\nHost: mx.example.com\r\n\r\n")
    assert run.outputs == [R.R502_HTTP, Close()]
    assert run.session.state is State.CLOSED


def test_too_many_bad_commands():
    """After max_bad_commands protocol errors: 421 4.7.0 and close (RFC 5321 4.2.2, 3.8);
    unknown commands, 503 sequence errors and syntax errors all count."""
    run = converse(b"FROB\r\nRCPT TO:<alice@example.com>\r\nHELO\r\nNOOP\r\n", max_bad_commands=3)
    assert run.outputs == [R.R500_UNRECOGNIZED, R.R503_HELO_FIRST,
                           R.R501_SYNTAX.with_text("HELO requires a domain"),
                           R.R421_TOO_MANY_ERRORS, Close()]
    assert run.session.state is State.CLOSED


def test_good_commands_do_not_count_as_errors():
    """Only protocol errors count toward max_bad_commands (RFC 5321 4.2.2): refused recipients
    do not (they count toward the hard error limit, below)."""
    run = converse(b"RCPT TO:<nobody@example.com>\r\n" * 4 + b"NOOP\r\n", setup=EHLO + MAIL,
                   max_bad_commands=2)
    assert run.outputs == [R.R550_NO_SUCH_USER] * 4 + [R.R250_OK]


# --------------------------------------------------------------------------------------------
# Error and junk limits (Postfix's smtpd_soft/hard_error_limit, smtpd_error_sleep_time,
# smtpd_junk_command_limit)
# --------------------------------------------------------------------------------------------

UNKNOWN_RCPT = b"RCPT TO:<nobody@example.com>\r\n"


def test_refusals_are_slowed_then_end_the_session():
    """Every refused command counts as an error: past soft_error_limit each further refusal is
    preceded by a Delay, at hard_error_limit the session ends with 421 4.7.0 (Postfix
    smtpd_soft_error_limit / smtpd_hard_error_limit; RFC 5321 4.2.3 for 421)."""
    run = converse(UNKNOWN_RCPT * 6, setup=EHLO + MAIL, soft_error_limit=2, hard_error_limit=4,
                   error_sleep_time=0.5)
    assert run.outputs == [R.R550_NO_SUCH_USER, R.R550_NO_SUCH_USER, Delay(0.5),
                           R.R550_NO_SUCH_USER, R.R550_NO_SUCH_USER, R.R421_TOO_MANY_ERRORS,
                           Close()]
    assert run.session.state is State.CLOSED
    assert run.handler.calls.count(("check_recipient", "nobody@example.com")) == 4


def test_directory_harvest_is_cut_short_with_the_defaults():
    """2,000 pipelined unknown recipients (a directory harvest, RFC 5321 7.8): with the
    defaults (as Postfix: soft 10, hard 20, 1 s) the 11th to 19th refusals are delayed and the
    20th ends the session; only 20 addresses were looked up."""
    session = make_session()
    session.feed(EHLO + MAIL)
    outputs = session.feed(UNKNOWN_RCPT * 2000)
    assert outputs.count(Delay(1.0)) == 9
    assert [o for o in outputs if not isinstance(o, Delay)] == [R.R550_NO_SUCH_USER] * 20 + [
        R.R421_TOO_MANY_ERRORS, Close()]
    assert len(session.handler.calls) == 1 + 20  # check_sender, then 20 recipients


def test_every_kind_of_refusal_counts():
    """Relay refusals, syntax (501), sequence (503) and parameter (555) errors all count
    toward the hard limit, in any mix (Postfix counts every 4xx/5xx reply)."""
    handler = FakeHandler(refuse_recipients={"x@elsewhere.example": R.R554_RELAY_DENIED})
    run = converse(b"RCPT TO:<x@elsewhere.example>\r\nRCPT TO:<a@b.example> FOO=1\r\n"
                   b"MAIL FROM:<a@b.example>\r\nVRFY\r\n", setup=EHLO + MAIL,
                   handler=lambda: handler, hard_error_limit=4, max_bad_commands=100)
    assert [o.code for o in run.outputs if isinstance(o, Reply)] == [554, 555, 503, 501, 421]
    assert run.outputs[-1] == Close()


def test_junk_commands_are_bounded():
    """NOOP, RSET, VRFY, HELP, EXPN and HELO/EHLO make no progress: past junk_command_limit
    each counts as an error, so 9,000 of them end at the hard limit (Postfix
    smtpd_junk_command_limit)."""
    junk = b"NOOP\r\nRSET\r\nVRFY <a@b.example>\r\nHELP\r\nEHLO again.example\r\n"
    session = make_session(junk_command_limit=100, hard_error_limit=20, soft_error_limit=100)
    session.feed(EHLO)
    outputs = session.feed(junk * 1800)
    assert outputs[-2:] == [R.R421_TOO_MANY_ERRORS, Close()]
    assert len(outputs) == 99 + 20 + 2  # the first EHLO was junk number 1
    assert R.R250_OK in outputs[101:] and R.R252_CANNOT_VRFY in outputs  # replies unchanged


def test_recipients_over_the_limit_are_junk():
    """452 4.5.3 for recipients over max_recipients is not an error (RFC 5321 4.5.3.1.10: the
    client sends them later) but counts as junk, so it cannot go on for ever."""
    rcpts = b"".join(b"RCPT TO:<alice+%d@example.com>\r\n" % i for i in range(8))
    run = converse(rcpts, setup=EHLO + MAIL, max_recipients=2, junk_command_limit=4,
                   hard_error_limit=2)  # EHLO is junk number 1
    assert run.outputs == [R.R250_RECIPIENT_OK] * 2 + [R.R452_TOO_MANY_RECIPIENTS] * 5 + [
        R.R421_TOO_MANY_ERRORS, Close()]


def test_accepted_recipients_do_not_count():
    """Valid recipients that are accepted are progress, not errors (Postfix's
    smtpd_hard_error_limit)."""
    rcpts = b"".join(b"RCPT TO:<alice+%d@example.com>\r\n" % i for i in range(50))
    run = converse(rcpts + UNKNOWN_RCPT, setup=EHLO + MAIL, hard_error_limit=2,
                   junk_command_limit=1)
    assert run.outputs == [R.R250_RECIPIENT_OK] * 50 + [R.R550_NO_SUCH_USER]
    assert run.session.state is State.RCPT


def test_an_accepted_message_resets_the_counts():
    """The counts are errors and junk "without delivering mail" (Postfix): a client with a few
    typos per message can send any number of messages."""
    message = MAIL + UNKNOWN_RCPT + b"NOOP\r\n" + RCPT + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
    session = make_session(hard_error_limit=2, junk_command_limit=2)
    session.feed(EHLO)
    for _ in range(5):
        outputs = session.feed(message)
        assert outputs == [R.R250_SENDER_OK, R.R550_NO_SUCH_USER, R.R250_OK,
                           R.R250_RECIPIENT_OK, R.R354_START_DATA, QUEUED]
    assert session.accepted == 5


def test_no_delay_when_the_sleep_time_is_zero():
    """``error_sleep_time: 0`` turns the slow-down off; the hard limit still holds."""
    run = converse(UNKNOWN_RCPT * 3, setup=EHLO + MAIL, soft_error_limit=0, hard_error_limit=3,
                   error_sleep_time=0)
    assert run.outputs == [R.R550_NO_SUCH_USER] * 3 + [R.R421_TOO_MANY_ERRORS, Close()]


# --------------------------------------------------------------------------------------------
# Command framing
# --------------------------------------------------------------------------------------------


def test_command_line_at_the_limit():
    """A command line of 512 octets with its CRLF is accepted (RFC 5321 4.5.3.1.4)."""
    line = b"NOOP " + b"x" * 505 + b"\r\n"
    assert len(line) == 512
    assert converse(line, setup=EHLO).outputs == [R.R250_OK]


@pytest.mark.parametrize("length", [513, 512 + PARAMETER_ALLOWANCE + 1, 3000])
def test_command_line_too_long(length):
    """A longer line gets 500 5.5.2, is drained to its end, and the session stays usable
    (RFC 5321 4.5.3.1.4, 4.5.3.1.10)."""
    line = b"NOOP " + b"x" * (length - 7) + b"\r\n"
    assert len(line) == length
    run = converse(line + b"NOOP\r\n", setup=EHLO)
    assert run.outputs == [R.R500_LINE_TOO_LONG, R.R250_OK]
    assert run.session.state is State.READY


def test_mail_line_gets_the_extension_allowance():
    """MAIL may exceed 512 octets by the room its parameters need (RFC 1870 3, RFC 5321
    4.5.3.1.4), up to PARAMETER_ALLOWANCE more."""
    line = b"MAIL FROM:<sender@example.org>" + b" " * 700 + b"SIZE=100\r\n"
    assert 512 < len(line) <= 512 + PARAMETER_ALLOWANCE
    run = converse(line, setup=EHLO)
    assert run.outputs == [R.R250_SENDER_OK]
    assert run.session.envelope.declared_size == 100


@pytest.mark.parametrize("data", [
    b"NOOP\n", b"\nNOOP\r\n", b"NOOP\rNOOP\r\n", b"NOOP\r\r\n",
    b"MAIL FROM:<a@example.org>\rRCPT TO:<alice@example.com>\r\n",
])
def test_bare_newline_in_command(data):
    """A bare LF or CR in a command line is refused with 521 and a close, never taken as a line
    end (RFC 5321 2.3.8; the SMTP smuggling class, CVE-2023-51764)."""
    run = converse(data + b"NOOP\r\n", setup=EHLO)
    assert run.outputs == [R.R521_BARE_NEWLINE, Close()]
    assert run.session.state is State.CLOSED
    assert ("check_sender", "a@example.org") not in run.handler.calls


def test_non_utf8_command():
    """Command bytes that are not UTF-8 (RFC 5321 2.3.1 ASCII, RFC 6531 3.3 UTF-8) get 500
    5.5.2 and the session goes on; valid UTF-8 is fine."""
    run = converse(b"NOOP \xff\xfe\r\nEHLO caf\xc3\xa9.example\r\n")
    assert run.outputs == [R.R500_UNRECOGNIZED.with_text("Invalid UTF-8 in command"),
                           ehlo_reply()]
    assert run.session.info.helo == "café.example"


def test_eof_closes():
    """The end of the stream (b"") closes the session; nothing is answered after it
    (RFC 5321 3.8: a connection lost mid-transaction loses the transaction)."""
    session = make_session()
    session.feed(TXN + b"DATA\r\nSubject: partial\r\n")
    assert session.reading_data
    assert session.feed(b"") == [Close()]
    assert session.state is State.CLOSED
    assert session.handler.sinks[0].discarded  # type: ignore[attr-defined]
    assert ("accept_message",) not in session.handler.calls  # type: ignore[attr-defined]
    assert session.feed(b"NOOP\r\n") == []
    assert session.feed(b"") == []


def test_abort_drops_the_transaction():
    """abort() (timeout, shutdown) discards the body and returns to READY (RFC 5321 3.8)."""
    session = make_session()
    session.feed(TXN + b"DATA\r\nhello\r\n")
    session.abort()
    assert session.state is State.READY
    assert session.envelope.sender is None
    assert session.handler.sinks[0].discarded  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# HELO, EHLO and the extensions they announce
# --------------------------------------------------------------------------------------------


def test_helo():
    """HELO: a one-line 250 without extensions (RFC 5321 4.1.1.1); the session is not ESMTP."""
    run = converse(HELO)
    assert run.outputs == [Reply(250, None, HOST)]
    assert run.session.info.helo == "client.example.org"
    assert run.session.info.esmtp is False
    assert run.session.info.protocol() == "SMTP"


@pytest.mark.parametrize("verb", [b"HELO", b"EHLO", b"HELO ", b"EHLO  "])
def test_helo_needs_a_domain(verb):
    """HELO/EHLO without a domain is a syntax error, 501 (RFC 5321 4.1.1.1)."""
    run = converse(verb + b"\r\n")
    assert run.outputs[0].code == 501
    assert run.session.state is State.INITIAL


def test_ehlo_extensions():
    """EHLO lists PIPELINING (RFC 2920), SIZE n (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
    (RFC 6531), CHUNKING (RFC 3030), DSN (RFC 3461 4) and ENHANCEDSTATUSCODES (RFC 2034);
    multi-line per RFC 5321 4.2.1."""
    run = converse(EHLO, max_message_size=1000)
    assert run.outputs == [ehlo_reply(size=1000)]
    assert run.outputs[0].wire == (
        b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n")
    assert run.session.info.esmtp is True


@pytest.mark.parametrize(("listener", "tls", "settings", "extra"), [
    ("smtp", None, {}, ()),
    ("smtp", None, {"tls_available": True}, ("STARTTLS",)),
    ("smtp", "TLSv1.3", {"tls_available": True}, ()),
    ("smtp", "TLSv1.3", {"allow_plaintext_auth": True}, ()),
    ("submission", None, {"tls_available": True}, ("STARTTLS",)),
    ("submission", "TLSv1.3", {"tls_available": True}, ("AUTH PLAIN LOGIN",)),
    ("submissions", "TLSv1.3", {"tls_available": True}, ("AUTH PLAIN LOGIN",)),
    ("submission", None, {"allow_plaintext_auth": True}, ("AUTH PLAIN LOGIN",)),
])
def test_ehlo_starttls_and_auth(listener, tls, settings, extra):
    """STARTTLS is offered only when a certificate exists and TLS is not active (RFC 3207 4);
    AUTH only on submission listeners, over TLS or with allow_plaintext_auth (RFC 4954 4,
    RFC 8314 3.3)."""
    run = converse(EHLO, listener=listener, tls=tls, **settings)
    assert run.outputs == [ehlo_reply(*extra)]


def test_ehlo_resets_the_transaction():
    """EHLO in a transaction resets it, like RSET (RFC 5321 4.1.4)."""
    run = converse(EHLO + RCPT + MAIL, setup=TXN)
    assert run.outputs == [ehlo_reply(), R.R503_NEED_MAIL, R.R250_SENDER_OK]
    assert run.session.envelope.recipients == []


def test_helo_resets_the_transaction():
    """HELO resets a transaction too (RFC 5321 4.1.4)."""
    run = converse(HELO + b"DATA\r\n", setup=TXN)
    assert run.outputs == [Reply(250, None, HOST), R.R503_NEED_MAIL]


def test_rset():
    """RSET clears sender and recipients, keeps the EHLO (RFC 5321 4.1.1.5)."""
    run = converse(b"RSET\r\nRCPT TO:<alice@example.com>\r\n" + MAIL, setup=TXN)
    assert run.outputs == [R.R250_RESET, R.R503_NEED_MAIL, R.R250_SENDER_OK]
    assert run.session.info.helo == "client.example.org"


# --------------------------------------------------------------------------------------------
# MAIL
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "expected", "fields"), [
    (b" SIZE=1000", R.R250_SENDER_OK, {"declared_size": 1000}),
    (b" size=1000", R.R250_SENDER_OK, {"declared_size": 1000}),
    (b" SIZE=26214400", R.R250_SENDER_OK, {"declared_size": SIZE}),
    (b" SIZE=26214401", R.R552_TOO_BIG, {}),
    (b" SIZE=99999999999999999999", R.R552_TOO_BIG, {}),
    (b" SIZE=999999999999999999999", R.R501_SYNTAX.with_text("SIZE needs a number"), {}),
    (b" SIZE=ten", R.R501_SYNTAX.with_text("SIZE needs a number"), {}),
    (b" SIZE=-1", R.R501_SYNTAX.with_text("SIZE needs a number"), {}),
    (b" SIZE", R.R501_SYNTAX.with_text("SIZE needs a number"), {}),
    (b" BODY=7BIT", R.R250_SENDER_OK, {"body_type": "7BIT"}),
    (b" BODY=8bitmime", R.R250_SENDER_OK, {"body_type": "8BITMIME"}),
    (b" BODY=BINARYMIME", R.R501_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME"), {}),
    (b" BODY", R.R501_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME"), {}),
    (b" SMTPUTF8", R.R250_SENDER_OK, {"smtputf8": True}),
    (b" SMTPUTF8=YES", R.R555_UNKNOWN_PARAMETER, {}),
    (b" RET=HDRS", R.R250_SENDER_OK, {"ret": "HDRS"}),
    (b" X-FOO", R.R555_UNKNOWN_PARAMETER, {}),
    (b" AUTH=<>", R.R555_UNKNOWN_PARAMETER, {}),  # not on port 25
    (b" SIZE=10 BODY=8BITMIME SMTPUTF8", R.R250_SENDER_OK,
     {"declared_size": 10, "body_type": "8BITMIME", "smtputf8": True}),
    (b" SIZE=1=2", R.R501_SYNTAX, {}),
    (b"SIZE=10", R.R501_SYNTAX, {}),  # no space after the path
])
def test_mail_parameters(params, expected, fields):
    """MAIL parameters: SIZE (RFC 1870 6: 552 over the limit, 501 malformed), BODY (RFC 6152:
    7BIT or 8BITMIME, else 501), SMTPUTF8 (RFC 6531 3.4), anything else 555 (RFC 5321
    4.1.1.11)."""
    run = converse(b"MAIL FROM:<sender@example.org>" + params + b"\r\n", setup=EHLO)
    assert run.outputs == [expected]
    if expected == R.R250_SENDER_OK:
        for name, value in fields.items():
            assert getattr(run.session.envelope, name) == value
        assert run.session.state is State.MAIL
    else:
        assert run.session.state is State.READY
        assert run.handler.calls == []


def test_mail_parameters_after_helo():
    """After HELO no service extensions are in force, so any MAIL parameter is 555 (RFC 5321
    4.1.1.11, RFC 1869 4.4); a plain MAIL works."""
    run = converse(b"MAIL FROM:<a@example.org> SIZE=10\r\nMAIL FROM:<a@example.org>\r\n",
                   setup=HELO)
    assert run.outputs == [R.R555_UNKNOWN_PARAMETER, R.R250_SENDER_OK]


def test_null_sender():
    """The null reverse-path <> is accepted (RFC 5321 4.5.5, 3.6.3), with parameters too."""
    run = converse(b"MAIL FROM:<> SIZE=10\r\n", setup=EHLO)
    assert run.outputs == [R.R250_SENDER_OK]
    assert run.session.envelope.sender == ""
    assert run.handler.calls == [("check_sender", "")]


def test_source_route_ignored():
    """A source route in the path is accepted and ignored (RFC 5321 4.1.2, 3.3 and C)."""
    run = converse(b"MAIL FROM:<@relay.example,@other.example:bob@example.org>\r\n", setup=EHLO)
    assert run.outputs == [R.R250_SENDER_OK]
    assert run.session.envelope.sender == "bob@example.org"


def test_mail_lenient_spacing():
    """Real clients put a space after the colon or omit the brackets; both are accepted
    (RFC 5321 4.1.1.2 requires neither, 'be liberal' per RFC 1123 1.2.2)."""
    run = converse(b"MAIL FROM: <bob@example.org>\r\nRSET\r\nMAIL FROM:bob@example.org\r\n",
                   setup=EHLO)
    assert run.outputs == [R.R250_SENDER_OK, R.R250_RESET, R.R250_SENDER_OK]


def test_non_ascii_sender_needs_smtputf8():
    """A non-ASCII address without SMTPUTF8 is 553 5.6.7 (RFC 6531 3.5); with it, accepted."""
    run = converse("MAIL FROM:<josé@example.org>\r\nMAIL FROM:<josé@example.org> SMTPUTF8\r\n"
                   .encode(), setup=EHLO)
    assert run.outputs == [R.R553_NEEDS_SMTPUTF8, R.R250_SENDER_OK]
    assert run.session.envelope.sender == "josé@example.org"
    assert run.session.envelope.smtputf8


@pytest.mark.parametrize(("line", "expected"), [
    (b"MAIL FROM:<not an address>", R.R553_BAD_ADDRESS),
    (b"MAIL FROM:<bob@>", R.R553_BAD_ADDRESS),
    (b"MAIL FROM:<@example.org>", R.R553_BAD_ADDRESS),
    (b"MAIL FROM:<bob@exa mple.org>", R.R553_BAD_ADDRESS),
    (b"MAIL FROM:<" + b"b" * 65 + b"@example.org>", R.R553_BAD_ADDRESS),
    (b"MAIL FROM:<bob@example.org", R.R501_SYNTAX),
    (b"MAIL FRM:<bob@example.org>", R.R501_SYNTAX),
    (b"MAIL TO:<bob@example.org>", R.R501_SYNTAX),
    (b"MAIL", R.R501_SYNTAX),
])
def test_mail_bad_path(line, expected):
    """A malformed path is 553 5.1.3 (RFC 5321 4.1.2, 4.5.3.1.1), bad syntax 501 (4.2.3)."""
    run = converse(line + b"\r\n", setup=EHLO)
    assert run.outputs == [expected]
    assert run.session.state is State.READY


def test_sender_refused_by_policy():
    """A refusal from check_sender is passed on and no transaction starts (RFC 5321 4.1.1.2)."""
    refusal = Reply(550, "5.7.1", "Sender rejected")

    def handler():
        return FakeHandler(refuse_senders={"spam@example.org": refusal})

    run = converse(b"MAIL FROM:<spam@example.org>\r\nRCPT TO:<alice@example.com>\r\n",
                   setup=EHLO, handler=handler)
    assert run.outputs == [refusal, R.R503_NEED_MAIL]


# --------------------------------------------------------------------------------------------
# RCPT, DATA without recipients, VRFY, HELP, NOOP, QUIT
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [b"<postmaster>", b"<Postmaster>", b"postmaster", b"<POSTMASTER>"])
def test_rcpt_postmaster_without_domain(path):
    """RCPT TO:<postmaster> without a domain must be accepted (RFC 5321 4.5.1, 4.1.1.3)."""
    run = converse(b"RCPT TO:" + path + b"\r\n", setup=EHLO + MAIL)
    assert run.outputs == [R.R250_RECIPIENT_OK]
    assert run.handler.calls[-1] == ("check_recipient", "postmaster")
    assert run.session.envelope.recipients == ["postmaster"]


@pytest.mark.parametrize(("line", "expected"), [
    (b"RCPT TO:<>", R.R553_BAD_ADDRESS),
    (b"RCPT TO:<postmaster@>", R.R553_BAD_ADDRESS),
    (b"RCPT TO:<bad address>", R.R553_BAD_ADDRESS),
    (b"RCPT FROM:<alice@example.com>", R.R501_SYNTAX),
    (b"RCPT TO:<alice@example.com> X-NOTIFY=NEVER", R.R555_UNKNOWN_PARAMETER),
    (b"RCPT TO:<alice@example.com> SMTPUTF8", R.R555_UNKNOWN_PARAMETER),
    ("RCPT TO:<zoë@example.com>".encode(), R.R553_NEEDS_SMTPUTF8),
])
def test_rcpt_refusals(line, expected):
    """Bad recipient paths 553 (RFC 5321 4.1.2), unknown RCPT parameters 555 (4.1.1.11), a
    non-ASCII recipient without SMTPUTF8 553 5.6.7 (RFC 6531 3.5)."""
    run = converse(line + b"\r\n", setup=EHLO + MAIL)
    assert run.outputs == [expected]
    assert run.session.envelope.recipients == []
    assert not any(call[0] == "check_recipient" for call in run.handler.calls)


def test_non_ascii_recipient_with_smtputf8():
    """With MAIL ... SMTPUTF8 a UTF-8 recipient is accepted (RFC 6531 3.4)."""
    run = converse("RCPT TO:<zoë@example.com>\r\n".encode(),
                   setup=EHLO + b"MAIL FROM:<a@example.org> SMTPUTF8\r\n")
    assert run.outputs == [R.R250_RECIPIENT_OK]
    assert run.session.envelope.recipients == ["zoë@example.com"]


def test_max_recipients():
    """Past max_recipients, RCPT gets 452 4.5.3 (RFC 5321 4.5.3.1.10) without asking policy,
    and the message still goes to the accepted ones."""
    rcpts = b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(4))
    run = converse(MAIL + rcpts + b"DATA\r\nhi\r\n.\r\n", setup=EHLO, max_recipients=3)
    assert run.outputs == [R.R250_SENDER_OK] + [R.R250_RECIPIENT_OK] * 3 + [
        R.R452_TOO_MANY_RECIPIENTS, R.R354_START_DATA, QUEUED]
    assert ("check_recipient", "r3@example.com") not in run.handler.calls
    assert run.handler.messages[0].recipients == ["r0@example.com", "r1@example.com",
                                                  "r2@example.com"]


def test_data_without_valid_recipients():
    """DATA when every RCPT was refused is 554 (RFC 5321 3.3, 4.1.1.4); no body is opened."""
    run = converse(b"RCPT TO:<nobody@example.com>\r\nDATA\r\nRSET\r\n", setup=EHLO + MAIL)
    assert run.outputs == [R.R550_NO_SUCH_USER, R.R554_NO_VALID_RECIPIENTS, R.R250_RESET]
    assert ("open_body",) not in run.handler.calls


def test_data_takes_no_argument():
    """DATA has no parameters (RFC 5321 4.1.1.4): 501, the transaction stays."""
    run = converse(b"DATA now\r\n", setup=TXN)
    assert run.outputs == [R.R501_SYNTAX.with_text("DATA takes no arguments")]
    assert run.session.state is State.RCPT


def test_vrfy_never_discloses():
    """VRFY answers 252 whether or not the user exists, and never asks policy
    (RFC 5321 3.5.3, 7.3); without an argument, 501."""
    run = converse(b"VRFY alice\r\nVRFY nobody@example.com\r\nVRFY\r\n", setup=EHLO)
    assert run.outputs == [R.R252_CANNOT_VRFY, R.R252_CANNOT_VRFY,
                           R.R501_SYNTAX.with_text("VRFY requires an address")]
    assert "alice" not in str(run.outputs[0])
    assert run.handler.calls == []


def test_help_and_noop():
    """HELP is 214 (RFC 5321 4.1.1.8); NOOP is 250 with or without an argument (4.1.1.9)."""
    run = converse(b"HELP\r\nHELP MAIL\r\nNOOP\r\nNOOP hello\r\n")
    assert run.outputs == [R.R214_HELP, R.R214_HELP, R.R250_OK, R.R250_OK]
    assert run.outputs[0].wire.startswith(b"214-2.0.0 ")


def test_quit():
    """QUIT: 221 and close (RFC 5321 4.1.1.10); whatever was pipelined after it is ignored and
    an open transaction is dropped."""
    run = converse(b"QUIT\r\nNOOP\r\n", setup=TXN)
    assert run.outputs == [R.R221_BYE, Close()]
    assert run.session.state is State.CLOSED
    assert run.session.feed(b"NOOP\r\n") == []


# --------------------------------------------------------------------------------------------
# PIPELINING and DATA content
# --------------------------------------------------------------------------------------------


def test_pipelined_transaction():
    """MAIL, RCPT, RCPT, DATA sent in one go get their replies in order (RFC 2920 3.1), and so
    do commands pipelined after the final dot."""
    data = (MAIL + RCPT + b"RCPT TO:<nobody@example.com>\r\nDATA\r\nfirst\r\n.\r\n"
            + b"MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n")
    run = converse(data, setup=EHLO)
    assert run.outputs == [
        R.R250_SENDER_OK, R.R250_RECIPIENT_OK, R.R550_NO_SUCH_USER, R.R354_START_DATA, QUEUED,
        R.R250_SENDER_OK, R.R250_RECIPIENT_OK, R.R354_START_DATA, QUEUED, R.R221_BYE, Close()]
    assert run.handler.messages == [
        Message("sender@example.org", [ALICE], "7BIT", False, b"first\n"),
        Message("", ["postmaster"], "7BIT", False, b"second\n"),
    ]
    assert run.session.accepted == 2


def deliver(content: bytes, setup: bytes = TXN, **kwargs) -> Run:
    """DATA with ``content`` (which must include the final dot) and NOOP after it."""
    return converse(b"DATA\r\n" + content + b"NOOP\r\n", setup=setup, **kwargs)


def test_data_dot_unstuffing_and_line_endings():
    """Leading dots are unstuffed (RFC 5321 4.5.2) and CRLF becomes LF in the store; a line
    that is only dots loses one."""
    run = deliver(b"Subject: dots\r\n\r\n..leading\r\n...\r\n..\r\nmid.dle .\r\n.\r\n")
    assert run.outputs == [R.R354_START_DATA, QUEUED, R.R250_OK]
    assert run.handler.messages[0].content == b"Subject: dots\n\n.leading\n..\n.\nmid.dle .\n"
    assert not run.sink.discarded


def test_data_empty_message():
    """The terminator right after the 354 is an empty message (RFC 5321 4.1.1.4: the
    terminator's first CRLF is the one ending the DATA command)."""
    run = deliver(b".\r\n")
    assert run.outputs == [R.R354_START_DATA, QUEUED, R.R250_OK]
    assert run.handler.messages[0].content == b""


def test_data_eight_bit_content():
    """8-bit and UTF-8 octets pass through untouched (RFC 6152, RFC 6531)."""
    body = "Subject: Grüße\r\n\r\n日本語\r\n".encode() + bytes(range(0x80, 0x100)) + b"\x00\x7f\r\n"
    run = deliver(body + b".\r\n", setup=EHLO + b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
                  + RCPT)
    assert run.handler.messages[0].content == body.replace(b"\r\n", b"\n")
    assert run.handler.messages[0].body_type == "8BITMIME"


def test_data_reading_state():
    """While content is read the session is in DATA (the data timeout applies, RFC 5321
    4.5.3.2.5); after the dot it is READY again."""
    session = make_session()
    session.feed(TXN + b"DATA\r\npart")
    assert session.state is State.DATA and session.reading_data
    session.feed(b"ial\r\n.\r\n")
    assert session.state is State.READY and not session.reading_data


def test_data_size_limit():
    """Size is enforced while reading: past the limit nothing more is stored, the rest is read
    to the dot and answered 552 5.3.4 (RFC 1870 6.3, RFC 5321 4.5.3.1.7); the session stays
    usable."""
    body = b"x" * 30 + b"\r\n"  # 32 octets a line with CRLF
    run = deliver(body * 5 + b".\r\n" + MAIL + RCPT + b"DATA\r\n" + body * 3 + b".\r\n",
                  max_message_size=100)
    assert run.outputs == [R.R354_START_DATA, R.R552_TOO_BIG, R.R250_SENDER_OK,
                           R.R250_RECIPIENT_OK, R.R354_START_DATA, QUEUED, R.R250_OK]
    assert [m.content for m in run.handler.messages] == [body.replace(b"\r\n", b"\n") * 3]
    assert run.handler.sinks[0].discarded
    assert len(run.handler.sinks[0].data) <= 100


def test_data_size_limit_counts_crlf():
    """The limit is on the message as sent, CRLF line ends counted (RFC 1870 3): exactly at the
    limit passes, one more octet does not."""
    at_limit = b"x" * 98 + b"\r\n"
    assert deliver(at_limit + b".\r\n", max_message_size=100).outputs[1] == QUEUED
    assert deliver(b"y" + at_limit + b".\r\n", max_message_size=100).outputs[1] == R.R552_TOO_BIG


@pytest.mark.parametrize(("line", "ok"), [
    (b"x" * 998 + b"\r\n", True),  # 1000 octets: the limit
    (b"." * 2 + b"x" * 997 + b"\r\n", True),  # 1001 octets of which one is the stuffed dot
    (b"x" * 999 + b"\r\n", False),  # 1001 octets, no stuffed dot
    (b"." * 2 + b"x" * 998 + b"\r\n", False),  # 1002 octets with the stuffed dot
    (b"x" * 5000 + b"\r\n", False),
])
def test_data_line_length(line, ok):
    """With ``max_line_length: 1000`` (RFC 5321 4.5.3.1.6's limit) a text line may be 1000
    octets with its CRLF, not counting a stuffed dot (RFC 5321 4.5.2); a longer one gets
    554 5.6.0 after the dot, and the session goes on."""
    run = deliver(b"Subject: long\r\n\r\n" + line + b"end\r\n.\r\n", max_line_length=1000)
    if ok:
        assert run.outputs == [R.R354_START_DATA, QUEUED, R.R250_OK]
        stored = line[1:] if line.startswith(b".") else line
        assert run.handler.messages[0].content == b"Subject: long\n\n" + stored[:-2] + b"\nend\n"
    else:
        assert run.outputs == [R.R354_START_DATA, R.R554_LINE_TOO_LONG, R.R250_OK]
        assert run.handler.messages == []
        assert run.sink.discarded


def test_data_fault_reply_does_not_depend_on_packets():
    """Content both too big and with an over-long line gets 554 5.6.0 however it arrives,
    not 552 in some packetisations (RFC 5321 4.5.3.1.6, 4.5.3.1.7)."""
    run = deliver((b"x" * 30 + b"\r\n") * 4 + b"y" * 1200 + b"\r\n.\r\n", max_message_size=40,
                  max_line_length=1000)
    assert run.outputs == [R.R354_START_DATA, R.R554_LINE_TOO_LONG, R.R250_OK]


@pytest.mark.parametrize("line", [b"x" * 999 + b"\r\n", b"<p>" * 2000 + b"\r\n",
                                  b".." + b"y" * 6000 + b"\r\n"])
def test_data_long_lines_accepted_by_default(line):
    """Real mail has body lines over RFC 5321 4.5.3.1.6's 1000 octets (HTML newsletters) and
    Postfix accepts them: by default only the message size bounds a line, which is stored
    byte-exact (a stuffed dot removed, RFC 5321 4.5.2) however the packets split it
    (no line length limit in the body, as Postfix)."""
    run = deliver(b"Subject: long\r\n\r\n" + line + b"end\r\n.\r\n")
    assert run.outputs == [R.R354_START_DATA, QUEUED, R.R250_OK]
    stored = line[1:] if line.startswith(b".") else line
    assert run.handler.messages[0].content == b"Subject: long\n\n" + stored[:-2] + b"\nend\n"


HOP = b"Received: from a.example\r\n\tby b.example; Sun, 6 Dec 2026 03:00:00 +0000\r\n"


@pytest.mark.parametrize(("hops", "accepted"), [(50, True), (51, False)])
def test_data_mail_loop(hops, accepted):
    """RFC 5321 6.3: a message with more than max_received_headers (50, Postfix's
    hopcount_limit) Received fields is in a loop: 554 5.4.6 (RFC 3463) after the dot, nothing
    handed on; at the limit it is accepted."""
    session = make_session()
    session.feed(TXN)
    outputs = session.feed(b"DATA\r\n" + HOP * hops + b"Subject: loop\r\n\r\n" + HOP +
                           b".\r\nNOOP\r\n")
    assert outputs == [R.R354_START_DATA, QUEUED if accepted else R.R554_MAIL_LOOP, R.R250_OK]
    assert len(session.handler.messages) == int(accepted)
    assert session.handler.sinks[0].discarded is not accepted


def test_bdat_mail_loop():
    """The same for BDAT (RFC 3030), however the chunks cut the header section; the limit is
    configurable (limits.max_received_headers)."""
    content = HOP * 4 + b"\r\nbody\r\n"
    half = len(content) // 2
    data = (b"BDAT %d\r\n" % half + content[:half] +
            b"BDAT %d LAST\r\n" % (len(content) - half) + content[half:])
    assert converse(data, setup=TXN, max_received_headers=3).outputs == [
        chunk_ok(half), R.R554_MAIL_LOOP]
    assert converse(data, setup=TXN, max_received_headers=4).outputs == [chunk_ok(half), QUEUED]


def test_bdat_line_length_when_configured():
    """BDAT content obeys a configured ``max_line_length`` too (RFC 3030 2, RFC 5321
    4.5.3.1.6), counted across chunk boundaries; by default the same line is accepted."""
    data = b"BDAT 600\r\n" + b"z" * 600 + b"BDAT 602 LAST\r\n" + b"z" * 600 + b"\r\n"
    run = converse(data, setup=TXN, max_line_length=1000)
    assert run.outputs == [chunk_ok(600), R.R554_LINE_TOO_LONG]
    assert run.handler.messages == []
    run = converse(data, setup=TXN)
    assert run.outputs == [chunk_ok(600), QUEUED]
    assert run.handler.messages[0].content == b"z" * 1200 + b"\n"


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\n.\r"]


@pytest.mark.parametrize("payload", SMUGGLING, ids=repr)
def test_data_smuggling_refused(payload):
    """SMTP smuggling: only CRLF.CRLF ends DATA (RFC 5321 4.1.1.4, 2.3.8). A bare CR or LF
    around a dot gets 521 and a close; the injected transaction never reaches the handler
    (CVE-2023-51764 class; aiosmtpd's \\n.\\r\\n case included)."""
    run = deliver(b"Subject: hi\r\n\r\nhello" + payload + EVIL)
    assert run.outputs == [R.R354_START_DATA, R.R521_BARE_NEWLINE, Close()]
    assert run.session.state is State.CLOSED
    assert ("check_sender", "evil@attacker.example") not in run.handler.calls
    assert ("accept_message",) not in run.handler.calls
    assert run.sink.discarded


@pytest.mark.parametrize("payload", SMUGGLING, ids=repr)
def test_data_smuggling_at_start_of_content(payload):
    """The same payloads right after the 354 (whose CRLF the dot line would follow)."""
    run = deliver(payload + EVIL)
    assert run.outputs[-2:] == [R.R521_BARE_NEWLINE, Close()]
    assert ("accept_message",) not in run.handler.calls


def test_handler_exception_in_accept_message():
    """A 451 4.3.0 answer to MessageComplete (what the shell answers when the policy fails,
    see tests/unit/test_policy_call.py) is passed on, not counted, and the session goes on
    with the pipelined commands (RFC 5321 4.2.5 transient)."""
    def handler():
        return FakeHandler(accept_replies=[RuntimeError("disk on fire")])

    run = deliver(b"one\r\n.\r\n" + MAIL + RCPT + b"DATA\r\ntwo\r\n.\r\n", handler=handler)
    assert run.outputs == [R.R354_START_DATA, R.R451_LOCAL_ERROR, R.R250_SENDER_OK,
                           R.R250_RECIPIENT_OK, R.R354_START_DATA, QUEUED, R.R250_OK]
    assert "disk on fire" not in str(run.outputs[1])
    assert run.handler.sinks[0].discarded
    assert run.session.accepted == 1


def test_handler_refuses_message():
    """A non-250 reply from accept_message is passed on and not counted as accepted."""
    refusal = Reply(554, "5.7.1", "Rejected by content filter")
    run = deliver(b"spam\r\n.\r\n", handler=lambda: FakeHandler(accept_replies=[refusal]))
    assert run.outputs == [R.R354_START_DATA, refusal, R.R250_OK]
    assert run.session.accepted == 0


# --------------------------------------------------------------------------------------------
# BDAT (RFC 3030)
# --------------------------------------------------------------------------------------------


def test_bdat_chunks():
    """BDAT chunks are exactly <size> octets, each answered 250, the message accepted after
    LAST (RFC 3030 2); commands in the content are just content."""
    run = converse(b"BDAT 6\r\nNOOP\r\nBDAT 6 LAST\r\nQUIT\r\n", setup=TXN)
    assert run.outputs == [chunk_ok(6), QUEUED]
    assert run.handler.messages[0].content == b"NOOP\nQUIT\n"


def test_bdat_exact_octets_and_binary():
    """Content is counted, not parsed: dots are not unstuffed, a CRLF split across chunks
    (CR | LF) is one line end, and text that looks like SMTP stays content (RFC 3030 2, 3)."""
    chunks = [b"\x00\xff\x80 line one\r", b"\n.\r\n..dots\r\nMAIL FROM:<evil@attacker.example>\r",
              b"\nBDAT 3\r\n\r", b"\n"]
    data = b"".join(b"BDAT %d%s\r\n%s" % (len(c), b" LAST" if i == 3 else b"", c)
                    for i, c in enumerate(chunks))
    run = converse(data + b"NOOP\r\n", setup=TXN)
    total = [sum(map(len, chunks[: i + 1])) for i in range(3)]
    assert run.outputs == [chunk_ok(total[0]), chunk_ok(total[1]), chunk_ok(total[2]), QUEUED,
                           R.R250_OK]
    assert run.handler.messages[0].content == (
        b"\x00\xff\x80 line one\n.\n..dots\nMAIL FROM:<evil@attacker.example>\nBDAT 3\n\n")
    assert ("check_sender", "evil@attacker.example") not in run.handler.calls


def test_bdat_zero_last():
    """BDAT 0 LAST ends a message (RFC 3030 2), also as the only chunk (an empty message)."""
    run = converse(b"BDAT 3\r\nabcBDAT 0 LAST\r\n" + MAIL + RCPT + b"BDAT 0 LAST\r\n", setup=TXN)
    assert run.outputs == [chunk_ok(3), QUEUED, R.R250_SENDER_OK, R.R250_RECIPIENT_OK, QUEUED]
    assert [m.content for m in run.handler.messages] == [b"abc", b""]


@pytest.mark.parametrize(("setup", "refusal"), [
    (b"", R.R503_HELO_FIRST),
    (EHLO, R.R503_NEED_MAIL),
    (EHLO + MAIL, R.R554_NO_VALID_RECIPIENTS),
    (EHLO + MAIL + b"RCPT TO:<nobody@example.com>\r\n", R.R554_NO_VALID_RECIPIENTS),
])
def test_bdat_refused_chunk_is_still_read(setup, refusal):
    """A refused BDAT's chunk is read and discarded, never run as commands (RFC 3030 2: the
    server must consume the chunk); LAST ends the failed transaction."""
    run = converse(b"BDAT 6\r\nNOOP\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n", setup=setup)
    assert run.outputs == [refusal, refusal, R.R250_OK]
    assert ("open_body",) not in run.handler.calls
    assert run.session.state is (State.INITIAL if not setup else State.READY)


def test_bdat_refused_outside_a_transaction_leaves_nothing_behind():
    """A BDAT refused before MAIL does not poison the next transaction (RFC 3030 2)."""
    run = converse(b"BDAT 3\r\nabc" + MAIL + RCPT + b"BDAT 2 LAST\r\nhi", setup=EHLO)
    assert run.outputs == [R.R503_NEED_MAIL, R.R250_SENDER_OK, R.R250_RECIPIENT_OK, QUEUED]
    assert run.handler.messages[0].content == b"hi"


def test_bdat_refused_without_recipients_fails_the_transaction():
    """After a refused BDAT the transaction has failed: no more RCPT or DATA in it, only the
    remaining chunks (RFC 3030 2), then it starts over."""
    run = converse(b"BDAT 2\r\nhi" + RCPT + b"DATA\r\nBDAT 0 LAST\r\n" + MAIL, setup=EHLO + MAIL)
    assert [r.code for r in run.replies] == [554, 503, 554, 554, 250]
    assert run.outputs[-1] == R.R250_SENDER_OK


def test_data_or_rcpt_after_bdat():
    """DATA and RCPT after a BDAT chunk in the same transaction are 503 (RFC 3030 2)."""
    run = converse(b"BDAT 2\r\nhiDATA\r\nRCPT TO:<bob@example.com>\r\nBDAT 1 LAST\r\n!", setup=TXN)
    assert run.outputs == [chunk_ok(2), R.R503_BAD_SEQUENCE.with_text("DATA cannot follow BDAT"),
                           R.R503_BAD_SEQUENCE.with_text("RCPT cannot follow BDAT"), QUEUED]
    assert run.handler.messages[0] == Message("sender@example.org", [ALICE], "7BIT", False,
                                              b"hi!")


@pytest.mark.parametrize("arg", [b"", b" x", b" -1", b" 5 MORE", b" 5 LAST x", b" 1e3",
                                 " ²".encode(), " ١٢".encode(), b" 1234567890123456"])
def test_bdat_malformed_size_closes(arg):
    """Without a valid size the octets after BDAT cannot be framed: 501 and close (RFC 3030 2,
    3 'bdat-cmd' syntax)."""
    run = converse(b"BDAT" + arg + b"\r\nhello\r\nNOOP\r\n", setup=TXN)
    assert run.outputs == [
        R.R501_SYNTAX.with_text("Syntax: BDAT <size> [LAST]; closing connection"), Close()]
    assert run.session.state is State.CLOSED
    assert run.handler.sinks == []


def test_bdat_last_is_case_insensitive():
    """The LAST keyword is case-insensitive (RFC 3030 3, RFC 5321 2.4)."""
    assert converse(b"BDAT 2 last\r\nhi", setup=TXN).outputs == [QUEUED]


@pytest.mark.parametrize("content", [b"bad\nline\r\n", b"bare\rcr\r\n", b"ends in cr\r",
                                     b"\n", b"\r"])
def test_bdat_bare_newline(content):
    """A bare CR or LF in BDAT content cannot end anything (the counts frame it) but is refused
    with 554 5.6.0 at the end of the message (RFC 5321 2.3.8); nothing is stored."""
    run = converse(b"BDAT %d LAST\r\n%s" % (len(content), content) + b"NOOP\r\n", setup=TXN)
    assert run.outputs == [R.R554_BARE_NEWLINE_IN_BDAT, R.R250_OK]
    assert run.handler.messages == []
    assert run.sink.discarded


R552_CLOSING = R.R552_TOO_BIG.with_text("Message too big for system; closing connection")


def test_bdat_announced_too_big_is_refused_unread():
    """A chunk announced past max_message_size gets 552 5.3.4 and the close before any of
    it is read, whatever follows (RFC 1870 6.1)."""
    run = converse(b"BDAT 30 LAST\r\n" + b"z" * 25 + b"\nabcd", setup=TXN, max_message_size=20)
    assert run.outputs == [R552_CLOSING, Close()]
    assert run.handler.messages == []


def test_bdat_bare_newline_in_an_early_chunk():
    """A fault found in an early chunk refuses that chunk and the rest of the message
    (RFC 3030 2)."""
    run = converse(b"BDAT 4\r\na\nb\rBDAT 3 LAST\r\n\nok", setup=TXN)
    assert run.outputs == [R.R554_BARE_NEWLINE_IN_BDAT, R.R554_BARE_NEWLINE_IN_BDAT]
    assert run.handler.messages == []


def test_bdat_size_limit():
    """A BDAT chunk that would take the message past max_message_size together with the chunks
    before it gets 552 5.3.4 and the close, unread (RFC 1870 6.1); the body
    received so far is discarded. A message of exactly the limit is accepted."""
    run = converse(b"BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 1 LAST\r\nx", setup=TXN,
                   max_message_size=10)
    assert run.outputs == [chunk_ok(8), R552_CLOSING, Close()]
    assert run.handler.messages == []
    assert run.handler.sinks[0].discarded
    run = converse(b"BDAT 8\r\n12345678BDAT 2 LAST\r\nab", setup=TXN, max_message_size=10)
    assert [m.content for m in run.handler.messages] == [b"12345678ab"]


def test_bdat_pipelined_with_the_envelope():
    """A whole BDAT transaction in one write, as PIPELINING allows (RFC 2920, RFC 3030 4.2)."""
    run = converse(EHLO + MAIL + RCPT + b"BDAT 5 LAST\r\nhello" + b"QUIT\r\n")
    assert run.outputs == [ehlo_reply(), R.R250_SENDER_OK, R.R250_RECIPIENT_OK, QUEUED,
                           R.R221_BYE, Close()]


def test_bdat_eof_mid_chunk():
    """The connection ending inside a chunk drops the transaction (RFC 5321 3.8)."""
    session = make_session()
    session.feed(TXN + b"BDAT 100 LAST\r\npartial")
    assert session.reading_data
    assert session.feed(b"") == [Close()]
    assert session.handler.sinks[0].discarded  # type: ignore[attr-defined]
    assert session.handler.messages == []  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# STARTTLS (RFC 3207)
# --------------------------------------------------------------------------------------------


def test_starttls():
    """STARTTLS: 220 then the StartTLS output (RFC 3207 4)."""
    run = converse(b"STARTTLS\r\n", setup=EHLO, tls_available=True)
    assert run.outputs == [R.R220_READY_TLS, StartTLS()]


@pytest.mark.parametrize("after", [b"NOOP\r\n", EVIL, b"x"])
def test_starttls_with_pipelined_plaintext(after):
    """Bytes sent after STARTTLS in the same packet would be read as if they came over TLS
    (CVE-2011-0411): 554 and close, no StartTLS, nothing after it is run (RFC 3207 4.2)."""
    data = b"STARTTLS\r\n" + after
    for i in range(1, len(b"STARTTLS\r\n")):
        # Any split that delivers the end of the STARTTLS line together with the plaintext.
        session = make_session(tls_available=True)
        session.feed(EHLO)
        outputs = session.feed(data[:i]) + session.feed(data[i:])
        assert outputs == [R.R554_TLS_PIPELINED, Close()], i
        assert session.handler.calls == []  # type: ignore[attr-defined]
    session = make_session(tls_available=True)
    session.feed(EHLO)
    assert session.feed(EHLO + data) == [ehlo_reply("STARTTLS"), R.R554_TLS_PIPELINED, Close()]


def test_after_tls_started_the_session_starts_over():
    """After the handshake the client must EHLO again; the old EHLO, envelope and login are
    forgotten (RFC 3207 4.2), STARTTLS is no longer offered, AUTH now is."""
    session = make_session(listener="submission", tls_available=True, allow_plaintext_auth=True)
    session.feed(EHLO + b"AUTH PLAIN " + plain() + b"\r\n")
    assert session.info.auth_user == ALICE
    assert session.feed(b"STARTTLS\r\n") == [R.R220_READY_TLS, StartTLS()]
    session.tls_started("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384")
    assert session.state is State.INITIAL
    assert session.info.auth_user is None and session.info.helo is None
    assert session.envelope.sender is None and session.envelope.recipients == []
    assert session.feed(MAIL) == [R.R503_HELO_FIRST]
    assert session.feed(EHLO) == [ehlo_reply("AUTH PLAIN LOGIN")]
    assert session.feed(MAIL) == [R.R530_AUTH_REQUIRED]
    assert session.feed(b"STARTTLS\r\n") == [R.R503_BAD_SEQUENCE.with_text("TLS already active")]
    assert session.info.protocol() == "ESMTPS"


def test_starttls_unavailable_or_malformed():
    """Without a certificate STARTTLS is 502 (RFC 3207 4 'not offered'); with an argument 501
    (RFC 3207 4); before EHLO 503."""
    assert converse(b"STARTTLS\r\n", setup=EHLO).outputs == [R.R502_NOT_IMPLEMENTED]
    assert converse(b"STARTTLS now\r\n", setup=EHLO, tls_available=True).outputs == [
        R.R501_SYNTAX.with_text("STARTTLS takes no arguments")]
    assert converse(b"STARTTLS\r\n", tls_available=True).outputs == [R.R503_HELO_FIRST]


def test_starttls_when_already_tls():
    """STARTTLS over TLS is 503 (RFC 3207 4.2)."""
    run = converse(b"STARTTLS\r\n", setup=EHLO, tls="TLSv1.3", tls_available=True)
    assert run.outputs == [R.R503_BAD_SEQUENCE.with_text("TLS already active")]


# --------------------------------------------------------------------------------------------
# AUTH (RFC 4954) on submission listeners
# --------------------------------------------------------------------------------------------


def submit(data: bytes, setup: bytes = EHLO, **kwargs) -> Run:
    """A conversation on a submission listener over TLS."""
    kwargs.setdefault("tls", "TLSv1.3")
    return converse(data, setup=setup, listener="submission", **kwargs)


def test_auth_plain_initial_response():
    """AUTH PLAIN with an initial response (RFC 4954 4, RFC 4616 2): 235; MAIL is then allowed."""
    run = submit(b"AUTH PLAIN " + plain() + b"\r\n" + MAIL)
    assert run.outputs == [R.R235_AUTH_OK, R.R250_SENDER_OK]
    assert run.session.info.auth_user == ALICE
    assert run.handler.calls[0] == ("authenticate", ALICE, PASSWORD)
    assert run.session.info.protocol() == "ESMTPSA"


def test_auth_plain_empty_challenge():
    """AUTH PLAIN without a response gets an empty challenge, ``334 `` (RFC 4954 4)."""
    run = submit(b"AUTH PLAIN\r\n" + plain() + b"\r\n")
    assert run.outputs == [Reply(334, None, ""), R.R235_AUTH_OK]
    assert run.outputs[0].wire == b"334 \r\n"


def test_auth_plain_equals_is_an_empty_initial_response():
    """``=`` is a zero-length initial response (RFC 4954 4), which PLAIN cannot use: 501."""
    run = submit(b"AUTH PLAIN =\r\nNOOP\r\n")
    assert run.outputs == [R.R501_SYNTAX.with_text("Malformed authentication data"), R.R250_OK]
    assert run.handler.calls == []


def test_auth_login_two_steps():
    """AUTH LOGIN: Username: and Password: challenges, base64 encoded (draft-murchison-sasl-
    login, RFC 4954 4)."""
    run = submit(b"AUTH LOGIN\r\n" + b64(ALICE) + b"\r\n" + b64(PASSWORD) + b"\r\n")
    assert run.outputs == [Reply(334, None, "VXNlcm5hbWU6"), Reply(334, None, "UGFzc3dvcmQ6"),
                           R.R235_AUTH_OK]
    assert run.session.info.auth_user == ALICE


def test_auth_login_initial_response():
    """AUTH LOGIN with the user name as initial response skips the first challenge."""
    run = submit(b"AUTH LOGIN " + b64(ALICE) + b"\r\n" + b64(PASSWORD) + b"\r\n")
    assert run.outputs == [Reply(334, None, "UGFzc3dvcmQ6"), R.R235_AUTH_OK]


@pytest.mark.parametrize("data", [b"AUTH PLAIN\r\n*\r\n", b"AUTH LOGIN\r\n*\r\n",
                                  b"AUTH LOGIN " + b64(ALICE) + b"\r\n*\r\n"])
def test_auth_cancelled(data):
    """``*`` cancels the exchange: 501 (RFC 4954 4); the client may try again."""
    run = submit(data + b"AUTH PLAIN " + plain() + b"\r\n")
    assert run.outputs[-2:] == [R.R501_AUTH_CANCELLED, R.R235_AUTH_OK]
    assert [c for c in run.handler.calls if c[0] == "authenticate"] == [
        ("authenticate", ALICE, PASSWORD)]


@pytest.mark.parametrize(("data", "expected"), [
    (b"AUTH PLAIN !!!notbase64\r\n", R.R501_BAD_BASE64),
    (b"AUTH PLAIN\r\nYWJj=x\r\n", R.R501_BAD_BASE64),
    (b"AUTH LOGIN\r\n" + b64(ALICE) + b"\r\n%%%\r\n", R.R501_BAD_BASE64),
    (b"AUTH PLAIN " + plain(authzid="bob@example.com") + b"\r\n",
     R.R501_SYNTAX.with_text("Malformed authentication data")),
    (b"AUTH PLAIN " + b64("no nul bytes") + b"\r\n",
     R.R501_SYNTAX.with_text("Malformed authentication data")),
    (b"AUTH PLAIN " + base64.b64encode(b"\0alice\0\xff\xfe") + b"\r\n",
     R.R501_SYNTAX.with_text("Malformed authentication data")),
])
def test_auth_malformed(data, expected):
    """Undecodable base64 is 501 5.5.2 (RFC 4954 4); an authzid other than the authcid, or a
    message not shaped ``authzid NUL authcid NUL passwd``, is 501 (RFC 4616 2)."""
    run = submit(data)
    assert run.outputs[-1] == expected
    assert not any(c[0] == "authenticate" for c in run.handler.calls)
    assert run.session.state is State.READY


def test_auth_authzid_same_as_authcid():
    """An authzid equal to the authcid (any case) is fine (RFC 4616 2)."""
    run = submit(b"AUTH PLAIN " + plain(authzid="Alice@Example.com") + b"\r\n")
    assert run.outputs == [R.R235_AUTH_OK]


def test_auth_unknown_mechanism():
    """An unsupported mechanism is 504 5.5.4 (RFC 4954 4)."""
    run = submit(b"AUTH CRAM-MD5\r\nAUTH\r\n")
    assert run.outputs == [R.R504_UNKNOWN_MECHANISM, R.R504_UNKNOWN_MECHANISM]


def test_auth_before_ehlo_and_twice():
    """AUTH needs EHLO first and may succeed only once (RFC 4954 4: 503)."""
    run = submit(b"AUTH PLAIN " + plain() + b"\r\n" + EHLO + (b"AUTH PLAIN " + plain() + b"\r\n")
                 * 2, setup=b"")
    assert run.outputs == [R.R503_HELO_FIRST, ehlo_reply("AUTH PLAIN LOGIN"), R.R235_AUTH_OK,
                           R.R503_ALREADY_AUTHENTICATED]


def test_auth_on_port_25():
    """AUTH is not offered on the MX listener: 502, TLS or not (RFC 4954 4, RFC 6409 4.3)."""
    run = converse(b"AUTH PLAIN " + plain() + b"\r\n", setup=EHLO, tls="TLSv1.3")
    assert run.outputs == [R.R502_NOT_IMPLEMENTED]
    assert run.handler.calls == []


def test_auth_requires_encryption():
    """On submission without TLS and without allow_plaintext_auth: 538 5.7.11 (RFC 4954 6);
    with allow_plaintext_auth it works."""
    run = submit(b"AUTH PLAIN " + plain() + b"\r\n", tls=None)
    assert run.outputs == [R.R538_ENCRYPTION_REQUIRED]
    assert run.handler.calls == []
    run = submit(b"AUTH PLAIN " + plain() + b"\r\n", tls=None, allow_plaintext_auth=True)
    assert run.outputs == [R.R235_AUTH_OK]


def test_auth_failures():
    """Wrong credentials are 535 5.7.8 (RFC 4954 6); the third failure on one connection gets
    421 and a close (RFC 4954 4 allows limiting attempts)."""
    wrong = b"AUTH PLAIN " + plain(password="wrong") + b"\r\n"
    login_wrong = b"AUTH LOGIN\r\n" + b64(ALICE) + b"\r\n" + b64("guess") + b"\r\n"
    run = submit(wrong + login_wrong + wrong + b"NOOP\r\n")
    assert [o for o in run.outputs if not (isinstance(o, Reply) and o.code == 334)] == [
        R.R535_AUTH_FAILED, R.R535_AUTH_FAILED, R.R421_AUTH_BLOCKED, Close()]
    assert run.session.state is State.CLOSED
    assert run.session.info.auth_user is None


def test_auth_handler_421_closes():
    """When the handler answers 421 (the client IP is blocked), the session closes."""
    blocked = Reply(421, "4.7.0", "Too many failed logins from your address")
    run = submit(b"AUTH PLAIN " + plain(password="x") + b"\r\nNOOP\r\n",
                 handler=lambda: FakeHandler(auth_failure=blocked))
    assert run.outputs == [blocked, Close()]


def test_mail_before_auth_on_submission():
    """Submission requires a login before MAIL: 530 5.7.0 (RFC 6409 4.3, RFC 4954 6)."""
    run = submit(MAIL)
    assert run.outputs == [R.R530_AUTH_REQUIRED]
    assert run.handler.calls == []


def test_mail_auth_parameter_after_login():
    """MAIL FROM ... AUTH=<> is accepted where AUTH is offered (RFC 4954 5)."""
    run = submit(b"MAIL FROM:<alice@example.com> AUTH=<>\r\n",
                 setup=EHLO + b"AUTH PLAIN " + plain() + b"\r\n")
    assert run.outputs == [R.R250_SENDER_OK]


def test_auth_response_too_long():
    """A response longer than 12288 octets (RFC 4954 4) is 500 and ends the exchange."""
    run = submit(b"AUTH PLAIN\r\n" + b"A" * 13000 + b"\r\nAUTH PLAIN " + plain() + b"\r\n")
    assert run.outputs == [Reply(334, None, ""), R.R500_LINE_TOO_LONG, R.R235_AUTH_OK]


def test_auth_secrets_are_not_traced():
    """The transcript shows the mechanism, never the credentials (STYLE 5.5)."""
    lines: list[str] = []
    session = SessionDriver(SMTPSession(
        SessionInfo("s", "192.0.2.7", tls="TLSv1.3"),
        SMTPSettings(HOST, auth_offered=True, auth_required=True),
        trace=lambda direction, text: lines.append(f"{direction} {text}")), FakeHandler())
    session.feed(EHLO + b"AUTH PLAIN " + plain() + b"\r\n")
    session.info.auth_user = None
    session.feed(b"AUTH LOGIN\r\n" + b64(ALICE) + b"\r\n" + b64(PASSWORD) + b"\r\n")
    assert lines == ["-> EHLO client.example.org", "-> AUTH PLAIN <redacted>",
                     "-> AUTH LOGIN <redacted>", "-> <auth data>", "-> <auth data>"]


def test_full_submission_conversation():
    """EHLO, AUTH, MAIL, RCPT, DATA, QUIT on 587 with allow_plaintext_auth, byte for byte."""
    data = (EHLO + b"AUTH PLAIN " + plain() + b"\r\nMAIL FROM:<alice@example.com>\r\n"
            b"RCPT TO:<bob@elsewhere.example>\r\nDATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"
            b"QUIT\r\n")
    run = converse(data, listener="submission", allow_plaintext_auth=True)
    assert b"".join(o.wire for o in run.replies) == (
        b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
            b"250 AUTH PLAIN LOGIN\r\n"
        b"235 2.7.0 Authentication successful\r\n250 2.1.0 Sender OK\r\n"
        b"250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 Queued as 1234\r\n221 2.0.0 Bye\r\n")
    assert run.handler.messages == [Message(ALICE, ["bob@elsewhere.example"], "7BIT", False,
                                            b"Subject: hi\n\nhello\n")]


# --------------------------------------------------------------------------------------------
# SessionInfo
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("esmtp", "tls", "user", "utf8", "expected"), [
    (False, None, None, False, "SMTP"),
    (False, "TLSv1.3", "alice", True, "SMTP"),
    (True, None, None, False, "ESMTP"),
    (True, "TLSv1.3", None, False, "ESMTPS"),
    (True, None, "alice", False, "ESMTPA"),
    (True, "TLSv1.3", "alice", False, "ESMTPSA"),
    (True, None, None, True, "UTF8SMTP"),
    (True, "TLSv1.3", "alice", True, "UTF8SMTPSA"),
])
def test_received_protocol(esmtp, tls, user, utf8, expected):
    """The Received ``with`` keyword (RFC 3848 2, RFC 6531 3.7.3)."""
    info = SessionInfo("s", "192.0.2.1", esmtp=esmtp, tls=tls, auth_user=user)
    assert info.protocol(smtputf8=utf8) == expected


# --------------------------------------------------------------------------------------------
# Strictly sans-IO: requests out, answers in (the session never blocks; the shell runs policy)
# --------------------------------------------------------------------------------------------


def bare_session(**settings) -> SMTPSession:
    """A session with no policy and no driver at all: it cannot call anything."""
    return SMTPSession(SessionInfo("s", "192.0.2.7"), SMTPSettings(HOST, **settings))


def test_session_asks_instead_of_calling():
    """The session built without any policy hands out requests and stops reading until each is
    answered; the pipelined commands (RFC 2920 3.1) wait in its buffer and are answered in order
    afterwards (RFC 5321 4.1.1.2-4.1.1.4; the session is sans-IO in the strict sense)."""
    session = bare_session()
    outputs = session.feed(EHLO + MAIL + RCPT + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    sender = Envelope(sender="sender@example.org")
    assert outputs == [ehlo_reply(), CheckSender(sender)]
    assert session.pending == CheckSender(sender)
    with pytest.raises(RuntimeError):
        session.feed(b"NOOP\r\n")  # the shell must answer first
    outputs = session.answer(None)
    assert outputs == [R.R250_SENDER_OK, CheckRecipient(sender, ALICE)]
    outputs = session.answer(None)
    envelope = Envelope(sender="sender@example.org", recipients=[ALICE])
    assert outputs[:3] == [R.R250_RECIPIENT_OK, MessageStart(envelope), R.R354_START_DATA]
    assert outputs[-1] == MessageComplete(envelope)
    assert all(isinstance(out, MessageData) for out in outputs[3:-1])
    assert b"".join(out.data for out in outputs[3:-1]) == b"Subject: x\n\nhi\n"  # type: ignore[union-attr]
    assert session.answer(QUEUED) == [QUEUED, R.R221_BYE, Close()]
    assert session.accepted == 1 and session.pending is None


def test_refusals_and_credentials_are_answers():
    """A refusing answer is the reply (RFC 5321 4.1.1.2); AUTH's credentials go out as an
    Authenticate request and the user answered is logged in (RFC 4954 4)."""
    session = bare_session(auth_offered=True, auth_required=True, tls_required_for_auth=False)
    assert session.feed(EHLO + b"MAIL FROM:<a@example.org>\r\n")[-1] == R.R530_AUTH_REQUIRED
    outputs = session.feed(b"AUTH PLAIN " + plain() + b"\r\nNOOP\r\n")
    assert len(outputs) == 1 and isinstance(outputs[0], Authenticate)
    assert outputs[0].credentials.username == ALICE
    assert session.answer(ALICE) == [R.R235_AUTH_OK, R.R250_OK]
    assert session.info.auth_user == ALICE
    assert session.feed(MAIL) == [CheckSender(Envelope(sender="sender@example.org"))]
    assert session.answer(R.R553_NOT_YOUR_ADDRESS) == [R.R553_NOT_YOUR_ADDRESS]
    assert session.state is State.READY


def test_dropped_bodies_are_announced():
    """Every MessageStart ends in MessageComplete or MessageAborted, so the shell never leaks
    a body: a BDAT transaction reset by RSET (RFC 3030 2, RFC 5321 4.1.1.5), a DATA content
    over the size limit (RFC 1870 6.1), and a connection dropped mid-DATA."""
    session = bare_session(max_message_size=10)
    session.feed(EHLO + MAIL)
    session.answer(None)
    session.feed(RCPT)
    outputs = session.answer(None) + session.feed(b"BDAT 3\r\nabc") + session.feed(b"RSET\r\n")
    assert [type(out) for out in outputs] == [Reply, MessageStart, MessageData, Reply,
                                              MessageAborted, Reply]
    session.feed(MAIL)
    session.answer(None)
    session.feed(RCPT)
    outputs = session.answer(None) + session.feed(b"DATA\r\n" + b"x" * 20 + b"\r\n.\r\n")
    assert outputs[-2:] == [MessageAborted(), R.R552_TOO_BIG]
    assert not any(isinstance(out, MessageComplete) for out in outputs)
    session.feed(MAIL)
    session.answer(None)
    session.feed(RCPT)
    session.answer(None)
    assert session.feed(b"DATA\r\nabc")[-1] == R.R354_START_DATA
    assert session.abort() == [MessageAborted()]
    assert session.abort() == []


def test_auth_follows_settings_not_listener_names():
    """AUTH is offered by ``SMTPSettings.auth_offered`` (derived by the app from the listener's
    config; the session does not know listener names), as on port 25 with the settings of
    submission (RFC 4954 4; RFC 6409 4.3 only with ``auth_required``)."""
    session = bare_session(auth_offered=True, tls_required_for_auth=False)
    assert session.feed(EHLO) == [ehlo_reply("AUTH PLAIN LOGIN")]
    assert session.feed(MAIL) == [CheckSender(Envelope(sender="sender@example.org"))]
    assert bare_session().feed(EHLO) == [ehlo_reply()]
    assert bare_session(auth_offered=True).feed(EHLO) == [ehlo_reply()]  # TLS first


# --------------------------------------------------------------------------------------------
# Refused at connect (RFC 5321 3.1): 554 instead of 220, then only QUIT
# --------------------------------------------------------------------------------------------

BLOCKED = Reply(554, "5.7.1", "Service unavailable; client [192.0.2.7] blocked using bl.test")


def refused(data: bytes, **settings) -> Run:
    """A session greeted with ``BLOCKED``, then fed ``data`` every way."""
    def run(chunks: list[bytes]) -> Run:
        session = make_session(**settings)
        assert session.greeting(BLOCKED) == BLOCKED
        outputs = [out for chunk in chunks for out in session.feed(chunk)]
        return Run(session, session.handler, outputs)

    return every_way(data, run)


def test_refused_session_answers_503_until_quit():
    """RFC 5321 3.1 (issue 12 item 7, a DNSBL listing): a server that answers 554 instead of
    the 220 greeting must wait for QUIT and answer other commands 503; QUIT gets 221 and the
    connection closes. Nothing reaches the policy: no MAIL, RCPT or AUTH is looked at."""
    run = refused(EHLO + b"HELO x\r\n" + MAIL + RCPT + b"DATA\r\nNOOP\r\nFROB\r\nQUIT\r\n")
    assert run.session.state is State.CLOSED
    assert run.outputs == [R.R503_REFUSED] * 7 + [R.R221_BYE, Close()]
    assert run.handler.calls == []


def test_refused_session_is_closed_after_max_bad_commands():
    """RFC 5321 3.1 lets the refused client stay until QUIT; the 503s count as protocol errors
    (issue 12 item 7, as the error limits of RFC 5321 4.2.2 / Postfix smtpd_hard_error_limit),
    so a client that never quits is closed with 421 after ``max_bad_commands``."""
    run = refused(b"EHLO a\r\nNOOP\r\nRSET\r\nEHLO b\r\n", max_bad_commands=3)
    assert run.outputs == [R.R503_REFUSED] * 3 + [R.R421_TOO_MANY_ERRORS, Close()]
    assert run.session.too_many_errors


def test_greeting_without_refusal_is_220():
    """RFC 5321 3.1 / 4.3.1: with no refusal the session greets with 220 and reads commands as
    usual (the refused state is only entered through ``greeting(refusal)``)."""
    session = make_session()
    assert session.greeting(None).code == 220
    assert session.feed(EHLO) == [ehlo_reply()]
