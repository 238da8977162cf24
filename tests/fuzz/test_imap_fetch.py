"""Fuzzing FETCH data (geomail/proto/imap_fetch.py): any message octets give ENVELOPE,
BODYSTRUCTURE, sections and BINARY without raising (RFC 9051 6.4.5, 7.5.2)."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto.imap_fetch import ParsedMessage, UnknownEncoding
from geomail.proto.imap_render import render
from geomail.proto.imap_types import Section
from tests.fuzz.mutations import mutated

SEEDS = [
    b"From: J\xc3\xb6rg <j@example.org>\r\nSubject: =?utf-8?q?x?=\r\nCc: group:;\r\n\r\nbody\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n"
    b"\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\n"
    b"x\r\n--c--\r\n--b\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''%C3%BC\r\n\r\naGk=\r\n--b--\r\n",
    b"Content-Type: text/plain; charset=\"bogus\"\r\nContent-Transfer-Encoding: quoted-printable"
    b"\r\nContent-Language: en, de\r\n\r\n=C3=BC=\r\n",
]
MESSAGES = st.one_of(mutated(SEEDS), st.binary(max_size=300))
SECTIONS = [Section(), Section(text="HEADER"), Section(text="TEXT"), Section((1,)),
            Section((1, 1)), Section((1,), "MIME"), Section((1,), "HEADER"), Section((2, 1, 1)),
            Section(text="HEADER.FIELDS.NOT", fields=("SUBJECT",))]


@given(MESSAGES)
def test_fetch_data_never_raises(data: bytes) -> None:
    """RFC 9051 7.5.2: whatever the message, its FETCH data can be rendered."""
    m = ParsedMessage(data)
    render(m.envelope())
    render(m.bodystructure(True))
    render(m.bodystructure(False))
    m.header_bytes()
    m.text_bytes()
    for section in SECTIONS:
        m.section(section)
    for part in ((), (1,), (2,), (1, 2)):
        with contextlib.suppress(UnknownEncoding):  # the session answers NO [UNKNOWN-CTE]
            m.binary(part)
