"""The IMAP store's shared cache (geomail/store/imap_cache.py) on real Maildirs: a folder
scan is reused only while nothing changed (RFC 9051 7.5.1: a session must learn of every
change at its next look, whoever made it), and a STORE's incremental rescan gives exactly
the state a full scan would (RFC 9051 6.4.6 flags, RFC 7162 3.1 modseqs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geomail.store.imap_cache import IMAPCache
from geomail.store.imap_maildir import MaildirMailStore

MSG = b"Subject: %d\r\n\r\nbody\r\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store = MaildirMailStore(str(tmp_path / "box"), "host")
    for n in range(1, 31):
        store.append("INBOX", MSG % n, frozenset(), None)
    return tmp_path / "box"


def snapshot(view) -> list[tuple]:
    return [(m.uid, sorted(m.flags), m.modseq, m.size) for m in view.messages]


def test_stores_give_what_a_full_scan_gives(root: Path) -> None:
    """RFC 9051 6.4.6 / RFC 7162 3.1.1: after STOREs answered from the incremental rescan,
    a store with an empty cache (a full scan of the files) sees the same flags, modseqs and
    HIGHESTMODSEQ."""
    cache = IMAPCache()
    store = MaildirMailStore(str(root), "host", cache)
    store.view("INBOX")
    store.store_flags("INBOX", [3, 7, 11], "+", frozenset({"\\Flagged", "$Label1"}))
    store.store_flags("INBOX", [7], "-", frozenset({"\\Flagged"}))
    store.store_flags("INBOX", [20], "", frozenset({"\\Seen", "\\Answered"}))
    incremental = store.view("INBOX")
    fresh = MaildirMailStore(str(root), "host", IMAPCache()).view("INBOX")
    assert snapshot(incremental) == snapshot(fresh)
    assert incremental.highestmodseq == fresh.highestmodseq
    assert incremental.keywords == fresh.keywords
    flags = {m.uid: m.flags for m in fresh.messages}
    assert flags[3] == {"\\Flagged", "$Label1"} and flags[7] == {"$Label1"}
    assert flags[20] == {"\\Seen", "\\Answered"}


def test_a_scan_is_shared_and_changes_by_others_are_seen(root: Path) -> None:
    """RFC 9051 7.5.1: a second session's view is the first one's (nothing changed), and a
    flag change, a delivery and an expunge made behind the store's back are each seen."""
    cache = IMAPCache()
    one = MaildirMailStore(str(root), "host", cache)
    two = MaildirMailStore(str(root), "host", cache)
    first = one.view("INBOX")
    assert two.view("INBOX") is first  # the same object: nothing was parsed again
    name = next(iter(os.listdir(root / "cur")))
    os.rename(root / "cur" / name, root / "cur" / (name + "S"))  # mutt sets \Seen
    assert two.view("INBOX") is not first
    assert sum("\\Seen" in m.flags for m in two.view("INBOX").messages) == 1
    (root / "new" / "1700000000.M1P1.host").write_bytes(b"Subject: new\n\nx\n")
    assert len(one.view("INBOX").messages) == 31
    os.unlink(root / "cur" / (name + "S"))
    assert len(two.view("INBOX").messages) == 30


def test_a_rewritten_uidlist_is_read_again_whatever_its_metadata(root: Path) -> None:
    """RFC 9051 2.3.1.1: UIDs come from dovecot-uidlist as it is now: a list rewritten with
    the same size and mtime (another program) is parsed again, since content is compared,
    not file metadata."""
    cache = IMAPCache()
    store = MaildirMailStore(str(root), "host", cache)
    store.view("INBOX")
    path = root / "dovecot-uidlist"
    data = path.read_bytes()
    status = path.stat()
    lines = data.split(b"\n")
    first, second = lines[1].split(b" ", 1), lines[2].split(b" ", 1)
    lines[1] = first[0] + b" " + second[1]  # two files swap their UIDs: same octets
    lines[2] = second[0] + b" " + first[1]
    path.write_bytes(b"\n".join(lines))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert path.stat().st_size == status.st_size
    view = MaildirMailStore(str(root), "host", cache).view("INBOX")
    fresh = MaildirMailStore(str(root), "host", IMAPCache()).view("INBOX")
    assert snapshot(view) == snapshot(fresh)
    swapped = MaildirMailStore(str(root), "host", cache)  # a new session, the same cache
    assert swapped.fetch("INBOX", 2) == b"Subject: 1\n\nbody\n"
    assert swapped.fetch("INBOX", 1) == b"Subject: 2\n\nbody\n"


def test_no_cache_at_zero(root: Path) -> None:
    """``limits.imap_cache_messages: 0`` keeps nothing, and the store still works."""
    cache = IMAPCache(0)
    store = MaildirMailStore(str(root), "host", cache)
    assert len(store.view("INBOX").messages) == 30
    store.store_flags("INBOX", [1], "+", frozenset({"\\Seen"}))
    assert "\\Seen" in store.view("INBOX").messages[0].flags
    assert cache.summary("x") is None and not cache._scans and not cache._files
