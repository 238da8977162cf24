"""Fuzzing SASL PLAIN and LOGIN (geomail/proto/sasl.py), the exchanges behind SMTP AUTH
(RFC 4954) and POP3 AUTH (RFC 5034)."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto.sasl import MECHANISMS, Credentials, SASLError, SASLExchange, encode_challenge
from tests.fuzz.mutations import mutated
from tests.support.sasl import b64
from tests.support.smtp_session import ALICE, PASSWORD

# Responses a client sends: real ones from the session tests, then mutated; and random text.
_REAL = [b64(f"\0{ALICE}\0{PASSWORD}"), b64(f"{ALICE}\0{ALICE}\0{PASSWORD}"), b64(ALICE),
         b64(PASSWORD), "*", "=", "", b64(b"\xff\xfe"), b64("a\0b"), "Zm9v YmFy", "===="]
RESPONSES = st.one_of(mutated([r.encode() for r in _REAL]).map(lambda b: b.decode("latin-1")),
                      st.text(max_size=40))
# Names and passwords: any text without NUL (RFC 4616 2: UTF8SAFE excludes it).
_NAME = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=30)


@given(st.sampled_from(MECHANISMS), st.none() | RESPONSES, st.lists(RESPONSES, max_size=4))
def test_any_response(mechanism: str, initial: str | None, responses: list[str]) -> None:
    """RFC 4954 4 and RFC 4616 2: whatever the client answers (bad base64, "*", "=", non-UTF-8,
    a wrong shape), every step gives a challenge, credentials or a SASLError, never an
    exception; once it has ended, the exchange is over."""
    exchange = SASLExchange(mechanism)
    result = exchange.start(initial)
    for response in responses:
        assert isinstance(result, str | Credentials | SASLError)
        if not isinstance(result, str):
            break
        assert encode_challenge(result).isascii()
        result = exchange.step(response)
    if isinstance(result, Credentials) and mechanism == "PLAIN":
        assert result.username and "\0" not in result.username + result.password


@given(st.one_of(st.just(""), _NAME), _NAME.filter(bool), _NAME, st.booleans())
def test_plain_round_trip(authzid: str, authcid: str, password: str, initial: bool) -> None:
    """RFC 4616 2: ``[authzid] NUL authcid NUL passwd``, base64-encoded (RFC 4954 4), with or
    without an initial response, gives the user and password back exactly; an authzid other
    than the user (acting for someone else) is refused."""
    exchange = SASLExchange("PLAIN")
    message = b64(f"{authzid}\0{authcid}\0{password}")
    if initial:
        result = exchange.start(message)
    else:
        assert exchange.start(None) == ""  # RFC 4954 4: an empty challenge, "334 "
        result = exchange.step(message)
    if authzid and authzid.lower() != authcid.lower():
        assert result is SASLError.MALFORMED
    else:
        assert result == Credentials(authcid, password)


@given(_NAME, _NAME)
def test_login_round_trip(username: str, password: str) -> None:
    """The LOGIN mechanism (draft-murchison-sasl-login): the user name, then the password, each
    base64-encoded on its own line ("=" or nothing for an empty one), come back exactly."""
    exchange = SASLExchange("LOGIN")
    assert exchange.start(None) == "Username:"
    assert exchange.step(b64(username) or "=") == "Password:"
    assert exchange.step(b64(password)) == Credentials(username, password)


@given(_NAME)
def test_challenge_round_trip(text: str) -> None:
    """RFC 4954 4: a challenge goes out base64-encoded, empty when it is empty."""
    wire = encode_challenge(text)
    assert wire.isascii() and base64.b64decode(wire, validate=True).decode() == text
