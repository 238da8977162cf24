"""Fuzzing the SMTP client's reply parser (geomail/proto/client.py ReplyParser, parse_ehlo): what
a remote MX sends is hostile input too (RFC 5321 4.2.1)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto import reply as R
from geomail.proto.client import MalformedReply, ReplyParser, ServerReply, parse_ehlo
from tests.fuzz.mutations import mutated
from tests.support.smtp_session import make_session
from tests.support.splits import chunkings, fed

# Real replies: every reply geomail's own server sends, its EHLO reply, and others' oddities.
OURS = [value for value in vars(R).values() if isinstance(value, R.Reply)]
EHLO = make_session(tls_available=True).feed(b"EHLO client.example\r\n")[0]
SEEDS = sorted({reply.wire for reply in [*OURS, EHLO]} | {
    b"220 mx.example.org ESMTP\r\n250-x\r\n250-SIZE\r\n250 AUTH=LOGIN PLAIN\r\n",
    b"220\n250 ok\n", b"250 5.1.1 odd\r\n",
    b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 x\r\n",
    b"421 4.7.0 \x1b[31mgo away\x1b[0m\r\n", b"250 caf\xc3\xa9 \xff\r\n",
})
REPLY_TEXT = re.compile(r"[\t\x20-\x7e]*")  # RFC 5321 4.2.1: HT, SP and printable US-ASCII


def parse(chunks: list[bytes]) -> tuple[list[ServerReply], bool, bool]:
    """The replies, whether MalformedReply was raised (parsing stops there), and whether part
    of a reply was left over."""
    parser = ReplyParser()
    replies: list[ServerReply] = []
    try:
        for chunk in chunks:
            replies += parser.feed(chunk)
    except MalformedReply:
        return replies, True, True
    return replies, False, parser.buffered


@given(fed(st.one_of(mutated(SEEDS), st.binary(max_size=300))))
def test_any_bytes(case: tuple[bytes, list[bytes]]) -> None:
    """RFC 5321 4.2 and 4.2.1: whatever a server sends, split however, the parser gives replies
    or raises MalformedReply, nothing else; each reply has a code 200-599, an enhanced code
    (RFC 3463) only of its own class, and text of HT, SP and printable ASCII only, safe to log,
    store in a DSN or print; and where the bytes were cut changes nothing."""
    data, chunks = case
    replies, failed, left = parse(chunks)
    for reply in replies:
        assert 200 <= reply.code <= 599 and reply.lines
        assert reply.enhanced is None or reply.enhanced[0] == str(reply.code)[0]
        for line in (*reply.lines, reply.text, str(reply)):
            assert REPLY_TEXT.fullmatch(line), line
        parse_ehlo(reply)
    whole = parse([data])
    assert whole[1] == failed  # a malformed stream is malformed however it is cut
    if not failed:
        assert whole == (replies, failed, left)


_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"),
                max_size=60)


@st.composite
def _replies(draw: st.DrawFn) -> tuple[int, list[str], bytes]:
    code = draw(st.integers(200, 599))
    lines = draw(st.lists(_TEXT, min_size=1, max_size=8))
    end = draw(st.sampled_from([b"\r\n", b"\n"]))  # servers that end lines with LF alone exist
    wire = b"".join(b"%d%s%s%s" % (code, b"-" if i < len(lines) - 1 else b" ", line.encode(), end)
                    for i, line in enumerate(lines))
    return code, lines, wire


@given(st.lists(_replies(), min_size=1, max_size=5), st.data())
def test_replies_round_trip(replies: list[tuple[int, list[str], bytes]],
                            data: st.DataObject) -> None:
    """RFC 5321 4.2.1 and RFC 2920 3.2: well-formed replies, one after the other in one stream
    (pipelined) and cut anywhere, come back with their codes and lines, in order."""
    wire = b"".join(r[2] for r in replies)
    got, failed, left = parse(data.draw(chunkings(wire)))
    assert not failed and not left
    assert [(r.code, list(r.lines)) for r in got] == [(code, lines) for code, lines, _ in replies]


def test_our_replies_parse_back() -> None:
    """RFC 5321 4.2 / RFC 3463: every reply geomail's server sends is read back by geomail's own
    client with its code, enhanced code and lines (a sanity seed for the fuzzers above)."""
    for reply in [*OURS, EHLO]:
        [got] = ReplyParser().feed(reply.wire)
        assert got.code == reply.code
        lines = (reply.text,) if isinstance(reply.text, str) else reply.text
        assert len(got.lines) == len(lines)
        if reply.enhanced:
            assert got.enhanced == reply.enhanced
