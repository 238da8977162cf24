"""The IMAP command reader and parser (geomail/proto/imap_parser.py): framing with literals
(RFC 9051 4.3, RFC 7888 LITERAL+/LITERAL-) and the grammar of every command (RFC 9051 9,
RFC 3501 9 for rev1's CHECK, LSUB, NEW/OLD/RECENT; RFC 7162 CONDSTORE/QRESYNC; RFC 5258, 6154,
5819 extended LIST; RFC 4731 ESEARCH; RFC 5182 SEARCHRES; RFC 4959 SASL-IR; RFC 2971 ID)."""

from __future__ import annotations

import datetime

import pytest

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
    parse_done,
)
from geomail.proto.imap_types import (
    Append,
    Authenticate,
    CopyMove,
    Enable,
    Expunge,
    Fetch,
    FetchAttribute,
    Id,
    List,
    Login,
    MailboxCommand,
    NoArguments,
    QResync,
    Rename,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    Section,
    Select,
    SequenceSet,
    Status,
    Store,
)


def events(reader: CommandReader) -> list[object]:
    out = []
    while (event := reader.next_event()) is not None:
        out.append(event)
    return out


def args(line: bytes) -> object:
    return parse_command(line).arguments


def bad(line: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_command(line)
    return info.value


# ---- the reader ---------------------------------------------------------------------------------

def test_reader_splits_pipelined_commands_fed_byte_by_byte() -> None:
    """RFC 9051 2.2.1, 5.5: commands end with CRLF and may be pipelined; bytes arrive in any
    pieces."""
    stream = b"a1 NOOP\r\na2 LOGIN x y\r\n"
    reader = CommandReader()
    got = []
    for byte in stream:
        reader.feed(bytes([byte]))
        got += events(reader)
    assert got == [CommandReady(b"a1 NOOP"), CommandReady(b"a2 LOGIN x y")]


def test_synchronizing_literal_waits_for_accept() -> None:
    """RFC 9051 4.3, 7.5: after ``{n}`` CRLF the client waits for ``+``; the reader asks."""
    reader = CommandReader()
    reader.feed(b"a LOGIN {4}\r\n")
    assert events(reader) == [LiteralRequest("a", "LOGIN", 4)]
    reader.feed(b"joe2 {3}\r\n")
    assert events(reader) == []  # paused until the caller answers
    reader.accept()
    assert events(reader) == [LiteralRequest("a", "LOGIN", 3)]
    reader.accept()
    reader.feed(b"pwd\r\n")
    [ready] = events(reader)
    assert ready == CommandReady(b"a LOGIN {4}\r\njoe2 {3}\r\npwd")
    assert parse_command(ready.data).arguments == Login("joe2", "pwd")


def test_refused_synchronizing_literal_drops_the_command() -> None:
    """RFC 9051 7.5: a server answering NO/BAD instead of ``+`` ends the command; the client
    sends no literal and the next line is a new command."""
    reader = CommandReader()
    reader.feed(b"a APPEND x {10}\r\nb NOOP\r\n")
    assert events(reader) == [LiteralRequest("a", "APPEND", 10)]
    reader.refuse()
    assert events(reader) == [CommandReady(b"b NOOP")]


def test_non_synchronizing_literal_needs_no_continuation() -> None:
    """RFC 7888 3: ``{n+}`` is followed by the data at once."""
    reader = CommandReader()
    reader.feed(b"a UID SEARCH SUBJECT {5+}\r\nhello ALL\r\n")
    [ready] = events(reader)
    assert parse_command(ready.data).arguments == Search(
        SearchAnd((SearchHeader("SUBJECT", "hello"), SearchAll())))


def test_literal_with_crlf_inside_is_not_a_line_end() -> None:
    """RFC 9051 4.3: a literal is counted octets, CR and LF included."""
    reader = CommandReader()
    reader.feed(b"a APPEND INBOX {7+}\r\nx\r\n\r\nyz\r\n")
    [ready] = events(reader)
    assert args(ready.data) == Append("INBOX", b"x\r\n\r\nyz")


def test_append_literal_limited_by_message_size() -> None:
    """RFC 9051 7.1 (TOOBIG), RFC 7889: APPEND's literal is the message, limited by the
    message size, not the small literal limit."""
    limits = ReaderLimits(max_literal=10, max_message=100)
    reader = CommandReader(limits)
    reader.feed(b"a APPEND INBOX {50}\r\n")
    assert events(reader) == [LiteralRequest("a", "APPEND", 50)]
    reader.refuse()
    reader.feed(b"b APPEND INBOX {101}\r\nc SEARCH TEXT {11}\r\n")
    assert events(reader) == [TooBig("b", "APPEND", 101, fatal=False),
                              TooBig("c", "SEARCH", 11, fatal=False)]
    reader.feed(b"d NOOP\r\n")
    assert events(reader) == [CommandReady(b"d NOOP")]


def test_literals_in_pieces_and_empty() -> None:
    """RFC 9051 4.3: a literal's octets may arrive in any pieces; ``{0}`` is a valid (empty)
    literal, still synchronizing."""
    reader = CommandReader()
    reader.feed(b"a LOGIN {0}\r\n")
    assert events(reader) == [LiteralRequest("a", "LOGIN", 0)]
    reader.accept()
    reader.feed(b" {6}\r\n")
    assert events(reader) == [LiteralRequest("a", "LOGIN", 6)]
    reader.accept()
    for piece in (b"se", b"cr", b"et", b"\r", b"\n"):
        reader.feed(piece)
        got = events(reader)
    assert got == [CommandReady(b"a LOGIN {0}\r\n {6}\r\nsecret")]
    assert args(got[0].data) == Login("", "secret")  # type: ignore[attr-defined]


def test_big_non_synchronizing_append_fits_the_message_limit() -> None:
    """RFC 7888 3 with RFC 9051 6.3.12: a ``{n+}`` APPEND larger than the literal limit but
    within the message size is read whole, and does not count against the command limit."""
    reader = CommandReader(ReaderLimits(max_literal=10, max_message=1000, max_command=100))
    reader.feed(b"a APPEND INBOX {500+}\r\n" + b"x" * 500 + b"\r\n")
    [ready] = events(reader)
    assert args(ready.data) == Append("INBOX", b"x" * 500)  # type: ignore[attr-defined]


def test_too_big_non_synchronizing_literal_is_fatal() -> None:
    """RFC 7888 4 (LITERAL-): a non-synchronizing literal over 4096 octets is refused with BAD
    and its octets are already on the way: the connection ends."""
    reader = CommandReader(ReaderLimits(max_nonsync_literal=4096))
    reader.feed(b"a APPEND INBOX {4097+}\r\n" + b"x" * 4097 + b"\r\nb NOOP\r\n")
    assert events(reader) == [TooBig("a", "APPEND", 4097, fatal=True)]
    reader.feed(b"c NOOP\r\n")
    assert events(reader) == []


def test_line_too_long_is_fatal() -> None:
    """RFC 9051 4 (a server may limit lengths), RFC 7162 4 (8192 octets recommended)."""
    reader = CommandReader(ReaderLimits(max_line=20))
    reader.feed(b"a " + b"x" * 30)
    assert events(reader) == [Fatal("line too long")]
    reader = CommandReader(ReaderLimits(max_line=20))
    reader.feed(b"a NOOP " + b"x" * 13 + b"\r\n")  # exactly 20 octets: fine
    assert len(events(reader)) == 1


def test_command_total_limit_counts_literals() -> None:
    """RFC 9051 4: the whole command, literals included, is bounded (not only each line)."""
    reader = CommandReader(ReaderLimits(max_literal=100, max_command=150))
    reader.feed(b"a LOGIN {90+}\r\n" + b"u" * 90 + b" {90+}\r\n")
    assert events(reader) == [Fatal("command too long")]


def test_bare_newline_is_fatal() -> None:
    """RFC 9051 2.2: lines end with CRLF; a bare LF or CR is not taken as one."""
    for stream in (b"a NOOP\n", b"a NO\rOP\r\n"):
        reader = CommandReader()
        reader.feed(stream)
        assert events(reader) == [Fatal("bare CR or LF")]


def test_expect_line_returns_authenticate_response_and_done_raw() -> None:
    """RFC 9051 6.2.2 (AUTHENTICATE responses are bare base64 lines), 6.3.13 (IDLE's DONE)."""
    reader = CommandReader()
    reader.feed(b"a IDLE\r\nDONE\r\n")
    assert reader.next_event() == CommandReady(b"a IDLE")  # the session handles it, then:
    reader.expect_line()
    [line] = events(reader)
    assert line == LineReady(b"DONE") and parse_done(line.data)
    assert not parse_done(b"DONE more")


# ---- strings and basic tokens -------------------------------------------------------------------

@pytest.mark.parametrize(("line", "expected"), [
    (b'a LOGIN "fred" "a\\"b\\\\c"', Login("fred", 'a"b\\c')),
    (b"a LOGIN {4}\r\nfred {2+}\r\n\xc3\xa9", Login("fred", "\u00e9")),
    (b'a LOGIN fr]ed ""', Login("fr]ed", "")),
    (b'a LOGIN "J\xc3\xb6rg" x', Login("J\u00f6rg", "x")),
])
def test_strings(line: bytes, expected: object) -> None:
    """RFC 9051 4.3 (quoted with ``\\`` escapes, literals, UTF-8), 9 (astring, ASTRING-CHAR
    includes ``]``)."""
    assert args(line) == expected


@pytest.mark.parametrize(("line", "reason"), [
    (b'a LOGIN "fr\\ed" x', "bad escape in quoted string"),
    (b'a LOGIN "fred x', "unterminated quoted string"),
    (b"a LOGIN {10}\r\nfred x", "literal shorter than announced"),
    (b"a LOGIN {2}\r\nf\x00 x", "NUL in literal"),
    (b'a LOGIN "\xff" x', "invalid UTF-8"),
    (b"a LOGIN fr(ed x", "space expected"),
    (b"a LOGIN fred", "space expected"),
    (b"a LOGIN fred x y", "unexpected characters after the arguments"),
])
def test_bad_strings(line: bytes, reason: str) -> None:
    """RFC 9051 4.3, 9: quoted-specials must be escaped, no NUL (CHAR8 excludes it), strings
    are UTF-8; BAD for anything else (7.1.3)."""
    error = bad(line)
    assert error.reason == reason and error.tag == "a"


def test_tag_and_command_errors() -> None:
    """RFC 9051 9: tag = 1*<ASTRING-CHAR except "+">; an unknown command is BAD (7.1.3)."""
    assert bad(b"+a NOOP").tag is None
    assert bad(b"").reason == "tag expected"
    assert bad(b"a FROB").reason == "unknown command"
    assert bad(b"a UID LIST x y").reason == "UID LIST is not a command"
    assert parse_command(b"a.1 noop").name == "NOOP"


@pytest.mark.parametrize("name", [b"CAPABILITY", b"NOOP", b"LOGOUT", b"STARTTLS", b"CHECK",
                                  b"CLOSE", b"UNSELECT", b"IDLE", b"NAMESPACE", b"EXPUNGE"])
def test_commands_without_arguments(name: bytes) -> None:
    """RFC 9051 6.1.1-6.1.3, 6.2.1, 6.3.10 (NAMESPACE), 6.3.13 (IDLE), 6.4.1-6.4.3; RFC 3501
    6.4.1 (CHECK)."""
    command = parse_command(b"t1 " + name.lower())
    assert command.name == name.decode()
    assert command.arguments in (NoArguments(), Expunge())
    assert bad(b"t1 " + name + b" x").reason == "unexpected characters after the arguments"


# ---- mailboxes ----------------------------------------------------------------------------------

def test_select_examine_condstore_qresync() -> None:
    """RFC 9051 6.3.2, 6.3.3 (INBOX is case-insensitive, 5.1); RFC 7162 3.1.8 (CONDSTORE),
    3.2.5 (QRESYNC with known UIDs and seq-match-data)."""
    assert args(b"a SELECT inBox") == Select("INBOX")
    assert args(b'a EXAMINE "Sent" (CONDSTORE)') == Select("Sent", readonly=True,
                                                          condstore=True)
    assert args(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))") == \
        Select("INBOX", qresync=QResync(67890007, 20050715194045000, SequenceSet(
            ((41, 41), (43, 211), (214, 541)))))
    got = args(b"a SELECT x (QRESYNC (1 2 (1:3 4:6)))")
    assert got == Select("x", qresync=QResync(1, 2, None, (SequenceSet(((1, 3),)),
                                                           SequenceSet(((4, 6),)))))
    assert bad(b"a SELECT x (CONDSTORE CONDSTORE)").tag == "a"
    assert bad(b"a SELECT x (QRESYNC (0 2))").reason == "non-zero number expected"
    assert bad(b"a SELECT x ()").reason == "keyword expected"


def test_create_delete_rename_subscribe() -> None:
    """RFC 9051 6.3.4-6.3.8; RFC 6154 3 (CREATE with USE)."""
    assert args(b"a CREATE Archive/2024") == MailboxCommand("Archive/2024")
    assert args(b"a CREATE MySent (USE (\\Sent))") == MailboxCommand("MySent", ("\\Sent",))
    assert args(b"a DELETE &ZeVnLIqe-") == MailboxCommand("&ZeVnLIqe-")
    assert args(b'a RENAME "Old" New') == Rename("Old", "New")
    assert args(b"a SUBSCRIBE inbox") == MailboxCommand("INBOX")
    assert args(b"a UNSUBSCRIBE x") == MailboxCommand("x")
    assert bad(b"a CREATE x (SPECIAL)").reason == "USE expected"


@pytest.mark.parametrize(("line", "expected"), [
    (b'a LIST "" *', List("", ("*",))),
    (b'a LIST "" %/x]', List("", ("%/x]",))),
    (b"a LIST ~smith/Mail/ foo.*", List("~smith/Mail/", ("foo.*",))),
    (b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("*" Work/%)',
     List("", ("*", "Work/%"), ("SUBSCRIBED", "RECURSIVEMATCH"), extended=True)),
    (b'a LIST (SPECIAL-USE) "" *', List("", ("*",), ("SPECIAL-USE",), extended=True)),
    (b'a LIST "" % RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UIDNEXT HIGHESTMODSEQ))',
     List("", ("%",), (), ("CHILDREN", "SPECIAL-USE", "STATUS"),
          ("MESSAGES", "UIDNEXT", "HIGHESTMODSEQ"), extended=True)),
    (b'a LIST () "" % RETURN ()', List("", ("%",), (), extended=True)),
    (b'a LSUB "#news." comp.mail.*', List("#news.", ("comp.mail.*",), ("SUBSCRIBED",),
                                          lsub=True)),
])
def test_list(line: bytes, expected: List) -> None:
    """RFC 9051 6.3.9 and 9 (list, list-select-opts, list-return-opts, list-mailbox with
    wildcards and ``]``); RFC 5258 3 (extended LIST), RFC 6154 5 (SPECIAL-USE), RFC 5819 (LIST
    STATUS); RFC 3501 6.3.9 (LSUB)."""
    assert args(line) == expected


@pytest.mark.parametrize("line", [
    b'a LIST (RECURSIVEMATCH) "" *',  # RFC 5258 3.1: not alone
    b'a LIST (FOO) "" *',
    b'a LIST "" * RETURN (CHILDREN CHILDREN)',
    b'a LIST "" * RETURN (STATUS (BOGUS))',
    b'a LIST "" * RETURN (STATUS ())',
    b'a LIST "" ()',
    b'a LIST ""',
])
def test_bad_list(line: bytes) -> None:
    """RFC 5258 3.1, 3.2 (options), RFC 5819 (status-att list non-empty), RFC 9051 9."""
    bad(line)


def test_status() -> None:
    """RFC 9051 6.3.11 (status-att incl. SIZE, DELETED), RFC 3501 6.3.10 (RECENT), RFC 7162
    3.1.6 (HIGHESTMODSEQ)."""
    assert args(b"a STATUS blurdybloop (UIDNEXT MESSAGES size deleted RECENT HIGHESTMODSEQ)") == \
        Status("blurdybloop", ("UIDNEXT", "MESSAGES", "SIZE", "DELETED", "RECENT",
                               "HIGHESTMODSEQ"))
    assert bad(b"a STATUS x ()").reason == "keyword expected"
    assert bad(b"a STATUS x (FOO)").reason == "unknown STATUS item"


def test_append() -> None:
    """RFC 9051 6.3.12 and 9 (append, date-time with a space-padded day), RFC 3516 (literal8)."""
    cmd = (b'a APPEND saved-messages (\\Seen \\flagged $Label1) " 7-Feb-1994 21:52:25 -0800" '
           b"{3}\r\nabc")
    assert args(cmd) == Append(
        "saved-messages", b"abc", ("\\Seen", "\\Flagged", "$Label1"),
        datetime.datetime(1994, 2, 7, 21, 52, 25,
                          tzinfo=datetime.timezone(-datetime.timedelta(hours=8))))
    assert args(b"a APPEND INBOX ~{3+}\r\na\x00b") == Append("INBOX", b"a\x00b", binary=True)
    assert args(b"a APPEND INBOX () {0+}\r\n") == Append("INBOX", b"")
    for date in (b'"31-Feb-2024 00:00:00 +0000"', b'"01-Foo-2024 00:00:00 +0000"',
                 b'"01-Jan-2024 24:00:00 +0000"', b'"01-Jan-2024 00:00:00 +0060"',
                 b'"1-Jan-2024 00:00:00 +0000"'):
        assert bad(b"a APPEND INBOX " + date + b" {1+}\r\nx").tag == "a"
    assert bad(b"a APPEND INBOX abc").reason == "literal expected"


def test_login_authenticate_enable_id() -> None:
    """RFC 9051 6.2.3 (LOGIN), 6.2.2 + RFC 4959 7 (SASL-IR, ``=`` is empty), 6.3.1 (ENABLE),
    RFC 2971 3.3 (ID)."""
    assert args(b"a AUTHENTICATE plain AGZyZWQAcGFzcw==") == Authenticate("PLAIN",
                                                                           "AGZyZWQAcGFzcw==")
    assert args(b"a AUTHENTICATE SCRAM-SHA-256") == Authenticate("SCRAM-SHA-256")
    assert args(b"a AUTHENTICATE PLAIN =") == Authenticate("PLAIN", "")
    assert bad(b"a AUTHENTICATE PLAIN abc").reason == "bad base64 in initial response"
    assert bad(b"a AUTHENTICATE PLAIN a=bc").reason == "bad base64 in initial response"
    assert args(b"a ENABLE CONDSTORE utf8=accept") == Enable(("CONDSTORE", "UTF8=ACCEPT"))
    assert bad(b"a ENABLE").reason == "capability expected"
    assert args(b'a ID ("name" "sodr" "version" NIL)') == Id((("name", "sodr"),
                                                              ("version", None)))
    assert args(b"a ID NIL") == Id(None)
    assert args(b"a ID ()") == Id(())
    assert bad(b"a ID (" + b" ".join([b'"k" "v"'] * 31) + b")").reason == "too many ID fields"


# ---- messages -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (b"1", ((1, 1),)),
    (b"1:*", ((1, None),)),
    (b"*:4,5,7:9", ((None, 4), (5, 5), (7, 9))),
    (b"4294967295", ((4294967295, 4294967295),)),
])
def test_sequence_sets(text: bytes, expected: tuple[tuple[int | None, int | None], ...]) -> None:
    """RFC 9051 9 (sequence-set, seq-range, ``*``), 6.4.8 (UID COPY)."""
    assert args(b"a COPY " + text + b" x") == CopyMove(SequenceSet(expected), "x")


def test_sequence_set_errors_and_saved() -> None:
    """RFC 9051 9 (nz-number: no 0, no leading 0, 32 bits), RFC 5182 2 (``$``)."""
    for text in (b"0", b"01", b"4294967296", b"1:", b"1,", b",1", b"a"):
        bad(b"a COPY " + text + b" x")
    assert args(b"a UID MOVE $ Trash") == CopyMove(SequenceSet(saved=True), "Trash")
    assert parse_command(b"a UID EXPUNGE 3:5").arguments == Expunge(SequenceSet(((3, 5),)))
    assert bad(b"a UID EXPUNGE").reason == "space expected"


@pytest.mark.parametrize(("atts", "expected"), [
    (b"ALL", ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
    (b"fast", ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
    (b"FULL", ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")),
    (b"(uid RFC822 RFC822.HEADER RFC822.TEXT BODYSTRUCTURE MODSEQ)",
     ("UID", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODYSTRUCTURE", "MODSEQ")),
    (b"BODY", ("BODY",)),
])
def test_fetch_macros_and_simple_attributes(atts: bytes, expected: tuple[str, ...]) -> None:
    """RFC 9051 6.4.5 (the macros ALL, FAST, FULL; fetch-att), RFC 7162 3.1.4.1 (MODSEQ)."""
    fetch = args(b"a FETCH 1:* " + atts)
    assert isinstance(fetch, Fetch)
    assert tuple(att.name for att in fetch.attributes) == expected


@pytest.mark.parametrize(("att", "expected"), [
    (b"BODY[]", FetchAttribute("BODY", Section())),
    (b"BODY.PEEK[]<0.2048>", FetchAttribute("BODY", Section(), (0, 2048), peek=True)),
    (b"body[header]", FetchAttribute("BODY", Section((), "HEADER"))),
    (b"BODY[HEADER.FIELDS (DATE from)]",
     FetchAttribute("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM")))),
    (b"BODY[1.2.HEADER.FIELDS.NOT (X-Foo)]",
     FetchAttribute("BODY", Section((1, 2), "HEADER.FIELDS.NOT", ("X-FOO",)))),
    (b"BODY[3.MIME]", FetchAttribute("BODY", Section((3,), "MIME"))),
    (b"BODY[4.2.TEXT]<10.5>", FetchAttribute("BODY", Section((4, 2), "TEXT"), (10, 5))),
    (b"BODY[2]", FetchAttribute("BODY", Section((2,)))),
    (b"BINARY[1.2]", FetchAttribute("BINARY", Section((1, 2)))),
    (b"BINARY.PEEK[]<0.10>", FetchAttribute("BINARY", Section(), (0, 10), peek=True)),
    (b"BINARY.SIZE[1]", FetchAttribute("BINARY.SIZE", Section((1,)))),
])
def test_fetch_sections(att: bytes, expected: FetchAttribute) -> None:
    """RFC 9051 6.4.5 and 9 (section, section-spec, section-part, section-text, partial,
    BODY.PEEK, BINARY[.PEEK], BINARY.SIZE with section-binary)."""
    fetch = args(b"a UID FETCH 1 (" + att + b")")
    assert isinstance(fetch, Fetch) and fetch.attributes == (expected,)


@pytest.mark.parametrize("att", [
    b"BODY[MIME]",  # MIME needs a part
    b"BODY[0]", b"BODY[1.]", b"BODY[HEADER.FIELDS]", b"BODY[HEADER.FIELDS ()]",
    b"BODY[]<0>", b"BODY[]<0.0>", b"BODY.PEEK", b"BINARY[1.TEXT]", b"BINARY", b"FOO",
    b"(ALL)", b"()", b"(FLAGS", b"BODY[TEXT",
])
def test_bad_fetch_attributes(att: bytes) -> None:
    """RFC 9051 9: section-text MIME only after a part, nz-number parts, header-list non-empty,
    partial length non-zero, macros not inside a list, section-binary without text."""
    bad(b"a FETCH 1 " + att)


def test_fetch_modifiers() -> None:
    """RFC 7162 3.1.4 (CHANGEDSINCE), 3.2.6 (VANISHED: UID FETCH only, with CHANGEDSINCE)."""
    assert args(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)") == Fetch(
        SequenceSet(((1, None),)), (FetchAttribute("FLAGS"),), 12345)
    fetch = parse_command(b"a UID FETCH 1:* FLAGS (CHANGEDSINCE 5 VANISHED)").arguments
    assert isinstance(fetch, Fetch) and fetch.vanished
    assert bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 5 VANISHED)").tag == "a"
    assert bad(b"a UID FETCH 1 FLAGS (VANISHED)").reason == "VANISHED needs CHANGEDSINCE"
    assert bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 0)").reason == "non-zero number expected"


@pytest.mark.parametrize(("line", "expected"), [
    (b"a STORE 2:4 +FLAGS (\\Deleted)",
     Store(SequenceSet(((2, 4),)), "+", False, ("\\Deleted",))),
    (b"a STORE 1 -FLAGS.SILENT \\seen $Junk",
     Store(SequenceSet(((1, 1),)), "-", True, ("\\Seen", "$Junk"))),
    (b"a STORE 1 FLAGS ()", Store(SequenceSet(((1, 1),)), "", False, ())),
    (b"a STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
     Store(SequenceSet(((7, 7), (5, 5), (9, 9))), "+", True, ("\\Deleted",), 320162338)),
])
def test_store(line: bytes, expected: Store) -> None:
    """RFC 9051 6.4.6 and 9 (store-att-flags, flag list with or without parentheses), RFC 7162
    3.1.3 (UNCHANGEDSINCE)."""
    assert args(line) == expected


@pytest.mark.parametrize("line", [b"a STORE 1 FLAGS", b"a STORE 1 *FLAGS (x)",
                                  b"a STORE 1 +FLAGS.LOUD (x)", b"a STORE 1 FLAGS (x",
                                  b"a STORE 1 (CHANGEDSINCE 1) FLAGS (x)"])
def test_bad_store(line: bytes) -> None:
    """RFC 9051 9 (store-att-flags), RFC 7162 3.1.3 (store-modifier)."""
    bad(line)


# ---- SEARCH -------------------------------------------------------------------------------------

D = datetime.date


@pytest.mark.parametrize(("keys", "expected"), [
    (b"ALL", SearchAll()),
    (b"FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"",
     SearchAnd((SearchFlag("\\Flagged"), SearchDate("since", D(1994, 2, 1)),
                SearchNot(SearchHeader("FROM", "Smith"))))),
    (b"OR BODY x TEXT {1+}\r\ny", SearchOr(SearchText("BODY", "x"), SearchText("TEXT", "y"))),
    (b"(UNSEEN UNDELETED) UID 1:5,9", SearchAnd((
        SearchAnd((SearchFlag("\\Seen", False), SearchFlag("\\Deleted", False))),
        SearchSet(SequenceSet(((1, 5), (9, 9))), uid=True)))),
    (b"2:4 $", SearchAnd((SearchSet(SequenceSet(((2, 4),))), SearchSet(SequenceSet(
        saved=True))))),
    (b"ANSWERED UNANSWERED DRAFT UNDRAFT SEEN DELETED UNFLAGGED", SearchAnd((
        SearchFlag("\\Answered"), SearchFlag("\\Answered", False), SearchFlag("\\Draft"),
        SearchFlag("\\Draft", False), SearchFlag("\\Seen"), SearchFlag("\\Deleted"),
        SearchFlag("\\Flagged", False)))),
    (b"KEYWORD $Forwarded UNKEYWORD work", SearchAnd((SearchFlag("$Forwarded"),
                                                      SearchFlag("work", False)))),
    (b"HEADER Message-ID <x@y> BCC a CC b TO c SUBJECT \"hi there\"", SearchAnd((
        SearchHeader("MESSAGE-ID", "<x@y>"), SearchHeader("BCC", "a"), SearchHeader("CC", "b"),
        SearchHeader("TO", "c"), SearchHeader("SUBJECT", "hi there")))),
    (b"BEFORE \"01-Jan-2020\" ON 31-Dec-2019 SENTBEFORE 1-mar-2020 SENTON 2-Mar-2020 "
     b"SENTSINCE 3-Mar-2020", SearchAnd((
         SearchDate("before", D(2020, 1, 1)), SearchDate("on", D(2019, 12, 31)),
         SearchDate("before", D(2020, 3, 1), sent=True), SearchDate("on", D(2020, 3, 2), True),
         SearchDate("since", D(2020, 3, 3), True)))),
    (b"LARGER 1000 SMALLER 9223372036854775807", SearchAnd((
        SearchSize(True, 1000), SearchSize(False, 2**63 - 1)))),
    (b"NEW OLD RECENT", SearchAnd((
        SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False))),
        SearchNot(SearchFlag("\\Recent")), SearchFlag("\\Recent")))),
    (b"MODSEQ 620162338", SearchModSeq(620162338)),
    (b"MODSEQ \"/flags/\\\\draft\" all 620162338",
     SearchModSeq(620162338, ("/flags/\\draft", "all"))),
    (b"NOT NOT OR OR SEEN DRAFT (ALL) ALL", SearchAnd((SearchNot(SearchNot(SearchOr(
        SearchOr(SearchFlag("\\Seen"), SearchFlag("\\Draft")), SearchAll()))), SearchAll()))),
])
def test_search_keys(keys: bytes, expected: object) -> None:
    """RFC 9051 6.4.4 and 9 (search-key: every key, OR, NOT, parentheses, sequence sets, UID,
    dates bare or quoted, number64 sizes); RFC 3501 6.4.4 (NEW, OLD, RECENT); RFC 5182 2
    (``$``); RFC 7162 3.1.5 (MODSEQ with an entry)."""
    search = args(b"a SEARCH " + keys)
    assert isinstance(search, Search)
    assert search.key == expected


def test_search_charset_and_return() -> None:
    """RFC 9051 6.4.4 (CHARSET, RETURN options MIN MAX ALL COUNT SAVE), RFC 4731 3.1 (empty
    RETURN () means ALL), RFC 5182 2 (SAVE)."""
    search = parse_command(b"a UID SEARCH RETURN (MIN MAX COUNT SAVE ALL) CHARSET utf-8 "
                           b"SUBJECT {6+}\r\n\xc3\xa9t\xc3\xa9!").arguments
    assert search == Search(SearchHeader("SUBJECT", "\u00e9t\u00e9!"), "UTF-8",
                            ("MIN", "MAX", "COUNT", "SAVE", "ALL"))
    assert args(b"a SEARCH RETURN () ALL") == Search(SearchAll(), None, ())
    assert args(b"a SEARCH ALL") == Search(SearchAll())
    assert bad(b"a SEARCH RETURN (FOO) ALL").tag == "a"
    assert bad(b"a SEARCH RETURN (MIN MIN) ALL").tag == "a"


@pytest.mark.parametrize("keys", [
    b"", b"FOO", b"SINCE", b"SINCE 1-Feb", b"SINCE 30-Feb-2024", b"OR SEEN", b"NOT",
    b"(SEEN", b"SEEN)", b"()", b"LARGER x", b"LARGER 9223372036854775808", b"UID",
    b"MODSEQ \"/other/x\" all 1", b"MODSEQ \"/flags/x\" some 1", b"HEADER x",
    b"KEYWORD \\Seen", b"SEEN  DRAFT", b"CHARSET",
])
def test_bad_search(keys: bytes) -> None:
    """RFC 9051 9 (search-key arguments, date, number64), RFC 7162 3.1.5 (entry-name is
    "/flags/..." and entry-type-req priv/shared/all)."""
    bad(b"a SEARCH " + keys)


def test_nesting_is_bounded() -> None:
    """RFC 9051 9 permits unbounded nesting of search keys; we refuse very deep ones with BAD
    instead of recursing (7.1.3)."""
    assert bad(b"a SEARCH " + b"(" * 100 + b"ALL" + b")" * 100).reason == "too deeply nested"
    assert bad(b"a SEARCH " + b"NOT " * 100 + b"ALL").reason == "too deeply nested"
    assert bad(b"a SEARCH " + b"OR ALL " * 100 + b"ALL").reason == "too deeply nested"
    assert isinstance(args(b"a SEARCH " + b"(" * 20 + b"ALL" + b")" * 20), Search)
