"""Slow disk work never stalls the event loop: 500 sessions keep being answered while large
messages are written (DESIGN rule 2: writes and fsync run in gevent's threadpool)."""

from __future__ import annotations

import socket
import time

import gevent
from gevent import monkey

from geomail.store.maildir import MaildirStore

SESSIONS = 500
real_sleep = monkey.get_original("time", "sleep")


def test_500_sessions_progress_while_large_messages_are_written(make_app, monkeypatch):
    """While five 4 MiB messages are being written by a store that takes 1.5 s per write
    (a real, thread-blocking sleep standing in for a slow disk), 500 other sessions each get
    their NOOP answered promptly (RFC 5321 4.1.1.9); had the write run on the hub, every
    reply would wait for it."""
    original = MaildirStore._write_copies

    def slow_write(self, jobs, body):
        real_sleep(1.5)  # blocks this OS thread only: it must be a pool thread
        return original(self, jobs, body)

    monkeypatch.setattr(MaildirStore, "_write_copies", slow_write)
    app = make_app(limits={"max_connections_per_ip": SESSIONS + 20,
                           "max_connections": SESSIONS + 20})
    port = app.ports["smtp"][0]
    sessions = []
    for _ in range(SESSIONS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        assert sock.recv(512).startswith(b"220 ")
        sessions.append(sock)

    def big_message(n: int) -> bytes:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            data = b"".join([b"EHLO big\r\nMAIL FROM:<s@remote.example>\r\n",
                             b"RCPT TO:<alice@example.com>\r\nDATA\r\n"])
            sock.recv(512)
            sock.sendall(data)
            received = b""
            while received.count(b"\r\n") < 10:  # EHLO's lines, 250, 250, 354
                received += sock.recv(4096)
            assert b"354 " in received
            line = b"x" * 998 + b"\r\n"
            sock.sendall(line * (4 * 1024 * 1024 // len(line)) + b".\r\n")
            return sock.recv(512)
        finally:
            sock.close()

    writers = [gevent.spawn(big_message, n) for n in range(5)]
    latencies: list[float] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline and not all(w.ready() for w in writers):
        for sock in sessions[::25]:  # 20 probes per round, spread over the 500
            started = time.monotonic()
            sock.sendall(b"NOOP\r\n")
            assert sock.recv(512).startswith(b"250 ")
            latencies.append(time.monotonic() - started)
    gevent.joinall(writers, timeout=30)
    assert [w.value[:4] for w in writers] == [b"250 "] * 5
    assert len(latencies) > 100
    assert max(latencies) < 0.5, f"the hub stalled for {max(latencies):.2f} s"
    for sock in sessions:
        sock.close()
