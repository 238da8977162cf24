"""The IMAP folder store while another session renames a message's file (RFC 9051 2.3.2:
flags live in the Maildir file name, so every flag change by another session, by POP3's
\\Seen or by mutt renames the file): a rename between finding the file and opening it is not
an expunge. Without care a view then lacks the message (the session would send a false
``* n EXPUNGE``, RFC 9051 7.4.1) and a FETCH of it says ``NO [EXPUNGEISSUED]``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geomail.store import imap_maildir
from geomail.store.imap_maildir import MaildirFolder, MaildirMailStore, Message


def rename_once_after_lookup(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``known_path`` answers, then the file is renamed (\\Flagged added) before the caller
    opens it: what another session's STORE does at the worst moment. Once per message."""
    original = MaildirFolder.known_path
    renamed: list[str] = []

    def racing(self: MaildirFolder, message: Message) -> str:
        path = original(self, message)
        if message.uid not in map(int, renamed) and ":2," in path:
            os.rename(path, path + "F")
            renamed.append(str(message.uid))
        return path

    monkeypatch.setattr(MaildirFolder, "known_path", racing)
    return renamed


def test_view_keeps_a_message_renamed_meanwhile(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9051 7.4.1: a message is gone only when its file is; a fresh store's first view
    (which stats each file for INTERNALDATE) still lists a message renamed under it."""
    MaildirMailStore(str(tmp_path / "mail")).append("INBOX", b"Subject: x\r\n\r\nhi\r\n",
                                                     frozenset(), None)
    renamed = rename_once_after_lookup(monkeypatch)
    view = MaildirMailStore(str(tmp_path / "mail")).view("INBOX")
    assert renamed == ["1"]
    assert [m.uid for m in view.messages] == [1]


def test_fetch_follows_a_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9051 6.4.5 and 7.1 EXPUNGEISSUED: a FETCH of a message whose flags another session
    changed at that moment gives the message, not "expunged"."""
    store = MaildirMailStore(str(tmp_path / "mail"))
    store.append("INBOX", b"Subject: x\r\n\r\nhi\r\n", frozenset(), None)
    store.view("INBOX")
    renamed = rename_once_after_lookup(monkeypatch)
    assert store.fetch("INBOX", 1) == b"Subject: x\n\nhi\n"
    assert renamed == ["1"]
    assert imap_maildir.MaildirMailStore(str(tmp_path / "mail")).view("INBOX").messages[0] \
        .flags == {"\\Flagged"}


@pytest.mark.parametrize("move", [False, True])
def test_copy_and_move_follow_a_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       move: bool) -> None:
    """RFC 9051 6.4.7 COPY and 6.4.8 MOVE: POP3 (or mutt) renames files without our lock; a
    rename between finding the source and linking it is followed, not ``NO [UNAVAILABLE]``;
    the copy carries the flags the file has then."""
    store = MaildirMailStore(str(tmp_path / "mail"))
    store.append("INBOX", b"Subject: x\r\n\r\nhi\r\n", frozenset(), None)
    store.list_folders()  # the special-use folders, Archive among them
    store.view("INBOX")
    renamed = rename_once_after_lookup(monkeypatch)
    copied = store.copy("INBOX", [1], "Archive", move)
    assert renamed == ["1"] and copied.source == (1,) and copied.dest == (1,)
    archive = MaildirMailStore(str(tmp_path / "mail")).view("Archive")
    assert [(m.uid, m.flags) for m in archive.messages] == [(1, frozenset({"\\Flagged"}))]
    assert store.fetch("Archive", 1) == b"Subject: x\n\nhi\n"
    inbox = MaildirMailStore(str(tmp_path / "mail")).view("INBOX")
    assert [m.uid for m in inbox.messages] == ([] if move else [1])
