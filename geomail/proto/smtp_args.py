"""Parsing the arguments of MAIL and RCPT: paths (RFC 5321 4.1.2) and ESMTP parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 5321 4.1.2: Local-part = Dot-string / Quoted-string; RFC 6531 3.3 allows UTF-8 in both.
# The classes are written as "not these ASCII characters": the same sets as listing every
# allowed range up to U+10FFFF, which is far slower to compile at every start-up.
_ATOM = r"""[^\x00-\x20"(),.:;<>@\[\\\]\x7f]+"""  # atext (RFC 5322 3.2.3) or UTF-8 non-ASCII
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED = r'"(?:[^\x00-\x1f"\\\x7f]|\\[\x20-\x7e])*"'  # qtextSMTP / quoted-pairSMTP
_LETTER_DIGIT = r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"  # also any non-ASCII (IDN U-labels)
_LDH = r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"  # letter, digit, hyphen
_LABEL = rf"{_LETTER_DIGIT}(?:{_LDH}*{_LETTER_DIGIT})?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"  # address literal, RFC 5321 4.1.3
_MAILBOX = re.compile(rf"^(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_DOMAIN}|{_LITERAL})$")
_SOURCE_ROUTE = re.compile(rf"^@{_DOMAIN}(?:,@{_DOMAIN})*:")
_BRACKETED = re.compile(r'<(?:"(?:[^"\\]|\\.)*"|[^">])*>')  # <path>, quoted strings kept whole
_PARAM = re.compile(r"^(?P<key>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e]+))?$")

MAX_PATH = 256  # RFC 5321 4.5.3.1.3
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2


class ArgumentError(ValueError):
    """A MAIL/RCPT argument is malformed; ``kind`` picks the reply."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "syntax", "duplicate" (501), "address" (553), "utf8", "param" (555)


@dataclass(frozen=True, slots=True)
class PathArgument:
    """``FROM:<path> params`` or ``TO:<path> params``, split up."""

    address: str  # "" for the null path <>
    params: dict[str, str | None]


def parse_path_argument(arg: str, keyword: str, allow_null: bool) -> PathArgument:
    """Parse ``FROM:<a@b> SIZE=10`` (``keyword`` "FROM") or ``TO:<a@b>``.

    Lenient about a space after the colon and a missing pair of angle brackets, as real clients
    need; strict about everything inside the path.
    """
    head, colon, rest = arg.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise ArgumentError("syntax")
    rest = rest.lstrip(" ")
    if rest.startswith("<"):
        # A quoted local part may hold '>' (qtextSMTP): the path ends at the first '>' outside
        # quotes; with an unbalanced quote, at the first '>' (the address check refuses it).
        bracketed = _BRACKETED.match(rest)
        end = bracketed.end() - 1 if bracketed else rest.find(">")
        if end < 0:
            raise ArgumentError("syntax")
        path, params_text = rest[1:end], rest[end + 1 :]
        if params_text and not params_text.startswith(" "):
            raise ArgumentError("syntax")
    else:
        path, _, params_text = rest.partition(" ")
        if not path:  # "MAIL FROM:" with nothing: a broken client, not the null path <>
            raise ArgumentError("syntax")
    if len(path) > MAX_PATH:
        raise ArgumentError("address")
    params = parse_params(params_text)
    if path == "":
        if not allow_null:
            raise ArgumentError("address")
        return PathArgument("", params)
    route = _SOURCE_ROUTE.match(path)
    if route:  # RFC 5321 4.1.2: accept and ignore source routes
        path = path[route.end() :]
    return PathArgument(parse_mailbox(path), params)


def parse_mailbox(text: str) -> str:
    """Check ``local@domain`` syntax; the address comes back unchanged."""
    match = _MAILBOX.fullmatch(text)  # not match(): its $ would allow a trailing newline
    if not match:
        raise ArgumentError("address")
    if len(match.group("local")) > MAX_LOCAL_PART or len(match.group("domain")) > MAX_DOMAIN:
        raise ArgumentError("address")
    return text


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters ``KEY[=VALUE]`` separated by spaces; keys upper-cased (RFC 5321 4.1.2)."""
    params: dict[str, str | None] = {}
    for item in text.split():
        match = _PARAM.match(item)
        if not match:
            raise ArgumentError("syntax")
        key = match.group("key").upper()
        if key in params:
            raise ArgumentError("duplicate")  # RFC 3461 4: each parameter at most once
        params[key] = match.group("value")
    return params
