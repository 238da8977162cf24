"""The offline queue tools lose no mail (RFC 5321 6.1: accepted mail is not lost). Run as another
user than the queue's owner while the server is stopped, ``geomail queue flush|delete|bounce``
refuse, name the owner and touch no file; the server's start-up scan keeps a message whose item it
cannot use."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from geomail.queue.item import QueueItem, Recipient
from tests.support.geomail import GeomailProcess, _default_command
from tests.support.smtp import process_config

ITEM_ID = "018f00000000000000000a"
BODY = b"Subject: queued while the server was down\n\nhello\n"


def _queue(data_dir: Path) -> Path:
    directory = data_dir / "queue"
    directory.mkdir(parents=True)
    item = QueueItem(ITEM_ID, "alice@example.com", [Recipient("bob@example.org")], 1.7e9, 4e9)
    (directory / f"{ITEM_ID}.json").write_bytes(item.to_json())
    (directory / f"{ITEM_ID}.msg").write_bytes(BODY)
    return directory


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_uid, p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(directory.iterdir())}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
@pytest.mark.parametrize("args", [["flush"], ["delete", ITEM_ID], ["bounce", ITEM_ID]])
def test_offline_tools_refuse_another_users_queue(tmp_path: Path, args: list[str]) -> None:
    """RFC 5321 6.1 (no mail lost: once root rewrote an item as root:0600, and the server set it
    aside and deleted its message): as root, on a stopped server's queue owned by ``nobody``, the
    tool exits 1, says whom to run it as, and leaves every file as it was (content, owner, mode,
    mtime)."""
    nobody = pwd.getpwnam("nobody")
    config = process_config(tmp_path)
    directory = _queue(tmp_path / "data")
    for path in (tmp_path / "data", directory, *directory.iterdir()):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    before = _snapshot(directory)
    done = subprocess.run([*_default_command(), "queue", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "belongs to user nobody" in done.stderr
    assert "sudo -u nobody geomail queue" in done.stderr
    assert "Traceback" not in done.stderr
    assert _snapshot(directory) == before


def test_load_keeps_the_message_of_an_unusable_item(tmp_path: Path) -> None:
    """RFC 5321 6.1 (no mail lost): a server starting on a queue whose item is damaged renames it
    ``.bad`` and keeps its message (it used to delete it as "message without item" at the next
    start), over two restarts."""
    config = process_config(tmp_path, relay={"retry": ["1h"]})
    directory = _queue(tmp_path / "data")
    (directory / f"{ITEM_ID}.json").write_bytes(b'{"version": 1, "id": "torn')
    server = GeomailProcess(config)
    for _ in range(2):
        server.start()
        assert server.stop() == 0
    assert (directory / f"{ITEM_ID}.json.bad").exists()
    assert (directory / f"{ITEM_ID}.msg").read_bytes() == BODY, server.log()


