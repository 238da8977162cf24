"""SIGKILL during APPEND and EXPUNGE on the IMAP Maildir store (geomail/store/imap_maildir.py):
afterwards every message is intact and keeps its UID, and no UID is given twice or out of
order (RFC 9051 2.3.1.1: UIDs strictly ascending, never reused within a UIDVALIDITY; RFC 4315
APPENDUID reports durable UIDs). The child process kills itself (SIGKILL) at a precise point,
by wrapping the system call or step that comes next, or is killed while it loops."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from geomail.store.imap_maildir import MaildirMailStore

MSG = b"Subject: n\r\n\r\nbody\r\n"
CHILD = """
import os, sys
from geomail.store.imap_maildir import MaildirFolder, MaildirMailStore
store = MaildirMailStore(sys.argv[1], "host")
crash_at = sys.argv[3] if len(sys.argv) > 3 else ""

def die(*args, **kwargs):
    os.kill(os.getpid(), 9)

real_unlink = os.unlink

def unlink_then_die(path):
    real_unlink(path)
    die()

if crash_at == "append-written":  # the message is complete in tmp/, not yet in cur/
    os.rename = die
elif crash_at == "append-linked":  # in cur/ and fsynced, its UID not yet written
    MaildirFolder._numbered = die
elif crash_at == "expunge-unlinked":  # the first file is gone, the UID list not updated
    os.unlink = unlink_then_die
if sys.argv[2] == "append":
    store.append("INBOX", b"Subject: crash\\r\\n\\r\\nx\\r\\n", frozenset({"\\\\Seen"}), None)
elif sys.argv[2] == "expunge":
    store.view("INBOX")
    store.expunge("INBOX", [1, 2])
else:
    n = 0
    while True:
        n += 1
        got = store.append("INBOX", b"Subject: %d\\r\\n\\r\\nx\\r\\n" % n, frozenset(), None)
        print(got.uid, n, flush=True)
"""


def run_child(root: Path, action: str, crash_at: str) -> int:
    return subprocess.run([sys.executable, "-c", CHILD, str(root), action, crash_at],
                          timeout=60, check=False).returncode


def prepared(root: Path) -> MaildirMailStore:
    store = MaildirMailStore(str(root), "host")
    store.list_folders()
    for _ in range(3):
        store.append("INBOX", MSG, frozenset(), None)
    return store


def test_kill_after_append_written(tmp_path: Path) -> None:
    """RFC 9051 6.3.12: killed with the message only in tmp/: no message, no UID used; the
    existing messages keep their UIDs; the next APPEND gets UID 4."""
    store = prepared(tmp_path)
    before = store.view("INBOX")
    assert run_child(tmp_path, "append", "append-written") == -signal.SIGKILL
    after = MaildirMailStore(str(tmp_path), "host").view("INBOX")
    assert after.messages == before.messages
    assert store.append("INBOX", MSG, frozenset(), None).uid == 4


def test_kill_after_append_linked(tmp_path: Path) -> None:
    """RFC 9051 2.3.1.1: killed after the message reached cur/ but before its UID was
    written: the next sync finds it and gives it a fresh UID (4), flags kept; nothing
    reused."""
    store = prepared(tmp_path)
    assert run_child(tmp_path, "append", "append-linked") == -signal.SIGKILL
    after = MaildirMailStore(str(tmp_path), "host").view("INBOX")
    assert [m.uid for m in after.messages] == [1, 2, 3, 4]
    assert after.messages[3].flags == {"\\Seen"}
    assert store.fetch("INBOX", 4) == b"Subject: crash\n\nx\n"
    assert store.append("INBOX", MSG, frozenset(), None).uid == 5


def test_kill_during_expunge(tmp_path: Path) -> None:
    """RFC 9051 6.4.3: killed after the first \\Deleted file was unlinked, before the UID
    list was updated: that message is gone, the others keep their UIDs, a second EXPUNGE
    finishes the job, and UIDs are not reused."""
    store = prepared(tmp_path)
    store.store_flags("INBOX", [1, 2], "+", frozenset({"\\Deleted"}))
    assert run_child(tmp_path, "expunge", "expunge-unlinked") == -signal.SIGKILL
    fresh = MaildirMailStore(str(tmp_path), "host")
    assert [m.uid for m in fresh.view("INBOX").messages] == [2, 3]
    assert fresh.expunge("INBOX", [2]) == [2]
    assert [m.uid for m in fresh.view("INBOX").messages] == [3]
    assert fresh.fetch("INBOX", 3) == MSG.replace(b"\r\n", b"\n")
    assert fresh.append("INBOX", MSG, frozenset(), None).uid == 4
    assert fresh.mailboxes.open("INBOX").vanished_since(0) == [1, 2]


def test_kill_while_appending_in_a_loop(tmp_path: Path) -> None:
    """RFC 4315 3 (APPENDUID), RFC 9051 2.3.1.1: a child appending in a loop is killed at an
    arbitrary moment; every UID it reported still names the same message, UIDs ascend in
    append order, and the next UID is above all of them."""
    MaildirMailStore(str(tmp_path), "host").list_folders()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), "loop"],
                             stdout=subprocess.PIPE)
    reported: dict[int, int] = {}
    assert child.stdout is not None
    deadline = time.monotonic() + 60
    while len(reported) < 15 and time.monotonic() < deadline:
        uid, n = child.stdout.readline().split()
        reported[int(uid)] = int(n)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    store = MaildirMailStore(str(tmp_path), "host")
    view = store.view("INBOX")
    uids = [m.uid for m in view.messages]
    assert uids == sorted(set(uids))
    for uid, n in reported.items():
        assert store.fetch("INBOX", uid) == b"Subject: %d\n\nx\n" % n
    numbers = [int(store.fetch("INBOX", u).split(b"\n")[0][9:]) for u in uids]  # type: ignore[union-attr]
    assert numbers == sorted(numbers)  # UID order is append order
    assert store.append("INBOX", MSG, frozenset(), None).uid > max(uids)
