"""IMAP response rendering (RFC 9051 4 data formats, 7 responses), pure.

Values to octets: ``None`` is NIL, an ``int`` a number, ``Atom`` goes as is (flags, keywords
of FETCH items), a ``str`` a quoted string when it can be one and a literal otherwise, ``bytes``
always a literal (message data), ``Literal8`` a ``~{n}`` literal (BINARY, RFC 9051 4.3.1), a
tuple or list a parenthesized list.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUOTED_MAX = 1000  # longer strings go as literals, so a line stays short


@dataclass(frozen=True, slots=True)
class Atom:
    """Text sent as is (a flag, a FETCH item name, a response code)."""

    text: str


@dataclass(frozen=True, slots=True)
class Literal8:
    """Octets sent as ``~{n}`` (RFC 9051 4.3.1, BINARY)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Multipart:
    """A multipart body structure: ``(body)(body) rest...``, the bodies side by side
    (RFC 9051 9 ``body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]``)."""

    bodies: tuple[Value, ...]
    rest: tuple[Value, ...]


Value = (None | int | str | bytes | Atom | Literal8 | Multipart | tuple["Value", ...]
         | list["Value"])


def quote(text: str) -> bytes:
    """``text`` as a quoted string, or a literal when it cannot be one (CR, LF, NUL, long, or
    8-bit: a rev1 client takes 8-bit octets only in literals, RFC 3501 4.3)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # raw octets of a compat32 header
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > _QUOTED_MAX or not raw.isascii() or any(c in raw for c in b"\r\n\0"):
        return b"{%d}\r\n" % len(raw) + raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def render(value: Value) -> bytes:
    """One value on the wire."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("bool is not an IMAP value")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, Atom):
        return value.text.encode("utf-8")
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bytes):
        return b"{%d}\r\n" % len(value) + value
    if isinstance(value, Literal8):
        return b"~{%d}\r\n" % len(value.data) + value.data
    if isinstance(value, Multipart):
        return (b"(" + b"".join(render(v) for v in value.bodies) + b" "
                + b" ".join(render(v) for v in value.rest) + b")")
    return b"(" + b" ".join(render(v) for v in value) + b")"


def flag_list(flags: Iterable[str]) -> Atom:
    """``(\\Seen \\Flagged)``, sorted so responses are stable."""
    return Atom("(" + " ".join(sorted(flags)) + ")")


def date_time(moment: datetime.datetime) -> str:
    """RFC 9051 9 ``date-time``: ``"06-Dec-2026 19:57:22 +0000"``."""
    if moment.tzinfo is datetime.UTC or moment.tzinfo is None:  # the store's: fast
        return (f"{moment.day:02d}-{_MONTHS[moment.month - 1]}-{moment.year:04d} "
                f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} +0000")
    offset = moment.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (f"{moment.day:02d}-{_MONTHS[moment.month - 1]}-{moment.year:04d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
            f"{sign}{minutes // 60:02d}{minutes % 60:02d}")


def untagged(text: str | bytes) -> bytes:
    """``* text`` with its CRLF."""
    body = text.encode("utf-8") if isinstance(text, str) else text
    return b"* " + body + b"\r\n"


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    """``tag OK [code] text`` (status OK, NO or BAD)."""
    middle = f"[{code}] " if code else ""
    return f"{tag} {status} {middle}{_clean(text)}\r\n".encode()


def _clean(text: str) -> str:
    """Response text is one line of printable characters (a parser reason may quote input)."""
    return "".join(c if c.isprintable() else "?" for c in text)[:200] or "done"


def sequence_set(numbers: Iterable[int]) -> str:
    """Numbers as a compact set: ``1:3,7`` (RFC 9051 9 sequence-set; RFC 4315 uid-set)."""
    out: list[str] = []
    run: list[int] = []
    for n in numbers:
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
