"""MaildirStore: delivery (Maildir spec, Dovecot S=/W=), durability, POP3 maildrops (RFC 1939)."""

from __future__ import annotations

import errno
import os
import re
import stat
import time

import gevent
import gevent.event
import gevent.pool
import pytest
from gevent.monkey import get_original

from geomail.errors import StoreError
from geomail.safeio import DirSyncer, fsync_dir, run_blocking
from geomail.spool import BytesBody, Spool
from geomail.store.base import Copy
from geomail.store.maildir import MaildirStore
from tests.support.faults import fail_fsync_at
from tests.support.privileges import owned_tempdir, unprivileged

real_sleep = get_original("time", "sleep")
HOST = "mail.example.com"
PREFIX = b"Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\n"
BODY = b"Subject: hello\n\nline one\nFrom the start\n.dot\n"
NAME = re.compile(r"^(\d+)\.M(\d{6})P(\d+)Q(\d+)R([0-9a-f]{8})\.(.+),S=(\d+),W=(\d+)$")


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def new_files(store: MaildirStore, mailbox: str = "alice@example.com") -> list[str]:
    return sorted(os.listdir(os.path.join(store.mailbox_path(mailbox), "new")))


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@pytest.fixture
def fsyncs() -> list[str]:
    return []


@pytest.fixture
def store(tmp_path, fsyncs) -> MaildirStore:
    def counting(path: str) -> None:
        fsyncs.append(path)
        run_blocking(fsync_dir, path)

    return MaildirStore(str(tmp_path / "mail"), HOST, dir_syncer=DirSyncer(fsync=counting))


def deliver(store: MaildirStore, body: bytes = BODY, *mailboxes: str, prefix: bytes = PREFIX):
    store.deliver([Copy(m, prefix) for m in mailboxes or ("alice@example.com",)],
                  BytesBody(body))


# ---- delivery ---------------------------------------------------------------------------------


def test_copy_is_prefix_then_body_byte_exact_in_new(store):
    """A delivered copy is the prefix followed by the body, LF endings kept, in new/ (spec)."""
    deliver(store)
    (name,) = new_files(store)
    root = store.mailbox_path("alice@example.com")
    assert read(f"{root}/new/{name}") == PREFIX + BODY
    assert os.listdir(f"{root}/tmp") == [] and os.listdir(f"{root}/cur") == []
    assert root == str(store.path) + "/example.com/alice"


def test_name_is_unique_and_carries_exact_s_and_w_sizes(store):
    """Names follow the Maildir spec (time.MusecPpidQnRrand.host) and Dovecot's S= (octets on
    disk) and W= (octets with CRLF line endings, RFC 1939 LIST size) fields."""
    deliver(store)
    (name,) = new_files(store)
    match = NAME.match(name)
    assert match, name
    assert match[6] == HOST and int(match[3]) == os.getpid()
    assert int(match[7]) == len(PREFIX + BODY)
    assert int(match[8]) == len(crlf(PREFIX + BODY))


def test_hostname_slash_and_colon_are_escaped(tmp_path):
    """'/' and ':' in the host part become \\057 and \\072 (Maildir spec)."""
    store = MaildirStore(str(tmp_path), "odd/host:name")
    deliver(store)
    (name,) = new_files(store)
    assert ".odd\\057host\\072name,S=" in name


def test_directories_0700_and_files_0600(store):
    """New mailbox directories are private (0700), message files 0600."""
    deliver(store)
    root = store.mailbox_path("alice@example.com")
    for path in (os.path.dirname(root), root, f"{root}/tmp", f"{root}/new", f"{root}/cur"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    (name,) = new_files(store)
    assert stat.S_IMODE(os.stat(f"{root}/new/{name}").st_mode) == 0o600


def test_new_mailbox_directories_and_new_dir_are_fsynced(store, fsyncs, monkeypatch):
    """The parents of created directories are fsynced (a new mailbox survives a crash), and
    new/ is fsynced after the rename, through the store's DirSyncer."""
    synced: list[str] = []
    monkeypatch.setattr("geomail.store.maildir.fsync_dir", synced.append)
    deliver(store)
    root = store.mailbox_path("alice@example.com")
    assert {os.path.dirname(store.path), store.path, os.path.dirname(root), root} <= set(synced)
    assert fsyncs == [f"{root}/new"]
    synced.clear()
    deliver(store)  # directories cached: no further directory work
    assert synced == [] and fsyncs == [f"{root}/new"] * 2


def test_zero_copies_do_nothing(store):
    """deliver() without copies writes nothing."""
    store.deliver([], BytesBody(BODY))
    assert not os.path.exists(store.path)


def test_same_body_to_several_mailboxes(store):
    """Every copy gets its own prefix; one directory fsync per new/ directory."""
    store.deliver([Copy("alice@example.com", b"X-To: alice\n"),
                   Copy("bob@example.com", b"X-To: bob\n")], BytesBody(BODY))
    (a,) = new_files(store)
    (b,) = new_files(store, "bob@example.com")
    assert read(f"{store.mailbox_path('alice@example.com')}/new/{a}") == b"X-To: alice\n" + BODY
    assert read(f"{store.mailbox_path('bob@example.com')}/new/{b}") == b"X-To: bob\n" + BODY


@pytest.mark.parametrize("mailbox", [
    "../x@example.com", "a/b@example.com", "alice@..", "alice@ex/ample", "@example.com",
    "alice@", "alice", "a\0b@example.com", ".alice@example.com", "alice@.example.com",
])
def test_names_escaping_the_store_are_refused(store, mailbox):
    """Local parts and domains with '/', '..', NUL, a leading dot or empty are refused."""
    with pytest.raises(StoreError):
        store.deliver([Copy(mailbox, PREFIX)], BytesBody(BODY))
    with pytest.raises(StoreError):
        store.open_maildrop(mailbox)
    assert not os.path.exists(store.path)


def test_second_copy_failing_removes_the_first(store):
    """All or nothing: when the second mailbox cannot be written, the first copy is removed
    and StoreError (not a traceback) is raised."""
    os.makedirs(os.path.join(store.path, "example.com"))
    with open(os.path.join(store.path, "example.com", "bob"), "w") as handle:
        handle.write("not a maildir")
    with pytest.raises(StoreError, match=r"bob@example\.com"):
        deliver(store, BODY, "alice@example.com", "bob@example.com")
    root = store.mailbox_path("alice@example.com")
    assert os.listdir(f"{root}/new") == [] and os.listdir(f"{root}/tmp") == []


def test_read_only_second_mailbox_removes_the_first():
    """All or nothing with a read-only tmp/ in the second mailbox (EACCES): StoreError naming the
    reason, no copy left. Run as an unprivileged user also under root, which ignores modes."""
    with owned_tempdir() as base, unprivileged():
        store = MaildirStore(str(base / "mail"), HOST)
        deliver(store, BODY, "bob@example.com")
        bob = store.mailbox_path("bob@example.com")
        os.chmod(f"{bob}/tmp", 0o500)
        with pytest.raises(StoreError, match="Permission denied"):
            deliver(store, BODY, "alice@example.com", "bob@example.com")
        assert new_files(store) == []
        assert len(new_files(store, "bob@example.com")) == 1


def test_disk_full_on_second_copy_removes_the_first(store, monkeypatch):
    """ENOSPC while syncing the second copy: the first, already renamed into new/, goes too."""
    deliver(store, BODY, "bob@example.com")
    fail_fsync_at(monkeypatch, 2)
    with pytest.raises(StoreError, match="No space left"):
        deliver(store, BODY, "alice@example.com", "bob@example.com")
    monkeypatch.undo()
    assert new_files(store) == []
    assert len(new_files(store, "bob@example.com")) == 1
    for mailbox in ("alice@example.com", "bob@example.com"):
        assert os.listdir(store.mailbox_path(mailbox) + "/tmp") == []


def test_failed_directory_fsync_removes_the_copies(tmp_path):
    """If new/ cannot be fsynced the delivery is not durable: copies removed, StoreError."""
    def failing(path: str) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    store = MaildirStore(str(tmp_path), HOST, dir_syncer=DirSyncer(fsync=failing))
    with pytest.raises(StoreError, match="Input/output error"):
        deliver(store, BODY, "alice@example.com", "bob@example.com")
    assert new_files(store) == [] and new_files(store, "bob@example.com") == []


def test_vanished_maildir_is_made_again(store):
    """A cached maildir removed by someone else is recreated and the delivery retried once."""
    deliver(store)
    root = store.mailbox_path("alice@example.com")
    for sub in ("new", "tmp", "cur"):
        for name in os.listdir(f"{root}/{sub}"):
            os.unlink(f"{root}/{sub}/{name}")
        os.rmdir(f"{root}/{sub}")
    deliver(store)
    assert len(new_files(store)) == 1


def test_spilled_spool_body_is_stored_and_read_back_in_chunks(store, tmp_path):
    """A body spilled to disk (larger than the spool's memory limit) is copied exactly, and
    read back in chunks of at most 256 KiB, never as one piece."""
    spool = Spool(str(tmp_path / "spool"), memory_limit=64 * 1024)
    for i in range(20_000):
        spool.write(b"From line %05d of a large message, padded to be long enough...\n" % i)
    spool.finish()
    assert not spool.in_memory
    data = b"".join(spool.chunks())
    store.deliver([Copy("alice@example.com", PREFIX)], spool)
    spool.discard()
    (name,) = new_files(store)
    assert read(f"{store.mailbox_path('alice@example.com')}/new/{name}") == PREFIX + data
    assert NAME.match(name)[8] == str(len(crlf(PREFIX + data)))
    drop = store.open_maildrop("alice@example.com")
    try:
        assert drop.messages[0].size == len(crlf(PREFIX + data))
        chunks = list(drop.read(0))
    finally:
        drop.close()
    assert len(chunks) > 1 and max(map(len, chunks)) <= 256 * 1024
    assert b"".join(chunks) == PREFIX + data


def test_many_concurrent_deliveries_land_with_unique_names_and_shared_fsyncs(store, fsyncs):
    """200 greenlets delivering at once: 200 distinct files, all complete; the DirSyncer's
    group commit serves them with fewer directory fsyncs than deliveries."""
    pool = gevent.pool.Pool(200)
    for i in range(200):
        pool.spawn(deliver, store, b"message %d\n" % i)
    pool.join(raise_error=True)
    names = new_files(store)
    assert len(names) == len(set(names)) == 200
    root = store.mailbox_path("alice@example.com")
    bodies = {read(f"{root}/new/{name}") for name in names}
    assert bodies == {PREFIX + b"message %d\n" % i for i in range(200)}
    assert 1 <= len(fsyncs) < 200


# ---- POP3 maildrop ----------------------------------------------------------------------------


def test_snapshot_excludes_mail_delivered_after_open(store):
    """The maildrop is fixed at open; later mail shows at the next open."""
    deliver(store, b"one\n")
    drop = store.open_maildrop("alice@example.com")
    deliver(store, b"two\n")
    assert len(drop.messages) == 1
    drop.close()
    drop = store.open_maildrop("alice@example.com")
    assert [b"".join(drop.read(i)) for i in range(2)] == [PREFIX + b"one\n", PREFIX + b"two\n"]
    drop.close()


def test_oldest_first_by_delivery_time_in_name(store):
    """Messages are listed oldest first: delivery time (seconds, microseconds) in the name."""
    deliver(store)  # creates the maildir
    root = store.mailbox_path("alice@example.com")
    os.unlink(f"{root}/new/{new_files(store)[0]}")
    names = ["1000.M000002P1.h", "999.M999999P1.h", "1000.M000001P9.h", "1000.M000001P1.h"]
    for i, name in enumerate(names):
        sub = "cur" if i % 2 else "new"
        with open(f"{root}/{sub}/{name}" + (":2,S" if sub == "cur" else ""), "wb") as handle:
            handle.write(b"x\n")
    drop = store.open_maildrop("alice@example.com")
    assert [m.uid for m in drop.messages] == [
        "999.M999999P1.h", "1000.M000001P1.h", "1000.M000001P9.h", "1000.M000002P1.h"]
    drop.close()


def test_size_comes_from_w_field_without_reading(store, monkeypatch):
    """LIST sizes (RFC 1939 5) come from W= in the name: files are not opened to list them."""
    deliver(store)
    monkeypatch.setattr("geomail.store.maildir._measure", None)  # would fail if called
    drop = store.open_maildrop("alice@example.com")
    assert drop.messages[0].size == len(crlf(PREFIX + BODY))
    drop.close()


def test_size_computed_for_files_without_w(store):
    """A file dropped in by another tool (no W=) gets its CRLF size computed (RFC 1939 11)."""
    deliver(store)
    root = store.mailbox_path("alice@example.com")
    with open(f"{root}/cur/1234.foreign.host:2,", "wb") as handle:
        handle.write(b"a\nbb\n")
    drop = store.open_maildrop("alice@example.com")
    foreign = drop.messages[0]
    assert (foreign.uid, foreign.size) == ("1234.foreign.host", 7)
    assert b"".join(drop.read(0)) == b"a\nbb\n"
    drop.close()


def test_uid_is_base_name_and_stays_when_marked_seen(store):
    """UIDL (RFC 1939 7) is the name before ':2,', so it survives the move to cur/."""
    deliver(store)
    (name,) = new_files(store)
    drop = store.open_maildrop("alice@example.com")
    assert drop.messages[0].uid == name
    drop.commit(set(), {0})
    drop.close()
    drop = store.open_maildrop("alice@example.com")
    assert drop.messages[0].uid == name
    drop.close()


def test_long_or_unsafe_base_names_get_a_stable_hashed_uid(tmp_path):
    """UIDLs are 1-70 characters 0x21-0x7E (RFC 1939 7): longer or unsafe names are hashed,
    the same way at every open."""
    store = MaildirStore(str(tmp_path), "very-long-host-name." * 4 + "example.com")
    deliver(store)
    root = store.mailbox_path("alice@example.com")
    with open(f"{root}/new/1234.with space é", "wb") as handle:
        handle.write(b"x\n")
    uids = []
    for _ in range(2):
        drop = store.open_maildrop("alice@example.com")
        uids.append([m.uid for m in drop.messages])
        drop.close()
    assert uids[0] == uids[1] and len(set(uids[0])) == 2
    for uid in uids[0]:
        assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid)


def test_commit_deletes_and_marks_retrieved_seen(store):
    """UPDATE (RFC 1939 6): deleted files unlinked; retrieved ones moved to cur/ with :2,S."""
    for i in range(3):
        deliver(store, b"%d\n" % i)
    names = new_files(store)
    drop = store.open_maildrop("alice@example.com")
    drop.commit({1}, {0, 1})
    drop.close()
    root = store.mailbox_path("alice@example.com")
    assert os.listdir(f"{root}/cur") == [names[0] + ":2,S"]
    assert new_files(store) == [names[2]]


def test_commit_adds_seen_to_existing_flags(store):
    """Messages already in cur/ keep their flags; S is added in ASCII order (Maildir spec)."""
    deliver(store)
    (delivered,) = new_files(store)
    root = store.mailbox_path("alice@example.com")
    for name, content in (("100.a.h:2,FR", b"1\n"), ("101.b.h:2,S", b"2\n")):
        with open(f"{root}/cur/{name}", "wb") as handle:
            handle.write(content)
    drop = store.open_maildrop("alice@example.com")
    drop.commit(set(), {0, 1, 2})
    drop.close()
    assert sorted(os.listdir(f"{root}/cur")) == ["100.a.h:2,FRS", "101.b.h:2,S", delivered + ":2,S"]
    assert new_files(store) == []


def test_commit_ignores_vanished_and_follows_moved_messages(store):
    """A message deleted meanwhile is not an error; one another program moved to cur/ (same
    base name) is still deleted."""
    deliver(store, b"1\n")
    deliver(store, b"2\n")
    first, second = new_files(store)
    drop = store.open_maildrop("alice@example.com")
    root = store.mailbox_path("alice@example.com")
    os.unlink(f"{root}/new/{first}")
    os.rename(f"{root}/new/{second}", f"{root}/cur/{second}:2,F")
    assert b"".join(drop.read(1)) == PREFIX + b"2\n"  # found where it went
    drop.commit({0, 1}, set())
    drop.close()
    assert os.listdir(f"{root}/cur") == [] and new_files(store) == []


def test_commit_fsyncs_touched_directories(store, monkeypatch):
    """UPDATE deletions are durable (RFC 1939 6): the directories changed are fsynced. Marking
    messages seen alone is not (a lost mark only shows a message as unread again)."""
    deliver(store)
    deliver(store)
    synced: list[str] = []
    monkeypatch.setattr("geomail.store.maildir.fsync_dir", synced.append)
    drop = store.open_maildrop("alice@example.com")
    drop.commit(set(), {0})
    drop.close()
    assert synced == []
    drop = store.open_maildrop("alice@example.com")
    drop.commit({1}, {0})
    drop.close()
    root = store.mailbox_path("alice@example.com")
    assert sorted(synced) == [f"{root}/new"]


def test_unreadable_mailbox_gives_store_error(store):
    """A maildir whose new/ is not a directory yields StoreError, not a raw OSError."""
    root = store.mailbox_path("alice@example.com")
    os.makedirs(root)
    with open(f"{root}/new", "w") as handle:
        handle.write("junk")
    with pytest.raises(StoreError):
        store.open_maildrop("alice@example.com")
    store.open_maildrop("bob@example.com").close()


def test_message_removed_before_read_gives_store_error(store):
    """Reading a message that disappeared raises StoreError."""
    deliver(store)
    drop = store.open_maildrop("alice@example.com")
    os.unlink(f"{store.mailbox_path('alice@example.com')}/new/{new_files(store)[0]}")
    with pytest.raises(StoreError, match="no longer exists"):
        b"".join(drop.read(0))
    drop.close()
    with pytest.raises(StoreError, match="closed"):
        b"".join(drop.read(0))


def test_unchanged_mailbox_listing_is_reused(store, monkeypatch):
    """A login to a mailbox unchanged since the last one reuses its listing (no listdir); any
    delivery changes new/'s mtime and the next login lists again (RFC 1939 5: the snapshot
    must still show every message delivered before the login)."""
    from geomail.store import maildir

    deliver(store)
    root = store.mailbox_path("alice@example.com")
    quiet = time.time() - 10  # as if nothing had changed for a while
    for sub in ("new", "cur"):
        os.utime(f"{root}/{sub}", (quiet, quiet))
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(maildir.os, "listdir", lambda p: listed.append(p) or real_listdir(p))
    for expected_calls in (2, 2):  # the first login lists; the second reuses
        drop = store.open_maildrop("alice@example.com")
        assert len(drop.messages) == 1
        drop.close()
        assert len(listed) == expected_calls
    deliver(store, b"second\n")
    drop = store.open_maildrop("alice@example.com")
    assert len(drop.messages) == 2  # the delivery was seen
    drop.close()
    assert len(listed) == 4
