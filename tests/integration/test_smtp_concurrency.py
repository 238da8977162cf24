"""Many clients at once: one greenlet per connection, every message durable, none lost."""

from __future__ import annotations

import smtplib

import gevent
import pytest
from gevent.event import Event

from tests.support.smtp import stored

CLIENTS = 300
MAILBOXES = ("test1@test.com", "alice@example.com", "bob@example.com")


@pytest.mark.parametrize("store", ["maildir", "mbox"])
def test_300_concurrent_clients(make_app, tmp_path, store):
    """RFC 5321 4.5.3.2 / 3.1 (many simultaneous sessions): 300 smtplib clients connect, all
    are in a transaction at the same time, then each sends its message; every 250 means the
    message is stored, and every message is stored exactly once (Maildir, and mbox where the
    deliveries to one file are serialised by its locks)."""
    app = make_app(limits={"max_connections_per_ip": CLIENTS + 10},
                   store={"format": store, "path": str(tmp_path / "mail")})
    port = app.ports["smtp"][0]
    go = Event()
    ready: list[int] = []

    def client(n: int) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo(f"client{n}.example")
            assert smtp.mail(f"sender{n}@remote.example")[0] == 250
            assert smtp.rcpt(MAILBOXES[n % len(MAILBOXES)])[0] == 250
            ready.append(n)
            if len(ready) == CLIENTS:
                go.set()
            go.wait(30)
            code, _ = smtp.data(b"Subject: message %d\r\n\r\nbody of %d\r\n" % (n, n))
            return code, b"Subject: message %d\n\nbody of %d\n" % (n, n)

    greenlets = [gevent.spawn(client, n) for n in range(CLIENTS)]
    gevent.joinall(greenlets, timeout=60)
    for greenlet in greenlets:
        assert greenlet.successful(), greenlet.exception
    assert go.is_set(), f"only {len(ready)} clients were in a transaction together"
    assert [g.value[0] for g in greenlets] == [250] * CLIENTS
    expected = {mailbox: sorted(g.value[1] for n, g in enumerate(greenlets)
                                if MAILBOXES[n % len(MAILBOXES)] == mailbox)
                for mailbox in MAILBOXES}
    for mailbox in MAILBOXES:
        assert sorted(m.body for m in stored(app, mailbox)) == expected[mailbox]
