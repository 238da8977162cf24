"""proto.client: SMTP replies as a client reads them (RFC 5321 4.2, RFC 3463, RFC 2034, 1870)."""

from __future__ import annotations

import pytest

from geomail.proto.client import (
    Extensions,
    MalformedReply,
    ReplyParser,
    ServerReply,
    parse_ehlo,
)

EHLO = (b"250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
        b"250-8BITMIME\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n"
        b"250 SMTPUTF8\r\n")


def feed_all(data: bytes, parser: ReplyParser | None = None) -> list[ServerReply]:
    parser = parser or ReplyParser()
    return parser.feed(data)


def test_single_line_with_enhanced_code() -> None:
    """RFC 5321 4.2 / RFC 3463: '250 2.1.0 Sender OK' has code, enhanced code and text."""
    [reply] = feed_all(b"250 2.1.0 Sender OK\r\n")
    assert reply.code == 250 and reply.enhanced == "2.1.0" and reply.text == "Sender OK"
    assert reply.positive and not reply.transient and not reply.permanent
    assert str(reply) == "250 2.1.0 Sender OK"


def test_multiline_reply() -> None:
    """RFC 5321 4.2.1: 'DDD-' continues a reply, 'DDD ' ends it."""
    [reply] = feed_all(b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n")
    assert reply.code == 550 and reply.permanent
    assert reply.lines == ("5.1.1 first", "5.1.1 second", "5.1.1 third")
    assert reply.enhanced == "5.1.1"
    assert reply.text == "first 5.1.1 second 5.1.1 third"


def test_split_anywhere() -> None:
    """RFC 5321 4.2: a reply split across reads at any offset, or byte by byte, parses the same."""
    for cut in range(len(EHLO) + 1):
        parser = ReplyParser()
        replies = parser.feed(EHLO[:cut]) + parser.feed(EHLO[cut:])
        assert len(replies) == 1 and len(replies[0].lines) == 8
        assert not parser.buffered
    parser = ReplyParser()
    replies = [r for i in range(len(EHLO)) for r in parser.feed(EHLO[i:i + 1])]
    assert replies == feed_all(EHLO)


def test_pipelined_replies_in_one_read() -> None:
    """RFC 2920 3.2: several replies may arrive in one read; they come out in order."""
    replies = feed_all(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 no\r\n354 go ahead\r\n")
    assert [r.code for r in replies] == [250, 250, 550, 354]
    assert replies[3].enhanced is None and replies[3].text == "go ahead"


def test_bare_lf_and_no_text() -> None:
    """RFC 5321 4.2: a client is lenient: bare LF endings and a bare code are accepted."""
    assert [r.code for r in feed_all(b"220\n250 ok\n")] == [220, 250]


def test_enhanced_code_must_match_class() -> None:
    """RFC 3463 2: the enhanced code's class matches the reply's; otherwise it is just text."""
    [reply] = feed_all(b"250 5.1.1 odd\r\n")
    assert reply.enhanced is None and reply.text == "5.1.1 odd"


@pytest.mark.parametrize("data", [
    b"hello\r\n", b"25 short\r\n", b"2500 long\r\n", b"199 low\r\n", b"250xbad sep\r\n",
    b"250-a\r\n251 b\r\n",
])
def test_malformed(data: bytes) -> None:
    """RFC 5321 4.2: anything but 'DDD[ -]text' (same code on every line) is a protocol error."""
    with pytest.raises(MalformedReply):
        feed_all(data)


def test_bounded_line_and_reply() -> None:
    """RFC 5321 4.5.3.1.5: reply lines are bounded; an endless line or reply is refused."""
    parser = ReplyParser(max_line=100, max_lines=3)
    with pytest.raises(MalformedReply):
        parser.feed(b"250-" + b"x" * 200)
    parser = ReplyParser(max_line=100, max_lines=3)
    with pytest.raises(MalformedReply):
        parser.feed(b"250-a\r\n" * 4)


def test_parse_ehlo() -> None:
    """RFC 5321 4.1.1.1: EHLO lines after the first are 'KEYWORD params'; RFC 1870 SIZE value."""
    [reply] = feed_all(EHLO)
    ext = parse_ehlo(reply)
    for keyword in ("PIPELINING", "8BITMIME", "STARTTLS", "SMTPUTF8", "pipelining"):
        assert keyword in ext
    assert "DSN" not in ext
    assert ext.size_limit == 10240000
    assert ext.auth_mechanisms == {"PLAIN", "LOGIN"}


def test_ehlo_oddities() -> None:
    """RFC 1870 4 (SIZE 0: no limit), RFC 4954 / old AUTH= form, HELO gives no extensions."""
    [reply] = feed_all(b"250-x\r\n250-SIZE\r\n250 AUTH=LOGIN PLAIN\r\n")
    ext = parse_ehlo(reply)
    assert ext.size_limit is None and ext.auth_mechanisms == {"LOGIN", "PLAIN"}
    [reply] = feed_all(b"250-x\r\n250 SIZE 0\r\n")
    assert parse_ehlo(reply).size_limit is None
    assert "PIPELINING" not in Extensions() and Extensions().size_limit is None


def test_reply_text_is_kept_to_printable_ascii() -> None:
    """RFC 5321 4.2.1 (reply text: HT, SP and printable US-ASCII): ESC, NUL,
    DEL, a bare CR, BEL and 8-bit octets in a remote reply become '?' before anything stores,
    logs or shows the text; HT stays; the codes are still read."""
    [reply] = feed_all(b"550 5.1.1 bad\x1b[31m\x00\x7fuser\r\n")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.1.1", "bad?[31m??user")
    [reply] = feed_all(b"451-4.3.0 a\rb\x07\tc\r\n451 4.3.0 caf\xc3\xa9\xff\r\n")
    assert reply.lines == ("4.3.0 a?b?\tc", "4.3.0 caf???")
    assert str(reply) == "451 4.3.0 a?b?\tc 4.3.0 caf???"
