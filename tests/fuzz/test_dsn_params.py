"""Properties of xtext (RFC 3461 4) and the DSN parameters (geomail/proto/dsn_params.py)."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto.dsn_params import (
    DSNParamError,
    parse_notify,
    parse_orcpt,
    xtext_decode,
    xtext_encode,
)


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    """RFC 3461 4: encoding gives printable ASCII without '+'-less '=' or spaces, and
    decoding it gives the text back."""
    encoded = xtext_encode(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
    assert all(33 <= ord(c) <= 126 and c != "=" for c in encoded)
    assert xtext_decode(encoded) == text.encode("utf-8", "surrogatepass").decode("utf-8",
                                                                                 "replace")


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=40))
def test_decoders_fail_only_with_their_error(text: str) -> None:
    """RFC 3461 4, 4.1, 4.2: arbitrary input is accepted or refused with DSNParamError,
    never another exception."""
    for parse in (xtext_decode, parse_notify, lambda t: parse_orcpt(t, True)):
        with contextlib.suppress(DSNParamError):
            parse(text)
