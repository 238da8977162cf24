"""COPY and MOVE into the mailbox they come from (RFC 9051 6.4.7, 6.4.8; RFC 6851 3): neither
forbids it, Dovecot allows it, and mbsync relies on it: with ``Trash`` set on its IMAP store it
trashes every ``\\Deleted`` message with ``UID MOVE <uid> "Trash"``, including those of Trash
itself. geomail's store refused it (``NO [CANNOT]``), so every such sync ended with exit
status 1 (found by tests/integration/test_imap_sync_clients.py)."""

from __future__ import annotations

from pathlib import Path

from geomail.store.imap_maildir import MaildirMailStore
from tests.support.imap_memory import Driver, MemoryStore

MSG = b"Subject: hi\r\n\r\nbody line\r\n"


def test_maildir_move_and_copy_within_a_folder(tmp_path: Path) -> None:
    """RFC 9051 6.4.8 / RFC 4315 3: MOVE within Trash gives the message a new UID (COPYUID
    pairs), keeps its flags and drops the old UID; COPY within a folder adds a second message
    beside the first. Neither waits on the folder's own lock twice."""
    store = MaildirMailStore(str(tmp_path / "alice"), "host")
    store.list_folders()
    store.append("Trash", MSG, frozenset({"\\Deleted", "\\Seen"}), None)
    moved = store.copy("Trash", [1], "Trash", move=True)
    assert moved.source == (1,) and moved.dest == (2,)
    [message] = store.view("Trash").messages
    assert message.uid == 2 and message.flags == {"\\Deleted", "\\Seen"}
    copied = store.copy("Trash", [2], "Trash", move=False)
    assert copied.source == (2,) and copied.dest == (3,)
    assert [m.uid for m in store.view("Trash").messages] == [2, 3]
    assert store.fetch("Trash", 3) == store.fetch("Trash", 2)


def test_session_move_to_the_selected_mailbox_reports_exists() -> None:
    """RFC 6851 3.3 / RFC 9051 7.5.1: MOVE into the selected mailbox expunges the old message
    and reports the new one (EXISTS) before the tagged OK, so the client's view is whole."""
    store = MemoryStore()
    store.add("INBOX", MSG, ["\\Deleted"])
    store.add("INBOX", MSG)
    d = Driver(store)
    d.select()
    assert d.send(b"a UID MOVE 1 INBOX\r\n") == (
        b"* OK [COPYUID 1000 1 3] Moved\r\n* 1 EXPUNGE\r\n* 2 EXISTS\r\n"
        b"a OK UID MOVE completed\r\n")
    assert d.send(b"b UID FETCH 1:* (FLAGS)\r\n") == (
        b"* 1 FETCH (UID 2 FLAGS ())\r\n* 2 FETCH (UID 3 FLAGS (\\Deleted))\r\n"
        b"b OK UID FETCH completed\r\n")
