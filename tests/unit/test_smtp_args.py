"""MAIL/RCPT argument parsing (geomail/proto/smtp_args.py): paths and ESMTP parameters."""

from __future__ import annotations

import pytest

from geomail.proto.smtp_args import (
    ArgumentError,
    PathArgument,
    parse_mailbox,
    parse_params,
    parse_path_argument,
)


@pytest.mark.parametrize(("arg", "address", "params"), [
    ("FROM:<alice@example.com>", "alice@example.com", {}),
    ("from:<alice@example.com>", "alice@example.com", {}),
    ("FROM: <alice@example.com>", "alice@example.com", {}),
    ("FROM:alice@example.com", "alice@example.com", {}),
    ("FROM:alice@example.com SIZE=10", "alice@example.com", {"SIZE": "10"}),
    ("FROM:<>", "", {}),
    ("FROM:<> BODY=8BITMIME", "", {"BODY": "8BITMIME"}),
    ("FROM:<a@example.com> size=10 smtputf8", "a@example.com", {"SIZE": "10", "SMTPUTF8": None}),
    ("FROM:<a@example.com>   SIZE=1    BODY=7BIT", "a@example.com", {"SIZE": "1", "BODY": "7BIT"}),
    ("FROM:<a@example.com> AUTH=<>", "a@example.com", {"AUTH": "<>"}),
    ("FROM:<@relay.example:bob@example.org>", "bob@example.org", {}),
    ("FROM:<@a.example,@b.example:bob@example.org>", "bob@example.org", {}),
    ('FROM:<"john doe"@example.org>', '"john doe"@example.org', {}),
    ('FROM:<"a\\"b"@example.org>', '"a\\"b"@example.org', {}),
    ('FROM:<">"@example.org>', '">"@example.org', {}),  # '>' is qtextSMTP (found by fuzzing)
    ('FROM:<"x>y"@example.org> SIZE=5', '"x>y"@example.org', {"SIZE": "5"}),
    ("FROM:<bob@[192.0.2.1]>", "bob@[192.0.2.1]", {}),
    ("FROM:<bob@[IPv6:2001:db8::1]>", "bob@[IPv6:2001:db8::1]", {}),
    ("FROM:<bob@example.org.>", "bob@example.org.", {}),
    ("FROM:<o'brien+tag@mail-1.example.org>", "o'brien+tag@mail-1.example.org", {}),
    ("FROM:<josé@bücher.example>", "josé@bücher.example", {}),
])
def test_valid_paths(arg, address, params):
    """Paths per RFC 5321 4.1.2 (with RFC 6531 3.3 UTF-8), the null path <> (4.5.5), source
    routes accepted and dropped (4.1.2, C), parameters with upper-cased keys (4.1.2)."""
    assert parse_path_argument(arg, "FROM", allow_null=True) == PathArgument(address, params)


@pytest.mark.parametrize(("arg", "allow_null", "kind"), [
    ("TO:<>", False, "address"),
    ("TO:", False, "syntax"),  # nothing after the colon: not the null path
    ("TO:", True, "syntax"),  # even where <> would be allowed
    ("FROM:<a@example.com>", False, "syntax"),  # wrong keyword for RCPT
    ("TO <a@example.com>", False, "syntax"),
    ("TO:<a@example.com", False, "syntax"),
    ("TO:<a@example.com>SIZE=1", False, "syntax"),
    ("TO:<a@example.com> SIZE=", False, "syntax"),
    ("TO:<a@example.com> =1", False, "syntax"),
    ("TO:<a@example.com> SIZE=a=b", False, "syntax"),
    ("TO:<a@example.com> X=\u00e9", False, "syntax"),
    ("TO:<a>", False, "address"),
    ("TO:<a@>", False, "address"),
    ("TO:<@example.com>", False, "address"),
    ("TO:<a@@example.com>", False, "address"),
    ("TO:<a b@example.com>", False, "address"),
    ("TO:<a..b@example.com>", False, "address"),
    ("TO:<.a@example.com>", False, "address"),
    ("TO:<a@-example.com>", False, "address"),
    ("TO:<a@example..com>", False, "address"),
    ("TO:<a@exa_mple.com>", False, "address"),
    ("TO:<" + "l" * 65 + "@example.com>", False, "address"),
    ("TO:<a@" + ".".join(["d" * 63] * 4) + ">", False, "address"),  # 257 octets
    ("TO:<a@example.com\n>", False, "address"),
    ('TO:<"unterminated@example.com>', False, "address"),
])
def test_invalid_paths(arg, allow_null, kind):
    """Malformed arguments: ``syntax`` (501, RFC 5321 4.2.3) or ``address`` (553, 4.1.2,
    4.5.3.1.1 local part at most 64, 4.5.3.1.2 domain at most 255)."""
    with pytest.raises(ArgumentError) as info:
        parse_path_argument(arg, "TO", allow_null=allow_null)
    assert info.value.kind == kind


def test_longest_path():
    """A path may be 256 octets (RFC 5321 4.5.3.1.3); longer is refused."""
    local = "l" * 64
    domain = ".".join(["d" * 60] * 3) + "." + "e" * 5  # 188
    ok = f"{local}@{domain}"
    assert parse_path_argument(f"TO:<{ok}>", "TO", False).address == ok
    too_long = f"{local}@{'d' * 63}.{'d' * 63}.{'d' * 63}.{'d' * 2}"
    assert len(too_long) > 256
    with pytest.raises(ArgumentError):
        parse_path_argument(f"TO:<{too_long}>", "TO", False)


def test_parse_mailbox_returns_input_unchanged():
    """Case and form are kept; geomail's comparisons normalise elsewhere (RFC 5321 2.4: the
    local part may be case-sensitive to the final host)."""
    assert parse_mailbox("Alice@Example.COM") == "Alice@Example.COM"


@pytest.mark.parametrize("text", ["a@example.com\n", "a@example.com\r", "a@example.com ",
                                  " a@example.com", "a@example.com\x00"])
def test_parse_mailbox_rejects_trailing_junk(text):
    """No whitespace or control characters around an address (header injection guard)."""
    with pytest.raises(ArgumentError):
        parse_mailbox(text)


def test_parse_params():
    """``KEY[=VALUE]`` items; keys upper-cased, values kept (RFC 5321 4.1.2 esmtp-param)."""
    assert parse_params("") == {}
    assert parse_params(" size=10  Body=8bitmime SMTPUTF8 ") == {
        "SIZE": "10", "BODY": "8bitmime", "SMTPUTF8": None}
    with pytest.raises(ArgumentError):
        parse_params("-x")


# The grammar's character sets, spelled out as the RFCs list them.
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ATEXT = _ALNUM + "!#$%&'*+-/=?^_`{|}~"  # RFC 5322 3.2.3
_QTEXT = "".join(chr(c) for c in (32, 33, *range(35, 92), *range(93, 127)))  # RFC 5321 4.1.2
_NON_ASCII = ["\u0080", "é", "\u00ff", "ß", "字", "\ud800", "\U0001f600", "\U0010ffff"]


@pytest.mark.parametrize("char", [chr(c) for c in range(128)] + _NON_ASCII)
def test_character_sets_are_the_rfcs(char: str) -> None:
    """RFC 5321 4.1.2 / RFC 5322 3.2.3 / RFC 6531 3.3: the local part's atext and qtextSMTP and
    a domain label's letters, digits and hyphens, plus any non-ASCII character (UTF-8) in each;
    every other ASCII character is refused."""
    non_ascii = ord(char) > 127
    atom_ok = char in _ATEXT or non_ascii or char == "."  # "a.b" is a Dot-string
    assert _accepted(f"a{char}b@example.org") == atom_ok
    quoted_ok = char in _QTEXT or non_ascii or char == "\\"  # "a\\b" holds a quoted-pair
    assert _accepted(f'"a{char}b"@example.org') == quoted_ok
    label_ok = char in _ALNUM + "-" or non_ascii
    assert _accepted(f"bob@a{char}b.example") == (label_ok or char == ".")
    assert _accepted(f"bob@{char}.example") == (char in _ALNUM or non_ascii)


def _accepted(address: str) -> bool:
    try:
        parse_mailbox(address)
    except ArgumentError:
        return False
    return True
