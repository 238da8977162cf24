"""Modified UTF-7 mailbox names and our mailbox name rules (geomail/proto/imap_mutf7.py):
RFC 3501 5.1.3 (the encoding), RFC 9051 5.1 (INBOX, hierarchy), 5.1.1 (no wildcards in
names)."""

from __future__ import annotations

import pytest

from geomail.proto.imap_mutf7 import (
    MUTF7Error,
    check_name,
    decode,
    encode,
    folder_of,
    is_inbox,
    name_of,
)

EXAMPLES = [
    ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Entw\u00fcrfe", "Entw&APw-rfe"),
    ("a&b", "a&-b"),
    ("&", "&-"),
    ("", ""),
    ("\U0001f600 mail", "&2D3eAA- mail"),  # a surrogate pair
    ("\u00e9\u00e9\u00e9", "&AOkA6QDp-"),
    ("Sent", "Sent"),
    ("&\u65e5\u672c\u8a9e", "&-&ZeVnLIqe-"),  # "&-" is ASCII: not two adjacent runs
]


@pytest.mark.parametrize(("name", "encoded"), EXAMPLES)
def test_known_encodings(name: str, encoded: str) -> None:
    """RFC 3501 5.1.3: the RFC's own example, ``&`` as ``&-``, modified BASE64 of UTF-16 with
    ``,`` for ``/``, no padding, and the run closed with ``-``."""
    assert encode(name) == encoded
    assert decode(encoded) == name


@pytest.mark.parametrize("bad", [
    "&Jjo!",  # "&" run never closed
    "&U,BTFw",  # no closing "-"
    "&AGE-",  # "a" encoded: printable ASCII must be direct
    "&U,B-",  # bad length (a partial UTF-16 unit)
    "&U,BTF2-",  # non-zero padding bits
    "&ZeVnLIqe-&U,BTFw-",  # two adjacent runs: the canonical form is one run
    "&2D0-",  # a lone high surrogate
    "&AOk=-",  # "=" padding is not modified BASE64
    "&AOk/-",  # "/" instead of ","
    "Entw\u00fcrfe",  # 8-bit: not modified UTF-7
    "a\tb",  # control character
])
def test_strict_decoding(bad: str) -> None:
    """RFC 3501 5.1.3: "&" starts a run closed by "-"; ASCII printable characters MUST be
    represented as themselves; runs are canonical (no padding, no adjacent runs); UTF-16 is
    valid."""
    with pytest.raises(MUTF7Error):
        decode(bad)


def test_lone_surrogate_cannot_be_encoded() -> None:
    """RFC 3501 5.1.3: names are Unicode encoded as UTF-16; a lone surrogate has no form."""
    with pytest.raises(MUTF7Error):
        encode("\ud800")


@pytest.mark.parametrize(("name", "problem"), [
    ("Archive/2024", None),
    ("\u65e5\u672c\u8a9e/Re\u00e7us", None),
    ("INBOX/Sub", None),
    ("", "empty name"),
    ("a/", "empty hierarchy level"),
    ("/a", "empty hierarchy level"),
    ("a//b", "empty hierarchy level"),
    ("..", "'.' not allowed in names (the hierarchy on disk)"),
    (".hidden", "'.' not allowed in names (the hierarchy on disk)"),
    ("a.b", "'.' not allowed in names (the hierarchy on disk)"),
    ("a\x00b", "control character in name"),
    ("a\x7fb", "control character in name"),
    ("a\u200bb", "control character in name"),  # zero-width space (Cf)
    ("a*", "wildcard in name"),
    ("50%", "wildcard in name"),
    ("a\\b", "'\\' not allowed in names"),
    ("/".join(["x"] * 17), "too many hierarchy levels"),
    ("\u00e9" * 200, "name too long"),
])
def test_check_name(name: str, problem: str | None) -> None:
    """RFC 9051 5.1 (hierarchy with one separator, ours ``/``), 5.1.1 (``*`` and ``%`` are
    wildcards); Maildir++ stores ``A/B`` as ``.A.B``, so ``.`` cannot be part of a name."""
    assert check_name(name) == problem


def test_folders() -> None:
    """RFC 9051 5.1 (INBOX in any case is the inbox); Dovecot's Maildir++ layout: ``A/B`` is
    the directory ``.A.B``, names on disk in modified UTF-7."""
    assert is_inbox("iNbOx") and not is_inbox("INBOX/x")
    assert folder_of("inbox") is None
    assert folder_of("Archive/2024") == ".Archive.2024"
    assert folder_of("Entw\u00fcrfe/a&b") == ".Entw&APw-rfe.a&-b"
    assert name_of(".Entw&APw-rfe.a&-b") == "Entw\u00fcrfe/a&b"
    assert name_of(".INBOX.Sub") == "INBOX/Sub"
    for bad in ("Sent", ".", "..", ".a..b", ".&AGE-", ".a/b", ".a*", ".INBOX", ".inbox"):
        with pytest.raises(MUTF7Error):
            name_of(bad)

