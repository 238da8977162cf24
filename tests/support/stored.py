"""Reading what geomail stored, as a mail program would: Maildir files and mbox messages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# RFC 5321 4.4 trace fields as geomail prepends them (LF line endings, see geomail/headers.py).
PREFIX = re.compile(
    rb"Return-Path: <(?P<sender>[^>\n]*)>\n"
    rb"Delivered-To: (?P<mailbox>[^\n]+)\n"
    rb"Received: from (?P<helo>\S+) \(\[(?P<ip>[0-9a-f.:]+)\]\)\n"
    rb"(?:\t\(using (?P<tls>[^\n]+)\)\n)?"
    rb"\tby (?P<by>\S+) \(geomail\) with (?P<protocol>\w+) id (?P<id>\w+)\n"
    rb"\tfor <(?P<rcpt>[^>\n]+)>; (?P<date>[^\n]+)\n"
)
MAILDIR_NAME = re.compile(r"^\d+\.M\d+P\d+Q\d+R[0-9a-f]+\.[^,/]+,S=(\d+),W=(\d+)(?::2,.*)?$")


@dataclass(frozen=True)
class Stored:
    """One delivered copy, split into geomail's trace prefix and the message itself."""

    raw: bytes
    fields: dict[str, str]  # sender, mailbox, helo, ip, tls, by, protocol, id, rcpt, date
    body: bytes  # the message as the client sent it, LF line endings, dots unstuffed


def split(raw: bytes) -> Stored:
    """Split a stored message; AssertionError if the trace prefix is not what geomail writes."""
    match = PREFIX.match(raw)
    assert match, f"stored message does not start with geomail's trace fields:\n{raw[:600]!r}"
    fields = {k: (v.decode() if v is not None else "") for k, v in match.groupdict().items()}
    return Stored(raw, fields, raw[match.end():])


def maildir(store: str | Path, mailbox: str) -> Path:
    local, _, domain = mailbox.rpartition("@")
    return Path(store) / domain / local


def maildir_files(store: str | Path, mailbox: str) -> list[Path]:
    """The messages in ``new/`` and ``cur/`` of ``mailbox`` (oldest name first)."""
    root = maildir(store, mailbox)
    return sorted((p for sub in ("new", "cur") if (root / sub).is_dir()
                   for p in (root / sub).iterdir()), key=lambda p: p.name)


def maildir_messages(store: str | Path, mailbox: str) -> list[Stored]:
    """Every message of ``mailbox``; checks the S= (size) and W= (CRLF size) in each name."""
    out = []
    for path in maildir_files(store, mailbox):
        raw = path.read_bytes()
        name = MAILDIR_NAME.match(path.name)
        assert name, f"not a Maildir file name: {path.name}"
        assert int(name[1]) == len(raw), f"S= in {path.name} but {len(raw)} octets"
        assert int(name[2]) == len(raw) + raw.count(b"\n"), f"W= wrong in {path.name}"
        out.append(split(raw))
    return out


def tmp_files(store: str | Path, mailbox: str) -> list[Path]:
    root = maildir(store, mailbox) / "tmp"
    return sorted(root.iterdir()) if root.is_dir() else []


MBOX_FROM = re.compile(rb"^From (\S+) (\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\n", re.M)


def mbox_messages(store: str | Path, mailbox: str) -> list[tuple[bytes, Stored]]:
    """(From_ sender, message) for each message of an mboxrd file, >From quoting undone."""
    local, _, domain = mailbox.rpartition("@")
    path = Path(store) / domain / local
    if not path.exists():
        return []
    data = path.read_bytes()
    starts = [m for m in MBOX_FROM.finditer(data) if m.start() == 0 or
              data[m.start() - 2:m.start()] == b"\n\n"]
    out = []
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(data)
        content = data[match.end():end]
        assert content.endswith(b"\n\n"), f"mbox message not followed by a blank line: {content!r}"
        content = re.sub(rb"(?m)^>(>*From )", rb"\1", content[:-1])
        out.append((match[1], split(content)))
    return out
