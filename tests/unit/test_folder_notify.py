"""IDLE's change notices (geomail/policy/folder_notify.py) on real directories and a real
inotify instance: RFC 9051 6.3.13 (the server reports changes while the client idles) through
one instance shared by every idling client, watches shared per folder and removed with the
last client."""

from __future__ import annotations

import os
from pathlib import Path

import gevent
import gevent.event
import pytest

from geomail.policy.folder_notify import FolderNotifier


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "box" / sub).mkdir(parents=True)
    return tmp_path / "box"


@pytest.fixture
def notifier():
    notifier = FolderNotifier()
    yield notifier
    notifier.close()


def paths(maildir: Path) -> list[str]:
    return [str(maildir / "new"), str(maildir / "cur")]


def deliver(maildir: Path, name: str) -> None:
    (maildir / "tmp" / name).write_bytes(b"Subject: x\n\nx\n")
    os.rename(maildir / "tmp" / name, maildir / "new" / name)


def test_every_idler_of_a_folder_is_woken_by_a_delivery(maildir: Path, notifier) -> None:
    """RFC 9051 6.3.13: a message delivered into new/ wakes each client idling on the folder;
    the folder costs two watches however many idle on it."""
    woken = [gevent.event.Event(), gevent.event.Event()]
    subscriptions = [notifier.subscribe(paths(maildir), event.set) for event in woken]
    assert all(subscriptions) and notifier.watches == 2
    deliver(maildir, "1")
    assert all(event.wait(5) for event in woken)
    for subscription in subscriptions:
        subscription.close()
        subscription.close()  # idempotent
    assert notifier.watches == 0


def test_a_flag_change_wakes_and_other_folders_do_not(tmp_path: Path, maildir: Path,
                                                      notifier) -> None:
    """RFC 9051 7.5.2: a flag change (a rename in cur/) wakes the folder's idlers only."""
    other = tmp_path / "other"
    for sub in ("new", "cur", "tmp"):
        (other / sub).mkdir(parents=True)
    (maildir / "cur" / "1:2,").write_bytes(b"x")
    here, there = gevent.event.Event(), gevent.event.Event()
    notifier.subscribe(paths(maildir), here.set)
    notifier.subscribe(paths(other), there.set)
    os.rename(maildir / "cur" / "1:2,", maildir / "cur" / "1:2,S")
    assert here.wait(5)
    deliver(other, "2")  # the other folder's event arrives after ours: a barrier
    assert there.wait(5)
    here.clear()
    gevent.sleep(0)
    assert not here.is_set()


def test_a_folder_that_cannot_be_watched_means_polling(tmp_path: Path, notifier) -> None:
    """RFC 9051 6.3.13: a directory that cannot be watched gives no subscription (the shell
    then looks every few seconds) and leaves no watch behind."""
    (tmp_path / "new").mkdir()
    assert notifier.subscribe([str(tmp_path / "new"), str(tmp_path / "missing")],
                              lambda: None) is None
    assert notifier.watches == 0


def test_a_removed_folder_wakes_its_idlers(maildir: Path, notifier) -> None:
    """RFC 9051 6.3.13 / 7.1 (the folder is gone: the session finds out when it looks): its
    removal wakes the idlers and the kernel's dropped watches are forgotten."""
    woken = gevent.event.Event()
    subscription = notifier.subscribe(paths(maildir), woken.set)
    for sub in ("new", "cur", "tmp"):
        os.rmdir(maildir / sub)
    assert woken.wait(5)
    deadline = gevent.Timeout(5)
    with deadline:
        while notifier.watches:
            gevent.sleep(0.01)
    subscription.close()
    assert notifier.watches == 0
