"""Header lines geomail adds: trace fields (RFC 5321 4.4) and submission fixes (RFC 6409 8)."""

from __future__ import annotations

import email.utils
import re
import time

_UNSAFE = re.compile(r"[^\x21-\x7e]")
_UNSAFE_COMMENT = re.compile(r"[^\x20-\x7e]")
# A recipient may be UTF-8 (accepted only with SMTPUTF8, whose Received fields may carry it:
# RFC 6531 3.7.3); controls, spaces and Unicode line or paragraph separators are still replaced.
_UNSAFE_ADDRESS = re.compile(r"[^\x21-\x7e\u00a1-\u2027\u202a-\ud7ff\ue000-\U0010ffff]")


def _clean(text: str, limit: int = 100) -> str:
    """Client-supplied text made safe for a header: printable ASCII, bounded, never a newline."""
    return _UNSAFE.sub("?", text)[:limit] or "unknown"


def received(*, helo: str | None, client_ip: str, hostname: str, protocol: str, msgid: str,
             tls: str | None, recipient: str | None, now: float | None = None) -> bytes:
    """A ``Received:`` field (RFC 5321 4.4) with LF line endings, folded over several lines."""
    lines = [f"Received: from {_clean(helo or client_ip)} ([{client_ip}])"]
    if tls:
        lines.append(f"\t(using {_UNSAFE_COMMENT.sub('?', tls)[:200]})")
    lines.append(f"\tby {hostname} (geomail) with {protocol} id {msgid}")
    date = _date(now if now is not None else time.time())
    if recipient is not None:
        address = _UNSAFE_ADDRESS.sub("?", recipient)[:300] or "unknown"
        lines.append(f"\tfor <{address}>; {date}")
    else:
        lines[-1] += f";\n\t{date}"
    return ("\n".join(lines) + "\n").encode("utf-8")


def _date(now: float) -> str:
    """RFC 5322 date-time in local time (cheap: not worth a cache)."""
    return email.utils.formatdate(int(now), localtime=True)


def return_path(sender: str) -> bytes:
    """``Return-Path:`` recording the envelope sender at final delivery (RFC 5321 4.4)."""
    return f"Return-Path: <{sender}>\n".encode()


def delivered_to(mailbox: str) -> bytes:
    """``Delivered-To:``: the mailbox a copy went to (Postfix and qmail use it to spot loops)."""
    return f"Delivered-To: {mailbox}\n".encode()
