"""Fuzzing modified UTF-7 (geomail/proto/imap_mutf7.py): RFC 3501 5.1.3."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto.imap_mutf7 import (
    MUTF7Error,
    check_name,
    decode,
    encode,
    folder_of,
    name_of,
)


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
def test_round_trip(name: str) -> None:
    """RFC 3501 5.1.3: decode(encode(x)) == x, and encode's output is printable ASCII."""
    encoded = encode(name)
    assert encoded.isascii() and all(" " <= c <= "~" for c in encoded)
    assert decode(encoded) == name


@given(st.one_of(st.text(max_size=30), st.text("&-+,ABCDEFabcdef0189/ .", max_size=30),
                 st.sampled_from(["INBOX", "inbox", "INBOX.x", "&-", "&AGE-"])))
def test_decoding_anything_fails_only_with_mutf7error(text: str) -> None:
    """RFC 3501 5.1.3: whatever a client sends as a name, strict decoding either gives the
    name whose canonical encoding it is, or MUTF7Error (a ValueError), nothing else."""
    try:
        name = decode(text)
    except MUTF7Error:
        pass
    else:
        assert encode(name) == text
    try:
        folder = name_of("." + text)
    except MUTF7Error:
        return
    assert check_name(folder) is None and folder_of(folder) == "." + text
