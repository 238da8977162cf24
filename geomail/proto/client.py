"""Client side of SMTP, sans-IO: server replies (RFC 5321 4.2) and EHLO extensions (4.1.1.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from geomail.errors import GeomailError

# RFC 5321 4.5.3.1.5 caps a reply line at 512 octets; real servers overrun it (long EHLO lists,
# verbose rejections), so the client is lenient but still bounded.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 200  # a multi-line reply longer than this is not a sane server
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
# RFC 5321 4.2.1: reply text is HT, SP and printable US-ASCII; every other octet (controls such
# as ESC, NUL, DEL, a bare CR, and 8-bit bytes) becomes '?' before anything stores or shows it.
_PRINTABLE = bytes(b if b == 9 or 32 <= b < 127 else 63 for b in range(256))
_UNPRINTABLE = re.compile(r"[^\t\x20-\x7e]")


def printable(text: str) -> str:
    """``text`` with every character outside HT, SP and printable ASCII replaced by '?' (RFC
    5321 4.2.1): safe to store, log, put in a DSN header or print on a terminal."""
    return _UNPRINTABLE.sub("?", text)


class MalformedReply(GeomailError):
    """The server sent something that is not an SMTP reply."""


@dataclass(frozen=True, slots=True)
class ServerReply:
    """A complete (possibly multi-line) reply from an SMTP server."""

    code: int
    lines: tuple[str, ...]  # the text of each line, code and separator removed
    enhanced: str | None = None  # RFC 3463 "x.y.z" when the first line carries one

    @property
    def text(self) -> str:
        """All lines joined with spaces, the enhanced code of the first line left out."""
        first = self.lines[0] if self.lines else ""
        if self.enhanced and first.startswith(self.enhanced):
            first = first[len(self.enhanced):].lstrip()
        return " ".join((first, *self.lines[1:])).strip()

    @property
    def positive(self) -> bool:
        """2xx and 3xx."""
        return self.code < 400

    @property
    def transient(self) -> bool:
        """4xx: try again later (RFC 5321 4.2.1)."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """5xx: do not repeat the same request."""
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced + ' ' if self.enhanced else ''}{self.text}".strip()


class ReplyParser:
    """Turns bytes from the server into ``ServerReply`` objects, however the bytes are split.

    Lines may end in CRLF or a bare LF (the client accepts what servers send). A line that is
    too long, not of the form ``DDD[ -]text``, or whose code differs from the reply's first line
    raises ``MalformedReply``: the connection cannot be trusted after that.
    """

    def __init__(self, max_line: int = MAX_REPLY_LINE, max_lines: int = MAX_REPLY_LINES) -> None:
        self._max_line = max_line
        self._max_lines = max_lines
        self._buffer = b""
        self._pending: list[str] = []
        self._code: int | None = None

    @property
    def buffered(self) -> bool:
        """True while part of a reply has been received."""
        return bool(self._buffer or self._pending)

    def feed(self, data: bytes) -> list[ServerReply]:
        """Add ``data``; return the replies it completes, in order."""
        self._buffer += data
        replies: list[ServerReply] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    raise MalformedReply(f"reply line longer than {self._max_line} octets")
                return replies
            if end + 1 > self._max_line:
                raise MalformedReply(f"reply line longer than {self._max_line} octets")
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            reply = self._line(raw.translate(_PRINTABLE).decode("ascii"))
            if reply is not None:
                replies.append(reply)

    def _line(self, line: str) -> ServerReply | None:
        code_text, sep, text = line[:3], line[3:4], line[4:]
        if len(code_text) != 3 or not code_text.isdigit() or sep not in ("", " ", "-"):
            raise MalformedReply(f"not an SMTP reply line: {line[:80]!r}")
        code = int(code_text)
        if not 200 <= code <= 599:
            raise MalformedReply(f"reply code out of range: {line[:80]!r}")
        if self._code is not None and code != self._code:
            raise MalformedReply(f"reply code changed within a multi-line reply: {line[:80]!r}")
        self._code = code
        self._pending.append(text)
        if len(self._pending) > self._max_lines:
            raise MalformedReply(f"reply longer than {self._max_lines} lines")
        if sep == "-":
            return None
        lines = tuple(self._pending)
        self._pending, self._code = [], None
        match = _ENHANCED.match(lines[0])
        enhanced = None
        if match and match.group(1) == code_text[0]:
            enhanced = ".".join(match.groups())
        return ServerReply(code, lines, enhanced)


@dataclass(frozen=True, slots=True)
class Extensions:
    """What a server announced in its EHLO reply (RFC 5321 4.1.1.1); empty after HELO."""

    keywords: dict[str, str] = field(default_factory=dict)  # upper-case keyword -> parameters
    esmtp: bool = False

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def size_limit(self) -> int | None:
        """SIZE's announced maximum (RFC 1870 4); None when absent or 0 (no fixed limit)."""
        param = self.keywords.get("SIZE")
        if param is None:
            return None
        try:
            limit = int(param.split()[0]) if param.strip() else 0
        except ValueError:
            return None
        return limit or None

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        """SASL mechanisms offered with AUTH (RFC 4954 3)."""
        return frozenset(self.keywords.get("AUTH", "").upper().split())


def parse_ehlo(reply: ServerReply) -> Extensions:
    """The extensions in a 250 EHLO reply: every line after the first is ``KEYWORD [params]``."""
    keywords: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", keyword):
            keywords.setdefault(keyword.upper(), params.strip())
    # Old servers announced AUTH as "AUTH=LOGIN PLAIN"; take it when the standard form is absent.
    for line in reply.lines[1:]:
        if line.upper().startswith("AUTH=") and "AUTH" not in keywords:
            keywords["AUTH"] = line[5:].strip()
    return Extensions(keywords, esmtp=True)
