"""The IMAP Maildir store (geomail/store/imap_maildir.py) on real temp dirs: RFC 9051 mailbox
operations (6.3.4-6.3.8), flags (2.3.2) in Maildir file names as Dovecot writes them, UIDs
(2.3.1.1), CONDSTORE modseqs (RFC 7162 3.1), UIDPLUS results (RFC 4315), special use (RFC 6154),
and changes made by delivery and POP3 seen as EXISTS/EXPUNGE."""

from __future__ import annotations

import datetime
import os
import select
from pathlib import Path

import pytest

from geomail.proto.imap_mailbox import MailboxError, MailStore
from geomail.spool import BytesBody
from geomail.store.base import Copy
from geomail.store.imap_maildir import (
    KEYWORDS_NAME,
    SUBSCRIPTIONS_NAME,
    MaildirMailStore,
    changes,
    info_of,
)
from geomail.store.inotify import Inotify
from geomail.store.maildir import MaildirStore

MSG = b"Subject: hi\r\n\r\nbody line\r\n"
DATE = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "mail" / "example.com" / "alice"


@pytest.fixture
def store(root: Path) -> MaildirMailStore:
    return MaildirMailStore(str(root), "host")


def files(root: Path, sub: str = "cur") -> list[str]:
    return sorted(os.listdir(root / sub))


def test_implements_the_session_protocol(store: MaildirMailStore) -> None:
    """The store answers every request of proto/imap_mailbox.MailStore."""
    checked: MailStore = store
    assert checked is store


def test_special_use_folders_created_and_listed(store: MaildirMailStore, root: Path) -> None:
    """RFC 6154 2: Sent, Drafts, Trash, Junk, Archive exist with their special-use attribute,
    as Maildir++ folders (maildirfolder file), subscribed; INBOX is the maildir."""
    infos = {f.name: f for f in store.list_folders()}
    assert set(infos) == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    assert infos["Sent"].special_use == frozenset({"\\Sent"})
    assert infos["INBOX"].special_use == frozenset()
    assert (root / ".Junk" / "maildirfolder").exists()
    assert all((root / ".Trash" / s).is_dir() for s in ("cur", "new", "tmp"))
    assert infos["Archive"].subscribed
    text = (root / SUBSCRIPTIONS_NAME).read_text()
    assert text.startswith("V\t2\n\n") and "Junk\n" in text


def test_append_to_sent_before_any_list(store: MaildirMailStore, root: Path) -> None:
    """RFC 6154 2 / RFC 9051 6.3.12: a client may APPEND to its Sent folder as its first
    request; the special-use folders exist already (no TRYCREATE)."""
    appended = store.append("Sent", b"Subject: s\r\n\r\nx\r\n", frozenset({"\\Seen"}), None)
    assert appended.uid == 1
    assert len(files(root / ".Sent")) == 1


def test_create_with_parents_rename_delete(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 6.3.4 (parents created), 6.3.6 (children renamed), 6.3.5 (a mailbox with
    children becomes \\Noselect; a \\Noselect one with children cannot be deleted)."""
    store.create("a/b/c", frozenset())
    assert (root / ".a").is_dir() and (root / ".a.b.c" / "cur").is_dir()
    with pytest.raises(MailboxError) as err:
        store.create("a/b", frozenset())
    assert err.value.code == "ALREADYEXISTS"
    store.rename("a", "x/y")
    names = {f.name: f for f in store.list_folders()}
    assert {"x", "x/y", "x/y/b", "x/y/b/c"} <= set(names) and "a" not in names
    assert names["x/y"].has_children and not names["x/y/b/c"].has_children
    store.delete("x/y")
    names = {f.name: f for f in store.list_folders()}
    assert names["x/y"].noselect and names["x/y/b"].has_children
    with pytest.raises(MailboxError) as err:
        store.delete("x/y")
    assert err.value.code == "HASCHILDREN"
    with pytest.raises(MailboxError) as err:
        store.delete("inbox")
    assert err.value.code == "CANNOT"
    with pytest.raises(MailboxError) as err:
        store.delete("nothing")
    assert err.value.code == "NONEXISTENT"


def test_names_are_validated(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 5.1: names that would escape the maildir or clash with Maildir++ are refused."""
    for bad in ("../x", "a/../b", "a.b", "/x", "a//b", "a\x00b", "*"):
        with pytest.raises(MailboxError):
            store.create(bad, frozenset())
    store.create("Café/Ünïcode", frozenset())
    assert (root / ".Caf&AOk-.&ANw-n&AO8-code").is_dir()
    assert "Café/Ünïcode" in {f.name for f in store.list_folders()}


def test_create_with_use_attribute(store: MaildirMailStore) -> None:
    """RFC 6154 5.3: CREATE (USE ...) other than the name's own use is refused (USEATTR)."""
    store.create("Trash/Old", frozenset())
    with pytest.raises(MailboxError) as err:
        store.create("Bin", frozenset({"\\Trash"}))
    assert err.value.code == "USEATTR"


def test_subscriptions_in_dovecot_format(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 6.3.7/6.3.8; Dovecot's subscriptions file: V2 header, tab between levels."""
    store.list_folders()
    store.subscribe("Work/Ünï", True)
    store.subscribe("Sent", False)
    text = (root / SUBSCRIPTIONS_NAME).read_text()
    assert "Work\t&ANw-n&AO8-\n" in text and "Sent\n" not in text
    subscribed = MaildirMailStore(str(root)).mailboxes.subscriptions()
    assert "Work/Ünï" in subscribed and "Sent" not in subscribed


def test_append_flags_keywords_and_uids(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 6.3.12, RFC 4315 APPENDUID: flags go to the name's info sorted, keywords to
    dovecot-keywords letters; INTERNALDATE is the given date; RFC822.SIZE counts CRLF."""
    store.list_folders()
    a = store.append("INBOX", MSG, frozenset({"\\Seen", "\\flagged", "$Label1"}), DATE)
    b = store.append("INBOX", MSG, frozenset(), None)
    assert (a.uid, b.uid) == (1, 2) and a.uidvalidity == b.uidvalidity
    (first, second) = files(root)
    assert info_of(first) == "FSa" and second.endswith(":2,")
    assert (root / KEYWORDS_NAME).read_text() == "0 $Label1\n"
    view = store.view("INBOX")
    msg = view.messages[0]
    assert msg.flags == {"\\Seen", "\\Flagged", "$Label1"}
    assert msg.internaldate == DATE and msg.size == len(MSG)
    assert view.uidnext == 3 and view.keywords == ("$Label1",)
    assert store.fetch("INBOX", 1) == MSG.replace(b"\r\n", b"\n")
    assert store.fetch("INBOX", 99) is None


def test_store_flags_renames_and_bumps_modseq(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 6.4.6 STORE (+, -, replace); RFC 7162 3.1.3 UNCHANGEDSINCE; a flag change
    is a rename (Maildir spec) and gets a new MODSEQ; HIGHESTMODSEQ grows."""
    store.list_folders()
    store.append("INBOX", MSG, frozenset(), None)
    store.append("INBOX", MSG, frozenset(), None)
    before = store.view("INBOX")
    (one,) = store.store_flags("INBOX", [1], "+", frozenset({"\\Seen", "\\Answered"}))
    assert one.flags == {"\\Seen", "\\Answered"} and one.modseq > before.messages[0].modseq
    assert [info_of(n) for n in files(root)] == ["RS", ""]
    (one,) = store.store_flags("INBOX", [1], "-", frozenset({"\\Answered"}))
    assert one.flags == {"\\Seen"}
    (two,) = store.store_flags("INBOX", [2], "", frozenset({"\\Draft", "Work"}))
    assert two.flags == {"\\Draft", "Work"}
    after = store.view("INBOX")
    assert after.highestmodseq >= two.modseq > one.modseq
    # UNCHANGEDSINCE below the message's modseq: left alone, not returned
    assert store.store_flags("INBOX", [1], "+", frozenset({"\\Flagged"}),
                             unchangedsince=one.modseq - 1) == []
    diff = changes_of(before, after)
    assert diff == ([], [], [1, 2])


def changes_of(old, new) -> tuple[list[int], list[int], list[int]]:
    before = {m.uid: m for m in old.messages}
    now = {m.uid: m for m in new.messages}
    return (sorted(set(before) - set(now)), sorted(set(now) - set(before)),
            sorted(u for u in now if u in before and now[u].modseq != before[u].modseq))


def test_uids_stable_across_restart(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 2.3.1.1: UIDs and UIDVALIDITY survive a restart (a new store object)."""
    store.list_folders()
    for _ in range(3):
        store.append("INBOX", MSG, frozenset(), None)
    first = store.view("INBOX")
    again = MaildirMailStore(str(root), "host").view("INBOX")
    assert [m.uid for m in again.messages] == [1, 2, 3]
    assert (again.uidvalidity, again.uidnext) == (first.uidvalidity, first.uidnext)
    assert [m.modseq for m in again.messages] == [m.modseq for m in first.messages]


def test_delivery_is_a_new_message_with_the_next_uid(tmp_path: Path, root: Path,
                                                     store: MaildirMailStore) -> None:
    """RFC 9051 7.3.1 EXISTS: a message geomail's delivery puts in new/ gets the next UID;
    selecting moves it to cur/ with an empty info (as Dovecot does); Junk delivery too."""
    store.list_folders()
    store.append("INBOX", MSG, frozenset(), None)
    old = store.view("INBOX")
    delivery = MaildirStore(str(tmp_path / "mail"), "host")
    delivery.deliver([Copy("alice@example.com", b"X-A: 1\n")], BytesBody(b"Subject: x\n\nhi\n"))
    delivery.deliver([Copy("alice@example.com", b"", folder="Junk")], BytesBody(b"s\n"))
    new = store.view("INBOX")
    assert [m.uid for m in new.messages] == [1, 2]
    assert changes_of(old, new) == ([], [2], [])
    assert files(root, "new") == [] and files(root)[1].endswith(":2,")
    assert new.messages[1].size == len(b"X-A: 1\r\nSubject: x\r\n\r\nhi\r\n")
    assert [m.uid for m in store.view("Junk").messages] == [1]


def test_pop3_deletion_is_an_expunge(tmp_path: Path, root: Path,
                                     store: MaildirMailStore) -> None:
    """RFC 9051 7.5.1 EXPUNGE: a message POP3 deleted disappears from the next view, its UID
    is never given again; POP3's seen mark is a flag change with a new modseq."""
    store.list_folders()
    delivery = MaildirStore(str(tmp_path / "mail"), "host")
    for _ in range(3):
        delivery.deliver([Copy("alice@example.com", b"")], BytesBody(b"x\n"))
    old = store.view("INBOX")
    drop = delivery.open_maildrop("alice@example.com")
    drop.commit({0}, {1})
    drop.close()
    new = store.view("INBOX")
    assert changes_of(old, new) == ([1], [], [2])
    assert new.messages[0].flags == {"\\Seen"}
    assert store.append("INBOX", MSG, frozenset(), None).uid == 4


def test_expunge_copy_move_uidplus(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 6.4.3 EXPUNGE (only \\Deleted), 6.4.7 COPY / 6.4.8 MOVE with RFC 4315
    COPYUID, flags and keywords carried over; RFC 7162 3.2.10 VANISHED memory."""
    store.list_folders()
    for _ in range(3):
        store.append("INBOX", MSG, frozenset({"Work"}), DATE)
    store.store_flags("INBOX", [1, 3], "+", frozenset({"\\Deleted"}))
    assert store.expunge("INBOX", [1, 2]) == [1]
    copied = store.copy("INBOX", [2, 3, 9], "Archive", move=False)
    assert copied.source == (2, 3) and copied.dest == (1, 2)
    archived = store.view("Archive")
    assert archived.messages[0].flags == {"Work"}
    assert archived.messages[1].flags == {"Work", "\\Deleted"}
    assert archived.messages[0].internaldate == DATE
    moved = store.copy("INBOX", [2], "Trash", move=True)
    assert moved.dest == (1,)
    assert [m.uid for m in store.view("INBOX").messages] == [3]
    with pytest.raises(MailboxError) as err:
        store.copy("INBOX", [3], "Nope", move=False)
    assert err.value.code == "NONEXISTENT"
    folder = store.mailboxes.open("INBOX")
    assert folder.vanished_since(0) == [1, 2]


def test_rename_inbox_moves_its_messages(store: MaildirMailStore) -> None:
    """RFC 9051 6.3.6: RENAME INBOX moves its messages to the new name; INBOX stays, empty."""
    store.list_folders()
    store.append("INBOX", MSG, frozenset({"\\Seen"}), None)
    store.rename("INBOX", "Old/Inbox")
    assert store.view("INBOX").messages == ()
    (msg,) = store.view("Old/Inbox").messages
    assert msg.flags == {"\\Seen"}


def test_changes_between_states(store: MaildirMailStore) -> None:
    """RFC 9051 7.3.1, 7.5.1: what a session reports between two syncs of a folder."""
    store.list_folders()
    folder = store.mailboxes.open("INBOX")
    folder.append(MSG)
    old = folder.sync()
    folder.append(MSG)
    new = folder.sync()
    diff = changes(old, new)
    assert [m.uid for m in diff.added] == [2] and not diff.expunged and not diff.flags


def test_watched_directories_see_a_delivery(tmp_path: Path, store: MaildirMailStore) -> None:
    """RFC 9051 6.3.13 IDLE: the folder's watched directories (``watch_paths``) see a delivery
    into new/ through inotify."""
    store.list_folders()
    inotify = Inotify()
    try:
        wds = [inotify.add_watch(path) for path in store.watch_paths("INBOX")]
        fd = inotify.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        MaildirStore(str(tmp_path / "mail"), "host").deliver(
            [Copy("alice@example.com", b"")], BytesBody(b"x\n"))
        assert select.select([fd], [], [], 5)[0] == [fd]
        assert wds[0] in inotify.read() and inotify.read() == {}
    finally:
        inotify.close()
        inotify.close()



def test_keyword_limit(store: MaildirMailStore) -> None:
    """RFC 9051 6.4.6: a 27th keyword cannot be stored in a Maildir name (LIMIT)."""
    store.list_folders()
    store.append("INBOX", MSG, frozenset(f"k{i}" for i in range(26)), None)
    with pytest.raises(MailboxError) as err:
        store.store_flags("INBOX", [1], "+", frozenset({"one-more"}))
    assert err.value.code == "LIMIT"


def test_flags_changed_by_another_program(store: MaildirMailStore, root: Path) -> None:
    """RFC 7162 3.1: a flag change made outside geomail (mutt renames the file, keyword
    letters from a dovecot-keywords Dovecot wrote) is seen with a new MODSEQ."""
    store.list_folders()
    store.append("INBOX", MSG, frozenset(), None)
    (root / KEYWORDS_NAME).write_text("0 Junk\n1 $Forwarded-Not\n")
    before = store.view("INBOX").messages[0]
    (name,) = files(root)
    os.rename(root / "cur" / name, root / "cur" / (name.partition(":")[0] + ":2,FSb"))
    after = store.view("INBOX").messages[0]
    assert after.flags == {"\\Flagged", "\\Seen", "$Forwarded-Not"}
    assert after.modseq > before.modseq and after.uid == before.uid


def test_a_deleted_special_folder_stays_deleted(store: MaildirMailStore) -> None:
    """RFC 6154: the special-use folders are made at first use only, not after DELETE."""
    store.list_folders()
    store.delete("Archive")  # still subscribed: listed for LSUB only (exists False)
    assert "Archive" not in {f.name for f in store.list_folders() if f.exists}


def test_two_sessions_append_at_once(store: MaildirMailStore, root: Path) -> None:
    """RFC 9051 2.3.1.1: concurrent APPENDs (two sessions, two store objects, threads) get
    distinct ascending UIDs, each seen by the other session."""
    import threading

    store.list_folders()
    other = MaildirMailStore(str(root), "host")
    got: list[int] = []

    def work(s: MaildirMailStore) -> None:
        for _ in range(10):
            got.append(s.append("INBOX", MSG, frozenset(), None).uid)

    threads = [threading.Thread(target=work, args=(s,)) for s in (store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 21))
    assert [m.uid for m in other.view("INBOX").messages] == list(range(1, 21))


def test_stale_tmp_files_are_swept(store: MaildirMailStore, root: Path) -> None:
    """Maildir spec: a tmp/ file older than 36 hours is a leftover and is removed; a fresh
    one (a delivery in progress) stays."""
    store.list_folders()
    (root / "tmp" / "old").write_bytes(b"x")
    (root / "tmp" / "fresh").write_bytes(b"x")
    os.utime(root / "tmp" / "old", (1, 1))
    store.view("INBOX")
    assert files(root, "tmp") == ["fresh"]


def test_uids_dovecot_already_gave_are_kept(root: Path) -> None:
    """Dovecot's maildir format: a folder Dovecot served keeps its UIDVALIDITY and UIDs
    (dovecot-uidlist version 3, keyed by base name, flags changed since)."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1700000000.M1P1.host,S=3:2,S").write_bytes(b"a\n\n")
    (root / "cur" / "1700000001.M1P1.host,S=3:2,").write_bytes(b"b\n\n")
    (root / "dovecot-uidlist").write_text(
        "3 V1234 N43 G0123456789abcdef0123456789abcdef\n"
        "17 :1700000000.M1P1.host,S=3\n42 W5 :1700000001.M1P1.host,S=3:2,\n")
    view = MaildirMailStore(str(root)).view("INBOX")
    assert (view.uidvalidity, view.uidnext) == (1234, 43)
    assert [(m.uid, m.flags) for m in view.messages] == [(17, {"\\Seen"}), (42, set())]
