"""mboxrd framing (From_ lines, >From quoting) and the sidecar index that describes an mbox file.

Index format (text, one record per line, fields separated by one space)::

    geomail-mbox-index 1 <ino> <size> <mtime_ns>
    <start> <data_off> <data_len> <size> <uid> <digest> <ino> <size> <mtime_ns>

The header names the format. Each message line gives the offset of the message's From_ line,
the offset and length of its (quoted) content on disk, its size with CRLF line endings and
unquoted (as RETR sends it), its UIDL and the digest of its on-disk content. Every line ends
with the state of the mbox (inode, size, mtime) after it was written: the index is valid only
when its last line matches the mbox, so a torn or stale index is detected and rebuilt by
scanning. UIDLs are digests of the content (``-2``, ``-3`` added to repeated ones, in file
order), and a rebuild takes the old UIDL of an unchanged message back, so UIDLs survive it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from geomail.store._common import valid_uid
from geomail.units import KiB, MiB

MAGIC = b"geomail-mbox-index 1"
State = tuple[int, int, int]  # inode, size, mtime_ns of the mbox

QUOTE = re.compile(rb"^(>*From )", re.M)  # mboxrd: one more '>' on every ^>*From line
UNQUOTE = re.compile(rb"^>(>*From )", re.M)
_UNDECIDED = re.compile(rb">*(?:F(?:r(?:o(?:m)?)?)?)?")  # could still become ">*From "
_RETURN_PATH = re.compile(rb"^return-path:[ \t]*<([^>\n]*)>", re.I | re.M)
_SPACE = re.compile(rb"\s")


@dataclass(slots=True)
class Entry:
    """One message of an mbox."""

    start: int  # offset of the From_ line
    data_off: int  # offset of the content
    data_len: int  # octets of content on disk (quoted), without the blank separator line
    size: int  # octets unquoted with CRLF line endings
    uid: str
    digest: str  # of the on-disk content


def new_digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)


class LineRewriter:
    """Applies a line-start substitution to a stream cut at arbitrary places."""

    __slots__ = ("_carry", "_midline", "_pattern", "_repl")

    def __init__(self, pattern: re.Pattern[bytes], repl: bytes) -> None:
        self._pattern = pattern
        self._repl = repl
        self._carry = b""  # the start of a line too short to decide on
        self._midline = False  # inside a line whose start was already written

    def feed(self, data: bytes) -> bytes:
        head = b""
        if self._midline:
            newline = data.find(b"\n")
            if newline < 0:
                return data
            head, data = data[: newline + 1], data[newline + 1 :]
            self._midline = False
        if self._carry:
            data, self._carry = self._carry + data, b""
        cut = data.rfind(b"\n") + 1
        lines = self._pattern.sub(self._repl, data[:cut]) if cut else b""
        tail = data[cut:]
        if tail:
            if _UNDECIDED.fullmatch(tail):
                self._carry, tail = tail, b""
            else:
                tail = self._pattern.sub(self._repl, tail)
                self._midline = True
        return head + lines + tail

    def flush(self) -> bytes:
        """The end of the stream: what is still held back."""
        data, self._carry, self._midline = self._carry, b"", False
        return self._pattern.sub(self._repl, data)


def unquote(data: bytes) -> bytes:
    """A whole message's content as delivered (mboxrd: one '>' less on ^>+From lines)."""
    return UNQUOTE.sub(rb"\1", data) if b">From " in data else data


def from_line(prefix: bytes, when: float) -> bytes:
    """The From_ separator: the Return-Path sender (or MAILER-DAEMON) and an asctime date."""
    match = _RETURN_PATH.search(prefix)
    sender = _SPACE.sub(b"_", match[1]) if match and match[1] else b"MAILER-DAEMON"
    return b"From %s %s\n" % (sender, time.asctime(time.gmtime(when)).encode())


class Quoter:
    """Turns one message into its mbox content (quoted, ending with a newline), counting it."""

    __slots__ = ("data_len", "digest", "lines", "raw_len")

    def __init__(self) -> None:
        self.data_len = 0  # octets written (quoted)
        self.raw_len = 0  # octets of the message itself (unquoted)
        self.lines = 0
        self.digest = new_digest()

    @property
    def crlf_size(self) -> int:
        return self.raw_len + self.lines

    def pieces(self, prefix: bytes, chunks: Iterable[bytes],
               batch: int = 64 * KiB) -> Iterator[bytes]:
        rewriter = LineRewriter(QUOTE, rb">\1")
        last = b"\n"
        pending = [prefix]
        pending_len = len(prefix)
        for chunk in chunks:
            pending.append(chunk)
            pending_len += len(chunk)
            if pending_len >= batch:  # join small pieces: the rewriter costs per call
                self.raw_len += pending_len
                if out := self._count(rewriter.feed(b"".join(pending))):
                    last = out
                    yield out
                pending, pending_len = [], 0
        self.raw_len += pending_len
        for out in (rewriter.feed(b"".join(pending)), rewriter.flush()):
            if out := self._count(out):
                last = out
                yield out
        if not last.endswith(b"\n"):
            self.raw_len += 1  # mbox cannot keep a message without a final newline
            yield self._count(b"\n")

    def _count(self, data: bytes) -> bytes:
        if data:
            self.data_len += len(data)
            self.lines += data.count(b"\n")
            self.digest.update(data)
        return data


# ---- index ----------------------------------------------------------------------------------


def state_of(st: os.stat_result) -> State:
    return st.st_ino, st.st_size, st.st_mtime_ns


def header_line(state: State) -> bytes:
    return b"%s %d %d %d\n" % (MAGIC, *state)


def entry_line(entry: Entry, state: State) -> bytes:
    return b"%d %d %d %d %s %s %d %d %d\n" % (
        entry.start, entry.data_off, entry.data_len, entry.size,
        entry.uid.encode(), entry.digest.encode(), *state)


def index_lines(entries: list[Entry], state: State) -> list[bytes]:
    return [header_line(state)] + [entry_line(entry, state) for entry in entries]


def tail_state(path: str) -> State | None:
    """The mbox state the index at ``path`` ends with; None if absent, torn or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, 512, max(0, size - 512))
    finally:
        os.close(fd)
    if not tail.endswith(b"\n"):
        return None
    fields = tail[:-1].rpartition(b"\n")[2].split(b" ")
    try:
        return int(fields[-3]), int(fields[-2]), int(fields[-1])
    except (ValueError, IndexError):
        return None


def read_index(path: str) -> tuple[list[Entry], State | None]:
    """The entries of the index at ``path``, and its state if it is whole (else None)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return [], None
    lines = data.split(b"\n")
    whole = data.endswith(b"\n") and lines[0].startswith(MAGIC + b" ")
    entries = []
    state = None
    for line in lines[1:-1] if whole else lines:
        fields = line.split(b" ")
        try:
            start, data_off, data_len, size = (int(f) for f in fields[:4])
            uid, dig = fields[4].decode("ascii"), fields[5].decode("ascii")
            state = int(fields[6]), int(fields[7]), int(fields[8])
        except (ValueError, IndexError, UnicodeDecodeError):
            whole = False  # a damaged line: keep what can be read, for its UIDLs
            continue
        entries.append(Entry(start, data_off, data_len, size, uid, dig))
    if not whole:
        return entries, None
    if not entries:
        fields = lines[0].split(b" ")
        try:
            state = int(fields[-3]), int(fields[-2]), int(fields[-1])
        except (ValueError, IndexError):
            return entries, None
    return entries, state


def consistent(entries: list[Entry], size: int) -> bool:
    """Do the entries describe non-overlapping messages inside a file of ``size`` octets?"""
    end = 0
    for entry in entries:
        if entry.start < end or entry.data_off <= entry.start or entry.data_len < 0:
            return False
        end = entry.data_off + entry.data_len
    return end <= size and all(valid_uid(entry.uid) for entry in entries)


def assign_uids(entries: list[Entry]) -> list[Entry]:
    """Make UIDLs unique in file order: a repeated one becomes ``<digest>-2``, ``-3``..."""
    seen: set[str] = set()
    next_number: dict[str, int] = {}  # per digest, so that many repeats stay linear
    for entry in entries:
        if entry.uid in seen:
            n = next_number.get(entry.digest, 2)
            while f"{entry.digest}-{n}" in seen:
                n += 1
            next_number[entry.digest] = n + 1
            entry.uid = f"{entry.digest}-{n}"
        seen.add(entry.uid)
    return entries


def scan(fd: int, old: list[Entry]) -> list[Entry]:
    """Index an mbox by reading it whole (blocking); keep the UIDLs of ``old`` entries whose
    content is unchanged."""
    reuse: dict[str, deque[str]] = defaultdict(deque)
    for entry in old:
        reuse[entry.digest].append(entry.uid)
    entries: list[Entry] = []
    reader = io.BufferedReader(io.FileIO(fd, "rb", closefd=False), MiB)
    reader.seek(0)
    offset = 0
    current: _Scanning | None = None
    for line in reader:
        if line.startswith(b"From "):
            if current is not None:
                entries.append(current.entry(reuse))
            current = _Scanning(offset, offset + len(line))
        elif current is not None:
            current.add(line)
        offset += len(line)
    if current is not None:
        entries.append(current.entry(reuse))
    return assign_uids(entries)


class _Scanning:
    """A message being read by ``scan``."""

    __slots__ = ("blank", "data_len", "data_off", "digest", "lines", "quoted", "start")

    def __init__(self, start: int, data_off: int) -> None:
        self.start = start
        self.data_off = data_off
        self.data_len = self.lines = self.quoted = 0
        self.digest = new_digest()
        self.blank = False  # a blank line held back: the separator, if the message ends here

    def add(self, line: bytes) -> None:
        if self.blank:
            self._take(b"\n")
            self.blank = False
        if line == b"\n":
            self.blank = True
        else:
            self._take(line)

    def _take(self, line: bytes) -> None:
        self.digest.update(line)
        self.data_len += len(line)
        self.lines += line.endswith(b"\n")
        if line.startswith(b">") and UNQUOTE.match(line):
            self.quoted += 1

    def entry(self, reuse: dict[str, deque[str]]) -> Entry:
        dig = self.digest.hexdigest()
        uids = reuse.get(dig)
        uid = uids.popleft() if uids else dig
        size = self.data_len - self.quoted + self.lines
        return Entry(self.start, self.data_off, self.data_len, size, uid, dig)
