"""FETCH data from a message's bytes (RFC 9051 6.4.5, 7.5.2), pure: ENVELOPE, BODY and
BODYSTRUCTURE, body sections ``BODY[...]`` and BINARY, all over the stdlib ``email`` package
(``compat32``: header values stay raw, as IMAP wants them, encoded words included).

Values come out as ``imap_render`` values, ready to render.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import email.utils
import quopri
from dataclasses import dataclass
from email.message import Message

from geomail.proto.imap_render import Multipart, Value, render
from geomail.proto.imap_types import Section

CRLF = b"\r\n"


def crlf(data: bytes) -> bytes:
    """Every line end as CRLF (IMAP's canonical form, RFC 9051 2.3.3)."""
    if b"\r" not in data:  # Maildir's LF line ends: one pass
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class UnknownEncoding(Exception):
    """A Content-Transfer-Encoding we cannot decode, or broken base64."""


@dataclass(frozen=True, slots=True)
class Summary:
    """What a client's first sync asks of every message, rendered once (and kept by the
    store, ``store/imap_cache``): ENVELOPE, BODYSTRUCTURE and BODY (RFC 9051 7.5.2)."""

    envelope: bytes
    bodystructure: bytes
    body: bytes


def summarize(data: bytes) -> Summary:
    """The ``Summary`` of a message's bytes."""
    parsed = ParsedMessage(data)
    return Summary(render(parsed.envelope()), render(parsed.bodystructure(True)),
                   render(parsed.bodystructure(False)))


class ParsedMessage:
    """One message (CRLF line ends) for all the items of a FETCH, parsed only when an item
    needs its structure (``BODY[]``, ``RFC822``, ``BODY[HEADER]`` and ``BODY[TEXT]`` do
    not)."""

    def __init__(self, data: bytes) -> None:
        self.data = crlf(data)
        self._message: Message | None = None

    @property
    def message(self) -> Message:
        if self._message is None:
            self._message = email.message_from_bytes(self.data, policy=email.policy.compat32)
        return self._message

    def header_bytes(self) -> bytes:
        """RFC822.HEADER / BODY[HEADER]: the header and the blank line after it."""
        end = self.data.find(b"\r\n\r\n")
        if self.data.startswith(CRLF):
            return CRLF
        return self.data if end < 0 else self.data[:end + 4]

    def text_bytes(self) -> bytes:
        """RFC822.TEXT / BODY[TEXT]."""
        return self.data[len(self.header_bytes()):]

    def envelope(self) -> Value:
        return envelope(self.message)

    def bodystructure(self, extensible: bool = True) -> Value:
        return body_structure(self.message, extensible)

    def section(self, section: Section) -> bytes | None:
        """``BODY[section]`` (RFC 9051 6.4.5); None for a part that does not exist (the
        session sends an empty string, as other servers do)."""
        if not section.part:
            if section.text is None:
                return self.data
            return _text_of(self.data, self.message, section, top=True)
        part: Message | None = self.message
        for number in section.part:
            part = _subpart(part, number)
            if part is None:
                return None
        assert part is not None
        if section.text is None:
            return _raw_body(part)
        if section.text == "MIME":
            return _header_block(part)
        inner = _embedded(part)
        if inner is None:
            return None
        return _text_of(_message_bytes(inner), inner, section, top=False)

    def binary(self, part_numbers: tuple[int, ...]) -> bytes | None:
        """``BINARY[part]`` (RFC 9051 6.4.5): the body with its transfer encoding undone; None
        for a missing part; ``UnknownEncoding`` when it cannot be undone (``NO [UNKNOWN-CTE]``,
        RFC 9051 7.1)."""
        if not part_numbers:
            if self.message.is_multipart():
                return self.data
            return _decoded(self.message)
        part: Message | None = self.message
        for number in part_numbers:
            part = _subpart(part, number)
            if part is None:
                return None
        assert part is not None
        if part.is_multipart():
            return _raw_body(part)
        return _decoded(part)


def _text_of(data: bytes, message: Message, section: Section, top: bool) -> bytes:
    end = data.find(b"\r\n\r\n")
    header = CRLF if data.startswith(CRLF) else (data if end < 0 else data[:end + 4])
    if section.text == "HEADER":
        return header
    if section.text == "TEXT":
        return data[len(header):]
    wanted = {f.upper() for f in section.fields}
    keep = section.text == "HEADER.FIELDS"
    lines = [_octets(f"{name}: {value}\r\n")
             for name, value in message.raw_items() if (name.upper() in wanted) == keep]
    return b"".join(lines) + CRLF


def _subpart(part: Message | None, number: int) -> Message | None:
    if part is None:
        return None
    inner = _embedded(part)
    if inner is not None:  # a part number inside message/rfc822 counts its body's parts
        part = inner
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        child = children[number - 1] if number <= len(children) else None
        return child if isinstance(child, Message) else None
    return part if number == 1 else None


def _embedded(part: Message) -> Message | None:
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        children = part.get_payload()
        if isinstance(children, list) and children and isinstance(children[0], Message):
            return children[0]
    return None


def _header_block(part: Message) -> bytes:
    return b"".join(_octets(f"{name}: {value}\r\n") for name, value in part.raw_items()) + CRLF


def _octets(text: str) -> bytes:
    """Text from the parser back to the octets it came from."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _message_bytes(part: Message) -> bytes:
    """A (sub)message rebuilt from what the parser kept: raw header lines, then its body."""
    return _header_block(part) + _raw_body(part)


def _raw_body(part: Message) -> bytes:
    """A part's body as sent (transfer encoding kept); multipart bodies are rebuilt from
    their preamble, boundaries and parts (the parser keeps no offsets)."""
    inner = _embedded(part)
    if inner is not None:
        return _message_bytes(inner)
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        boundary = _octets(part.get_boundary() or "")
        out = b""
        if part.preamble is not None:
            out += crlf(_octets(part.preamble)) + CRLF
        for child in children:
            if isinstance(child, Message):
                out += b"--" + boundary + CRLF + _message_bytes(child) + CRLF
        out += b"--" + boundary + b"--"
        if part.epilogue is not None:
            out += CRLF + crlf(_octets(part.epilogue))
        return out
    # get_payload() turns 8-bit octets into U+FFFD; the stored payload keeps them as
    # surrogates (the parser's ASCII + surrogateescape decoding).
    payload = getattr(part, "_payload", "")
    return crlf(_octets(payload if isinstance(payload, str) else ""))


def _decoded(part: Message) -> bytes:
    raw = _raw_body(part)
    encoding = str(part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    if encoding in ("7bit", "8bit", "binary", ""):
        return raw
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(raw.split()), validate=False)
        except (binascii.Error, ValueError):
            raise UnknownEncoding("bad base64") from None
    if encoding == "quoted-printable":
        return quopri.decodestring(raw)
    raise UnknownEncoding(encoding[:40])


# ---- ENVELOPE (RFC 9051 7.5.2) ----------------------------------------------------------------

def _nstring(value: object) -> str | bytes | None:
    """A header-derived string: raw 8-bit octets (surrogates after ``compat32``'s ASCII
    decoding, or any non-ASCII) go as a literal of those octets, never re-encoded."""
    if value is None:
        return None
    text = str(value)
    if text.isascii():
        return text
    return _octets(text)


def _raw_all(message: Message, name: str) -> list[str]:
    """A header's values exactly as received (``get`` would turn 8-bit octets into U+FFFD)."""
    wanted = name.lower()
    return [str(v) for k, v in message.raw_items() if k.lower() == wanted]


def _raw(message: Message, name: str) -> str | None:
    values = _raw_all(message, name)
    return values[0] if values else None


def _addresses(message: Message, name: str) -> Value:
    values = _raw_all(message, name)
    if not values:
        return None
    out: list[Value] = []
    for display, address in email.utils.getaddresses([str(v) for v in values]):
        if not address and not display:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, ""
        out.append((_nstring(display or None), None, _nstring(mailbox or None),
                    _nstring(host or None)))
    return tuple(out) or None


def envelope(message: Message) -> Value:
    """``(date subject from sender reply-to to cc bcc in-reply-to message-id)``; sender and
    reply-to default to from (RFC 9051 7.5.2). Groups are listed as their members."""
    sender = _addresses(message, "From")
    return (
        _nstring(_raw(message, "Date")),
        _nstring(_raw(message, "Subject")),
        sender,
        _addresses(message, "Sender") or sender,
        _addresses(message, "Reply-To") or sender,
        _addresses(message, "To"),
        _addresses(message, "Cc"),
        _addresses(message, "Bcc"),
        _nstring(_raw(message, "In-Reply-To")),
        _nstring(_raw(message, "Message-ID")),
    )


# ---- BODY / BODYSTRUCTURE (RFC 9051 7.5.2) -----------------------------------------------------

def _params(part: Message, header: str) -> Value:
    params = part.get_params(header=header)
    if not params or len(params) < 2:
        return None
    out: list[Value] = []
    for key, value in params[1:]:
        text = email.utils.collapse_rfc2231_value(value) if isinstance(value, tuple) else value
        out.extend((_nstring(key.upper()), _nstring(text)))
    return tuple(out)


def _disposition(part: Message) -> Value:
    value = part.get("Content-Disposition")
    if value is None:
        return None
    kind = str(value).split(";", 1)[0].strip().upper()
    return (_nstring(kind), _params(part, "content-disposition")) if kind else None


def _language(part: Message) -> Value:
    value = part.get("Content-Language")
    if value is None:
        return None
    tags = tuple(_nstring(t.strip()) for t in str(value).split(",") if t.strip())
    return tags or None


def body_structure(part: Message, extensible: bool = True) -> Value:
    """BODYSTRUCTURE (``extensible``) or BODY of ``part`` (RFC 9051 7.5.2, 9 ``body``)."""
    maintype, subtype = part.get_content_maintype().upper(), part.get_content_subtype().upper()
    if part.is_multipart() and maintype == "MULTIPART":
        children = part.get_payload()
        assert isinstance(children, list)
        bodies = tuple(body_structure(c, extensible) for c in children if isinstance(c, Message))
        if not bodies:  # RFC 9051 9: at least one body; an empty multipart is shown as text
            bodies = (("TEXT", "PLAIN", ("CHARSET", "US-ASCII"), None, None, "7BIT", 0, 0),)
        rest: tuple[Value, ...] = (_nstring(subtype),)
        if extensible:
            rest += (_params(part, "content-type"), _disposition(part), _language(part),
                     _nstring(_raw(part, "Content-Location")))
        return Multipart(bodies, rest)
    body = _raw_body(part)
    encoding = _nstring(str(part.get("Content-Transfer-Encoding") or "7BIT").strip().upper())
    params = _params(part, "content-type")
    if params is None and maintype == "TEXT":  # RFC 2045 5.2: the default charset
        params = ("CHARSET", "us-ascii")
    fields: list[Value] = [_nstring(maintype), _nstring(subtype), params,
                           _nstring(_raw(part, "Content-ID")),
                           _nstring(_raw(part, "Content-Description")), encoding, len(body)]
    inner = _embedded(part)
    if inner is not None:
        fields.extend((envelope(inner), body_structure(inner, extensible),
                       body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)))
    elif maintype == "TEXT":
        fields.append(body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1))
    if extensible:
        fields.extend((_nstring(_raw(part, "Content-MD5")), _disposition(part), _language(part),
                       _nstring(_raw(part, "Content-Location"))))
    return tuple(fields)
