"""The queue tools' control channel: a unix socket (JSON lines) the server answers and the CLI
calls, with a fallback that works on the queue files when no server is running.

Protocol: one JSON object per line each way. Requests ``{"op": "list"}``, ``{"op": "flush"}``,
``{"op": "delete", "id": ID}``, ``{"op": "bounce", "id": ID}``; answers ``{"ok": true, ...}``
(``items`` for list, ``count`` for flush) or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from geomail.log import event
from geomail.units import KiB, MiB

from .files import (
    QueueBusy,
    held_items,
    offline_bounce,
    offline_delete,
    offline_flush,
    scan,
)
from .item import FAILED, PENDING, QueueItem, valid_id
from .queue import HELD_KEY, Queue

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * KiB
OPS = ("list", "flush", "delete", "bounce")
# C0, DEL, C1 and the Unicode line/paragraph separators and bidi overrides.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class ControlError(Exception):
    """The queue command could not be carried out (message for the operator)."""


def socket_path(data_dir: str) -> str:
    """Where the running server listens."""
    return os.path.join(data_dir, SOCKET_NAME)


# ---------------------------------------------------------------------- server side


class ControlServer:
    """Serves the control protocol for ``queue`` on ``path`` (mode 0600: only the server's
    user, and root, may connect). Cooperative: one greenlet per client."""

    def __init__(self, queue: Queue, path: str) -> None:
        self.queue = queue
        self.path = path
        self._server: Any = None

    def start(self) -> None:
        """Bind and serve. A stale socket file (from a crash) is replaced; the queue lock,
        taken by ``Queue.load()``, already guarantees that no other server is running."""
        from gevent.server import StreamServer

        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)  # before listen(): nobody can connect in between
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        self._server = StreamServer(sock, self._handle)
        self._server.start()
        event(log, logging.INFO, "control-listening", path=self.path)

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _handle(self, sock: socket.socket, _address: object) -> None:
        sock.settimeout(60)
        reader = sock.makefile("rb")
        try:
            while line := reader.readline(MAX_REQUEST + 1):
                if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
                    sock.sendall(_encode({"ok": False, "error": "request too long"}))
                    return
                sock.sendall(_encode(self.answer(line)))
        except OSError:
            pass
        finally:
            reader.close()

    def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line."""
        try:
            request = json.loads(line)
            op = request.get("op") if isinstance(request, dict) else None
        except ValueError:
            return {"ok": False, "error": "not JSON"}
        if op not in OPS:
            return {"ok": False, "error": f"unknown op {op!r}; expected one of {', '.join(OPS)}"}
        if op == "list":
            return {"ok": True, "items": self.queue.items()}
        if op == "flush":
            count = self.queue.flush()
            event(log, logging.INFO, "queue-flushed", items=count, by="administrator")
            return {"ok": True, "count": count}
        item_id = request.get("id")
        if not isinstance(item_id, str) or not valid_id(item_id):
            return {"ok": False, "error": "missing or malformed item id"}
        done = self.queue.delete(item_id) if op == "delete" else self.queue.bounce(item_id)
        if not done:
            return {"ok": False, "error": f"no queued item {item_id}"}
        return {"ok": True}


def _encode(answer: Mapping[str, Any]) -> bytes:
    return json.dumps(answer, ensure_ascii=False).encode("utf-8") + b"\n"


# ---------------------------------------------------------------------- client side


def request(path: str, message: Mapping[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the server at ``path``; ``ConnectionError``/``FileNotFoundError``
    when no server listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(_encode(message))
        with sock.makefile("rb") as reader:
            line = reader.readline(64 * MiB)
    finally:
        sock.close()
    if not line:
        raise ControlError("the server closed the control connection without answering")
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ControlError("the server sent a malformed answer")
    return answer


def queue_command(data_dir: str, op: str, item_id: str | None = None) -> dict[str, Any]:
    """Run a queue tool (``list``, ``flush``, ``delete``, ``bounce``): through the running
    server, or on the files when none runs (``"offline": true`` in the answer). Raises
    ``ControlError`` with a message for the operator."""
    if op not in OPS:
        raise ControlError(f"unknown queue command {op!r}")
    if op in ("delete", "bounce") and (item_id is None or not valid_id(item_id)):
        raise ControlError(f"{item_id!r} is not a queue id")
    message: dict[str, Any] = {"op": op}
    if item_id is not None:
        message["id"] = item_id
    try:
        answer = request(socket_path(data_dir), message)
    except (FileNotFoundError, ConnectionRefusedError):
        answer = _offline(os.path.join(data_dir, "queue"), op, item_id)
    except OSError as exc:
        raise ControlError(f"cannot reach the server at {socket_path(data_dir)}: {exc}") from exc
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "failed")))
    return answer


def _offline(directory: str, op: str, item_id: str | None) -> dict[str, Any]:
    now = time.time()
    if op != "list":
        _check_owner(directory, op)
    try:
        if op == "list":
            items = sorted([*scan(directory, repair=False), *held_items(directory)],
                           key=lambda i: i.created)
            return {"ok": True, "offline": True, "items": [i.to_dict() for i in items]}
        if op == "flush":
            return {"ok": True, "offline": True, "count": offline_flush(directory, now)}
        assert item_id is not None
        if op == "delete":
            done = offline_delete(directory, item_id)
        else:
            done = offline_bounce(directory, item_id, "550 5.0.0 bounced by the administrator",
                                  now)
    except QueueBusy as exc:
        raise ControlError(f"{exc}, but its control socket does not answer") from exc
    except FileNotFoundError:
        return {"ok": False, "error": f"no queue at {directory}"}
    if not done:
        return {"ok": False, "error": f"no queued item {item_id}"}
    return {"ok": True, "offline": True}


def _check_owner(directory: str, op: str) -> None:
    """Refuse to change the queue files as any other user than the queue's owner: a
    file rewritten by root is one the server cannot read. Refusing is simpler and safer
    than switching users here: the operator sees at once whom to run the tool as."""
    try:
        owner = os.stat(directory).st_uid
    except FileNotFoundError:
        return  # "no queue" is reported by the operation itself
    if owner == os.geteuid():
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = f"#{owner}"
    raise ControlError(
        f"the queue {directory} belongs to user {name} (uid {owner}) and the server is not "
        f"running; changing its files as another user would make them unreadable to the "
        f"server. Run the tool as {name}: sudo -u {name} geomail queue {op} ...")


# ---------------------------------------------------------------------- output


def _age(seconds: float) -> str:
    """``2d3h``, ``3h12m``, ``5m30s``, ``45s``: the two largest units."""
    rest = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        parts.append((count, unit))
    first = next((i for i, (count, _) in enumerate(parts) if count), len(parts) - 1)
    return "".join(f"{c}{u}" for c, u in parts[first:first + 2] if c or (u == "s" and first == 3))


def _safe(line: str) -> str:
    """A line for the terminal: no control characters (an escape sequence in a remote reply
    must not reach the administrator's terminal); UTF-8 addresses (RFC 6531) stay readable."""
    return _CONTROLS.sub("?", line)


def format_queue_list(items: Sequence[Mapping[str, Any]], now: float | None = None) -> str:
    """``geomail queue list`` output: per item its id, age, sender, size, attempts and next
    attempt, then each recipient with its status and last error."""
    now = time.time() if now is None else now
    if not items:
        return "Mail queue is empty\n"
    out: list[str] = []
    pending_total = held_total = 0
    for data in items:
        item = QueueItem.from_dict(data)
        pending = [r for r in item.recipients if r.status == PENDING]
        pending_total += len(pending)
        when = item.next_attempt - now
        next_text = ("-" if not pending else "now" if when <= 0 else f"in {_age(when)}")
        held = item.extra.get(HELD_KEY)
        if isinstance(held, dict):
            next_text = "never (held)"
            held_total += 1
        sender = f"<{item.sender}>"
        out.append(_safe(f"{item.id}  age {_age(now - item.created)}  from {sender}  "
                         f"size {item.size}  attempts {item.attempts}  next {next_text}"
                         + (f"  ({item.kind})" if item.kind != "message" else "")))
        if isinstance(held, dict):
            out.append(_safe(f"    HELD: {held.get('reason', '')} (files in queue/hold/)"))
        for rcpt in item.recipients:
            status = rcpt.status if rcpt.status != FAILED else (
                "failed" if rcpt.notified else "failed (bounce pending)")
            line = f"    {rcpt.address:<40} {status:<10} attempts {rcpt.attempts}"
            if rcpt.last_error and rcpt.status != "delivered":
                line += f"  {rcpt.last_error}"
            out.append(_safe(line))
    out.append(f"-- {len(items)} item{'s' if len(items) != 1 else ''}, "
               f"{pending_total} recipient{'s' if pending_total != 1 else ''} pending"
               + (f", {held_total} held" if held_total else ""))
    return "\n".join(out) + "\n"
