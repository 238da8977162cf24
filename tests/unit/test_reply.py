"""Reply and the named reply constants (geomail/proto/reply.py)."""

from __future__ import annotations

import re

import pytest

from geomail.proto import reply as R
from geomail.proto.reply import Close, Reply, StartTLS

CONSTANTS = sorted((name, value) for name, value in vars(R).items()
                   if isinstance(value, Reply) and name.startswith("R"))
NAME = re.compile(r"^R(?P<code>[2-5][0-5][0-9])_[A-Z0-9_]+$")
ENHANCED = re.compile(r"^(?P<cls>[245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$")


def test_there_are_constants():
    assert len(CONSTANTS) > 40


@pytest.mark.parametrize(("name", "reply"), CONSTANTS, ids=[n for n, _ in CONSTANTS])
def test_constant_name_matches_codes(name, reply):
    """Each ``R<code>_...`` constant carries that code (RFC 5321 4.2), and its enhanced code's
    class matches the code's first digit (RFC 3463 3.1, RFC 2034 4); only the 3xx
    intermediate replies go without one (RFC 2034 3 has no 3.x.x class)."""
    match = NAME.match(name)
    assert match, f"{name} is not named R<code>_WORDS"
    assert reply.code == int(match.group("code"))
    if reply.code // 100 == 3:
        assert reply.enhanced is None
        return
    assert reply.enhanced is not None, name
    enhanced = ENHANCED.match(reply.enhanced)
    assert enhanced, f"{name}: {reply.enhanced!r} is not class.subject.detail"
    assert enhanced.group("cls") == str(reply.code)[0]


@pytest.mark.parametrize(("name", "reply"), CONSTANTS, ids=[n for n, _ in CONSTANTS])
def test_constant_text_is_safe(name, reply):
    """Reply text is printable ASCII on one line per line (RFC 5321 4.2.1, 4.5.3.1.5: a reply
    line is at most 512 octets)."""
    for line in (reply.text,) if isinstance(reply.text, str) else reply.text:
        assert line and line.isprintable() and line.isascii()
    for wire_line in reply.wire.split(b"\r\n")[:-1]:
        assert len(wire_line) + 2 <= 512


def test_wire_single_line():
    """``code SP enhanced SP text CRLF`` (RFC 5321 4.2, RFC 2034 4)."""
    assert R.R250_OK.wire == b"250 2.0.0 OK\r\n"
    assert Reply(220, None, "mx ESMTP").wire == b"220 mx ESMTP\r\n"
    assert str(R.R250_OK) == "250 2.0.0 OK"


def test_wire_multi_line():
    """``code-`` on every line but the last, each with the enhanced code (RFC 5321 4.2.1,
    RFC 2034 4)."""
    reply = Reply(214, "2.0.0", ("one", "two", "three"))
    assert reply.wire == b"214-2.0.0 one\r\n214-2.0.0 two\r\n214 2.0.0 three\r\n"
    assert Reply(250, None, ("mx", "SIZE 10")).wire == b"250-mx\r\n250 SIZE 10\r\n"


def test_empty_text():
    """An empty text still has the space after the code (``334 ``, RFC 4954 4)."""
    assert Reply(334, None, "").wire == b"334 \r\n"


def test_with_text_and_equality():
    """with_text keeps both codes; replies compare by code, enhanced code and text."""
    reply = R.R501_SYNTAX.with_text("Nope")
    assert (reply.code, reply.enhanced, reply.text) == (501, "5.5.4", "Nope")
    assert reply == Reply(501, "5.5.4", "Nope")
    assert reply != R.R501_SYNTAX


def test_is_error():
    """4xx and 5xx are errors (RFC 5321 4.2.1)."""
    assert not R.R250_OK.is_error and not R.R354_START_DATA.is_error
    assert R.R451_LOCAL_ERROR.is_error and R.R550_NO_SUCH_USER.is_error


def test_non_ascii_text_is_encoded():
    """Text that is not ASCII is sent as UTF-8 (RFC 6531 3.7.4 allows it after SMTPUTF8)."""
    assert Reply(550, "5.1.1", "Zoë unknown").wire == "550 5.1.1 Zoë unknown\r\n".encode()


def test_replies_are_frozen():
    with pytest.raises(AttributeError):
        R.R250_OK.code = 251  # type: ignore[misc]


def test_outputs():
    """StartTLS and Close are value objects: equal to any other instance."""
    assert StartTLS() == StartTLS() and Close() == Close()
    assert StartTLS() != Close()
