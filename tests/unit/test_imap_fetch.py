"""FETCH data (geomail/proto/imap_fetch.py): ENVELOPE, BODY/BODYSTRUCTURE and body sections
on real multipart messages."""

from __future__ import annotations

from email.message import EmailMessage

from geomail.proto.imap_fetch import ParsedMessage, crlf
from geomail.proto.imap_render import render
from geomail.proto.imap_types import Section

MIXED = crlf(b"""From: =?utf-8?q?J=C3=B6rg?= <jorg@example.de>
To: a@example.org, "B, Person" <b@example.org>
Cc: undisclosed-recipients:;
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=
Date: Tue, 08 Dec 2026 09:30:00 +0100
Message-ID: <m1@example.de>
In-Reply-To: <m0@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

This is a MIME message.
--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe
aus Berlin
--inner
Content-Type: text/html; charset=utf-8

<p>Hi</p>
--inner--
--outer
Content-Type: application/pdf; name="a.pdf"
Content-Disposition: attachment; filename="a.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer
Content-Type: message/rfc822

From: x@example.com
Subject: inner

Inner body.
--outer--
""")


def test_envelope_raw_encoded_words_and_addresses() -> None:
    """RFC 9051 7.5.2 ENVELOPE: header values as sent (encoded words kept), address lists,
    sender/reply-to default to from; in-reply-to and message-id."""
    env = render(ParsedMessage(MIXED).envelope())
    assert env == (
        b'("Tue, 08 Dec 2026 09:30:00 +0100" "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "example.de")) '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "example.de")) '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "example.de")) '
        b'((NIL NIL "a" "example.org") ("B, Person" NIL "b" "example.org")) '
        b'NIL NIL "<m0@example.org>" "<m1@example.de>")')


def test_bodystructure_multipart() -> None:
    """RFC 9051 7.5.2 BODYSTRUCTURE / 9 body-type-mpart: nested multiparts side by side, text
    with lines, base64 attachment with disposition, message/rfc822 with envelope and body."""
    structure = render(ParsedMessage(MIXED).bodystructure(True))
    assert structure.startswith(
        b'((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 27 2 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 9 1 NIL NIL NIL NIL) "ALTERNATIVE" '
        b'("BOUNDARY" "inner") NIL NIL NIL)'
        b'("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 12 NIL '
        b'("ATTACHMENT" ("FILENAME" "a.pdf")) NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ')
    assert structure.endswith(b' "MIXED" ("BOUNDARY" "outer") NIL NIL NIL)')
    body = render(ParsedMessage(MIXED).bodystructure(False))
    assert b"ATTACHMENT" not in body and body.endswith(b' "MIXED")')


def test_sections() -> None:
    """RFC 9051 6.4.5 section-spec: part numbers, HEADER, TEXT, MIME, HEADER.FIELDS, and the
    parts of an embedded message/rfc822."""
    m = ParsedMessage(MIXED)
    assert m.section(Section()) == MIXED
    assert m.section(Section(text="HEADER")).endswith(b"boundary=\"outer\"\r\n\r\n")
    assert m.section(Section(text="TEXT")).startswith(b"This is a MIME message.\r\n--outer")
    assert m.section(Section((1, 1))) == b"Gr=C3=BC=C3=9Fe\r\naus Berlin"
    assert m.section(Section((1, 2), "MIME")) == (
        b"Content-Type: text/html; charset=utf-8\r\n\r\n")
    assert m.section(Section((2,))) == b"JVBERi0xLjQK"
    assert m.section(Section((3,), "HEADER")) == b"From: x@example.com\r\nSubject: inner\r\n\r\n"
    assert m.section(Section((3, 1))) == b"Inner body."
    assert m.section(Section(text="HEADER.FIELDS", fields=("SUBJECT", "FROM"))) == (
        b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.de>\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n")
    assert m.section(Section((9,))) is None


def test_binary_decodes_transfer_encoding() -> None:
    """RFC 9051 6.4.5 BINARY[part]: content-transfer-encoding removed."""
    m = ParsedMessage(MIXED)
    assert m.binary((2,)) == b"%PDF-1.4\n"
    assert m.binary((1, 1)) == "Grüße\r\naus Berlin".encode()


def test_single_part_and_lf_message() -> None:
    """RFC 9051 2.3.3 (CRLF on the wire) and 6.4.5: part 1 of a non-multipart message is its
    body; a message built by the stdlib, stored with LF line ends."""
    message = EmailMessage()
    message["From"] = "a@example.org"
    message["Subject"] = "plain"
    message.set_content("one\ntwo\n")
    m = ParsedMessage(message.as_bytes())
    assert b"\n" not in m.data.replace(b"\r\n", b"")
    assert m.section(Section((1,))) == b"one\r\ntwo\r\n"
    structure = render(m.bodystructure(False))
    assert structure == b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 10 2)'


def test_raw_8bit_headers_go_as_literals() -> None:
    """RFC 3501 4.3 / RFC 9051 4.3: 8-bit octets only in literals; header octets sent as they
    are (RFC 6532 UTF-8 headers), never an exception."""
    raw = ("From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n"
           "Content-Type: text/plain; charset=utf-8; name=\"ü.txt\"\r\n\r\nbody\r\n").encode()
    m = ParsedMessage(raw)
    env = render(m.envelope())
    assert b'{7}\r\nGr\xc3\xbc\xc3\x9fe' in env and b"{5}\r\nJ\xc3\xb6rg" in env
    assert b'"NAME" {' in render(m.bodystructure(True))
    subject = m.section(Section(text="HEADER.FIELDS", fields=("SUBJECT",)))
    assert subject == "Subject: Grüße\r\n\r\n".encode()
