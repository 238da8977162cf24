"""The queue directory's files: message bodies, the owner's lock, scanning and repair at start-up,
and the operations the queue tools run directly on the files when no server is running."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterator

from geomail.envelope import CHUNK_SIZE, Body
from geomail.locks import try_lock
from geomail.log import event
from geomail.safeio import fsync_dir, write_atomic, write_file_synced
from geomail.units import KiB

from .item import FAILED, QueueItem, body_path, item_path, valid_id

log = logging.getLogger(__name__)

MAX_HEAD = 64 * KiB
HOLD_DIR = "hold"  # items set aside after repeated internal errors (never sent, never removed)


class QueueBusy(OSError):
    """Another process (a running server) owns the queue directory."""


class QueuedBody:
    """An item's message file as a ``Body``; sizes and 8-bit flag come from the item."""

    __slots__ = ("crlf_size", "eight_bit", "path", "size")

    def __init__(self, path: str, size: int, crlf_size: int, eight_bit: bool) -> None:
        self.path, self.size, self.crlf_size, self.eight_bit = path, size, crlf_size, eight_bit

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
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
    """The descriptor holding the queue owner's lock, or raise ``QueueBusy`` (blocking)."""
    fd = try_lock(os.path.join(directory, "lock"))
    if fd is None:
        raise QueueBusy(f"{directory} is in use by another geomail process")
    return fd


def scan(directory: str, repair: bool) -> list[QueueItem]:
    """The items in ``directory`` (blocking). With ``repair`` (the owner, at start-up): remove
    temp files, orphan bodies and items without a body; rename damaged items to ``.bad``.

    A message body is removed only when its item exists in no form at all: not as ``.json``,
    ``.json.bad``, a temp file, nor set aside in ``hold/`` (a body is the mail itself; an item
    file that cannot be read today may be repaired by hand tomorrow). An item that cannot be
    *read* (permissions: written by another user) is left as it is.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    bodies = {n[:-4] for n in names if n.endswith(".msg")}
    kept = _item_forms(directory, names)
    items: list[QueueItem] = []
    for name in sorted(names):
        path = os.path.join(directory, name)
        if name.startswith(".tmp"):
            item_id = _tmp_item_id(name)
            if item_id in bodies and item_id + ".json" not in names:
                event(log, logging.WARNING, "queue-file-kept", path=path,
                      reason="temp item whose message has no other item")
            elif repair:
                event(log, logging.INFO, "queue-file-removed", path=path, reason="torn temp file")
                os.unlink(path)
        elif name.endswith(".msg") and name[:-4] + ".json" not in names:
            if name[:-4] in kept:
                event(log, logging.ERROR, "queue-file-kept", path=path,
                      reason="its item is damaged or set aside")
            elif repair:
                event(log, logging.WARNING, "queue-file-removed", path=path,
                      reason="message without item (crash during put)")
                os.unlink(path)
        elif name.endswith(".json"):
            try:
                with open(path, "rb") as handle:
                    item = QueueItem.from_json(handle.read())
            except OSError as exc:
                # Not damaged, only unreadable to us (e.g. rewritten by root): leave it and its
                # message alone for the administrator.
                event(log, logging.ERROR, "queue-item-unreadable", path=path, error=str(exc),
                      action="left alone; check its owner")
                continue
            except ValueError as exc:
                event(log, logging.ERROR, "queue-item-unreadable", path=path, error=str(exc))
                if repair:
                    os.replace(path, path + ".bad")
                continue
            if item.id != name[:-5]:
                event(log, logging.ERROR, "queue-item-unreadable", path=path, id=item.id,
                      error="the id does not match the file name")
                if repair:
                    os.replace(path, path + ".bad")
                continue
            if item.id not in bodies:
                event(log, logging.ERROR, "queue-item-dropped", id=item.id,
                      from_=f"<{item.sender}>", to=",".join(r.address for r in item.recipients),
                      reason="no message")
                if repair:
                    os.unlink(path)
                continue
            items.append(item)
    return items


def _tmp_item_id(name: str) -> str:
    """The item id a temp file ``.tmp.PID.RANDOM.<id>.json`` belongs to ("" if none)."""
    base = name.rsplit(".", 2)
    return base[-2] if len(base) == 3 and base[-1] == "json" else ""


def _item_forms(directory: str, names: list[str]) -> set[str]:
    """Ids whose item exists in some form other than ``<id>.json``: ``.bad``, temp, held."""
    found = {n[:-9] for n in names if n.endswith(".json.bad")}
    found |= {_tmp_item_id(n) for n in names if n.startswith(".tmp")}
    with contextlib.suppress(OSError):
        found |= {n.split(".", 1)[0] for n in os.listdir(os.path.join(directory, HOLD_DIR))}
    return found


# ---------------------------------------------------------------------- set aside


def hold_item(directory: str, item: QueueItem) -> None:
    """Set ``item`` aside (blocking): its files move to ``hold/``, where nothing sends them and
    nothing removes them; the item first, so that no scan ever sees a body without an item."""
    held = os.path.join(directory, HOLD_DIR)
    os.makedirs(held, mode=0o700, exist_ok=True)
    write_atomic(item_path(directory, item.id), item.to_json())
    os.replace(item_path(directory, item.id), item_path(held, item.id))
    fsync_dir(held)
    with contextlib.suppress(FileNotFoundError):
        os.replace(body_path(directory, item.id), body_path(held, item.id))
    fsync_dir(held)
    fsync_dir(directory)


def held_items(directory: str) -> list[QueueItem]:
    """The items set aside in ``hold/`` (blocking); unreadable ones are skipped with a log line."""
    held = os.path.join(directory, HOLD_DIR)
    try:
        names = sorted(n for n in os.listdir(held) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    items = []
    for name in names:
        try:
            with open(os.path.join(held, name), "rb") as handle:
                items.append(QueueItem.from_json(handle.read()))
        except (OSError, ValueError) as exc:
            event(log, logging.ERROR, "queue-item-unreadable", path=os.path.join(held, name),
                  error=str(exc))
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
