"""POP3 across restarts: UIDLs are persistent (RFC 1939 7) and a server killed with SIGKILL leaves
no maildrop lock behind (RFC 1939 8); Maildir and mbox."""

from __future__ import annotations

import os

from tests.support.geomail import GeomailProcess, running_app, write_config
from tests.support.pop3 import Ports, make_message, pop3_config, send, session, unstuff

pytest_plugins = ["tests.support.pop3_fixtures"]


def snapshot(ports: Ports) -> tuple[dict[int, str], list[bytes]]:
    """UIDL listing and every message's content, in one session."""
    with session(ports.pop3) as client:
        uids = client.listing("UIDL")
        return uids, [unstuff(client.multi(f"RETR {n}")[1]) for n in uids]


def test_uidl_stable_across_restart(tmp_path, pop3_tls, store_format):
    """RFC 1939 7: "the unique-id of a message ... persists across sessions": after a restart
    over the same data (and after a deletion that moves the others in the file, for mbox) each
    message keeps its UIDL and content; a new message gets a new id."""
    raw = pop3_config(tmp_path, pop3_tls, store_format)
    with running_app(raw) as app:
        ports = Ports(app.ports)
        for n in range(1, 4):
            send(ports.smtp, make_message(n))
        uids, contents = snapshot(ports)
        with session(ports.pop3) as client:
            client.ok("DELE 1")
    with running_app(raw) as app:
        ports = Ports(app.ports)
        after, after_contents = snapshot(ports)
        assert after == {1: uids[2], 2: uids[3]}
        assert after_contents == contents[1:]
        send(ports.smtp, make_message(4))
        again, _ = snapshot(ports)
        assert {n: again[n] for n in (1, 2)} == after
        assert again[3] not in uids.values()


def test_sigkill_leaves_no_lock(tmp_path, pop3_tls, store_format):
    """RFC 1939 8: a server process killed (SIGKILL) while a session holds the
    maildrop leaves no lock behind: after a restart the user logs in at once; the deletions of
    the killed session never reached UPDATE (RFC 1939 6), so every message is still there."""
    raw = pop3_config(tmp_path, pop3_tls, store_format)
    if os.geteuid() == 0:
        raw["user"] = "root"  # the CLI refuses to keep root unless told so
    server = GeomailProcess(write_config(tmp_path / "geomail.yaml", raw))
    server.start()
    try:
        ports = Ports(server.ports)
        send(ports.smtp, make_message(1))
        send(ports.smtp, make_message(2))
        uids, contents = snapshot(ports)
        with session(ports.pop3) as client:
            client.ok("DELE 1")
            client.ok("DELE 2")
            server.kill()
        server.start()
        ports = Ports(server.ports)
        with session(ports.pop3) as client:  # logs in on the first try
            assert client.listing("UIDL") == uids
        assert snapshot(ports) == (uids, contents)
    finally:
        server.kill()
