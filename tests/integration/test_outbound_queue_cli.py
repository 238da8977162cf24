"""``geomail queue list|flush|delete ID|bounce ID -c FILE`` run as commands
against a running ``geomail serve`` whose queued mail waits for an MX that refuses
connections (until the test starts one)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import wait_for
from tests.support.geomail import GeomailProcess
from tests.support.mta import SmtpSink
from tests.support.outbound import mailbox, parse_report, queue_items, sender_process_config, submit

MX = {"down.test": "127.0.0.56"}
MESSAGE = b"From: alice@example.com\r\nSubject: stuck\r\n\r\nwaiting\r\n"


def geomail(server: GeomailProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``geomail ARGS -c FILE`` as an operator would, next to the running server."""
    return subprocess.run([*server.command, *args, "-c", str(server.config_path)],
                          capture_output=True, text=True, timeout=30)


def test_queue_tools_against_a_running_server(tmp_path: Path, zone, mx_port) -> None:
    """RFC 5321 4.5.4.1 (retry) / RFC 3464 (the bounce): ``queue list`` shows
    each item's id, age, sender, attempts, next attempt, and each recipient with its status
    and last error; ``delete`` drops an item without a DSN; ``bounce`` fails one and the
    sender gets a DSN; ``flush`` retries the rest now; unknown ids are errors (exit 1)."""
    config = sender_process_config(tmp_path, zone, mx_port, retry=["1h"])
    server = GeomailProcess(config).start()
    data_dir = tmp_path / "data"
    try:
        port = server.port("submission")
        drop = submit(port, ["x@down.test"], MESSAGE)
        bounce = submit(port, ["y@down.test"], MESSAGE)
        keep = submit(port, ["z@down.test", "w@down.test"], MESSAGE)
        wait_for(lambda: (items := queue_items(data_dir)) and len(items) == 3
                 and all(i["attempts"] == 1 for i in items.values()), 10,
                 message="a first attempt of each")

        listing = geomail(server, "queue", "list")
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.splitlines()
        for item_id, rcpts in ((drop, ["x"]), (bounce, ["y"]), (keep, ["z", "w"])):
            head = next(line for line in lines if line.startswith(item_id))
            assert re.fullmatch(rf"{item_id}  age \d+s  from <alice@example\.com>  size \d+  "
                                r"attempts 1  next in 1h(\d+m)?", head), head  # 1h + jitter
            for rcpt in rcpts:
                row = next(line for line in lines if f"{rcpt}@down.test" in line)
                assert re.fullmatch(
                    rf"    {rcpt}@down\.test +pending +attempts 1  4\d\d 4\.\d\.\d cannot "
                    rf"connect to mx\.down\.test \[127\.0\.0\.56\]:{mx_port}: Connection refused",
                    row), row
        assert lines[-1] == "-- 3 items, 4 recipients pending"

        done = geomail(server, "queue", "delete", drop)
        assert (done.returncode, done.stdout) == (0, f"{drop}: deleted\n"), done.stderr
        assert drop not in queue_items(data_dir)
        assert drop not in geomail(server, "queue", "list").stdout
        again = geomail(server, "queue", "delete", drop)
        assert again.returncode == 1 and "no queued item" in again.stderr

        done = geomail(server, "queue", "bounce", bounce)
        assert (done.returncode, done.stdout) == (0, f"{bounce}: bounced\n"), done.stderr
        store = data_dir / "mail"
        [raw] = wait_for(lambda: mailbox(store, "alice@example.com"), 10, message="the DSN")
        _, per_message, [per_rcpt], _ = parse_report(raw)
        assert per_message["X-Geomail-Queue-ID"] == bounce
        assert per_rcpt["Final-Recipient"] == "rfc822; y@down.test"
        assert per_rcpt["Action"] == "failed" and per_rcpt["Status"].startswith("5.")

        with SmtpSink(MX["down.test"], mx_port) as sink:
            done = geomail(server, "queue", "flush")
            assert done.returncode == 0 and "1 item(s) will be retried now" in done.stdout
            wait_for(lambda: queue_items(data_dir) == {}, 10, message="the flushed delivery")
            assert [m.rcpt_tos for m in sink.messages()] == [["z@down.test", "w@down.test"]]
        assert geomail(server, "queue", "list").stdout == "Mail queue is empty\n"
        assert len(mailbox(store, "alice@example.com")) == 1  # delete sent no DSN
    finally:
        server.stop()
