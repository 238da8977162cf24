"""Fuzzing the IMAP command reader and parser (geomail/proto/imap_parser.py): RFC 9051 4.3
(strings and literals), 9 (the formal syntax), RFC 7888 (LITERAL+)."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto.imap_parser import (
    CommandReader,
    CommandReady,
    Fatal,
    LineReady,
    LiteralRequest,
    ParseError,
    ReaderLimits,
    TooBig,
    parse_command,
)
from geomail.proto.imap_types import Command, Login
from tests.fuzz.mutations import mutated

SEEDS = [
    b"a1 CAPABILITY", b"a2 LOGIN fred \"pa\\\"ss\"", b"a3 LOGIN {4+}\r\nfred {3}\r\nxyz",
    b"a4 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211 (1,3 1,3)))",
    b"a5 EXAMINE Sent (CONDSTORE)", b"a6 CREATE x (USE (\\Sent))", b"a7 RENAME a b",
    b"a8 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"*\" %) RETURN (CHILDREN STATUS (MESSAGES))",
    b"a9 LSUB \"\" *", b"b1 STATUS x (UIDNEXT MESSAGES HIGHESTMODSEQ)",
    b"b2 APPEND INBOX (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" {5+}\r\nhello",
    b"b3 AUTHENTICATE PLAIN AGZyZWQAcGFzcw==", b"b4 ENABLE CONDSTORE UTF8=ACCEPT",
    b"b5 ID (\"name\" \"x\" \"version\" NIL)", b"b6 UID EXPUNGE 1:*", b"b7 UID MOVE $ Trash",
    b"b8 FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100> BINARY.SIZE[1])",
    b"b9 UID FETCH 1:* FULL (CHANGEDSINCE 5 VANISHED)",
    b"c1 STORE 1,3:* (UNCHANGEDSINCE 4) -FLAGS.SILENT (\\Deleted $Junk)",
    b"c2 UID SEARCH RETURN (MIN COUNT SAVE) CHARSET UTF-8 OR FROM {3+}\r\nabc (NOT SEEN) "
    b"SINCE 1-Feb-2024 MODSEQ \"/flags/\\\\draft\" all 620162338 HEADER X-A b LARGER 10",
    b"c3 SEARCH NEW OLD UID 1:5 2:4 $ BEFORE \"1-Jan-2020\"", b"c4 IDLE", b"c5 COPY 1 x",
]
COMMANDS = st.one_of(mutated(SEEDS), st.binary(max_size=200))
LIMITS = ReaderLimits(max_line=100, max_literal=50, max_message=200, max_command=400,
                      max_nonsync_literal=40)


@given(COMMANDS)
def test_parser_raises_only_parse_error(data: bytes) -> None:
    """RFC 9051 7.1.3: a malformed command gets BAD; the parser's only failure is ParseError,
    whose reason is short printable text fit for the BAD line."""
    try:
        command = parse_command(data)
    except ParseError as error:
        assert error.reason.isascii() and error.reason.isprintable() and len(error.reason) < 80
        assert error.tag is None or (error.tag and "+" not in error.tag)
        return
    assert isinstance(command, Command) and command.tag and command.name.isupper()


@given(st.lists(COMMANDS, min_size=1, max_size=4), st.data())
def test_reader_never_raises_and_keeps_limits(commands: list[bytes], data: st.DataObject) -> None:
    """RFC 9051 4.3 and RFC 7888: whatever arrives, split anywhere, with literals accepted or
    refused, the reader gives events only, and every command stays within its limits."""
    stream = b"".join(c + b"\r\n" for c in commands)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    reader = CommandReader(LIMITS)
    start = 0
    for cut in [*cuts, len(stream)]:
        reader.feed(stream[start:cut])
        start = cut
        while (event := reader.next_event()) is not None:
            assert isinstance(event, CommandReady | LineReady | LiteralRequest | TooBig | Fatal)
            if isinstance(event, LiteralRequest):
                assert event.size <= LIMITS.max_message
                if data.draw(st.booleans()):
                    reader.accept()
                else:
                    reader.refuse()
            elif isinstance(event, CommandReady):
                assert len(event.data) <= LIMITS.max_command + LIMITS.max_message
                assert b"\r\n" not in event.data or b"{" in event.data
                with contextlib.suppress(ParseError):
                    parse_command(event.data)
            elif isinstance(event, TooBig):
                assert event.size > LIMITS.max_nonsync_literal or event.size > LIMITS.max_literal
            if data.draw(st.integers(0, 9)) == 0:
                reader.expect_line()


_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0\r\n"),
                max_size=30)


def _quoted(text: str) -> bytes:
    return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _literal(text: str) -> bytes:
    raw = text.encode()
    return b"{%d+}\r\n" % len(raw) + raw


@given(_TEXT, _TEXT, st.booleans(), st.booleans())
def test_strings_round_trip(user: str, password: str, lit1: bool, lit2: bool) -> None:
    """RFC 9051 4.3: any UTF-8 text without NUL, CR, LF sent quoted (escaped) or as a literal
    reads back the same; a literal may also carry CR and LF (tested in the unit tests)."""
    line = (b"t LOGIN " + (_literal if lit1 else _quoted)(user) + b" "
            + (_literal if lit2 else _quoted)(password))
    reader = CommandReader()
    reader.feed(line + b"\r\n")
    event = reader.next_event()
    assert isinstance(event, CommandReady)
    assert parse_command(event.data).arguments == Login(user, password)
