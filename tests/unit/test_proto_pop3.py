"""POP3Session (geomail/proto/pop3.py): bytes in, outputs out. Most tests let the driver in
tests/support/pop3_session.py answer the session's requests from a fake policy and maildrop; the
tests under "The session asks, the shell answers" drive the bare session by hand.

Conversations go through ``converse``, which feeds the same bytes whole, byte by byte and split in
two at every offset, and requires the same outputs, hook calls and maildrop calls every time.
RFC 1939 is the base protocol, RFC 2449 CAPA and extended response codes, RFC 2595 STLS, RFC 5034
AUTH, RFC 3206 the SYS and AUTH response codes.
"""

from __future__ import annotations

import base64
import inspect

import pytest

from geomail.proto.pop3 import (
    AUTHORIZATION_COMMANDS,
    COMMANDS,
    MAX_AUTH_FAILURES_PER_CONNECTION,
    TRANSACTION_COMMANDS,
    POP3Session,
    top_of_message,
)
from geomail.proto.pop3_types import (
    Authenticate,
    CloseMaildrop,
    Commit,
    Committed,
    Listing,
    OpenMaildrop,
    POP3Settings,
    Send,
    SendMessage,
    State,
    Unavailable,
)
from geomail.proto.reply import Close, StartTLS
from geomail.proto.sasl import Credentials
from tests.support.pop3_session import (
    ALICE,
    CLIENT,
    LOGIN,
    PASSWORD,
    FakeHandler,
    FakeMessage,
    Run,
    drive,
    make_session,
)
from tests.support.splits import every_way, ways

LOGGED_IN = Send(b"+OK Logged in, 3 messages (600 octets)\r\n")
NOT_IN_STATE = Send(b"-ERR Command not valid in this state\r\n")
NO_PLAINTEXT = Send(b"-ERR [AUTH] Plaintext login is disabled; use STLS first\r\n")
BAD_LOGIN = Send(b"-ERR [AUTH] Invalid username or password\r\n")
THROTTLED = Send(b"-ERR [SYS/TEMP] Too many failed logins, try again later\r\n")


# --------------------------------------------------------------------------------------------
# Every way of feeding (the fakes are in tests/support/pop3_session.py)
# --------------------------------------------------------------------------------------------


def converse(data: bytes, setup: bytes = b"", handler: FakeHandler | None = None,
             **settings) -> Run:
    """Feed ``setup`` whole, then ``data`` every way; every way must give the same result."""
    template = handler or FakeHandler()

    def run(chunks: list[bytes]) -> Run:
        fresh = FakeHandler(template.passwords, set(template.busy), template.blocked,
                            template.store_error, list(template.messages), template.fail_commit)
        session = make_session(fresh, **settings)
        if setup:
            drive(session, setup)
        outputs = [out for chunk in chunks for out in drive(session, chunk)]
        return Run(session, fresh, outputs)

    return every_way(data, run)


def logged_in(handler: FakeHandler | None = None, **settings) -> POP3Session:
    session = make_session(handler, **settings)
    assert session.feed(LOGIN)[-1] == LOGGED_IN
    return session


def plain(user: str = ALICE, password: str = PASSWORD, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


# --------------------------------------------------------------------------------------------
# Greeting, states, framing
# --------------------------------------------------------------------------------------------


def test_greeting_has_no_apop_timestamp():
    """RFC 1939 4: the greeting is a positive response; without APOP (RFC 1939 7) it carries no
    ``<timestamp>``, so clients do not try APOP."""
    greeting = make_session().greeting()
    assert greeting.startswith(b"+OK ")
    assert greeting.endswith(b"\r\n")
    assert b"<" not in greeting


TRANSACTION_ONLY = {
    "STAT": b"STAT", "LIST": b"LIST", "UIDL": b"UIDL 1", "RETR": b"RETR 1", "DELE": b"DELE 1",
    "NOOP": b"NOOP", "RSET": b"RSET", "TOP": b"TOP 1 0",
}
AUTHORIZATION_ONLY = {
    "USER": f"USER {ALICE}".encode(), "PASS": f"PASS {PASSWORD}".encode(),
    "AUTH": f"AUTH PLAIN {plain()}".encode(), "STLS": b"STLS", "APOP": b"APOP alice 0123abcd",
}


def test_command_tables_cover_every_verb():
    """RFC 1939 3: each command is valid in the states the table at the top of pop3.py lists;
    this suite covers every verb in each state."""
    assert set(COMMANDS) == set(TRANSACTION_ONLY) | set(AUTHORIZATION_ONLY) | {"CAPA", "QUIT"}
    assert set(AUTHORIZATION_COMMANDS) == set(AUTHORIZATION_ONLY) | {"CAPA", "QUIT"}
    assert set(TRANSACTION_COMMANDS) == set(TRANSACTION_ONLY) | {"CAPA", "QUIT"}


@pytest.mark.parametrize("verb", sorted(TRANSACTION_ONLY))
def test_transaction_commands_refused_before_login(verb):
    """RFC 1939 4: in the AUTHORIZATION state only USER/PASS (and AUTH, STLS, CAPA, QUIT) are
    valid; a TRANSACTION command gets ``-ERR`` and the session stays in AUTHORIZATION."""
    run = converse(TRANSACTION_ONLY[verb] + b"\r\n")
    assert run.outputs == [NOT_IN_STATE]
    assert run.session.state is State.AUTHORIZATION
    assert run.handler.calls == []


@pytest.mark.parametrize("verb", sorted(AUTHORIZATION_ONLY))
def test_authorization_commands_refused_after_login(verb):
    """RFC 1939 5: once in TRANSACTION, USER/PASS/APOP are not valid, nor AUTH (RFC 5034 4: "only
    in the AUTHORIZATION state") nor STLS (RFC 2595 4); each gets ``-ERR``, the session goes on."""
    run = converse(AUTHORIZATION_ONLY[verb] + b"\r\nSTAT\r\n", setup=LOGIN)
    assert run.outputs == [NOT_IN_STATE, Send(b"+OK 3 600\r\n")]
    assert run.session.state is State.TRANSACTION
    assert len(run.handler.calls) == 2  # the login only


def test_keywords_are_case_insensitive():
    """RFC 1939 3: keywords are case-insensitive (arguments are not touched)."""
    run = converse(f"user {ALICE}\r\nPaSs {PASSWORD}\r\nstat\r\nlist 2\r\nuIdL 3\r\n".encode())
    assert run.sent == (b"+OK Send PASS\r\n" + LOGGED_IN.data + b"+OK 3 600\r\n"
                        b"+OK 2 200\r\n+OK 3 uid-c\r\n")


def test_unknown_command():
    """RFC 1939 3: an unrecognised command gets a negative response; the session continues."""
    run = converse(b"XYZZY\r\nLAST\r\n\r\nNOOP\r\n", setup=LOGIN)
    assert run.outputs == [Send(b"-ERR Unknown command\r\n")] * 3 + [Send(b"+OK\r\n")]


def test_bare_lf_and_bare_cr_refused():
    """RFC 1939 3: commands end in CRLF; a bare LF or a CR inside the line is refused, not
    guessed at, and does not end the session."""
    run = converse(b"NOOP\nSTAT\rX\r\nNOOP\r\n", setup=LOGIN)
    assert run.outputs == [Send(b"-ERR Lines must end in CRLF\r\n")] * 2 + [Send(b"+OK\r\n")]


def test_command_line_limit():
    """RFC 2449 4: a command line is at most 255 octets (CRLF included); longer gets ``-ERR``,
    and the next command is read normally."""
    longest = b"NOOP " + b"x" * (255 - 7)
    run = converse(longest + b"\r\n" + longest + b"x\r\nNOOP\r\n", setup=LOGIN)
    assert run.outputs == [Send(b"+OK\r\n"), Send(b"-ERR Line too long\r\n"), Send(b"+OK\r\n")]


def test_pass_and_auth_may_exceed_command_limit():
    """RFC 2449 4 lets PASS and AUTH lines be longer ("the maximum length of a password is not
    specified"; SASL responses up to 12288 octets, RFC 5034 4 / RFC 4954 4)."""
    password = "p" * 400
    handler = FakeHandler(passwords={ALICE: password})
    run = converse(f"USER {ALICE}\r\nPASS {password}\r\n".encode(), handler=handler)
    assert run.outputs[-1] == LOGGED_IN
    run = converse(f"AUTH PLAIN {plain(password=password)}\r\n".encode(), handler=handler)
    assert run.outputs == [LOGGED_IN]


def test_very_long_line_is_drained_and_bounded():
    """RFC 2449 4 / RFC 1939 3: an endless line is refused once, memory stays bounded, and the
    command after it is understood."""
    session = logged_in()
    outputs = []
    for _ in range(100):
        outputs += session.feed(b"x" * 1000)
    outputs += session.feed(b"\r\nNOOP\r\n")
    assert outputs == [Send(b"-ERR Line too long\r\n"), Send(b"+OK\r\n")]
    assert len(session._lines) == 0


def test_too_many_bad_commands_close():
    """RFC 1939 3 leaves error handling to the server; after ``max_bad_commands`` unknown or
    out-of-state commands it says so and closes (Close output), releasing nothing it never
    took."""
    run = converse(b"STAT\r\nFOO\r\nLIST\r\nNOOP\r\n", max_bad_commands=3)
    assert run.outputs == [
        NOT_IN_STATE, Send(b"-ERR Unknown command\r\n"), NOT_IN_STATE,
        Send(b"-ERR Too many errors, closing connection\r\n"), Close()]
    assert run.session.state is State.CLOSED
    assert run.session.feed(b"NOOP\r\n") == []


def test_too_many_bad_commands_after_login_releases_maildrop():
    """RFC 1939 6: closing for errors is not QUIT: the maildrop is closed without commit, so
    messages marked deleted stay."""
    handler = FakeHandler()
    session = logged_in(handler, max_bad_commands=2)
    outputs = session.feed(b"DELE 1\r\nBAD\r\nWORSE\r\n")
    assert outputs[-1] == Close()
    assert handler.maildrop.commits == []
    assert handler.maildrop.closes == 1


def test_feed_stops_after_each_message_until_resumed():
    """RFC 2449 6.6 / RFC 1939 6: with ``RETR 1``, ``DELE 1``, ``QUIT`` pipelined, the message
    must be sent before QUIT's UPDATE removes it: ``feed`` returns after the SendMessage, and
    only ``resume`` (called by the shell once it has streamed the message) goes on."""
    handler = FakeHandler()
    session = logged_in(handler)
    assert session.feed(b"RETR 1\r\nTOP 2 3\r\nDELE 1\r\nQUIT\r\n") == [
        SendMessage(b"+OK 100 octets\r\n", 0)]
    assert session.maildrop is handler.maildrop
    assert session.resume() == [SendMessage(b"+OK Top of message follows\r\n", 1, 3)]
    assert handler.maildrop.commits == []
    assert session.resume() == [Send(b"+OK Message 1 deleted\r\n"),
                                Send(b"+OK Bye, 1 messages deleted\r\n"), Close()]
    assert handler.maildrop.commits == [({0}, {0})]
    assert session.resume() == []


def test_pipelined_commands_answered_in_order():
    """RFC 2449 6.6 PIPELINING: commands sent in one go are answered in order, as if sent one
    at a time."""
    run = converse(LOGIN + b"STAT\r\nLIST\r\nUIDL\r\nRETR 2\r\nTOP 3 5\r\nQUIT\r\n")
    assert run.outputs == [
        Send(b"+OK Send PASS\r\n"), LOGGED_IN, Send(b"+OK 3 600\r\n"),
        Send(b"+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"),
        Send(b"+OK 3 messages (600 octets)\r\n1 uid-a\r\n2 uid-b\r\n3 uid-c\r\n.\r\n"),
        SendMessage(b"+OK 200 octets\r\n", 1),
        SendMessage(b"+OK Top of message follows\r\n", 2, 5),
        Send(b"+OK Bye, 0 messages deleted\r\n"), Close(),
    ]
    assert run.handler.maildrop.commits == [(set(), {1})]


# --------------------------------------------------------------------------------------------
# USER / PASS (RFC 1939 7) and the response codes of RFC 2449 8 / RFC 3206
# --------------------------------------------------------------------------------------------


def test_user_pass_login():
    """RFC 1939 7: USER then PASS; on success the maildrop is locked and opened (RFC 1939 4) and
    the session enters TRANSACTION with the canonical user name."""
    run = converse(f"USER {ALICE.upper()}\r\nPASS {PASSWORD}\r\n".encode())
    assert run.outputs == [Send(b"+OK Send PASS\r\n"), LOGGED_IN]
    assert run.handler.calls == [("authenticate", CLIENT, ALICE.upper(), PASSWORD),
                                 ("open_maildrop", ALICE)]
    assert run.session.state is State.TRANSACTION
    assert run.session.user == ALICE


@pytest.mark.parametrize("password", [PASSWORD, " leading space", "trailing space ", "a  b",
                                      "ünïcödé pässwörd", "tab\there"])
def test_pass_keeps_spaces(password):
    """RFC 1939 7: "the server may treat spaces in the argument as part of the password, instead
    of as argument separators": PASS hands the whole rest of the line to the authenticator."""
    handler = FakeHandler(passwords={ALICE: password})
    run = converse(f"USER {ALICE}\r\nPASS {password}\r\n".encode(), handler=handler)
    assert run.outputs[-1] == LOGGED_IN
    assert run.handler.calls[0] == ("authenticate", CLIENT, ALICE, password)


def test_pass_without_user():
    """RFC 1939 7: PASS is only valid after a successful USER."""
    run = converse(f"PASS {PASSWORD}\r\n".encode())
    assert run.outputs == [Send(b"-ERR USER first\r\n")]
    assert run.handler.calls == []


@pytest.mark.parametrize("line", [b"USER", b"USER ", b"USER    "])
def test_user_needs_a_name(line):
    """RFC 1939 7: USER takes a mailbox name argument; without one it is ``-ERR``."""
    run = converse(line + f"\r\nPASS {PASSWORD}\r\n".encode())
    assert run.outputs == [Send(b"-ERR USER needs a name\r\n"), Send(b"-ERR USER first\r\n")]


def test_wrong_password_then_retry():
    """RFC 1939 7 / RFC 3206 5: a failed PASS is ``-ERR [AUTH]`` and leaves AUTHORIZATION open;
    the name must be given again (USER again), and then a right password works."""
    wrong = f"USER {ALICE}\r\nPASS nope\r\nPASS {PASSWORD}\r\n".encode()
    run = converse(wrong + LOGIN)
    assert run.outputs == [Send(b"+OK Send PASS\r\n"), BAD_LOGIN, Send(b"-ERR USER first\r\n"),
                           Send(b"+OK Send PASS\r\n"), LOGGED_IN]
    assert run.session.state is State.TRANSACTION


def test_failed_logins_per_connection_close():
    """RFC 3206 4: after MAX_AUTH_FAILURES_PER_CONNECTION failures the server answers
    ``-ERR [SYS/TEMP]`` and closes (RFC 1939 4 lets the server close on failed logins)."""
    attempt = f"USER {ALICE}\r\nPASS wrong\r\n".encode()
    run = converse(attempt * MAX_AUTH_FAILURES_PER_CONNECTION + b"NOOP\r\n")
    assert run.outputs == ([Send(b"+OK Send PASS\r\n"), BAD_LOGIN]
                           * (MAX_AUTH_FAILURES_PER_CONNECTION - 1)
                           + [Send(b"+OK Send PASS\r\n"), THROTTLED, Close()])
    assert run.session.state is State.CLOSED


def test_blocked_client_gets_sys_temp():
    """RFC 3206 4: a client throttled for failed logins gets ``[SYS/TEMP]`` (try later), not
    ``[AUTH]``, and the connection closes."""
    run = converse(LOGIN + b"NOOP\r\n", handler=FakeHandler(blocked=True))
    assert run.outputs == [Send(b"+OK Send PASS\r\n"), THROTTLED, Close()]
    assert ("open_maildrop", ALICE) not in run.handler.calls


def test_in_use():
    """RFC 2449 8.2: the maildrop is locked by another session: ``-ERR [IN-USE]``; the session
    stays in AUTHORIZATION and may try again."""
    run = converse(LOGIN + b"STAT\r\n", handler=FakeHandler(busy={ALICE}))
    assert run.outputs == [Send(b"+OK Send PASS\r\n"),
                           Send(b"-ERR [IN-USE] Mailbox is open in another session\r\n"),
                           NOT_IN_STATE]
    assert run.session.state is State.AUTHORIZATION
    assert run.session.maildrop is None


def test_store_error_on_open_is_sys_temp():
    """RFC 3206 4: a mailbox that cannot be opened (disk fault) is a temporary system error:
    ``-ERR [SYS/TEMP]``, not a crash, and the session stays in AUTHORIZATION."""
    run = converse(LOGIN + b"NOOP\r\n", handler=FakeHandler(store_error=True))
    assert run.outputs[1:] == [Send(b"-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n"),
                               NOT_IN_STATE]
    assert run.session.state is State.AUTHORIZATION


@pytest.mark.parametrize("line", [b"USER x", b"PASS y", b"AUTH PLAIN", b"AUTH PLAIN AAAA"])
def test_plaintext_login_refused_without_tls(line):
    """RFC 2595 2.3 / RFC 8314 4.1: a listener without ``allow_plaintext_auth`` refuses USER,
    PASS and AUTH until TLS is active, with ``[AUTH]`` (RFC 3206 5); no password is looked at."""
    run = converse(line + b"\r\n", allow_plaintext_auth=False)
    assert run.outputs == [NO_PLAINTEXT]
    assert run.handler.calls == []


def test_login_allowed_once_tls_active():
    """RFC 2595 4: after STLS the same commands log in."""
    run = converse(LOGIN, allow_plaintext_auth=False, tls_active=True)
    assert run.outputs[-1] == LOGGED_IN


def test_apop_not_offered():
    """RFC 1939 7: APOP is optional; geomail keeps only hashes, so APOP is ``-ERR``."""
    run = converse(b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert run.outputs == [Send(b"-ERR APOP is not supported\r\n")]
    assert run.session.state is State.AUTHORIZATION


# --------------------------------------------------------------------------------------------
# AUTH PLAIN (RFC 5034)
# --------------------------------------------------------------------------------------------


def test_auth_plain_initial_response():
    """RFC 5034 4: ``AUTH PLAIN <initial-response>`` logs in in one round trip."""
    run = converse(f"AUTH PLAIN {plain()}\r\n".encode())
    assert run.outputs == [LOGGED_IN]
    assert run.handler.calls[0] == ("authenticate", CLIENT, ALICE, PASSWORD)


def test_auth_plain_with_challenge():
    """RFC 5034 4: without an initial response the server sends an empty ``+ `` challenge and
    the client answers on its own line."""
    run = converse(f"AUTH PLAIN\r\n{plain()}\r\n".encode())
    assert run.outputs == [Send(b"+ \r\n"), LOGGED_IN]


def test_auth_mechanism_is_case_insensitive():
    """RFC 5034 4 / RFC 4422 3.1: mechanism names are case-insensitive."""
    run = converse(f"auth plain {plain()}\r\n".encode())
    assert run.outputs == [LOGGED_IN]


def test_auth_cancel():
    """RFC 5034 4: a ``*`` response cancels the exchange with ``-ERR``; AUTHORIZATION goes on."""
    run = converse(b"AUTH PLAIN\r\n*\r\nNOOP\r\n")
    assert run.outputs == [Send(b"+ \r\n"), Send(b"-ERR Authentication cancelled\r\n"),
                           NOT_IN_STATE]
    assert run.handler.calls == []


@pytest.mark.parametrize("response", ["%%%notbase64", plain(authzid="bob@example.com"),
                                      base64.b64encode(b"no nuls here").decode(), "="])
def test_auth_malformed(response):
    """RFC 5034 4: a response that cannot be decoded (or is not ``authzid NUL authcid NUL passwd``,
    RFC 4616 2) fails the exchange with ``-ERR``; nothing is authenticated."""
    run = converse(f"AUTH PLAIN\r\n{response}\r\n".encode())
    assert run.outputs == [Send(b"+ \r\n"), Send(b"-ERR Malformed authentication data\r\n")]
    assert run.handler.calls == []


def test_auth_wrong_password():
    """RFC 5034 6 / RFC 3206 5: a rejected AUTH is ``-ERR [AUTH]``."""
    run = converse(f"AUTH PLAIN {plain(password='nope')}\r\n".encode())
    assert run.outputs == [BAD_LOGIN]
    assert run.session.state is State.AUTHORIZATION


def test_auth_unknown_mechanism():
    """RFC 5034 4: an unsupported mechanism gets ``-ERR``."""
    run = converse(b"AUTH CRAM-MD5\r\nAUTH LOGIN\r\n")
    assert run.outputs == [Send(b"-ERR Unrecognized authentication mechanism\r\n")] * 2


def test_auth_without_mechanism_lists_plain():
    """RFC 1734 practice kept by clients (Outlook): bare ``AUTH`` lists the mechanisms, one per
    line, ended by ``.`` (the CAPA SASL line, RFC 2449 6.3, says the same)."""
    run = converse(b"AUTH\r\n")
    assert run.outputs == [Send(b"+OK Mechanisms follow\r\nPLAIN\r\n.\r\n")]


# --------------------------------------------------------------------------------------------
# CAPA (RFC 2449 5, 6) and STLS (RFC 2595 4)
# --------------------------------------------------------------------------------------------


def capabilities(run: Run) -> list[str]:
    lines = run.sent.decode().split("\r\n")
    assert lines[0] == "+OK Capability list follows"
    assert lines[-2:] == [".", ""]
    return lines[1:-2]


BASE_CAPS = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]


@pytest.mark.parametrize(("tls_available", "tls_active", "plaintext", "extra"), [
    (True, False, False, ["STLS"]),  # port 110 with a certificate: STARTTLS first
    (True, False, True, ["USER", "SASL PLAIN", "STLS"]),  # 110, plaintext allowed (127.0.0.1)
    (False, False, False, []),  # no certificate at all, no plaintext: nothing to log in with
    (False, False, True, ["USER", "SASL PLAIN"]),
    (True, True, False, ["USER", "SASL PLAIN"]),  # 995 or after STLS
    (False, True, False, ["USER", "SASL PLAIN"]),
])
def test_capa_in_authorization(tls_available, tls_active, plaintext, extra):
    """RFC 2449 5, 6: CAPA lists TOP, UIDL, RESP-CODES, AUTH-RESP-CODE (RFC 3206 6), PIPELINING
    and IMPLEMENTATION always; USER (6.2) and SASL PLAIN (6.3, RFC 5034 5) only where a login
    may be made; STLS (RFC 2595 4) only when TLS is available and not yet active."""
    run = converse(b"CAPA\r\n", tls_available=tls_available, tls_active=tls_active,
                   allow_plaintext_auth=plaintext)
    caps = capabilities(run)
    assert caps[-1] == "IMPLEMENTATION geomail"
    assert sorted(caps[:-1]) == sorted(["CAPA", *BASE_CAPS, *extra])
    assert run.session.state is State.AUTHORIZATION


def test_capa_in_transaction():
    """RFC 2449 5: CAPA is valid in TRANSACTION too, and lists what is valid there: no USER,
    SASL or STLS (RFC 2595 4: STLS only in AUTHORIZATION)."""
    run = converse(b"CAPA\r\n", setup=LOGIN)
    caps = capabilities(run)
    assert sorted(caps) == sorted(["CAPA", *BASE_CAPS, "IMPLEMENTATION geomail"])
    assert run.session.state is State.TRANSACTION


def test_stls_upgrade():
    """RFC 2595 4: STLS gets ``+OK`` then the connection negotiates TLS (StartTLS output); after
    it CAPA offers USER/SASL and no STLS, and a second STLS is ``-ERR``."""
    session = make_session(allow_plaintext_auth=False)
    assert session.feed(b"STLS\r\n") == [Send(b"+OK Begin TLS negotiation\r\n"), StartTLS()]
    session.tls_started()
    caps = capabilities(Run(session, session.handler, session.feed(b"CAPA\r\n")))
    assert "STLS" not in caps
    assert {"USER", "SASL PLAIN"} <= set(caps)
    assert session.feed(b"STLS\r\n") == [Send(b"-ERR TLS already active\r\n")]
    assert session.feed(LOGIN)[-1] == LOGGED_IN


def test_stls_fed_byte_by_byte():
    """RFC 2595 4: the STLS line arriving in pieces still upgrades (nothing is buffered after
    it)."""
    session = make_session()
    outputs = [out for byte in b"STLS\r\n" for out in session.feed(bytes([byte]))]
    assert outputs == [Send(b"+OK Begin TLS negotiation\r\n"), StartTLS()]


def test_stls_not_available():
    """RFC 2595 4: without a certificate STLS is ``-ERR`` and the session stays plaintext."""
    run = converse(b"STLS\r\nNOOP\r\n", tls_available=False)
    assert run.outputs == [Send(b"-ERR STLS not available\r\n"), NOT_IN_STATE]


def test_stls_with_pipelined_plaintext_closes():
    """RFC 2595 4 / RFC 2449 6.6 (STLS must not be pipelined) and CVE-2011-0411: plaintext sent
    after STLS in the same packet would be read as if it came over TLS. The session answers
    ``-ERR`` instead of ``+OK``, does not start TLS, and closes."""
    session = make_session(allow_plaintext_auth=False)
    outputs = session.feed(b"STLS\r\n" + LOGIN)
    assert outputs == [Send(b"-ERR Commands pipelined after STLS\r\n"), Close()]
    assert session.state is State.CLOSED
    assert session.handler.calls == []


def test_stls_forgets_user_given_before():
    """RFC 2595 4: "the client MUST discard cached information ... the server MUST discard any
    knowledge obtained from the client" before TLS: a USER sent in plaintext does not count."""
    session = make_session()
    session.feed(f"USER {ALICE}\r\n".encode())
    assert session.feed(b"STLS\r\n")[-1] == StartTLS()
    session.tls_started()
    assert session.feed(f"PASS {PASSWORD}\r\n".encode()) == [Send(b"-ERR USER first\r\n")]


# --------------------------------------------------------------------------------------------
# TRANSACTION (RFC 1939 5, 7)
# --------------------------------------------------------------------------------------------


def test_stat_list_uidl():
    """RFC 1939 5: STAT is ``+OK count octets``; LIST without an argument is a multi-line
    ``n size`` listing; LIST n a single line. RFC 1939 7: UIDL likewise with unique ids."""
    run = converse(b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\n", setup=LOGIN)
    assert run.sent == (
        b"+OK 3 600\r\n"
        b"+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"
        b"+OK 2 200\r\n"
        b"+OK 3 messages (600 octets)\r\n1 uid-a\r\n2 uid-b\r\n3 uid-c\r\n.\r\n"
        b"+OK 3 uid-c\r\n")


def test_empty_maildrop():
    """RFC 1939 5: an empty maildrop: STAT ``+OK 0 0``, LIST and UIDL an empty listing, RETR 1
    ``-ERR``."""
    run = converse(b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n", setup=LOGIN,
                   handler=FakeHandler(messages=[]))
    assert run.sent == (b"+OK 0 0\r\n+OK 0 messages (0 octets)\r\n.\r\n"
                        b"+OK 0 messages (0 octets)\r\n.\r\n-ERR No such message\r\n")


def test_retr_and_top_emit_send_message():
    """RFC 1939 5 RETR: ``+OK`` then the whole message; RFC 1939 7 TOP n m: header, blank line
    and m body lines. The session names the message; the shell streams it."""
    run = converse(b"RETR 1\r\nTOP 2 0\r\nTOP 3 10\r\n", setup=LOGIN)
    assert run.outputs == [SendMessage(b"+OK 100 octets\r\n", 0),
                           SendMessage(b"+OK Top of message follows\r\n", 1, 0),
                           SendMessage(b"+OK Top of message follows\r\n", 2, 10)]


def test_noop():
    """RFC 1939 5: NOOP is ``+OK`` and changes nothing."""
    run = converse(b"NOOP\r\nSTAT\r\n", setup=LOGIN)
    assert run.outputs == [Send(b"+OK\r\n"), Send(b"+OK 3 600\r\n")]


def test_dele_marks_and_hides():
    """RFC 1939 5 DELE: the message is marked; later commands must not touch it (RETR, TOP, LIST
    n, UIDL n, DELE again all ``-ERR``), STAT and the listings leave it out, numbers of the
    other messages do not change."""
    run = converse(b"DELE 2\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 2\r\nTOP 2 1\r\nLIST 2\r\n"
                   b"UIDL 2\r\nDELE 2\r\nLIST 3\r\n", setup=LOGIN)
    gone = b"-ERR Message 2 is deleted\r\n"
    assert run.sent == (
        b"+OK Message 2 deleted\r\n+OK 2 400\r\n"
        b"+OK 2 messages (400 octets)\r\n1 100\r\n3 300\r\n.\r\n"
        b"+OK 2 messages (400 octets)\r\n1 uid-a\r\n3 uid-c\r\n.\r\n"
        + gone * 5 + b"+OK 3 300\r\n")
    assert run.handler.maildrop.commits == []  # nothing happens to the store before QUIT


def test_rset_unmarks():
    """RFC 1939 5 RSET: every message marked as deleted is unmarked."""
    run = converse(b"DELE 1\r\nDELE 3\r\nRSET\r\nSTAT\r\nRETR 1\r\nQUIT\r\n", setup=LOGIN)
    assert run.outputs[:5] == [Send(b"+OK Message 1 deleted\r\n"),
                               Send(b"+OK Message 3 deleted\r\n"),
                               Send(b"+OK 3 messages (600 octets)\r\n"), Send(b"+OK 3 600\r\n"),
                               SendMessage(b"+OK 100 octets\r\n", 0)]
    assert run.handler.maildrop.commits == [(set(), {0})]


BAD_NUMBER = b"-ERR Invalid message number\r\n"
NO_SUCH = b"-ERR No such message\r\n"


BAD_ARGS = [
    (b"", BAD_NUMBER), (b"0", NO_SUCH), (b"4", NO_SUCH), (b"999999999", NO_SUCH),
    (b"9999999999", BAD_NUMBER), (b"-1", BAD_NUMBER), (b"+1", BAD_NUMBER), (b"x", BAD_NUMBER),
    (b"1.0", BAD_NUMBER), (b"1 2", BAD_NUMBER), (b"0x1", BAD_NUMBER),
    ("\u00b2".encode(), BAD_NUMBER),  # superscript two: str.isdigit() but not int()-able
    ("\u0661".encode(), BAD_NUMBER),  # ARABIC-INDIC DIGIT ONE: int() takes it, RFC 1939 not
    (b"\xff", BAD_NUMBER),
]


@pytest.mark.parametrize(("verb", "arg", "reply"), [
    (verb, arg, reply) for verb in (b"RETR", b"DELE", b"LIST", b"UIDL", b"TOP")
    for arg, reply in BAD_ARGS
    if arg or verb not in (b"LIST", b"UIDL")  # without an argument these list every message
], ids=repr)
def test_bad_message_numbers(verb, arg, reply):
    """RFC 1939 5, 7: a message number is a decimal number of an existing message; anything
    else gets ``-ERR`` with a reason, never a crash, and the session goes on."""
    if verb == b"TOP":
        line = verb + b" " + arg + b" 1"
        if arg in (b"", b"1 2"):  # wrong argument count
            reply = b"-ERR Usage: TOP message lines\r\n"
    else:
        line = verb + (b" " + arg if arg else b"")
    run = converse(line + b"\r\nNOOP\r\n", setup=LOGIN)
    assert run.outputs == [Send(reply), Send(b"+OK\r\n")]
    assert run.session.state is State.TRANSACTION


@pytest.mark.parametrize("args", [b"", b"1", b"1 x", b"1 -1", b"1 1 1", b"1 99999999999",
                                  "1 \u00b2".encode()])
def test_top_bad_line_count(args):
    """RFC 1939 7: TOP takes exactly a message number and a non-negative line count."""
    run = converse(b"TOP " + args + b"\r\n", setup=LOGIN)
    assert run.outputs == [Send(b"-ERR Usage: TOP message lines\r\n")]


def test_quit_in_authorization():
    """RFC 1939 5 (QUIT in AUTHORIZATION): ``+OK``, close; no maildrop was opened, nothing is
    committed."""
    run = converse(f"USER {ALICE}\r\nQUIT\r\n".encode())
    assert run.outputs == [Send(b"+OK Send PASS\r\n"), Send(b"+OK Bye\r\n"), Close()]
    assert run.handler.calls == []
    assert run.session.state is State.CLOSED


def test_quit_in_transaction_commits():
    """RFC 1939 6: QUIT from TRANSACTION enters UPDATE: the deleted messages are removed (and
    the retrieved ones marked seen) by one commit, then the lock is released and the connection
    closed. Nothing after QUIT is read."""
    run = converse(b"RETR 1\r\nTOP 2 0\r\nRETR 3\r\nDELE 3\r\nDELE 2\r\nQUIT\r\nDELE 1\r\n",
                   setup=LOGIN)
    assert run.outputs[-2:] == [Send(b"+OK Bye, 2 messages deleted\r\n"), Close()]
    drop = run.handler.maildrop
    assert drop.commits == [({1, 2}, {0, 2})]  # TOP does not count as retrieved
    assert drop.closes == 1
    assert run.session.maildrop is None
    assert run.session.state is State.CLOSED


def test_quit_commit_failure_is_sys_temp():
    """RFC 1939 6: if a deletion fails in UPDATE the server says ``-ERR`` (here ``[SYS/TEMP]``,
    RFC 3206 4); the lock is still released, and the error stays with the shell (its log)."""
    run = converse(b"DELE 1\r\nQUIT\r\n", setup=LOGIN, handler=FakeHandler(fail_commit=True))
    assert run.outputs[-2:] == [
        Send(b"-ERR [SYS/TEMP] Some deleted messages were not removed\r\n"), Close()]
    assert b"No space" not in run.sent
    assert run.handler.maildrop.closes == 1
    assert run.session.answers[-1] == Unavailable(
        "cannot update the mailbox: No space left on device")


def test_dropped_connection_deletes_nothing():
    """RFC 1939 6: "If a session terminates for some reason other than a client-issued QUIT
    command, the POP3 session does NOT enter the UPDATE state": end of stream closes the
    maildrop without commit."""
    handler = FakeHandler()
    session = logged_in(handler)
    session.feed(b"DELE 1\r\nRETR 2\r\n")
    assert session.feed(b"") == [Close()]
    assert handler.maildrop.commits == []
    assert handler.maildrop.closes == 1
    assert session.state is State.CLOSED
    assert session.feed(b"QUIT\r\n") == []
    session.abort()  # idempotent: the shell calls it again in its finally
    assert handler.maildrop.closes == 1


def test_dropped_connection_before_login():
    """RFC 1939 6: end of stream in AUTHORIZATION just closes."""
    session = make_session()
    assert session.feed(b"USER x\r") == []
    assert session.feed(b"") == [Close()]
    assert session.handler.calls == []


def test_snapshot_taken_at_login():
    """RFC 1939 5 ("message numbers ... the same during the session"): the listing is the one
    read at login; changes to the maildrop's list later are not seen."""
    handler = FakeHandler()
    session = logged_in(handler)
    handler.maildrop.messages.append(FakeMessage("late", 50))
    assert session.feed(b"STAT\r\nLIST 4\r\n") == [Send(b"+OK 3 600\r\n"),
                                                   Send(NO_SUCH)]


# --------------------------------------------------------------------------------------------
# The session asks, the shell answers (no handler)
# --------------------------------------------------------------------------------------------


def bare_session(**settings) -> POP3Session:
    return POP3Session(POP3Settings(allow_plaintext_auth=True, **settings))


def test_session_has_no_handler():
    """RFC 1939 4-6 through requests (sans-IO in the strict sense): the session
    is built without any handler and never calls out; the login is an ``Authenticate`` then an
    ``OpenMaildrop`` request, each the last output of its batch; commands that arrive while one
    waits are only buffered, and are answered after it; QUIT in TRANSACTION is a ``Commit``
    request (which ends the maildrop), answered by ``+OK`` and ``Close``."""
    assert "handler" not in inspect.signature(POP3Session).parameters
    session = bare_session()
    assert not hasattr(session, "handler")
    assert session.feed(LOGIN + b"STAT\r\n") == [Send(b"+OK Send PASS\r\n"),
                                                 Authenticate(Credentials(ALICE, PASSWORD))]
    assert session.pending == Authenticate(Credentials(ALICE, PASSWORD))
    assert session.feed(b"NOOP\r\n") == []
    assert session.resume() == []  # still waiting
    assert session.answer(ALICE) == [OpenMaildrop(ALICE)]
    assert session.answer(Listing([FakeMessage("u1", 10), FakeMessage("u2", 20)])) == [
        Send(b"+OK Logged in, 2 messages (30 octets)\r\n"), Send(b"+OK 2 30\r\n"),
        Send(b"+OK\r\n")]
    assert session.user == ALICE
    assert session.feed(b"RETR 2\r\nDELE 1\r\nQUIT\r\nNOOP\r\n") == [
        SendMessage(b"+OK 20 octets\r\n", 1)]
    assert session.resume() == [Send(b"+OK Message 1 deleted\r\n"),
                                Commit(frozenset({0}), frozenset({1}))]
    assert session.answer(Committed()) == [
        Send(b"+OK Bye, 1 messages deleted\r\n"), Close()]
    assert session.state is State.CLOSED
    assert session.pending is None


@pytest.mark.parametrize("answer", [None, "alice", Committed(), Listing([])])
def test_answer_must_fit_the_request(answer):
    """RFC 1939 4: the session only takes the answer its pending request asks for (a shell bug
    otherwise); the request stays pending."""
    session = bare_session()
    with pytest.raises(ValueError):
        session.answer(Committed())  # nothing was asked
    session.feed(LOGIN)
    if answer != "alice":
        with pytest.raises(ValueError):
            session.answer(answer)
        assert isinstance(session.pending, Authenticate)
    else:
        assert session.answer(answer) == [OpenMaildrop("alice")]


def test_end_of_stream_while_waiting():
    """RFC 1939 6: the client goes away while its login is being checked: the answer is taken,
    then the session closes without UPDATE (``CloseMaildrop``, no ``Commit``)."""
    session = bare_session()
    session.feed(LOGIN + b"DELE 1\r\n")
    assert session.feed(b"") == []
    assert session.answer(ALICE) == [OpenMaildrop(ALICE)]
    assert session.answer(Listing([FakeMessage("u1", 10)])) == [
        Send(b"+OK Logged in, 1 messages (10 octets)\r\n"), Send(b"+OK Message 1 deleted\r\n"),
        CloseMaildrop(), Close()]


def test_unavailable_login_is_sys_temp_and_not_a_failure():
    """RFC 3206 4: a login the shell could not check in time gets ``-ERR [SYS/TEMP]`` and may be
    retried; it is not a failed login (RFC 1939 7 / 8: only wrong credentials count towards
    closing the connection)."""
    session = bare_session()
    for _ in range(MAX_AUTH_FAILURES_PER_CONNECTION + 1):
        session.feed(LOGIN)
        assert session.answer(Unavailable("deadline passed")) == [
            Send(b"-ERR [SYS/TEMP] Login temporarily unavailable\r\n")]
    assert session.state is State.AUTHORIZATION
    session.feed(LOGIN)
    assert session.answer(ALICE) == [OpenMaildrop(ALICE)]
    assert session.answer(Unavailable("deadline passed")) == [
        Send(b"-ERR [SYS/TEMP] Mailbox temporarily unavailable\r\n")]
    assert session.state is State.AUTHORIZATION and session.user is None


# --------------------------------------------------------------------------------------------
# top_of_message (what TOP n m streams, RFC 1939 7)
# --------------------------------------------------------------------------------------------


def reference_top(message: bytes, lines: int) -> bytes:
    """RFC 1939 7 on a whole message: header, the blank line, then ``lines`` body lines."""
    if message.startswith(b"\n"):
        head, body = b"\n", message[1:]
    else:
        end = message.find(b"\n\n")
        if end < 0:
            return message
        head, body = message[: end + 2], message[end + 2 :]
    return head + b"".join(body.splitlines(keepends=True)[:lines])


TOP_MESSAGES = {
    "plain": b"From: a\nSubject: s\n\nl1\nl2\nl3\n",
    "no body": b"From: a\nSubject: s\n",
    "only blank": b"From: a\n\n",
    "no final newline": b"From: a\n\nl1\nl2",
    "empty header": b"\nl1\nl2\n",
    "blank body lines": b"H: v\n\n\n\n\nx\n",
    "dots": b"H: v\n\n.\n..\n.x\n",
    "empty": b"",
    "long line": b"H: v\n\n" + b"y" * 50 + b"\nz\n",
}


@pytest.mark.parametrize("lines", [0, 1, 2, 3, 10])
@pytest.mark.parametrize("name", sorted(TOP_MESSAGES))
def test_top_of_message_any_chunking(name, lines):
    """RFC 1939 7: TOP's content is exact however the store splits the message into chunks
    (whole, byte by byte, two pieces at every offset, with empty chunks mixed in)."""
    message = TOP_MESSAGES[name]
    expected = reference_top(message, lines)
    for how, chunks in ways(message):
        got = b"".join(top_of_message(iter(chunks), lines))
        assert got == expected, how
    with_empties = [b""] + [bytes([c]) + b"" for c in message] + [b""]
    assert b"".join(top_of_message(with_empties, lines)) == expected


def test_top_of_message_stops_reading():
    """RFC 1939 7 only needs the first lines: the generator stops pulling chunks once they are
    out, so TOP of a large message reads little of it."""
    pulled = []

    def chunks():
        for i in range(1000):
            pulled.append(i)
            yield b"H: v\n\n" if i == 0 else b"line %d\n" % i

    assert b"".join(top_of_message(chunks(), 2)) == b"H: v\n\nline 1\nline 2\n"
    assert len(pulled) == 3
