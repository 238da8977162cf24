"""SASL PLAIN and LOGIN exchanges (geomail/proto/sasl.py) for SMTP AUTH and POP3 AUTH."""

from __future__ import annotations

import pytest

from geomail.proto.sasl import (
    MAX_RESPONSE,
    MECHANISMS,
    Credentials,
    SASLError,
    SASLExchange,
    encode_challenge,
)
from tests.support.sasl import b64


def test_mechanisms_and_limit():
    """PLAIN (RFC 4616) and LOGIN are offered; a response may be 12288 octets (RFC 4954 4)."""
    assert MECHANISMS == ("PLAIN", "LOGIN")
    assert MAX_RESPONSE == 12288


@pytest.mark.parametrize("mechanism", ["PLAIN", "plain", "Plain"])
def test_plain_initial_response(mechanism):
    """PLAIN with the initial response: ``authzid NUL authcid NUL passwd`` (RFC 4616 2);
    the mechanism name is case-insensitive (RFC 4422 3.1)."""
    exchange = SASLExchange(mechanism)
    assert exchange.start(b64("\0alice@example.com\0s3cret pass")) == Credentials(
        "alice@example.com", "s3cret pass")


def test_plain_empty_challenge():
    """PLAIN without an initial response: an empty challenge, then the response (RFC 4954 4)."""
    exchange = SASLExchange("PLAIN")
    assert exchange.start(None) == ""
    assert exchange.step(b64("\0bob\0pw")) == Credentials("bob", "pw")


@pytest.mark.parametrize(("message", "result"), [
    ("bob\0bob\0pw", Credentials("bob", "pw")),
    ("BOB\0bob\0pw", Credentials("bob", "pw")),
    ("alice\0bob\0pw", SASLError.MALFORMED),  # acting for another user: not supported
    ("\0\0pw", SASLError.MALFORMED),  # empty authcid
    ("\0bob\0", Credentials("bob", "")),  # an empty password is the authenticator's business
    ("bob\0pw", SASLError.MALFORMED),
    ("\0bob\0pw\0extra", SASLError.MALFORMED),
    ("", SASLError.MALFORMED),
    ("\0jösé\0pässword", Credentials("jösé", "pässword")),
])
def test_plain_message_shapes(message, result):
    """RFC 4616 2: exactly three NUL-separated fields, authcid non-empty, UTF-8."""
    assert SASLExchange("PLAIN").start(b64(message)) == result


def test_plain_non_utf8():
    """A decoded message that is not UTF-8 is malformed (RFC 4616 2)."""
    assert SASLExchange("PLAIN").start(b64(b"\0bob\0\xff")) is SASLError.MALFORMED


def test_login_two_steps():
    """LOGIN: ``Username:`` then ``Password:`` challenges (draft-murchison-sasl-login)."""
    exchange = SASLExchange("LOGIN")
    assert exchange.start(None) == "Username:"
    assert exchange.step(b64("alice")) == "Password:"
    assert exchange.step(b64("pw")) == Credentials("alice", "pw")


def test_login_initial_response():
    """LOGIN with the user name as initial response (RFC 4954 4)."""
    exchange = SASLExchange("LOGIN")
    assert exchange.start(b64("alice")) == "Password:"
    assert exchange.step(b64("pw")) == Credentials("alice", "pw")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("text", ["*", " * ", "*\t"])
def test_cancel(mechanism, text):
    """``*`` cancels at any step (RFC 4954 4)."""
    exchange = SASLExchange(mechanism)
    exchange.start(None)
    assert exchange.step(text) is SASLError.CANCELLED


@pytest.mark.parametrize("text", ["!!!", "YWJ", "YW Jj", "é", "YWJj\x00"])
def test_bad_base64(text):
    """Text that is not strict base64 (RFC 4648 4, RFC 4954 4) is BAD_BASE64."""
    assert SASLExchange("PLAIN").start(text) is SASLError.BAD_BASE64


def test_equals_is_an_empty_response():
    """``=`` stands for a zero-length response (RFC 4954 4): malformed for PLAIN, an empty
    user name for LOGIN."""
    assert SASLExchange("PLAIN").start("=") is SASLError.MALFORMED
    login = SASLExchange("LOGIN")
    assert login.start("=") == "Password:"
    assert login.step(b64("pw")) == Credentials("", "pw")


def test_surrounding_whitespace_is_ignored():
    """Clients sometimes pad the response; the base64 is checked strictly inside it."""
    assert SASLExchange("PLAIN").start(" " + b64("\0a\0b") + " ") == Credentials("a", "b")


@pytest.mark.parametrize(("text", "wire"), [
    ("", ""), ("Username:", "VXNlcm5hbWU6"), ("Password:", "UGFzc3dvcmQ6")])
def test_encode_challenge(text, wire):
    """Challenges go base64 on the wire; an empty one stays empty (``334 ``, RFC 4954 4)."""
    assert encode_challenge(text) == wire
