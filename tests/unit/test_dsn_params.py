"""The DSN extension's parameters (RFC 3461): xtext, RET, ENVID, NOTIFY, ORCPT
(geomail/proto/dsn_params.py), and the SMTP session's replies to them (geomail/proto/smtp.py)."""

from __future__ import annotations

import pytest

from geomail.envelope import RecipientDSN
from geomail.proto import reply as R
from geomail.proto.dsn_params import (
    DSNParamError,
    orcpt_param,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
    xtext_decode,
    xtext_encode,
)
from geomail.proto.smtp import State
from tests.support.smtp_session import EHLO, HELO, MAIL, make_session


@pytest.mark.parametrize(("text", "decoded"), [
    ("abc", "abc"), ("a+2Bb", "a+b"), ("a+3Db", "a=b"), ("+20", " "), ("", ""),
    ("x+C3+A9", "xé"),
])
def test_xtext_decode(text: str, decoded: str) -> None:
    """RFC 3461 4: xtext is xchar or "+" two upper-case hex digits."""
    assert xtext_decode(text) == decoded


@pytest.mark.parametrize("text", ["a+2b", "a+2", "a+", "a=b", "a b", "a+GG", "é", "+FF"])
def test_xtext_malformed(text: str) -> None:
    """RFC 3461 4: lower-case hex, a short escape, '=' or a space, non-ASCII are not xtext
    (nor is an octet sequence that is not UTF-8)."""
    with pytest.raises(DSNParamError):
        xtext_decode(text)


def test_xtext_encode() -> None:
    """RFC 3461 4: '+', '=', space and non-ASCII octets are encoded as +XX."""
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_encode("é") == "+C3+A9"


@pytest.mark.parametrize(("value", "result"), [
    ("FULL", "FULL"), ("hdrs", "HDRS")])
def test_ret(value: str, result: str) -> None:
    """RFC 3461 4.3: RET=FULL or RET=HDRS (case-insensitive)."""
    assert parse_ret(value) == result


@pytest.mark.parametrize("value", [None, "", "BODY", "FULL,HDRS"])
def test_ret_malformed(value: str | None) -> None:
    """RFC 3461 4.3: anything else is a syntax error."""
    with pytest.raises(DSNParamError):
        parse_ret(value)


def test_envid() -> None:
    """RFC 3461 4.4: ENVID is xtext, decoded; at most 100 characters."""
    assert parse_envid("QQ+2B314159") == "QQ+314159"
    assert parse_envid("x" * 100) == "x" * 100
    for bad in (None, "", "x" * 101, "a+2b", "a+0Ab"):
        with pytest.raises(DSNParamError):
            parse_envid(bad)


@pytest.mark.parametrize(("value", "result"), [
    ("NEVER", ("NEVER",)), ("never", ("NEVER",)), ("SUCCESS", ("SUCCESS",)),
    ("DELAY,FAILURE", ("FAILURE", "DELAY")), ("SUCCESS,FAILURE,DELAY",
                                              ("SUCCESS", "FAILURE", "DELAY")),
])
def test_notify(value: str, result: tuple[str, ...]) -> None:
    """RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY."""
    assert parse_notify(value) == result


@pytest.mark.parametrize("value", [None, "", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "ALWAYS",
                                   "SUCCESS,", ",DELAY"])
def test_notify_malformed(value: str | None) -> None:
    """RFC 3461 4.1: NEVER combined, duplicates, unknown or empty values are errors."""
    with pytest.raises(DSNParamError):
        parse_notify(value)


def test_orcpt() -> None:
    """RFC 3461 4.2: addr-type ";" xtext; rfc822 (any case), utf-8 only with SMTPUTF8
    (RFC 6533 3); the value comes back decoded and goes out encoded again."""
    assert parse_orcpt("rfc822;bob@example.org", False) == "rfc822;bob@example.org"
    assert parse_orcpt("RFC822;a+2Bb@example.org", False) == "rfc822;a+b@example.org"
    assert parse_orcpt("utf-8;z+C3+AB@example.org", True) == "utf-8;zë@example.org"
    assert orcpt_param("rfc822;a+b@example.org") == "rfc822;a+2Bb@example.org"
    for bad, utf8 in [(None, False), ("bob@example.org", False), ("x400;bob@example.org", False),
                      ("utf-8;bob@example.org", False), ("rfc822;", False),
                      ("rfc822;not an address", False), ("rfc822;+C3+AB@example.org", False),
                      ("rfc822;a+2b@example.org", False), (";bob@example.org", False),
                      ("rfc822;" + "a" * 500 + "@example.org", False)]:
        with pytest.raises(DSNParamError):
            parse_orcpt(bad, utf8)


def _replies(data: bytes, setup: bytes = EHLO) -> list[object]:
    session = make_session()
    session.feed(setup)
    return [out for out in session.feed(data)]


def test_session_accepts_dsn_parameters() -> None:
    """RFC 3461 4.3, 4.4 on MAIL and 4.1, 4.2 on RCPT: accepted and kept in the envelope, by
    recipient."""
    session = make_session()
    session.feed(EHLO)
    out = session.feed(b"MAIL FROM:<sender@example.org> RET=HDRS ENVID=QQ+2B1\r\n"
                       b"RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE "
                       b"ORCPT=rfc822;alice+2Bx@example.com\r\n"
                       b"RCPT TO:<bob@example.com>\r\n")
    assert out == [R.R250_SENDER_OK, R.R250_RECIPIENT_OK, R.R250_RECIPIENT_OK]
    envelope = session.envelope
    assert (envelope.ret, envelope.envid) == ("HDRS", "QQ+1")
    assert envelope.dsn == {"alice@example.com": RecipientDSN(
        ("SUCCESS", "FAILURE"), "rfc822;alice+x@example.com")}
    assert session.state is State.RCPT


@pytest.mark.parametrize(("line", "text"), [
    (b"MAIL FROM:<s@example.org> RET=BOTH", "RET must be FULL or HDRS"),
    (b"MAIL FROM:<s@example.org> RET", "RET must be FULL or HDRS"),
    (b"MAIL FROM:<s@example.org> ENVID=" + b"x" * 101, "ENVID longer than 100 characters"),
    (b"MAIL FROM:<s@example.org> ENVID=a+2b", "malformed xtext"),
    (b"MAIL FROM:<s@example.org> RET=FULL RET=HDRS", "Duplicate parameter"),
    (b"MAIL FROM:<s@example.org> ENVID=a envid=b", "Duplicate parameter"),
])
def test_session_refuses_malformed_mail_parameters(line: bytes, text: str) -> None:
    """RFC 3461 4.3, 4.4 and 4 (each parameter at most once): 501 5.5.4 with the reason."""
    assert _replies(line + b"\r\n") == [R.R501_SYNTAX.with_text(text)]


@pytest.mark.parametrize(("line", "text"), [
    (b"RCPT TO:<a@example.com> NOTIFY=NEVER,DELAY", "NOTIFY=NEVER cannot be combined"),
    (b"RCPT TO:<a@example.com> NOTIFY=SOMETIMES",
     "NOTIFY must be NEVER or SUCCESS, FAILURE, DELAY"),
    (b"RCPT TO:<a@example.com> NOTIFY", "NOTIFY needs a value"),
    (b"RCPT TO:<a@example.com> ORCPT=bob@example.org", "ORCPT must be addr-type;address"),
    (b"RCPT TO:<a@example.com> ORCPT=x400;bob", "ORCPT address type must be rfc822"),
    (b"RCPT TO:<a@example.com> NOTIFY=DELAY NOTIFY=DELAY", "Duplicate parameter"),
])
def test_session_refuses_malformed_rcpt_parameters(line: bytes, text: str) -> None:
    """RFC 3461 4.1, 4.2: 501 5.5.4 with the reason; the recipient is not added."""
    session = make_session()
    session.feed(EHLO + MAIL)
    assert session.feed(line + b"\r\n") == [R.R501_SYNTAX.with_text(text)]
    assert session.envelope.recipients == []


def test_session_dsn_parameters_need_ehlo() -> None:
    """RFC 1869 4.4 / RFC 3461 4: no DSN parameters after HELO: 555."""
    assert _replies(b"MAIL FROM:<s@example.org> RET=FULL\r\n", HELO) == [
        R.R555_UNKNOWN_PARAMETER]
    assert _replies(b"RCPT TO:<a@example.com> NOTIFY=NEVER\r\n", HELO + MAIL) == [
        R.R555_UNKNOWN_PARAMETER]


def test_session_unknown_rcpt_parameter() -> None:
    """RFC 5321 4.1.1.11: an unknown RCPT parameter beside NOTIFY is 555."""
    assert _replies(b"RCPT TO:<a@example.com> NOTIFY=NEVER X-FOO=1\r\n", EHLO + MAIL) == [
        R.R555_UNKNOWN_PARAMETER]
