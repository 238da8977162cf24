"""Modified UTF-7 mailbox names (RFC 3501 5.1.3, kept by RFC 9051 5.1 for clients without
UTF8=ACCEPT) and the mailbox names geomail accepts. Part of the IMAP foundation (issue #14),
not yet served. No library in the venv does this (the stdlib's ``utf-7`` codec is RFC 2152,
whose alphabet, shift character and canonical forms differ), so it is written here.

Hierarchy: the IMAP separator is ``/``; on disk each mailbox is a Maildir++ folder, ``A/B``
being ``<maildir>/.A.B`` with the name in modified UTF-7 (Dovecot's default Maildir++ layout,
so a mailbox moved between Dovecot and geomail keeps its folders). Hence ``.`` cannot appear in
a name, and ``INBOX`` is the maildir itself.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata

SEPARATOR = "/"
MAX_NAME = 255  # characters of the encoded name; a folder name must fit a file name
MAX_DEPTH = 16
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


class MUTF7Error(ValueError):
    """Not a canonical modified UTF-7 string."""


def _direct(char: str) -> bool:
    return " " <= char <= "~"


def encode(name: str) -> str:
    """``name`` in modified UTF-7: printable ASCII as is (``&`` as ``&-``), other runs as
    ``&`` + modified BASE64 of UTF-16BE (``,`` for ``/``, no padding) + ``-`` (RFC 3501 5.1.3).
    ``MUTF7Error`` for a lone surrogate (no UTF-16 form)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            try:
                raw = "".join(run).encode("utf-16-be")
            except UnicodeEncodeError:
                raise MUTF7Error("lone surrogate") from None
            text = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{text}-")
            run.clear()

    for char in name:
        if _direct(char):
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    """Strict decoding: ``MUTF7Error`` for characters outside printable ASCII, an ``&`` not
    followed by ``-`` or modified BASE64 and ``-``, bad BASE64 or UTF-16, non-zero padding bits,
    and every non-canonical form (printable ASCII encoded, two adjacent encoded runs)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if not _direct(char):
            raise MUTF7Error("character outside printable ASCII")
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise MUTF7Error("'&' without closing '-'")
        chunk = text[i + 1:end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        if not set(chunk) <= _B64:
            raise MUTF7Error("bad character in encoded run")
        if len(chunk) * 6 % 16 >= 6:
            raise MUTF7Error("encoded run of a bad length")
        padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
            out.append(raw.decode("utf-16-be"))
        except (binascii.Error, UnicodeDecodeError):
            raise MUTF7Error("bad encoded run") from None
    result = "".join(out)
    if encode(result) != text:  # padding bits set, ASCII encoded, adjacent runs, "&" runs
        raise MUTF7Error("not in canonical form")
    return result


def check_name(name: str) -> str | None:
    """Why ``name`` (decoded, Unicode) cannot be a mailbox of ours, or None when it can.

    Components separated by ``/``: none empty (no leading, trailing or doubled ``/``), none
    ``.`` or ``..``, no ``.`` at all (the Maildir++ separator on disk, see the module's
    docstring), no control or format characters, no IMAP wildcards ``*`` ``%``; at most
    ``MAX_DEPTH`` levels and ``MAX_NAME`` encoded characters."""
    if not name:
        return "empty name"
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return "control character in name"
    if "*" in name or "%" in name:
        return "wildcard in name"
    if "." in name:
        return "'.' not allowed in names (the hierarchy on disk)"
    if "\\" in name:
        return "'\\' not allowed in names"
    parts = name.split(SEPARATOR)
    if any(not part for part in parts):
        return "empty hierarchy level"
    if len(parts) > MAX_DEPTH:
        return "too many hierarchy levels"
    if len(encode(name)) > MAX_NAME:
        return "name too long"
    return None


def is_inbox(name: str) -> bool:
    """INBOX in any case (RFC 9051 5.1)."""
    return name.upper() == "INBOX"


def folder_of(name: str) -> str | None:
    """The Maildir++ folder directory of mailbox ``name`` (decoded, checked with
    ``check_name``): ``A/B`` -> ``.A.B`` (modified UTF-7), None for INBOX (the maildir)."""
    if is_inbox(name):
        return None
    return "." + encode(name).replace(SEPARATOR, ".")


def name_of(folder: str) -> str:
    """The mailbox name of a Maildir++ folder directory (``.A.B`` -> ``A/B``); ``MUTF7Error``
    for a directory name that is not one of ours (not ``.``-prefixed, not canonical)."""
    if not folder.startswith(".") or folder in (".", ".."):
        raise MUTF7Error("not a Maildir++ folder")
    encoded = folder[1:]
    if "/" in encoded:
        raise MUTF7Error("'/' in a folder name")
    name = decode(encoded.replace(".", SEPARATOR))
    if check_name(name) is not None:
        raise MUTF7Error("not a valid mailbox name")
    if is_inbox(name):  # a ".INBOX" directory would shadow the inbox itself
        raise MUTF7Error("INBOX is the maildir itself")
    return name
