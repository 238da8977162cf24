"""Queue tools through the control socket of a running queue, and on the files when none runs
(RFC 5321 4.5.4.1 retries, RFC 3464 bounces); the queued mail is deferred by a real MX that
refuses connections."""

from __future__ import annotations

import email
import os
import stat
from email import policy
from pathlib import Path

import pytest

from geomail.address import domain_of
from geomail.config import RelayConfig
from geomail.courier.local import LocalCourier
from geomail.courier.mx import MXResolver
from geomail.courier.smtp import SMTPCourier
from geomail.queue.control import (
    ControlError,
    ControlServer,
    format_queue_list,
    queue_command,
    socket_path,
)
from geomail.queue.queue import Queue
from geomail.spool import BytesBody
from geomail.store.maildir import MaildirStore
from tests.support import free_port, wait_for
from tests.support.dns import Dnsmasq

MESSAGE = b"From: alice@example.com\nTo: bob@down.test\nSubject: Stuck\n\nhello\n"


@pytest.fixture(scope="module")
def zone():
    server = Dnsmasq().mx("down.test", "mx.down.test").host("mx.down.test", "127.0.0.30")
    server.start()
    yield server
    server.stop()


class Server:
    """A queue with its control socket, as the app runs them."""

    def __init__(self, data_dir: str, zone: Dnsmasq) -> None:
        relay = RelayConfig(nameservers=((zone.address, zone.port),), mx_port=free_port(),
                            retry=(3600.0,), delay_warning=0.0, connect_timeout=1.0,
                            dns_timeout=1.0)
        self.store = MaildirStore(os.path.join(data_dir, "mail"), "mail.example.com")
        self.remote = SMTPCourier(relay, "mail.example.com", MXResolver.from_config(relay))
        self.queue = Queue(os.path.join(data_dir, "queue"), relay, "mail.example.com",
                           local=LocalCourier(self.store), remote=self.remote,
                           is_local=lambda a: domain_of(a) == "example.com")
        self.queue.load()
        self.control = ControlServer(self.queue, socket_path(data_dir))
        self.control.start()

    def stop(self) -> None:
        self.control.stop()
        self.queue.stop(2)
        self.remote.close()


def attempts(data_dir: str, item_id: str) -> int:
    [item] = [i for i in queue_command(data_dir, "list")["items"] if i["id"] == item_id]
    return int(item["attempts"])


def bounces(data_dir: str) -> list[email.message.EmailMessage]:
    new = os.path.join(data_dir, "mail", "example.com", "alice", "new")
    if not os.path.isdir(new):
        return []
    return [email.message_from_bytes(Path(new, n).read_bytes(), policy=policy.default)
            for n in sorted(os.listdir(new))]


def test_tools_against_a_running_server(tmp_path, zone) -> None:
    """RFC 5321 4.5.4.1 / RFC 3464: list shows each item's state, flush retries now, delete
    drops an item silently, bounce fails it with a DSN to the sender; the socket is 0600."""
    data_dir = str(tmp_path)
    server = Server(data_dir, zone)
    try:
        assert stat.S_IMODE(os.stat(socket_path(data_dir)).st_mode) == 0o600
        first = server.queue.put("alice@example.com", [("bob@down.test", "team@example.com")],
                                 BytesBody(MESSAGE))
        second = server.queue.put("alice@example.com", ["carol@down.test"], BytesBody(MESSAGE))
        wait_for(lambda: attempts(data_dir, first) == 1 and attempts(data_dir, second) == 1, 10,
                 message="first attempts")
        answer = queue_command(data_dir, "list")
        assert not answer.get("offline")
        text = format_queue_list(answer["items"])
        assert first in text and second in text and "from <alice@example.com>" in text
        assert "bob@down.test" in text and "pending" in text and "next in 1h" in text
        assert "cannot connect to mx.down.test [127.0.0.30]" in text
        assert text.rstrip().endswith("-- 2 items, 2 recipients pending")

        assert queue_command(data_dir, "flush")["count"] == 2
        wait_for(lambda: attempts(data_dir, first) == 2, 10, message="flushed attempt")

        queue_command(data_dir, "delete", first)
        assert [i["id"] for i in queue_command(data_dir, "list")["items"]] == [second]
        with pytest.raises(ControlError, match="no queued item"):
            queue_command(data_dir, "delete", first)
        with pytest.raises(ControlError, match="not a queue id"):
            queue_command(data_dir, "bounce", "../etc")

        queue_command(data_dir, "bounce", second)
        [report] = wait_for(lambda: bounces(data_dir), 10, message="admin bounce")
        per_rcpt = next(p for p in report.walk()
                        if p.get_content_type() == "message/delivery-status").get_payload()[1]
        assert per_rcpt["Final-Recipient"] == "rfc822; carol@down.test"
        assert per_rcpt["Action"] == "failed"
        wait_for(lambda: queue_command(data_dir, "list")["items"] == [], 10, message="empty")
        assert format_queue_list([]) == "Mail queue is empty\n"
    finally:
        server.stop()
    assert not os.path.exists(socket_path(data_dir))


def test_tools_without_a_server(tmp_path, zone) -> None:
    """RFC 5321 4.5.4.1: with no server running the tools work on the files (offline); a bounce
    requested offline is sent when the server starts; the queue lock keeps them safe."""
    data_dir = str(tmp_path)
    server = Server(data_dir, zone)
    keep = server.queue.put("alice@example.com", ["bob@down.test"], BytesBody(MESSAGE))
    drop = server.queue.put("alice@example.com", ["dan@down.test"], BytesBody(MESSAGE))
    bounce = server.queue.put("alice@example.com", ["eve@down.test"], BytesBody(MESSAGE))
    wait_for(lambda: all(attempts(data_dir, i) == 1 for i in (keep, drop, bounce)), 10,
             message="first attempts")
    server.stop()

    answer = queue_command(data_dir, "list")
    assert answer["offline"] and len(answer["items"]) == 3
    assert queue_command(data_dir, "flush")["count"] == 3
    queue_command(data_dir, "delete", drop)
    queue_command(data_dir, "bounce", bounce)
    listing = format_queue_list(queue_command(data_dir, "list")["items"])
    assert "failed (bounce pending)" in listing and drop not in listing

    server = Server(data_dir, zone)  # picks the items up: the bounce goes out, keep is retried
    try:
        [report] = wait_for(lambda: bounces(data_dir), 10, message="offline bounce sent")
        assert "eve@down.test" in report.as_string()
        wait_for(lambda: [i["id"] for i in queue_command(data_dir, "list")["items"]] == [keep],
                 10, message="only keep left")
        wait_for(lambda: attempts(data_dir, keep) == 2, 10, message="flushed while offline")
        lock_holder = Queue(os.path.join(data_dir, "queue"), server.queue.relay, "x",
                            local=server.queue.local, remote=server.queue.remote,
                            is_local=server.queue.is_local)
        from geomail.queue.files import QueueBusy

        with pytest.raises(QueueBusy):
            lock_holder.load()
    finally:
        server.stop()
