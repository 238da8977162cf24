"""Fuzzing the SMTP server session (geomail/proto/smtp.py) with mutated real conversations.

Inputs start from every conversation of the SMTP dialog and session tests (tests/support/corpus.py)
and are broken by tests/fuzz/mutations.py; the session is built with the unit tests' fake handler
(tests/support/smtp_session.py). The properties hold whatever the limits are (error limits, body
line bounds), so they stay true while those change.
"""

from __future__ import annotations

import base64
import re

from hypothesis import example, given
from hypothesis import strategies as st

from geomail.proto.reply import Close, Reply, StartTLS
from geomail.proto.smtp import COMMANDS
from geomail.proto.smtp_types import State
from tests.fuzz.mutations import command_soup, hostile, mutated
from tests.support.corpus import smtp_conversations
from tests.support.smtp_session import (
    ALICE,
    EHLO,
    MAIL,
    PASSWORD,
    RCPT,
    FakeHandler,
    Output,
    Run,
    SessionDriver,
    make_session,
)
from tests.support.splits import fed


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


# Logged-in submissions (the dialog tests log in with helpers the corpus cannot read).
LOGGED_IN = [
    EHLO + b"AUTH PLAIN " + _b64(f"\0{ALICE}\0{PASSWORD}") + b"\r\n" + MAIL + RCPT
    + b"DATA\r\nSubject: hi\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n",
    EHLO + b"AUTH LOGIN\r\n" + _b64(ALICE) + b"\r\n" + _b64(PASSWORD) + b"\r\n" + MAIL + RCPT
    + b"BDAT 7\r\nhello\r\nBDAT 0 LAST\r\nRSET\r\n",
]
SEEDS = [c for c in smtp_conversations() if len(c) <= 8192] + LOGGED_IN
VERBS = sorted(COMMANDS)
INPUTS = st.one_of(hostile(SEEDS, VERBS), mutated(LOGGED_IN))
# Small limits, so that faults (size, recipients, errors) are reached by short inputs.
LIMITS = {"max_message_size": 4096, "max_recipients": 5}
# Where the client may end up: port 25 (no TLS offered, so no StartTLS output that would make the
# result depend on pipelining), and submission after TLS (AUTH offered).
LISTENERS = {
    "smtp": {"listener": "smtp"},
    "submission-tls": {"listener": "submission", "tls": "TLSv1.3"},
}
REPLY_LINE = re.compile(rb"(\d{3})([ -])[\t\x20-\x7e\x80-\xff]*\r\n")


def new_session(listener: str, **settings: object) -> SessionDriver:
    return make_session(FakeHandler(), **LISTENERS[listener], **LIMITS, **settings)  # type: ignore[arg-type]


def play(session: SessionDriver, chunks: list[bytes]) -> list[Output]:
    """Feed each packet, then end of stream, as the connection shell does; after a StartTLS
    output the handshake "succeeds" before the next packet."""
    outputs: list[Output] = []
    for chunk in [*chunks, b""]:
        for out in session.feed(chunk):
            outputs.append(out)
            if isinstance(out, StartTLS):
                session.tls_started("TLSv1.3 fuzz")
    return outputs


def check_reply(reply: Reply) -> None:
    """RFC 5321 4.2: ``ddd-`` lines then one ``ddd `` line, each ended by CRLF, one code, and
    no CR or LF inside a line (a reply can never inject another); RFC 3463 2: the enhanced
    code's class is the reply's."""
    assert 200 <= reply.code <= 599, reply
    lines = reply.wire.splitlines(keepends=True)
    assert lines, reply
    for i, line in enumerate(lines):
        match = REPLY_LINE.fullmatch(line)
        assert match, line
        assert int(match.group(1)) == reply.code
        assert match.group(2) == (b" " if i == len(lines) - 1 else b"-"), reply
    if reply.enhanced:
        assert reply.enhanced[0] == str(reply.code)[0], reply


def check_outputs(session: SessionDriver, outputs: list[Output]) -> None:
    """The end state every conversation must reach, whatever it was."""
    for out in outputs:
        assert type(out).__module__.startswith("geomail.proto."), out
        if isinstance(out, Reply):
            check_reply(out)
    closes = [i for i, out in enumerate(outputs) if isinstance(out, Close)]
    assert closes == [len(outputs) - 1], outputs  # one Close, at the very end
    assert session.state is State.CLOSED
    assert session.feed(b"MAIL FROM:<a@b.c>\r\n") == []  # nothing is answered after Close
    handler = session.handler
    assert isinstance(handler, FakeHandler)
    # Every body opened (MessageStart) was either handed over by MessageComplete or discarded
    # by MessageAborted: nothing left behind, and no request left unanswered.
    assert session.sink is None and session.pending is None
    assert sum(not sink.discarded for sink in handler.sinks) == len(handler.messages)
    assert session.accepted == len(handler.messages)
    for message in handler.messages:
        assert b"\r" not in message.content  # LF-normalised, no bare CR kept (RFC 5321 2.3.8)
        assert 1 <= len(message.recipients) <= LIMITS["max_recipients"]


@given(fed(INPUTS), st.sampled_from(sorted(LISTENERS)), st.booleans())
def test_any_input_ends_in_a_valid_state(case: tuple[bytes, list[bytes]], listener: str,
                                         tls_available: bool) -> None:
    """RFC 5321 4.1.4 and 4.2: whatever the client sends, split however, the session answers
    with well-formed replies and no exception, ends closed after end of stream, and leaves no
    message body open; STARTTLS (RFC 3207 4) is taken when offered."""
    _data, chunks = case
    session = new_session(listener, tls_available=tls_available)
    check_outputs(session, play(session, chunks))


# The old DATA reader dropped a bare CR inside a line already past the limit when the line came
# in two packets (554, session goes on) but refused it when whole (521 and close).
_LONG_BARE_CR = EHLO + MAIL + RCPT + b"DATA\r\n\r" + b"x" * 1100 + b"\r\n.\r\nQUIT\r\n"


@given(fed(INPUTS), st.sampled_from(sorted(LISTENERS)))
@example((_LONG_BARE_CR, [_LONG_BARE_CR[:-100], _LONG_BARE_CR[-100:]]), "smtp")
def test_same_result_however_split(case: tuple[bytes, list[bytes]], listener: str) -> None:
    """RFC 5321 2.3.8 and 4.5.2 (and RFC 2920 PIPELINING): TCP may cut the stream anywhere,
    so the replies, the hook calls, the stored content and the final state must be the same
    whether the bytes come whole or cut at arbitrary points."""
    data, chunks = case
    runs = []
    for packets in ([data], chunks):
        session = new_session(listener)
        outputs = play(session, packets)
        runs.append(Run(session, session.handler, outputs).snapshot())  # type: ignore[arg-type]
    assert runs[1] == runs[0]


def _command_lines() -> st.SearchStrategy[bytes]:
    """Command lines only: no DATA/BDAT (they switch to content), no bare CR/LF, none long."""
    def plain(line: bytes) -> bool:
        verb = line.split(b" ", 1)[0].upper()
        return verb not in (b"DATA", b"BDAT") and b"\r" not in line[:-2] \
            and b"\n" not in line[:-2] and len(line) <= 512
    return command_soup(VERBS).map(
        lambda data: b"".join(line for line in data.splitlines(keepends=True)
                              if line.endswith(b"\r\n") and plain(line)))


@given(_command_lines(), st.sampled_from(sorted(LISTENERS)))
def test_every_command_gets_one_reply(data: bytes, listener: str) -> None:
    """RFC 5321 4.2 and 4.1.1: every command line gets exactly one reply (RFC 2920 3: in order,
    pipelined or not), unless the session ends first (QUIT, or 421 after too many errors:
    RFC 5321 3.8), and then at most one more reply, the one that closes."""
    session = new_session(listener)
    outputs = session.feed(data)
    replies = [out for out in outputs if isinstance(out, Reply)]
    commands = data.count(b"\r\n")
    if session.state is State.CLOSED:
        assert len(replies) <= commands + 1
    else:
        # An AUTH exchange waits for the client's response: its 334 is the reply to that line.
        assert len(replies) == commands, (data, outputs)
