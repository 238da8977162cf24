"""rspamd's answer and action as geomail's decision (issue 12 item 6; answer format:
https://rspamd.com/doc/developers/protocol.html, ``/checkv2`` reply). No network: the
verdict and the parsing are pure; the real exchange is in
tests/integration/test_rspamd_client.py."""

from __future__ import annotations

import json
import math

import pytest

from geomail.checks.rspamd import (
    ACTIONS,
    RspamdClient,
    RspamdError,
    ScanFacts,
    SpamScan,
    _request_headers,
    parse_answer,
)
from geomail.config.objects import RspamdConfig

CLIENT = RspamdClient(RspamdConfig(url="http://127.0.0.1:11333"))


def scan(action: str, score: float = 7.2, required: float = 15.0) -> SpamScan:
    return SpamScan(action=action, score=score, required=required, symbols=("SYMBOL_A",))


@pytest.mark.parametrize("action, code, enhanced", [
    ("reject", 554, "5.7.1"),
    ("soft reject", 451, "4.7.1"),
    ("greylist", 451, "4.7.1"),
])
def test_refusing_actions_become_replies(action: str, code: int, enhanced: str) -> None:
    """Issue 12 item 6: ``reject`` -> 554 5.7.1; ``soft reject`` and ``greylist`` -> 451 4.7.1.
    A refused message is neither junk nor given headers; the action is kept for the log."""
    verdict = CLIENT.verdict(scan(action))
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (code, enhanced)
    assert (verdict.junk, verdict.headers, verdict.action) == (False, b"", action)


@pytest.mark.parametrize("action", ["add header", "rewrite subject"])
def test_spam_actions_go_to_junk_with_headers(action: str) -> None:
    """Issue 12 item 6: ``add header`` / ``rewrite subject`` -> delivered, to the Junk folder,
    with ``X-Spam: Yes`` and ``X-Spam-Score`` (LF-terminated header lines)."""
    verdict = CLIENT.verdict(scan(action, 7.2, 15.0))
    assert verdict.reply is None and verdict.junk and verdict.action == action
    assert verdict.headers == b"X-Spam: Yes\nX-Spam-Score: 7.20 / 15.00\n"


def test_no_action_delivers_to_inbox_with_the_score_only() -> None:
    """Issue 12 item 6: ``no action`` -> the inbox; the score header only (no ``X-Spam``)."""
    verdict = CLIENT.verdict(scan("no action", -0.1, 15.0))
    assert verdict.reply is None and not verdict.junk and verdict.action == "no action"
    assert verdict.headers == b"X-Spam-Score: -0.10 / 15.00\n"


def test_every_action_is_mapped() -> None:
    """Issue 12 item 6: each of rspamd's six actions gets a decision, and exactly the three
    refusing ones get a reply."""
    refused = {action for action in ACTIONS if CLIENT.verdict(scan(action)).reply is not None}
    assert refused == {"reject", "soft reject", "greylist"}


def test_unknown_custom_action_is_junk_not_lost() -> None:
    """Issue 12 item 6: a custom rspamd action (``quarantine``, ``discard``) is never a silent
    loss nor a refusal: the message goes to Junk with the spam headers."""
    verdict = CLIENT.verdict(scan("quarantine"))
    assert verdict.reply is None and verdict.junk and verdict.headers.startswith(b"X-Spam: Yes\n")


def test_reply_texts_carry_nothing_from_the_message() -> None:
    """Issue 12 item 6 / README "bad input": reply texts are fixed, whatever rspamd's scan
    saw (symbols and scores never reach the SMTP client)."""
    texts = {str(CLIENT.verdict(SpamScan(action, 99.0, 15.0, ("EVIL\r\nSYMBOL",))).reply)
             for action in ("reject", "soft reject", "greylist")}
    assert all("EVIL" not in text and "99" not in text for text in texts)


def test_failed_is_open_by_default_and_451_when_closed() -> None:
    """Issue 12 item 6: rspamd down -> deliver unscanned by default (``fail: open``), 451 4.7.1
    with ``fail: closed``; either way the action is "error" for the log line and metric."""
    error = RspamdError("ConnectionRefusedError: refused")
    opened = CLIENT.failed(error)
    assert (opened.reply, opened.junk, opened.headers, opened.action) == (None, False, b"",
                                                                          "error")
    closed = RspamdClient(RspamdConfig(url="http://127.0.0.1:11333", fail_open=False))
    verdict = closed.failed(error)
    assert verdict.reply is not None and verdict.action == "error"
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, "4.7.1")


def test_parse_answer_reads_action_score_threshold_and_sorted_symbols() -> None:
    """rspamd protocol (``/checkv2`` reply): ``action``, ``score``, ``required_score`` and the
    ``symbols`` object, whose names are kept sorted."""
    body = json.dumps({"is_skipped": False, "score": 6.5, "required_score": 15.0,
                       "action": "add header",
                       "symbols": {"ZZ": {"score": 1.0}, "AA": {"score": 5.5}}}).encode()
    assert parse_answer(body) == SpamScan("add header", 6.5, 15.0, ("AA", "ZZ"))


@pytest.mark.parametrize("body", [
    b"<html>not json</html>",
    b"[1, 2]",
    b'{"action": "reject"}',
    b'{"score": 1.0, "required_score": 15.0}',
    b'{"score": "lots", "action": "reject"}',
    b'{"score": 1.0, "action": "reject", "symbols": ["A"]}',
    b"",
])
def test_parse_answer_refuses_malformed_answers(body: bytes) -> None:
    """A reply that is not rspamd's JSON is an RspamdError (handled as rspamd down), never a
    KeyError or TypeError escaping into the session."""
    with pytest.raises(RspamdError):
        parse_answer(body)


def test_missing_threshold_is_written_as_none() -> None:
    """A reply without ``required_score`` still gives a well-formed score header."""
    parsed = parse_answer(b'{"score": 1.5, "action": "no action"}')
    assert math.isnan(parsed.required)
    assert CLIENT.verdict(parsed).headers == b"X-Spam-Score: 1.50 / none\n"


def test_request_headers_follow_the_protocol_and_cannot_be_split() -> None:
    """rspamd protocol request headers: IP, Helo, Hostname, From (``<>`` for the null sender),
    one Rcpt per recipient, Queue-Id, User; a control character a client smuggled into a
    value cannot start a header line of its own."""
    facts = ScanFacts(client_ip="192.0.2.1", helo="evil\r\nUser: admin", sender="",
                      recipients=("a@x.example", "b@x.example"), queue_id="Q1",
                      hostname="mx.x.example", user="alice")
    headers = _request_headers(facts)
    assert [name for name, _ in headers] == ["IP", "Helo", "Hostname", "From", "Rcpt", "Rcpt",
                                             "Queue-Id", "User"]
    assert dict(headers)["From"] == b"<>"
    assert dict(headers)["Helo"] == b"evil??User: admin"
    bare = ScanFacts("192.0.2.1", None, "s@x.example", ("a@x.example",), "Q2")
    assert [name for name, _ in _request_headers(bare)] == ["IP", "From", "Rcpt", "Queue-Id"]
