"""Client-side helpers for SMTP integration tests: send with smtplib, read what was stored."""

from __future__ import annotations

import email.utils
import os
import smtplib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.geomail import base_config, write_config
from tests.support.stored import Stored, maildir_messages, mbox_messages

UTF8_USER = "jöran@example.com"  # a user with a non-ASCII local part (RFC 6531)


def send(port: int, sender: str, recipients: Sequence[str], data: bytes,
         mail_options: Sequence[str] = (), host: str = "127.0.0.1",
         timeout: float = 10) -> tuple[int, str]:
    """One transaction with smtplib (EHLO, MAIL, RCPT..., DATA); the final reply."""
    with smtplib.SMTP(host, port, timeout=timeout) as client:
        client.ehlo("client.example")
        code, text = client.mail(sender, list(mail_options))
        assert code == 250, (code, text)
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = client.data(data)
        return code, text.decode("utf-8", "replace")


def stored(app: Any, mailbox: str) -> list[Stored]:
    """The messages of ``mailbox`` in the app's store, Maildir or mbox."""
    store = app.config.store
    if store.format == "mbox":
        return [message for _sender, message in mbox_messages(store.path, mailbox)]
    return maildir_messages(store.path, mailbox)


def check_trace(message: Stored, *, sender: str, mailbox: str, rcpt: str,
                protocol: str = "ESMTP", helo: str = "client.example",
                reply: str | None = None, tls: bool = False) -> None:
    """The trace prefix records the transaction (RFC 5321 4.4): the Return-Path, the mailbox,
    who connected from where, with which protocol (RFC 3848), the id from the 250 reply."""
    fields = message.fields
    assert fields["sender"] == sender
    assert fields["mailbox"] == mailbox
    assert fields["rcpt"] == rcpt
    assert fields["helo"] == helo
    assert fields["ip"] == "127.0.0.1"
    assert fields["by"] == "mx.test.com"
    assert fields["protocol"] == protocol
    assert bool(fields["tls"]) == tls
    assert email.utils.parsedate_to_datetime(fields["date"]) is not None
    if reply is not None:
        assert reply.endswith(f"queued as {fields['id']}"), (reply, fields["id"])


def process_config(tmp_path: Path, **overrides: Any) -> Path:
    """A geomail.yaml for a ``GeomailProcess``: base_config plus ``overrides``, and ``user``
    set so that a test run as root may stay root (the server refuses to by accident)."""
    import pwd

    raw = base_config(tmp_path, **overrides)
    raw.setdefault("user", pwd.getpwuid(os.geteuid()).pw_name)
    return write_config(tmp_path / "geomail.yaml", raw)
