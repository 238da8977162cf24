"""Real sync clients against geomail's IMAP server, unchanged and with default behaviour:
isync's mbsync and offlineimap3, each between geomail over imaps (the certificate checked
against the test CA) and a local Maildir.

They lean on exactly what an offline client needs from a server: UIDs and UIDVALIDITY that
persist across sessions and restarts (RFC 9051 2.3.1.1, RFC 3501 2.3.1.1), UID FETCH of flags
and bodies (RFC 9051 6.4.5, 6.4.9), UID STORE (6.4.6), APPEND with APPENDUID so an upload
needs no search to learn its UID (RFC 4315 3), CLOSE expunging ``\\Deleted`` (RFC 9051
6.4.1), CREATE and LIST (6.3.4, 6.3.9) for folders made on either side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.geomail import base_config, running_app
from tests.support.imap_clients import (
    Mbsync,
    OfflineImap,
    by_subject,
    flags_of,
    messages,
    move_local,
    server_append,
    server_change,
    server_view,
    set_flags,
    write_local,
)
from tests.support.pop3 import make_message, send

pytest_plugins = ["tests.support.pop3_fixtures"]


def config(tmp_path: Path, tls: dict[str, str]) -> dict[str, Any]:
    """smtp and imaps over the Maildir store; the same dict starts the App again."""
    return base_config(tmp_path, tls={"cert": tls["cert"], "key": tls["key"]},
                       listen={"smtp": ["127.0.0.1:0"], "imaps": ["127.0.0.1:0"]})


def server_maildir(app: Any) -> Path:
    return Path(app.config.store.path) / "example.com" / "alice"


def server_flags(app: Any, folder: str) -> dict[str, str]:
    """Subject -> Maildir flag letters, read from the server's own file names."""
    path = server_maildir(app) / (f".{folder}" if folder != "INBOX" else "")
    return {subject: flags_of(file) for subject, file in by_subject(path).items()}


def test_mbsync_both_ways_and_across_restart(tmp_path, pop3_tls, pop3_client_tls):
    """mbsync (isync 1.4) over imaps, ``Create Both``, ``Expunge Both``, ``Patterns *``:
    delivered mail comes down with its UIDs; local flag changes go up as UID STORE (RFC 9051
    6.4.6) and land in the server's file names; a local ``\\Deleted`` goes away at CLOSE
    (RFC 9051 6.4.1, RFC 3501 6.4.2); a new local message and a local move go up as APPEND
    with APPENDUID (RFC 4315 3, RFC 9051 6.3.12); a folder made locally is CREATEd
    (RFC 9051 6.3.4); server-side flag changes, expunges and deliveries come down.
    After geomail restarts on the same directories UIDVALIDITY and every UID are the same
    (RFC 9051 2.3.1.1, RFC 3501 2.3.1.1: a UID "SHOULD NOT change between sessions", a change
    must come with a new UIDVALIDITY), so mbsync downloads nothing and its state files do not
    change; a message delivered then gets a fresh UID, above all earlier ones."""
    raw = config(tmp_path, pop3_tls)
    client = Mbsync(tmp_path, pop3_tls["ca"])
    inbox, archive = client.mail / "INBOX", client.mail / "Archive"
    with running_app(raw) as app:
        smtp, imaps = app.ports["smtp"][0], app.ports["imaps"][0]
        for n in range(1, 6):
            send(smtp, make_message(n))
        client.sync(imaps)
        local = by_subject(inbox)
        assert sorted(local) == [f"message {n}" for n in range(1, 6)]
        assert {path.name.split(",U=")[1].split(":")[0] for path in local.values()} == {
            "1", "2", "3", "4", "5"}
        for folder in ("Archive", "Drafts", "Junk", "Sent", "Trash"):
            assert (client.mail / folder / "cur").is_dir(), f"{folder} not created locally"

        # Local changes: flags, a deletion two ways (\Deleted, and the file removed), a move,
        # new messages in Drafts, Sent and a new nested folder.
        set_flags(local["message 1"], "S")
        set_flags(local["message 2"], "F")
        set_flags(local["message 3"], "ST")
        local["message 4"].unlink()
        move_local(local["message 5"], archive)
        write_local(client.mail / "Drafts", "draft1", "a draft", "D")
        write_local(client.mail / "Sent", "sent1", "sent from here", "S")
        nested = client.mail / "Projects" / "geomail"
        for sub in ("cur", "new", "tmp"):
            (nested / sub).mkdir(parents=True)
        write_local(nested, "nested1", "in a new folder")
        client.sync(imaps)

        view = server_view(imaps, pop3_client_tls)
        assert view["INBOX"].subjects() == {"message 1": {"\\Seen"},
                                            "message 2": {"\\Flagged"}}
        assert server_flags(app, "INBOX") == {"message 1": "S", "message 2": "F"}
        assert view["Archive"].subjects() == {"message 5": frozenset()}
        assert view["Drafts"].subjects() == {"a draft": {"\\Draft"}}
        assert view["Sent"].subjects() == {"sent from here": {"\\Seen"}}
        assert view["Projects/geomail"].subjects() == {"in a new folder": frozenset()}
        # APPENDUID gave mbsync the UIDs: the local files carry them (U=) without a search.
        for folder in ("Archive", "Drafts", "Sent", "Projects/geomail"):
            [uid] = view[folder].messages
            [path] = messages(client.mail / folder)
            assert f",U={uid}:" in path.name, (folder, path.name)

        # Server-side changes, then a delivery.
        moved_uid = next(iter(view["Archive"].messages))
        server_change(imaps, pop3_client_tls, [
            ("INBOX", "STORE", "1", "+FLAGS", "(\\Answered \\Flagged)"),
            ("INBOX", "STORE", "2", "-FLAGS", "(\\Flagged)"),
            ("Archive", "STORE", str(moved_uid), "+FLAGS", "(\\Deleted)"),
        ])
        send(smtp, make_message(6))
        # A folder made on the server with a non-ASCII name, sent as modified UTF-7 (RFC 3501
        # 5.1.3): isync 1.4 keeps the wire name as the local directory name.
        server_append(imaps, pop3_client_tls, "R&AOk-unions", make_message(8))
        client.sync(imaps)
        local = by_subject(inbox)
        assert {s: flags_of(p) for s, p in local.items()} == {
            "message 1": "FRS", "message 2": "", "message 6": ""}
        assert messages(archive) == []
        assert list(by_subject(client.mail / "R&AOk-unions")) == ["message 8"]

        before_view = server_view(imaps, pop3_client_tls)
        before_state = client.state()
        before_files = sorted(str(p.relative_to(client.mail)) for p in client.mail.rglob("*"))

    with running_app(raw) as app:  # a new App on the same data_dir and store
        smtp, imaps = app.ports["smtp"][0], app.ports["imaps"][0]
        assert server_view(imaps, pop3_client_tls) == before_view
        log = client.sync(imaps)
        assert client.state() == before_state, log
        assert sorted(str(p.relative_to(client.mail))
                      for p in client.mail.rglob("*")) == before_files, log
        send(smtp, make_message(7))
        client.sync(imaps)
        local = by_subject(inbox)
        assert sorted(local) == ["message 1", "message 2", "message 6", "message 7"]
        new_uid = int(local["message 7"].name.split(",U=")[1].split(":")[0])
        assert new_uid > max(before_view["INBOX"].messages) and new_uid > 6


def test_offlineimap_account(tmp_path, pop3_tls, pop3_client_tls):
    """offlineimap3, one account: the first run downloads every folder (LIST, RFC 9051 6.3.9;
    UID FETCH, 6.4.9); a local flag change goes up (UID STORE, 6.4.6) and a local new message
    is uploaded (APPEND, 6.3.12, its UID from APPENDUID, RFC 4315 3); a server-side flag
    change and expunge come down; a further run changes nothing on either side."""
    with running_app(config(tmp_path, pop3_tls)) as app:
        smtp, imaps = app.ports["smtp"][0], app.ports["imaps"][0]
        for n in range(1, 4):
            send(smtp, make_message(n))
        client = OfflineImap(tmp_path, pop3_tls["ca"])
        client.sync(imaps)
        for folder in ("INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"):
            assert (client.mail / folder / "cur").is_dir(), f"{folder} not downloaded"
        local = by_subject(client.mail / "INBOX")
        assert sorted(local) == ["message 1", "message 2", "message 3"]

        set_flags(local["message 1"], "FS")
        write_local(client.mail / "Sent", "sent1", "sent by offlineimap's user", "S")
        client.sync(imaps)
        view = server_view(imaps, pop3_client_tls)
        assert view["INBOX"].subjects()["message 1"] == {"\\Seen", "\\Flagged"}
        assert server_flags(app, "INBOX")["message 1"] == "FS"
        assert view["Sent"].subjects() == {"sent by offlineimap's user": {"\\Seen"}}

        uids = {subject: uid for uid, (subject, _) in view["INBOX"].messages.items()}
        server_change(imaps, pop3_client_tls, [
            ("INBOX", "STORE", str(uids["message 2"]), "+FLAGS", "(\\Answered)"),
            ("INBOX", "STORE", str(uids["message 3"]), "+FLAGS", "(\\Deleted)"),
        ])
        client.sync(imaps)
        local = by_subject(client.mail / "INBOX")
        assert {s: flags_of(p) for s, p in local.items()} == {"message 1": "FS",
                                                              "message 2": "R"}

        files = sorted(str(p.relative_to(client.mail)) for p in client.mail.rglob("*"))
        view = server_view(imaps, pop3_client_tls)
        log = client.sync(imaps)
        assert "Copy message" not in log and "flag" not in log and "Deleting" not in log, log
        assert sorted(str(p.relative_to(client.mail)) for p in client.mail.rglob("*")) == files
        assert server_view(imaps, pop3_client_tls) == view



def test_mbsync_with_a_trash_on_the_server(tmp_path, pop3_tls, pop3_client_tls):
    """mbsync with ``Trash Trash`` on the IMAP store moves a message deleted locally to the
    server's Trash (UID MOVE, RFC 9051 6.4.8, COPYUID, RFC 4315 3) and then, syncing Trash,
    moves Trash's own ``\\Deleted`` messages into Trash again: MOVE into the same mailbox is
    allowed (neither RFC 9051 6.4.8 nor RFC 6851 forbids it; Dovecot does it). geomail used to
    answer ``NO [CANNOT]`` there, and every sync exited 1."""
    with running_app(config(tmp_path, pop3_tls)) as app:
        smtp, imaps = app.ports["smtp"][0], app.ports["imaps"][0]
        send(smtp, make_message(1))
        send(smtp, make_message(2))
        client = Mbsync(tmp_path, pop3_tls["ca"], trash="Trash")
        client.sync(imaps)
        set_flags(by_subject(client.mail / "INBOX")["message 1"], "ST")
        log = client.sync(imaps)
        view = server_view(imaps, pop3_client_tls)
        assert view["INBOX"].subjects() == {"message 2": frozenset()}, log
        assert set(view["Trash"].subjects()) == {"message 1"}, log
        client.sync(imaps)  # Trash's \Deleted message moved within Trash: no error either
        assert set(server_view(imaps, pop3_client_tls)["Trash"].subjects()) == {"message 1"}
