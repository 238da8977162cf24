"""DKIM verification in worker processes (``limits.verify_processes``, geomail/checks/
verify_pool.py): real forked workers answering over pipes, pipelined requests, and what
happens when a worker dies (RFC 6376 6.1: the verdicts must not change with where they are
computed; issue 12 item 2: verification runs off the hub)."""

from __future__ import annotations

import base64
import os
import signal

import dkim
import gevent
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from geomail.checks.dkim_verify import DKIMVerifier, Keys
from geomail.checks.verify_pool import VerifyPool, VerifyPoolError, worker_command
from tests.support import wait_for

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption())
RECORD = b"v=DKIM1; k=rsa; p=" + base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
NAME = b"s1._domainkey.pool.test"


def _signed(body: bytes) -> bytes:
    message = b"From: a@pool.test\r\nTo: b@example.com\r\nSubject: s\r\n\r\n" + body
    return (dkim.sign(message, b"s1", b"pool.test", PEM) + message).replace(b"\r\n", b"\n")


@pytest.fixture
def pool():
    workers = VerifyPool(2, worker_command(None), timeout=10)
    yield workers
    workers.close()


def test_worker_verdicts_equal_in_process_verdicts(pool: VerifyPool) -> None:
    """A good and a tampered message get from a worker exactly what the in-process verifier
    gives (pass; fail with the body hash mismatch)."""
    keys = Keys({NAME: RECORD})
    good, bad = _signed(b"hello\r\n"), _signed(b"hello\r\n").replace(b"hello", b"jello")
    for message in (good, bad):
        expected = DKIMVerifier().verify(message.replace(b"\n", b"\r\n"), keys)
        assert pool.verify([message], keys, True) == expected
    assert pool.verify([good], keys, True)[0][0].result == "pass"
    assert pool.verify([bad], keys, True)[0][0].result == "fail"


def test_pipelined_requests_get_their_own_answers(pool: VerifyPool) -> None:
    """Fifty messages at once over two workers: each caller gets the verdict of its own
    message (answers are matched to requests in order), none is lost."""
    keys = Keys({NAME: RECORD})
    messages = [_signed(f"message {i}\r\n".encode()) for i in range(50)]
    tampered = {i for i in range(50) if i % 7 == 0}
    sent = [m.replace(b"message", b"massage") if i in tampered else m
            for i, m in enumerate(messages)]
    jobs = [gevent.spawn(pool.verify, [m], keys, False) for m in sent]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    results = [job.value[0][0].result for job in jobs]
    assert results == ["fail" if i in tampered else "pass" for i in range(50)]


def test_a_dead_worker_is_replaced_after_a_pause() -> None:
    """A worker killed between messages: the next request fails with VerifyPoolError (the
    caller then verifies in-process, see policy/inbound.py), and so does every request of the
    pause that follows (no process started per message if workers cannot start); then a fresh
    worker answers."""
    pool = VerifyPool(1, worker_command(None), timeout=10, respawn_pause=0.5)
    try:
        keys = Keys({NAME: RECORD})
        message = _signed(b"hi\r\n")
        assert pool.verify([message], keys, True)[0][0].result == "pass"
        victim = pool._workers[0].pid
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(VerifyPoolError):
            pool.verify([message], keys, True)
        with pytest.raises(VerifyPoolError, match="pausing"):
            pool.verify([message], keys, True)

        def answered() -> bool:
            try:
                return pool.verify([message], keys, True)[0][0].result == "pass"
            except VerifyPoolError:
                return False

        wait_for(answered, 10, interval=0.1, message="a fresh worker")
        assert [w.pid for w in pool._workers] != [victim]
    finally:
        pool.close()


def test_close_ends_the_workers(pool: VerifyPool) -> None:
    """App.stop closes the pool: its worker processes are gone."""
    keys = Keys({NAME: RECORD})
    pool.verify([_signed(b"x\r\n")], keys, True)
    pids = [w.pid for w in pool._workers]
    pool.close()

    def gone(pid: int) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
        except (ChildProcessError, ProcessLookupError):
            return True
        return False

    wait_for(lambda: all(gone(p) for p in pids), 5, message="workers ended")


def test_a_worker_holds_no_socket_of_the_server(pool: VerifyPool) -> None:
    """A worker started while a client connection is open must not keep that connection: when
    the server closes it, the client sees the end at once (RFC 5321 3.8: the server closes
    the transmission channel after 221)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()
    pool.verify([_signed(b"start now\r\n")], Keys({NAME: RECORD}), False)  # starts a worker
    served.close()
    client.settimeout(5)
    assert client.recv(1) == b""  # EOF: no copy of the served socket lives on in the worker
    client.close()
    listener.close()
