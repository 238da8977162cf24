"""Message content to SMTP/POP3 wire form: CRLF line endings and dot-stuffing (RFC 5321 4.5.2)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

END_OF_DATA = b".\r\n"


class DotWriter:
    """Converts LF-ending content, fed in chunks split anywhere, to CRLF and dot-stuffed lines.

    Each chunk is converted with two ``bytes.replace`` calls; the only state carried between
    chunks is whether the previous chunk ended a line, so that a '.' opening the next chunk is
    stuffed too. The input must use LF line endings (geomail's internal form); a CR already
    before an LF is kept as an ordinary character, so the output's only line ends are the CRLFs
    this writer makes, and a line can never look like the end-of-data marker.
    """

    __slots__ = ("_at_line_start",)

    def __init__(self) -> None:
        self._at_line_start = True

    def feed(self, chunk: bytes) -> bytes:
        """The wire form of ``chunk``."""
        if not chunk:
            return b""
        out = chunk.replace(b"\n.", b"\n..")
        if self._at_line_start and out[:1] == b".":
            out = b"." + out
        self._at_line_start = out[-1:] == b"\n"
        return out.replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        """The end-of-data line, after a CRLF when the content did not end with a line break."""
        if self._at_line_start:
            return END_OF_DATA
        self._at_line_start = True
        return b"\r\n" + END_OF_DATA


def encode_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Wire-form chunks of ``chunks``, ending with the terminating ``.`` line."""
    writer = DotWriter()
    for chunk in chunks:
        if out := writer.feed(chunk):
            yield out
    yield writer.finish()


def encode(content: bytes) -> bytes:
    """The whole wire form of ``content`` (LF line endings), terminator included."""
    writer = DotWriter()
    return writer.feed(content) + writer.finish()
