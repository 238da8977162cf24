"""Crash safety of the outbound queue (RFC 5321 6.1): ``geomail serve`` in a subprocess is
killed with SIGKILL while mail waits for a down MX, and while a delivery is in flight; after a
restart every recipient is delivered exactly once, counted at the receiving servers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support import wait_for
from tests.support.geomail import GeomailProcess
from tests.support.mta import SmtpdPeer, SmtpSink
from tests.support.outbound import (
    mailbox,
    queue_items,
    sender_process_config,
    statuses,
    submit,
)

pytestmark = pytest.mark.slow

MX = {"one.test": "127.0.0.51", "two.test": "127.0.0.52", "fast.test": "127.0.0.53",
      "slow.test": "127.0.0.54"}
MESSAGE = (b"From: Alice <alice@example.com>\r\nSubject: survives a crash\r\n"
           b"Date: Tue, 14 Nov 2023 22:13:20 +0100\r\nMessage-ID: <crash.1@client.example>\r\n"
           b"\r\nhello\r\n")


@pytest.fixture
def server(tmp_path: Path, zone, mx_port: int):
    """``geomail serve`` for the sender (not started), stopped (or killed) at the end."""
    config = sender_process_config(tmp_path, zone, mx_port, data_timeout="30s")
    process = GeomailProcess(config)
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.stop()


def arrivals(*servers: SmtpSink | SmtpdPeer) -> Counter[str]:
    """How many times each recipient was delivered to, over every transaction captured."""
    return Counter(rcpt for server in servers for message in server.messages()
                   for rcpt in message.rcpt_tos)


def delivered_locally(tmp_path: Path, address: str) -> int:
    return len(mailbox(tmp_path / "data" / "mail", address))


def test_sigkill_with_mail_waiting_for_a_down_mx_loses_and_repeats_nothing(
        tmp_path, server, mx_port) -> None:
    """RFC 5321 4.5.4.1 and 6.1 (a server that said 250 is responsible for the message) /
    mail accepted while the MXes refuse connections is queued (the local copy
    delivered, the remote recipients deferred); after SIGKILL and a restart with the MXes up,
    each remote recipient is delivered exactly once and the local one is not stored again."""
    recipients = ["a@one.test", "b@one.test", "c@two.test", "bob@example.com"]
    data_dir = tmp_path / "data"
    server.start()
    queue_id = submit(server.port("submission"), recipients, MESSAGE)
    item = wait_for(lambda: (i := queue_items(data_dir).get(queue_id)) and i["attempts"] >= 1
                    and i, 10, message="the first attempt on disk")
    assert statuses(item) == {"a@one.test": "pending", "b@one.test": "pending",
                              "c@two.test": "pending", "bob@example.com": "delivered"}
    assert all("Connection refused" in r["last_error"] for r in item["recipients"]
               if r["status"] == "pending"), item
    server.kill()
    with SmtpSink(MX["one.test"], mx_port) as one, SmtpSink(MX["two.test"], mx_port) as two:
        server.start()
        wait_for(lambda: queue_id not in queue_items(data_dir), 15, message="delivery")
        assert arrivals(one, two) == {"a@one.test": 1, "b@one.test": 1, "c@two.test": 1}
        assert [m.rcpt_tos for m in one.messages()] == [["a@one.test", "b@one.test"]]
    assert delivered_locally(tmp_path, "bob@example.com") == 1
    assert queue_items(data_dir) == {}


def test_sigkill_during_a_delivery_resends_only_what_was_not_delivered(
        tmp_path, server, mx_port) -> None:
    """RFC 5321 6.1 (the queue neither loses nor duplicates a recipient's delivery):
    one message for two domains and a local user; fast.test's MX takes it at once while
    slow.test's MX holds the final dot unanswered. geomail records fast.test's delivery on
    disk without waiting for slow.test; SIGKILL it then, restart: slow.test gets the message,
    and neither fast.test nor the local mailbox gets it a second time."""
    recipients = ["a@fast.test", "stall@slow.test", "bob@example.com"]
    data_dir = tmp_path / "data"
    with SmtpSink(MX["fast.test"], mx_port) as fast, SmtpdPeer(MX["slow.test"], mx_port) as slow:
        server.start()
        queue_id = submit(server.port("submission"), recipients, MESSAGE)

        def in_flight() -> bool:
            item = queue_items(data_dir).get(queue_id)
            return bool(item and slow.stalled() and statuses(item) == {
                "a@fast.test": "delivered", "stall@slow.test": "pending",
                "bob@example.com": "delivered"})

        wait_for(in_flight, 10, message="fast.test delivered on disk while slow.test stalls")
        assert arrivals(fast, slow) == {"a@fast.test": 1}
        server.kill()
        server.start()
        wait_for(lambda: queue_id not in queue_items(data_dir), 15, message="delivery")
        assert arrivals(fast, slow) == {"a@fast.test": 1, "stall@slow.test": 1}
        [got] = slow.messages()
        assert got.content.endswith(MESSAGE.replace(b"\r\n", b"\n"))
    assert delivered_locally(tmp_path, "bob@example.com") == 1
