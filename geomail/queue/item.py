"""A queued message's envelope and per-recipient delivery state, and its JSON form on disk.

On-disk format (``data_dir/queue/``), one pair of files per message:

- ``<id>.msg``: the message as it will be sent (header prefix included), LF line endings;
  written once, fsynced, never changed.
- ``<id>.json``: this module's ``QueueItem`` as UTF-8 JSON, replaced atomically (temp file,
  fsync, rename, directory fsync) after every delivery attempt. Fields::

    {"version": 1, "id": "0190c1d2e3f4a5b6c7d8e9", "kind": "message",
     "sender": "alice@example.com",          # "" is the null sender <>
     "created": 1719400000.0, "next_attempt": 1719400060.0, "attempts": 1,
     "size": 10240, "crlf_size": 10496, "eight_bit": false, "delay_warned": false,
     "recipients": [{"address": "bob@example.org", "original": "team@example.com",
                     "status": "pending", "attempts": 1, "last_attempt": 1719400001.0,
                     "last_error": "451 4.7.1 try later", "code": 451, "enhanced": "4.7.1",
                     "remote_mta": "mx.example.org [192.0.2.1]:25", "tls": "TLSv1.3",
                     "notified": false, "notify": ["FAILURE", "DELAY"],
                     "orcpt": "rfc822;team@example.com", "dsn_passed": false}],
     "ret": "HDRS", "envid": "QQ314159"}

  ``status`` is ``pending`` (to be tried), ``delivered`` or ``failed``; a failed recipient is
  ``notified`` once its delivery status notification is queued (or none is due). ``kind`` is
  ``message``, ``bounce`` (a DSN geomail generated), ``double-bounce`` (a DSN that could not
  be delivered, sent on to the postmaster) or ``tls-report`` (a TLS report geomail generated,
  RFC 8460 5.3: delivered without the destination's MTA-STS/DANE policy and not counted in
  TLS reports). The DSN fields (RFC 3461) are optional, absent in
  items written before them: ``ret``/``envid`` as given on MAIL, ``notify``/``orcpt`` as
  given on RCPT (``null`` when not given), ``dsn_passed`` when the next hop took the DSN
  request on (then it, not we, reports success). A delivered recipient with
  ``notify`` SUCCESS is ``notified`` once its success DSN is queued.

- ``.tmp.*``: a write in progress; left over only by a crash, removed at start-up. A ``.msg``
  whose item exists in no form (no ``.json``, ``.json.bad``, temp file or held item) is the
  remains of a ``put()`` that never returned (removed); a ``.json`` without its ``.msg`` cannot
  be delivered (logged and removed); a damaged ``.json`` is renamed ``.json.bad`` and one that
  cannot be read (another owner) is left alone, their messages kept.
- ``hold/<id>.json`` and ``hold/<id>.msg``: an item set aside after ``relay.max_item_errors``
  internal errors in a row (``extra["held"]`` says when and why); never sent, never removed.
  ``extra["internal_errors"]`` counts the errors in a row of a live item.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
TLS_REPORT = "tls-report"
KINDS = ("message", "bounce", "double-bounce", TLS_REPORT)
ID_RE = re.compile(r"^[0-9a-f]{12,40}$")


def valid_id(item_id: str) -> bool:
    """True when ``item_id`` looks like ``geomail.ids.new_id`` output (control input is checked)."""
    return bool(ID_RE.match(item_id))


@dataclass(slots=True)
class Recipient:
    """One recipient's delivery state."""

    address: str  # final address (aliases expanded)
    original: str | None = None  # as the client gave it, for DSN Original-Recipient
    status: str = PENDING
    attempts: int = 0
    last_attempt: float | None = None
    last_error: str | None = None  # "451 4.7.1 text"
    code: int | None = None
    enhanced: str | None = None
    remote_mta: str | None = None
    tls: str | None = None
    notified: bool = False
    notify: list[str] | None = None  # RCPT NOTIFY= (RFC 3461 4.1); None: not given
    orcpt: str | None = None  # RCPT ORCPT= decoded, "rfc822;addr" (RFC 3461 4.2)
    dsn_passed: bool = False  # the next hop accepted NOTIFY/ORCPT (RFC 3461 5.2)

    def wants(self, kind: str) -> bool:
        """Whether a DSN of ``kind`` (SUCCESS, FAILURE, DELAY) is due for this recipient:
        RFC 3461 4.1, absent NOTIFY meaning FAILURE,DELAY as in Postfix."""
        if self.notify is None:
            return kind in ("FAILURE", "DELAY")
        return kind in self.notify

    @property
    def settled(self) -> bool:
        """Delivered, or failed and reported: nothing left to do for it."""
        if self.status == DELIVERED:
            return self.notified or not self.wants("SUCCESS") or self.dsn_passed
        return self.status == FAILED and self.notified


@dataclass(slots=True)
class QueueItem:
    """A message in the queue: envelope, body facts and every recipient's state."""

    id: str
    sender: str
    recipients: list[Recipient]
    created: float
    next_attempt: float
    attempts: int = 0
    size: int = 0
    crlf_size: int = 0
    eight_bit: bool = False
    delay_warned: bool = False
    kind: str = "message"
    ret: str | None = None  # MAIL RET= (RFC 3461 4.3): "FULL" or "HDRS"
    envid: str | None = None  # MAIL ENVID= decoded (RFC 3461 4.4)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept on rewrite

    @property
    def pending(self) -> list[Recipient]:
        """Recipients still to be tried."""
        return [r for r in self.recipients if r.status == PENDING]

    @property
    def done(self) -> bool:
        """True when every recipient is settled: the item can be removed."""
        return all(r.settled for r in self.recipients)

    def recipient(self, address: str) -> Recipient | None:
        """The recipient entry for ``address``."""
        return next((r for r in self.recipients if r.address == address), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored on disk."""
        data = {**self.extra, "version": FORMAT_VERSION, "id": self.id, "kind": self.kind,
                "sender": self.sender, "created": self.created,
                "next_attempt": self.next_attempt, "attempts": self.attempts,
                "size": self.size, "crlf_size": self.crlf_size, "eight_bit": self.eight_bit,
                "delay_warned": self.delay_warned,
                "recipients": [asdict(r) for r in self.recipients]}
        if self.ret is not None:
            data["ret"] = self.ret
        if self.envid is not None:
            data["envid"] = self.envid
        return data

    def to_json(self) -> bytes:
        """The file content."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1).encode("utf-8") + b"\n"

    @classmethod
    def from_dict(cls, data: Any) -> QueueItem:
        """Parse an item; ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {data.get('version')!r}")
        try:
            item_id, sender = str(data["id"]), str(data["sender"])
            recipients = [_recipient(r) for r in data["recipients"]]
            item = cls(
                id=item_id, sender=sender, recipients=recipients,
                created=float(data["created"]), next_attempt=float(data["next_attempt"]),
                attempts=int(data.get("attempts", 0)), size=int(data.get("size", 0)),
                crlf_size=int(data.get("crlf_size", 0)),
                eight_bit=bool(data.get("eight_bit", False)),
                delay_warned=bool(data.get("delay_warned", False)),
                kind=str(data.get("kind", "message")),
                ret=_optional_str(data.get("ret")), envid=_optional_str(data.get("envid")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field: {exc}") from exc
        if not valid_id(item.id):
            raise ValueError(f"invalid id {item.id!r}")
        if item.kind not in KINDS:
            raise ValueError(f"unknown kind {item.kind!r}")
        known = {"version", "id", "kind", "sender", "created", "next_attempt", "attempts",
                 "size", "crlf_size", "eight_bit", "delay_warned", "recipients", "ret", "envid"}
        item.extra = {k: v for k, v in data.items() if k not in known}
        return item

    @classmethod
    def from_json(cls, raw: bytes) -> QueueItem:
        """Parse the file content; ``ValueError`` when it is not an item."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        return cls.from_dict(data)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _recipient(data: Any) -> Recipient:
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        raise ValueError("a recipient needs an 'address'")
    fields = set(Recipient.__dataclass_fields__)
    rcpt = Recipient(**{k: v for k, v in data.items() if k in fields})
    if rcpt.status not in STATUSES:
        raise ValueError(f"unknown recipient status {rcpt.status!r}")
    if rcpt.notify is not None and (not isinstance(rcpt.notify, list)
                                    or not all(isinstance(n, str) for n in rcpt.notify)):
        raise ValueError(f"malformed notify {rcpt.notify!r}")
    return rcpt


def item_path(directory: str, item_id: str) -> str:
    """Where the item's state lives."""
    return os.path.join(directory, f"{item_id}.json")


def body_path(directory: str, item_id: str) -> str:
    """Where the item's message lives."""
    return os.path.join(directory, f"{item_id}.msg")
