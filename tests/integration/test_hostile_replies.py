"""A remote MX whose replies carry control characters (ESC, NUL, DEL, CR, BEL)
and 8-bit octets. Its text is cut down to what RFC 5321 4.2.1 allows before it is stored, put in
a DSN or shown by ``geomail queue list``, and the sender gets the bounce."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import wait_for
from tests.support.geomail import GeomailProcess
from tests.support.hostile_mx import HostileMX
from tests.support.outbound import mailbox, parse_report, queue_items, sender_process_config, submit

MX = {"hostile.test": "127.0.0.58"}
MESSAGE = b"From: alice@example.com\r\nSubject: to a hostile MX\r\n\r\nhello\r\n"
# Anything but HT, LF (line ends), SP and printable ASCII.
UNSAFE = re.compile(rb"[^\t\n\x20-\x7e]")


def test_hostile_reply_text_is_sanitised_everywhere(tmp_path: Path, zone, mx_port) -> None:
    """RFC 5321 4.2.1 (reply text is HT, SP, printable ASCII) / RFC 3464 2.3.6: a 550 with ESC,
    NUL and DEL bounces at once and the sender's DSN carries the text with each such octet
    replaced by '?'; a 451 with an OSC escape, BEL, a bare CR and 8-bit octets stays queued with
    the same replacement on disk, and ``geomail queue list`` prints no control character."""
    config = sender_process_config(tmp_path, zone, mx_port, retry=["1h"])
    data_dir = tmp_path / "data"
    with HostileMX(MX["hostile.test"], mx_port):
        server = GeomailProcess(config).start()
        try:
            item_id = submit(server.port("submission"),
                             ["rejectme@hostile.test", "deferme@hostile.test"], MESSAGE)
            [dsn] = wait_for(lambda: mailbox(data_dir / "mail", "alice@example.com"), 15,
                             message="the bounce in alice's mailbox")
            assert not UNSAFE.search(dsn.replace(b"\r\n", b"\n")), dsn
            _, _, [block], _ = parse_report(dsn)
            assert block["Final-Recipient"] == "rfc822; rejectme@hostile.test"
            assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 bad?[31m??user"

            item = wait_for(lambda: queue_items(data_dir).get(item_id), 5, message="the item")
            [deferred] = [r for r in item["recipients"] if r["status"] == "pending"]
            assert deferred["last_error"] == "451 4.3.0 slow?]0;pwned? down???now"

            listing = subprocess.run([*server.command, "queue", "list", "-c", str(config)],
                                     capture_output=True, timeout=30)
            assert listing.returncode == 0, listing.stderr
            assert b"deferme@hostile.test" in listing.stdout
            assert b"slow?]0;pwned? down???now" in listing.stdout
            assert not UNSAFE.search(listing.stdout), listing.stdout
            assert "Traceback" not in server.log()
        finally:
            server.stop()
