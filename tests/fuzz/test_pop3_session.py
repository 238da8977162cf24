"""Fuzzing the POP3 server session (geomail/proto/pop3.py) with mutated real conversations.

Inputs start from every conversation of the POP3 dialog and session tests (tests/support/corpus.py)
and are broken by tests/fuzz/mutations.py; the session's requests are answered by the unit
tests' driver over a fake policy and maildrop (tests/support/pop3_session.py), three messages in
the box; the driver also checks that a request always ends its batch and is answered before the
session goes on.
"""

from __future__ import annotations

import base64
import re

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto.pop3 import COMMANDS
from geomail.proto.pop3_types import Send, SendMessage, State
from geomail.proto.reply import Close, StartTLS
from tests.fuzz.mutations import command_soup, hostile, mutated
from tests.support.corpus import pop3_conversations
from tests.support.pop3_session import (
    ALICE,
    LOGIN,
    PASSWORD,
    Driven,
    FakeHandler,
    Run,
    drive,
    make_session,
)
from tests.support.splits import fed

_PLAIN = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
# A whole session after login: every TRANSACTION command, then the UPDATE state (RFC 1939 6).
LOGGED_IN = [
    LOGIN + b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nDELE 1\r\n"
    b"RSET\r\nDELE 3\r\nNOOP\r\nQUIT\r\n",
    b"CAPA\r\nAUTH PLAIN\r\n" + _PLAIN + b"\r\nUIDL 3\r\nRETR 3\r\nDELE 2\r\nQUIT\r\n",
    b"AUTH PLAIN " + _PLAIN + b"\r\nTOP 1 0\r\nLIST 4\r\nRETR 0\r\nDELE 2\r\nSTAT\r\n",
]
SEEDS = list(pop3_conversations()) + LOGGED_IN
VERBS = sorted(COMMANDS)
INPUTS = st.one_of(hostile(SEEDS, VERBS), mutated(LOGGED_IN))
FIRST_LINE = re.compile(rb"(\+OK|-ERR)( [\t\x20-\x7e]*)?\r\n|\+ [A-Za-z0-9+/=]*\r\n")


def new_session(**settings: object) -> Driven:
    return make_session(FakeHandler(), allow_plaintext_auth=True, **settings)  # type: ignore[arg-type]


def play(session: Driven, chunks: list[bytes]) -> list[object]:
    """Feed each packet, then end of stream, as the connection shell does (``resume`` after each
    message sent); after a StartTLS output the handshake "succeeds"."""
    outputs: list[object] = []
    for chunk in [*chunks, b""]:
        for out in drive(session, chunk):
            outputs.append(out)
            if isinstance(out, StartTLS):
                session.tls_started()
    return outputs


def check_response(data: bytes) -> None:
    """RFC 1939 3 and RFC 2449 4: a status line ``+OK``/``-ERR`` (or a SASL ``+ `` challenge,
    RFC 5034 4) of at most 512 octets with CRLF; a multi-line response ends with ``.``."""
    lines = data.splitlines(keepends=True)
    assert lines and FIRST_LINE.fullmatch(lines[0]), data
    for line in lines:
        assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
        assert len(line) <= 512, line
    if len(lines) > 1:
        assert lines[0].startswith(b"+OK") and lines[-1] == b".\r\n", data


def check_outputs(session: Driven, outputs: list[object]) -> None:
    """The end state every conversation must reach, whatever it was."""
    handler = session.handler
    for out in outputs:
        assert type(out).__module__.startswith("geomail.proto."), out
        if isinstance(out, Send):
            check_response(out.data)
        elif isinstance(out, SendMessage):
            assert out.header.startswith(b"+OK ") and out.header.endswith(b"\r\n")
            assert 0 <= out.index < len(handler.messages)
            assert out.body_lines is None or out.body_lines >= 0
    closes = [i for i, out in enumerate(outputs) if isinstance(out, Close)]
    assert closes == [len(outputs) - 1], outputs  # one Close, at the very end
    assert session.state is State.CLOSED
    assert session.pending is None and session.maildrop is None  # nothing left waiting or held
    assert drive(session, b"STAT\r\n") == []  # nothing is answered after Close
    # Every maildrop opened is released once (RFC 1939 8: the lock ends with the session) and
    # committed at most once, at QUIT, with message numbers that exist.
    for maildrop in handler.maildrops:
        assert maildrop.closes == 1
        assert len(maildrop.commits) <= 1
        for deleted, retrieved in maildrop.commits:
            assert deleted | retrieved <= set(range(len(maildrop.messages)))


@given(fed(INPUTS), st.booleans())
def test_any_input_ends_in_a_valid_state(case: tuple[bytes, list[bytes]],
                                         tls_available: bool) -> None:
    """RFC 1939 3-6: whatever the client sends, split however, the session answers with
    well-formed responses and no exception, ends closed after end of stream, and releases the
    maildrop it locked; STLS (RFC 2595 4) is taken when offered."""
    _data, chunks = case
    session = new_session(tls_available=tls_available)
    check_outputs(session, play(session, chunks))


@given(fed(INPUTS))
def test_same_result_however_split(case: tuple[bytes, list[bytes]]) -> None:
    """RFC 1939 3 and RFC 2449 6.6 (PIPELINING): the responses, the handler and maildrop calls
    and the final state are the same whether the bytes come whole or cut at arbitrary points."""
    data, chunks = case
    runs = []
    for packets in ([data], chunks):
        session = new_session(tls_available=False)
        outputs = play(session, packets)
        runs.append(Run(session, session.handler, outputs).snapshot())
    assert runs[1] == runs[0]


def _command_lines() -> st.SearchStrategy[bytes]:
    """Whole command lines without a bare CR or LF."""
    return command_soup(VERBS).map(
        lambda data: b"".join(line for line in data.splitlines(keepends=True)
                              if line.endswith(b"\r\n") and b"\r" not in line[:-2]
                              and b"\n" not in line[:-2]))


@given(_command_lines())
def test_every_command_gets_one_response(data: bytes) -> None:
    """RFC 1939 3: every command gets exactly one response, in order (RFC 2449 6.6), unless the
    session ends first (QUIT, or too many errors), and then at most one more, the closing one."""
    session = new_session(tls_available=False)
    outputs = drive(session, data)
    responses = [out for out in outputs if isinstance(out, Send | SendMessage)]
    commands = data.count(b"\r\n")
    if session.state is State.CLOSED:
        assert len(responses) <= commands + 1
    else:
        assert len(responses) == commands, (data, outputs)
