"""The per-folder IMAP UID map (geomail/store/imap_uids.py): RFC 9051 2.3.1.1 (UIDs strictly
ascending, never reused within a UIDVALIDITY; UIDNEXT never decreases), RFC 7162 3.1.1
(HIGHESTMODSEQ), in Dovecot's ``dovecot-uidlist`` format version 3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gevent.threadpool import ThreadPool

from geomail.store.imap_uids import (
    LOCK_NAME,
    MODSEQ_NAME,
    UIDLIST_NAME,
    UidListCorrupt,
    UidMap,
    arrival_key,
    parse_uidlist,
)

A = "1700000000.M100P1Q1R0.host,S=10,W=11"
B = "1700000000.M200P1Q2R0.host,S=10,W=11"
C = "1700000001.M5P1Q3R0.host,S=10,W=11"
D = "1700000002.M5P1Q4R0.host,S=10,W=11"


def umap(tmp_path: Path, now: float = 1_750_000_000) -> UidMap:
    return UidMap(str(tmp_path), clock=lambda: now)


def test_first_sync_creates_the_list_in_arrival_order(tmp_path: Path) -> None:
    """RFC 9051 2.3.1.1: UIDs ascend in arrival order; UIDVALIDITY is set once; the file is
    Dovecot's version 3 format."""
    sync = umap(tmp_path).synchronize([C + ":2,S", A, B])
    assert sync.added == (A, B, C) and sync.removed == ()
    text = (tmp_path / UIDLIST_NAME).read_text()
    lines = text.splitlines()
    assert lines[0].startswith("3 V1750000000 N4 G") and len(lines[0].split()[3]) == 33
    assert lines[1:] == [f"1 :{A}", f"2 :{B}", f"3 :{C}"]
    assert text.endswith("\n")
    again = umap(tmp_path, now=1_800_000_000).synchronize([A, B, C + ":2,RS"])
    assert again.added == () and again.uidlist.uidvalidity == 1_750_000_000
    assert [r.uid for r in again.uidlist.records.values()] == [1, 2, 3]


def test_expunged_uids_are_never_reused(tmp_path: Path) -> None:
    """RFC 9051 2.3.1.1: a UID MUST NOT refer to another message, ever; UIDNEXT stays even when
    the highest message goes."""
    uids = umap(tmp_path)
    uids.synchronize([A, B, C])
    sync = uids.synchronize([A])
    assert sync.removed == (2, 3)
    uids.forget([A + ":2,T"])
    assert uids.load().records == {}  # type: ignore[union-attr]
    assert uids.load().next_uid == 4  # type: ignore[union-attr]
    assert uids.synchronize([D]).uidlist.uid(D) == 4


def test_assign_returns_uids_for_appended_messages(tmp_path: Path) -> None:
    """RFC 4315 3 (APPENDUID, COPYUID): the UIDs of messages this server just added, in the
    order given, durable before they are returned."""
    uids = umap(tmp_path)
    uids.synchronize([A])
    assert uids.assign([C, B, A]) == {C: 2, B: 3, A: 1}
    assert parse_uidlist((tmp_path / UIDLIST_NAME).read_bytes()).next_uid == 4


def test_reads_dovecot_lists_and_keeps_their_fields(tmp_path: Path) -> None:
    """RFC 9051 2.3.1.1 across servers: a list Dovecot wrote (extension fields, unknown header
    fields, flags in a file name, a header NEXTUID too low) keeps its UIDs, fields and GUID."""
    guid = "3085f01b7f11094c501100008c4a11c1"
    (tmp_path / UIDLIST_NAME).write_text(
        f"3 V1275660208 N5 G{guid} X1\n"
        f"4 W1234 G0123 :{A}:2,S\n"
        f"7 :{B}\n")
    sync = umap(tmp_path).synchronize([A + ":2,S", B, C])
    assert sync.added == (C,)
    assert sync.uidlist.uid(C) == 8  # above 7, whatever N said
    assert (tmp_path / UIDLIST_NAME).read_text() == (
        f"3 V1275660208 N9 G{guid} X1\n4 W1234 G0123 :{A}:2,S\n7 :{B}\n8 :{C}\n")


def test_reads_version_1(tmp_path: Path) -> None:
    """Courier's ``courierimapuiddb`` (Dovecot's version 1): ``1 <uidvalidity> <nextuid>``."""
    parsed = parse_uidlist(f"1 1000 10\n3 {A}\n9 {B}\n".encode())
    assert parsed.uidvalidity == 1000 and parsed.next_uid == 10
    assert parsed.uid(B) == 9


@pytest.mark.parametrize("text", [
    "", "2 V1 N1\n", "3 V0 N1\n", "3 V1 N0\n", "3 N5\n", f"3 V1 N9\n2 :{A}\n1 :{B}\n",
    f"3 V1 N9\n2 :{A}\n2 :{B}\n", f"3 V1 N9\nx :{A}\n", "3 V1 N9\n2 w5 :a\n", "3 V1 N9\n2 :\n",
    "3 V1 N9\n2 :a/b\n", f"3 V1 N9\n4294967295 :{A}\n", "3 V1 N9\n5 a\n",
])
def test_corrupt_lists_are_refused(text: str) -> None:
    """RFC 9051 2.3.1.1: UIDs from a broken list cannot be trusted (ascending, non-zero, 32
    bits, one name each) -> UidListCorrupt, for the caller to rebuild with a new UIDVALIDITY."""
    with pytest.raises(UidListCorrupt):
        parse_uidlist(text.encode())


def test_rebuild_takes_a_greater_uidvalidity(tmp_path: Path) -> None:
    """RFC 9051 2.3.1.1: when UIDs cannot be kept, UIDVALIDITY MUST grow."""
    (tmp_path / UIDLIST_NAME).write_text(f"3 V1900000000 N9\n2 :{A}\n1 :{B}\n")
    uids = umap(tmp_path)
    with pytest.raises(UidListCorrupt):
        uids.synchronize([A])
    assert uids.rebuild().uidvalidity == 1900000001
    assert uids.synchronize([A, B]).uidlist.uidvalidity == 1900000001


def test_modseq_counter(tmp_path: Path) -> None:
    """RFC 7162 3.1.1: HIGHESTMODSEQ only grows within a UIDVALIDITY and starts over with a
    new one; kept beside the list in its own file."""
    uids = umap(tmp_path)
    assert uids.highest_modseq(5) == 1
    assert uids.next_modseq(5) == 2
    assert uids.next_modseq(5, count=10) == 12
    assert uids.highest_modseq(5) == 12
    assert (tmp_path / MODSEQ_NAME).read_text() == "1 V5 M12\n"
    assert uids.highest_modseq(6) == 1
    assert uids.next_modseq(6) == 2


def test_concurrent_writers_get_distinct_uids(tmp_path: Path) -> None:
    """RFC 9051 2.3.1.1: sessions adding messages at once (real threads of a pool, as the IMAP
    shell will run these calls) never share a UID: every update is made under the lock."""
    uids = umap(tmp_path)
    pool = ThreadPool(4)

    def work(n: int) -> list[int]:
        return [uid for i in range(10)
                for uid in uids.assign([f"17000000{n:02d}.M{i}P{n}.host"]).values()]

    try:
        results = [pool.spawn(work, n) for n in range(4)]
        got = [uid for result in results for uid in result.get(timeout=30)]
    finally:
        pool.kill()
    assert sorted(got) == list(range(1, 41))
    assert (tmp_path / LOCK_NAME).exists()


_CRASH = textwrap.dedent("""
    import os, signal, sys
    import geomail.safeio as safeio
    from geomail.store.imap_uids import UidMap
    root, point = sys.argv[1], sys.argv[2]
    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "before-rename":
        os.replace = die
    else:
        safeio.fsync_dir = die
    UidMap(root).synchronize(sys.argv[3:])
""")


@pytest.mark.parametrize("point", ["before-rename", "before-dir-fsync"])
def test_crash_never_reuses_a_uid(tmp_path: Path, point: str) -> None:
    """RFC 9051 2.3.1.1: a writer killed (SIGKILL) between the steps of an update leaves either
    the old list or the new one, never a torn one; its temp file is swept; UIDs already handed
    out are kept, and the next ones are above every UID ever written."""
    uids = umap(tmp_path)
    first = uids.synchronize([A, B]).uidlist
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path), point, A, B, C],
                          timeout=30, check=False)
    assert proc.returncode == -signal.SIGKILL
    if point == "before-rename":
        assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp.")]
    after = uids.load()
    assert after is not None and after.uidvalidity == first.uidvalidity
    assert after.uid(A) == 1 and after.uid(B) == 2
    assert after.uid(C) == (3 if point == "before-dir-fsync" else None)
    sync = uids.synchronize([A, B, C, D])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp.")]
    assert sync.uidlist.uid(A) == 1 and sync.uidlist.uid(B) == 2
    assert sync.uidlist.uid(C) == 3 and sync.uidlist.uid(D) == 4


def test_arrival_key_orders_by_delivery_time() -> None:
    """RFC 9051 2.3.1.1 (ascending in arrival order): the Maildir name's second, then its
    microsecond (M field), then the name; names without a time sort last."""
    names = ["x", D, C, B, A, "1700000000.P9.host"]
    assert sorted(names, key=arrival_key) == ["1700000000.P9.host", A, B, C, D, "x"]
