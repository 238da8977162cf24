"""The queue directory's files: message bodies, the owner's lock, scanning and repair at start-up,
and the operations the queue tools run directly on the files when no server is running."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
from collections.abc import Iterator

from geomail.envelope import Body
from geomail.safeio import write_atomic, write_file_synced

from .item import FAILED, QueueItem, body_path, item_path, valid_id

log = logging.getLogger(__name__)

KiB = 1024
MAX_HEAD = 64 * KiB


class QueueBusy(OSError):
    """Another process (a running server) owns the queue directory."""


class QueuedBody:
    """An item's message file as a ``Body``; sizes and 8-bit flag come from the item."""

    __slots__ = ("crlf_size", "eight_bit", "path", "size")

    def __init__(self, path: str, size: int, crlf_size: int, eight_bit: bool) -> None:
        self.path, self.size, self.crlf_size, self.eight_bit = path, size, crlf_size, eight_bit

    def chunks(self, chunk_size: int = 256 * KiB) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk


def write_body(path: str, prefix: bytes, body: Body) -> tuple[int, int, bool]:
    """Write prefix + body to ``path`` (fsynced); its size, CRLF size and 8-bit flag (blocking)."""
    stats = [0, 0, False]

    def chunks() -> Iterator[bytes]:
        for chunk in itertools.chain((prefix,) if prefix else (), body.chunks()):
            stats[0] += len(chunk)
            stats[1] += len(chunk) + chunk.count(b"\n")
            if not stats[2] and not chunk.isascii():
                stats[2] = True
            yield chunk

    write_file_synced(path, chunks())
    return int(stats[0]), int(stats[1]), bool(stats[2])


def read_head(path: str) -> bytes:
    """The first bytes of a message file (enough for its header), b"" when it is gone."""
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_HEAD)
    except OSError:
        return b""


def remove_item_files(directory: str, item_id: str) -> None:
    # The item first: a body left alone is an orphan that load() removes.
    for path in (item_path(directory, item_id), body_path(directory, item_id)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def lock_queue(directory: str) -> int:
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise QueueBusy(f"{directory} is in use by another geomail process") from None
    return fd


def scan(directory: str, repair: bool) -> list[QueueItem]:
    """The items in ``directory`` (blocking). With ``repair`` (the owner, at start-up): remove
    temp files, orphan bodies and items without a body; rename unreadable items to ``.bad``."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    bodies = {n[:-4] for n in names if n.endswith(".msg")}
    items: list[QueueItem] = []
    for name in sorted(names):
        path = os.path.join(directory, name)
        if name.startswith(".tmp"):
            if repair:
                log.info("removing torn temp file %s", path)
                os.unlink(path)
        elif name.endswith(".msg") and name[:-4] + ".json" not in names:
            if repair:
                log.warning("removing message without item (crash during put) %s", path)
                os.unlink(path)
        elif name.endswith(".json"):
            try:
                with open(path, "rb") as handle:
                    item = QueueItem.from_json(handle.read())
                if item.id != name[:-5]:
                    raise ValueError(f"id {item.id!r} does not match the file name")
            except (OSError, ValueError) as exc:
                log.error("unreadable queue item %s: %s", path, exc)
                if repair:
                    os.replace(path, path + ".bad")
                continue
            if item.id not in bodies:
                log.error("queue item without message, dropping id=%s from=<%s> to=%s",
                          item.id, item.sender, ",".join(r.address for r in item.recipients))
                if repair:
                    os.unlink(path)
                continue
            items.append(item)
    return items


# ---------------------------------------------------------------------- offline tools


@contextlib.contextmanager
def owned(directory: str) -> Iterator[None]:
    """Hold the queue's lock for an offline change; ``QueueBusy`` when a server owns it."""
    fd = lock_queue(directory)
    try:
        yield
    finally:
        os.close(fd)


def offline_flush(directory: str, now: float) -> int:
    """Make every item due at ``now``; the server tries them when it starts."""
    with owned(directory):
        items = scan(directory, repair=False)
        for item in items:
            item.next_attempt = min(item.next_attempt, now)
            write_atomic(item_path(directory, item.id), item.to_json())
    return len(items)


def offline_delete(directory: str, item_id: str) -> bool:
    """Remove an item; False when there is none."""
    if not valid_id(item_id):
        return False
    with owned(directory):
        if not os.path.exists(item_path(directory, item_id)):
            return False
        remove_item_files(directory, item_id)
    return True


def offline_bounce(directory: str, item_id: str, error: str, now: float) -> bool:
    """Fail an item's pending recipients; the server sends the DSN when it starts."""
    if not valid_id(item_id):
        return False
    with owned(directory):
        item = next((i for i in scan(directory, repair=False) if i.id == item_id), None)
        if item is None:
            return False
        for rcpt in item.pending:
            rcpt.status, rcpt.last_error, rcpt.last_attempt = FAILED, error, now
            rcpt.code, rcpt.enhanced, rcpt.notified = 550, "5.0.0", False
        write_atomic(item_path(directory, item.id), item.to_json())
    return True
