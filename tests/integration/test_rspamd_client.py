"""geomail's rspamd client against a real rspamd (Debian's package, started privately on
127.0.0.1 by tests/support/rspamd.py): issue 12 item 6 and its test bullet. Protocol:
https://rspamd.com/doc/developers/protocol.html (``POST /checkv2``)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from geomail.checks.rspamd import RspamdClient, RspamdError, ScanFacts, SpamScan, SpamVerdict
from geomail.config.objects import RspamdConfig
from tests.support import free_port, wait_for
from tests.support.rspamd import Rspamd, gtube

FACTS = ScanFacts(client_ip="192.0.2.10", helo="mail.sender.example", sender="alice@sender.example",
                  recipients=("bob@rcpt.example", "carol@rcpt.example"), queue_id="Q7TEST1",
                  hostname="mail.sender.example")


def message(body: str, newline: bytes = b"\r\n") -> list[bytes]:
    """A small message as the chunks a spool hands out: one per line."""
    lines = ["From: alice@sender.example", "To: bob@rcpt.example, carol@rcpt.example",
             "Subject: lunch", "Date: Sun, 6 Dec 2026 06:00:00 +0000",
             "Message-ID: <lunch.1@sender.example>", "", *body.split("\n")]
    return [line.encode() + newline for line in lines]


def scan(client: RspamdClient, chunks: list[bytes], facts: ScanFacts = FACTS) -> SpamScan:
    return client.scan(iter(chunks), sum(map(len, chunks)), facts)


@pytest.fixture(scope="module")
def rspamd() -> Iterator[Rspamd]:
    with Rspamd() as server:
        yield server


@pytest.fixture
def client(rspamd: Rspamd) -> RspamdClient:
    return RspamdClient(RspamdConfig(url=rspamd.url, timeout=10.0))


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_gtube_is_rejected_554(client: RspamdClient, newline: bytes) -> None:
    """Issue 12 item 6: rspamd's ``reject`` becomes 554 5.7.1. The message is streamed in
    chunks (one per line), with CRLF or LF endings, and rspamd still sees all of it."""
    result = scan(client, message(f"Buy now.\n{gtube('X')}\n", newline))
    assert result.action == "reject"
    assert "GTUBE" in result.symbols
    verdict = client.verdict(result)
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (554, "5.7.1")
    assert verdict.action == "reject" and not verdict.junk


def test_clean_message_is_accepted_with_its_score(client: RspamdClient, rspamd: Rspamd) -> None:
    """Issue 12 item 6: a clean message gets ``no action``: no reply, not junk, and an
    ``X-Spam-Score`` header carrying rspamd's score and threshold. The envelope reaches
    rspamd in the protocol's request headers (its log names our queue id, client address,
    sender and recipients; its envelope rules fire)."""
    result = scan(client, message("See you at noon.\n"))
    assert result.action == "no action"
    assert result.required == 15.0  # the package's reject threshold
    assert {"FROM_EQ_ENVFROM", "TO_MATCH_ENVRCPT_ALL"} <= set(result.symbols)
    assert list(result.symbols) == sorted(result.symbols)
    verdict = client.verdict(result)
    assert verdict.reply is None and not verdict.junk and verdict.action == "no action"
    match = re.fullmatch(rb"X-Spam-Score: (-?\d+\.\d\d) / 15\.00\n", verdict.headers)
    assert match and float(match.group(1)) == pytest.approx(result.score, abs=0.005)
    line: str = wait_for(lambda: next((entry for entry in rspamd.log().splitlines()
                                       if "qid: <Q7TEST1>" in entry), ""),
                         10, message="rspamd's log line for the scan")
    assert "ip: 192.0.2.10" in line and "from: <alice@sender.example>" in line
    assert "rcpts: <bob@rcpt.example,carol@rcpt.example>" in line


@pytest.mark.parametrize("variant, action", [("Y", "add header"), ("Z", "rewrite subject")])
def test_spammy_message_goes_to_junk_with_headers(client: RspamdClient, variant: str,
                                                  action: str) -> None:
    """Issue 12 item 6: ``add header`` and ``rewrite subject`` deliver to the Junk folder with
    ``X-Spam: Yes`` and ``X-Spam-Score`` (rspamd's GTUBE variants force those actions)."""
    result = scan(client, message(f"{gtube(variant)}\n"))
    assert result.action == action
    verdict = client.verdict(result)
    assert verdict.reply is None and verdict.junk and verdict.action == action
    assert verdict.headers.startswith(b"X-Spam: Yes\nX-Spam-Score: ")


def test_null_sender_and_no_helo_or_hostname_are_scanned(client: RspamdClient) -> None:
    """Issue 12 item 6 (bounces, RFC 5321 4.5.5): a message with the null reverse-path, no HELO
    and no verified client name is still scanned (``From: <>``; rspamd looks the PTR up
    itself) and GTUBE in it is still refused."""
    facts = ScanFacts(client_ip="192.0.2.11", helo=None, sender="",
                      recipients=("bob@rcpt.example",), queue_id="Q7TEST2")
    assert scan(client, message(f"{gtube('X')}\n"), facts).action == "reject"
    assert scan(client, message("Delivery report.\n"), facts).action == "no action"


def test_http_error_status_raises(rspamd: Rspamd) -> None:
    """Issue 12 item 6: an HTTP status other than 200 (here rspamd's error for a path it does
    not serve) is a failure, not a verdict."""
    client = RspamdClient(RspamdConfig(url=f"{rspamd.url}/no/such/prefix", timeout=10.0))
    with pytest.raises(RspamdError, match=r"HTTP status [45]\d\d"):
        scan(client, message("Hello.\n"))


def test_stopped_rspamd_raises_and_fails_open_or_closed() -> None:
    """Issue 12 item 6: rspamd down -> RspamdError; ``fail: open`` (the default) accepts the
    message unscanned (action "error" for the log line and metric), ``fail: closed`` answers
    451 4.7.1 so the sender retries."""
    with Rspamd() as server:
        fail_open = RspamdClient(RspamdConfig(url=server.url, timeout=5.0))
        fail_closed = RspamdClient(RspamdConfig(url=server.url, timeout=5.0, fail_open=False))
        assert scan(fail_open, message("Hello.\n")).action == "no action"
        server.stop()
        started = time.monotonic()
        with pytest.raises(RspamdError) as caught:
            scan(fail_open, message("Hello.\n"))
        assert time.monotonic() - started < 2.0  # refused at once, not after the timeout
    opened = fail_open.failed(caught.value)
    assert opened == SpamVerdict(reply=None, junk=False, headers=b"", action="error")
    closed = fail_closed.failed(caught.value)
    assert closed.action == "error" and not closed.junk and closed.headers == b""
    assert closed.reply is not None
    assert (closed.reply.code, closed.reply.enhanced) == (451, "4.7.1")
    assert "unavailable" in str(closed.reply)


def test_nobody_listening_raises() -> None:
    """Issue 12 item 6: a URL where nothing listens (rspamd never installed, wrong port) is a
    failure the caller handles, never an unhandled exception."""
    client = RspamdClient(RspamdConfig(url=f"http://127.0.0.1:{free_port()}", timeout=5.0))
    with pytest.raises(RspamdError, match=r"(?i)refused"):
        scan(client, message("Hello.\n"))


def test_silent_server_times_out_within_the_configured_timeout() -> None:
    """Issue 12 item 6 (``spam.rspamd.timeout``): a server that accepts the connection and
    never answers costs at most about the configured timeout, then RspamdError."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        port = silent.getsockname()[1]
        client = RspamdClient(RspamdConfig(url=f"http://127.0.0.1:{port}", timeout=0.5))
        started = time.monotonic()
        with pytest.raises(RspamdError, match=r"no answer within 0\.5s"):
            scan(client, message("Hello.\n"))
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0


def test_trickling_server_is_cut_at_the_configured_timeout() -> None:
    """Issue 12 item 6 (``spam.rspamd.timeout`` bounds the whole call): a server that answers a
    byte at a time, never long enough idle for a socket timeout, is still cut off after
    about the configured timeout."""
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def trickle() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not stop.wait(0.1):
                    try:
                        connection.sendall(b"a")
                    except OSError:
                        return

        server = threading.Thread(target=trickle, daemon=True)
        server.start()
        client = RspamdClient(RspamdConfig(url=f"http://127.0.0.1:{port}", timeout=1.0))
        started = time.monotonic()
        try:
            with pytest.raises(RspamdError, match=r"no answer within 1s"):
                scan(client, message("Hello.\n"))
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            server.join(5)
    assert 0.9 <= elapsed < 4.0
