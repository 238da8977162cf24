"""Fuzzing the address grammar of MAIL and RCPT (geomail/proto/smtp_args.py): paths (RFC 5321
4.1.2, RFC 6531 3.3) and ESMTP parameters (RFC 5321 4.1.2, RFC 1869)."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from geomail.proto.smtp_args import (
    MAX_LOCAL_PART,
    MAX_PATH,
    ArgumentError,
    PathArgument,
    parse_mailbox,
    parse_path_argument,
)
from tests.fuzz.mutations import mutated
from tests.support.corpus import smtp_conversations

KINDS = {"syntax", "duplicate", "address", "param", "utf8"}
PARAM_KEY = re.compile(r"[A-Z0-9][A-Z0-9-]*")
PARAM_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _arguments() -> list[bytes]:
    """The MAIL/RCPT arguments of every conversation in the SMTP dialog and session tests."""
    args = set()
    for conversation in smtp_conversations():
        for line in conversation.split(b"\r\n"):
            if line[:5].upper() in (b"MAIL ", b"RCPT "):
                args.add(line[5:])
    return sorted(args)


SEEDS = _arguments()
ARGUMENTS = st.one_of(mutated(SEEDS).map(lambda b: b.decode("utf-8", "replace")),
                      st.text(max_size=80))


def parse(arg: str, keyword: str, allow_null: bool) -> PathArgument | None:
    """The parsed argument, or None when it is refused (always with a known kind)."""
    try:
        return parse_path_argument(arg, keyword, allow_null)
    except ArgumentError as exc:
        assert exc.kind in KINDS
        return None


def unparse(keyword: str, path: PathArgument) -> str:
    params = "".join(f" {k}" if v is None else f" {k}={v}" for k, v in path.params.items())
    return f"{keyword}:<{path.address}>{params}"


@given(ARGUMENTS, st.sampled_from(["FROM", "TO"]), st.booleans())
def test_any_argument(arg: str, keyword: str, allow_null: bool) -> None:
    """RFC 5321 4.1.2 and 4.5.3.1: any argument gives a path or an ArgumentError of a known
    kind; an accepted address is in the argument as sent, at most 256 octets, a mailbox (or the
    null path where allowed) without ASCII controls, and its parameters are keywords with
    printable values; written out again it parses to the same."""
    path = parse(arg, keyword, allow_null)
    if path is None:
        return
    address = path.address
    assert address in arg and len(address) <= MAX_PATH
    assert not ASCII_CONTROL.search(address)
    if address:
        assert parse_mailbox(address) == address
    else:
        assert allow_null
    for key, value in path.params.items():
        assert PARAM_KEY.fullmatch(key), key
        assert value is None or PARAM_VALUE.fullmatch(value), value
    assert parse(unparse(keyword, path), keyword, allow_null) == path


# RFC 5322 3.2.3 atext, plus UTF-8 (RFC 6531 3.3); RFC 5321 4.1.2 qtextSMTP and quoted-pairSMTP;
# RFC 5321 4.1.2 Domain (letters, digits, hyphens inside; U-labels allowed by RFC 6531).
_ATEXT = st.sampled_from("abcXYZ019!#$%&'*+-/=?^_`{|}~") | st.sampled_from("éßжλ中")
_ATOM = st.text(_ATEXT, min_size=1, max_size=8)
_DOT_STRING = st.lists(_ATOM, min_size=1, max_size=4).map(".".join)
_QUOTED = st.lists(st.one_of(st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                           exclude_characters='"\\'),
                             st.characters(min_codepoint=0x20, max_codepoint=0x7E).map(
                                 lambda c: "\\" + c)), max_size=10).map(lambda p: f'"{"".join(p)}"')
_LOCAL = st.one_of(_DOT_STRING, _QUOTED).filter(lambda s: len(s) <= MAX_LOCAL_PART)
_LETTER_DIGIT = st.sampled_from("abzAZ09é")
_LABEL = st.one_of(_LETTER_DIGIT, st.tuples(
    _LETTER_DIGIT, st.text(st.sampled_from("ab9-"), max_size=10), _LETTER_DIGIT).map("".join))
_DOMAIN = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["[192.0.2.1]", "[IPv6:2001:db8::1]", "[127.0.0.1]"]),
)
MAILBOXES = st.tuples(_LOCAL, _DOMAIN).map("@".join)


@given(MAILBOXES, st.sampled_from(["FROM", "TO"]),
       st.sampled_from(["<{}>", " <{}>", "{}", "<@relay.example:{}>",
                        "<@a.example,@b.example:{}>"]),
       st.sampled_from(["", " SIZE=100", " BODY=8BITMIME SMTPUTF8", " X-KEY=a+b/c"]))
def test_every_mailbox_of_the_grammar_is_accepted(mailbox: str, keyword: str, form: str,
                                                  params: str) -> None:
    """RFC 5321 4.1.2 (Mailbox, Dot-string, Quoted-string, Domain, address literals 4.1.3) and
    RFC 6531 3.3: every mailbox the grammar allows is accepted, unchanged, in brackets or not
    (without them a space ends the path), after a source route (accepted and ignored, 4.1.2 /
    C), before ESMTP parameters."""
    assume(form != "{}" or " " not in mailbox)
    path = parse_path_argument(keyword + ":" + form.format(mailbox) + params, keyword, False)
    assert path.address == mailbox
    assert set(path.params) == {p.split("=")[0].upper() for p in params.split()}


@given(MAILBOXES, st.integers(MAX_LOCAL_PART + 1, 300))
def test_local_part_over_the_limit(mailbox: str, length: int) -> None:
    """RFC 5321 4.5.3.1.1: a local part over 64 octets is refused as an address (553)."""
    domain = mailbox.rpartition("@")[2]
    with pytest.raises(ArgumentError) as refused:
        parse_path_argument(f"TO:<{'a' * length}@{domain}>", "TO", False)
    assert refused.value.kind == "address"
