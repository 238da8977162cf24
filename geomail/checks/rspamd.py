"""rspamd as the spam filter (issue 12 item 6): each message goes to rspamd's normal worker,
``POST /checkv2`` with the envelope in request headers, and rspamd's action becomes a
refusal, headers or the Junk folder. Protocol: https://rspamd.com/doc/developers/protocol.html

The client is the standard library's ``http.client``: under gevent's monkey-patching its
socket waits are cooperative, so a slow rspamd never blocks the hub.
"""

from __future__ import annotations

import http.client
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent

from geomail.config.objects import RspamdConfig
from geomail.errors import ConfigError, GeomailError
from geomail.proto.reply import Reply

MAX_ANSWER = 1 << 20  # octets of rspamd's JSON answer read at most (a few KiB in practice)

ACTIONS = ("no action", "greylist", "add header", "rewrite subject", "soft reject", "reject")
HEADER_NAMES = ("X-Spam", "X-Spam-Score")  # the headers a verdict adds: remove any the
# message already carries before prepending ours, as rspamd's own milter does

# Fixed texts: nothing the client sent, nor rspamd's per-message messages, goes into a reply.
R554_SPAM = Reply(554, "5.7.1", "Message refused as spam")
R451_SPAM_DEFERRED = Reply(451, "4.7.1", "Message deferred by the spam filter, try again later")
R451_SPAM_GREYLISTED = Reply(451, "4.7.1", "Greylisted, try again later")
R451_SPAM_UNAVAILABLE = Reply(451, "4.7.1", "Spam filter unavailable, try again later")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RspamdError(GeomailError):
    """rspamd could not be asked or gave no usable answer; the text is a short reason."""


@dataclass(frozen=True, slots=True)
class ScanFacts:
    """What rspamd is told besides the message (the protocol's request headers)."""

    client_ip: str
    helo: str | None
    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    queue_id: str
    hostname: str | None = None  # the client's verified (forward-confirmed) rDNS name, if any
    user: str | None = None  # the authenticated user, if any


@dataclass(frozen=True, slots=True)
class SpamScan:
    """rspamd's answer: its action, the score, the reject threshold and the symbols hit."""

    action: str  # one of ACTIONS, or a custom action name rspamd was configured with
    score: float
    required: float
    symbols: tuple[str, ...]  # sorted


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    """What to do with the message."""

    reply: Reply | None  # refuse with this; None: accept
    junk: bool  # deliver to the Junk folder
    headers: bytes  # header lines to prepend (LF endings)
    action: str  # for logs and metrics: rspamd's action, or "error" when rspamd failed


class RspamdClient:
    """Asks one rspamd normal worker; one HTTP connection per message (rspamd is local)."""

    def __init__(self, config: RspamdConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"spam.rspamd.url: expected an http:// or https:// URL, "
                              f"got {config.url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/checkv2"

    # -------------------------------------------------------------- scanning

    def scan(self, message: Iterable[bytes], size: int, facts: ScanFacts) -> SpamScan:
        """Send the message (``size`` octets, streamed chunk by chunk) and parse the answer.

        The whole exchange is bounded by ``config.timeout``; a refused connection, a timeout,
        an HTTP status other than 200 or an answer that is not rspamd's JSON raises
        :class:`RspamdError`.
        """
        timeout = self.config.timeout
        timer = gevent.Timeout(timeout)
        timer.start()
        connection = None
        try:
            connection = self._connection(timeout)
            return self._exchange(connection, message, size, facts)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise RspamdError(f"no answer within {timeout:g}s") from None
        except TimeoutError:
            raise RspamdError(f"no answer within {timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RspamdError(_reason(exc)) from None
        finally:
            timer.cancel()
            if connection is not None:
                connection.close()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        # The socket timeout bounds each wait even where no gevent timer can fire.
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _exchange(self, connection: http.client.HTTPConnection, message: Iterable[bytes],
                  size: int, facts: ScanFacts) -> SpamScan:
        connection.putrequest("POST", self._path, skip_accept_encoding=True)
        for name, value in _request_headers(facts):
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        sent = 0
        for chunk in message:
            connection.send(chunk)
            sent += len(chunk)
        if sent != size:
            raise RspamdError(f"message has {sent} octets, not the {size} announced")
        response = connection.getresponse()
        body = response.read(MAX_ANSWER + 1)
        if response.status != 200:
            raise RspamdError(f"HTTP status {response.status}")
        if len(body) > MAX_ANSWER:
            raise RspamdError("answer too large")
        return parse_answer(body)

    # -------------------------------------------------------------- decisions

    def verdict(self, scan: SpamScan) -> SpamVerdict:
        """rspamd's action as geomail's decision (issue 12 item 6).

        ``reject``: 554 5.7.1. ``soft reject`` and ``greylist``: 451 4.7.1 (rspamd's greylist
        module, which needs redis, downgrades a retry that passed to "no action").
        ``add header`` and ``rewrite subject``: delivered to the Junk folder with
        ``X-Spam: Yes`` and the score (the subject is not rewritten: the folder says it).
        ``no action``: delivered to the inbox with ``X-Spam-Score`` only, so every scanned
        message shows how far it was from the thresholds (for the user's own filters and
        for tuning rspamd) while ``X-Spam: Yes`` marks only what rspamd called spam.
        A custom action (e.g. ``quarantine``, ``discard``) is never a silent loss: the
        message goes to the Junk folder like ``add header``.
        """
        score = f"X-Spam-Score: {_number(scan.score)} / {_number(scan.required)}\n".encode()
        action = scan.action
        if action == "reject":
            return SpamVerdict(R554_SPAM, False, b"", action)
        if action == "soft reject":
            return SpamVerdict(R451_SPAM_DEFERRED, False, b"", action)
        if action == "greylist":
            return SpamVerdict(R451_SPAM_GREYLISTED, False, b"", action)
        if action == "no action":
            return SpamVerdict(None, False, score, action)
        return SpamVerdict(None, True, b"X-Spam: Yes\n" + score, action)

    def failed(self, error: RspamdError) -> SpamVerdict:
        """rspamd could not be asked: accept as if unscanned (``fail: open``, the default) or
        refuse with 451 4.7.1 so the sender retries later (``fail: closed``)."""
        if self.config.fail_open:
            return SpamVerdict(None, False, b"", "error")
        return SpamVerdict(R451_SPAM_UNAVAILABLE, False, b"", "error")


def parse_answer(body: bytes) -> SpamScan:
    """rspamd's ``/checkv2`` JSON answer as a :class:`SpamScan`; RspamdError if malformed."""
    try:
        answer: Any = json.loads(body)
    except ValueError:
        raise RspamdError("answer is not JSON") from None
    if not isinstance(answer, dict):
        raise RspamdError("answer is not a JSON object")
    action = answer.get("action")
    symbols = answer.get("symbols", {})
    try:
        score = float(answer["score"])
        required = float(answer.get("required_score", math.nan))
    except (KeyError, TypeError, ValueError):
        raise RspamdError("answer has no numeric score") from None
    if not isinstance(action, str) or not action or not isinstance(symbols, dict):
        raise RspamdError("answer has no action")
    return SpamScan(action, score, required, tuple(sorted(str(name) for name in symbols)))


def _request_headers(facts: ScanFacts) -> list[tuple[str, bytes]]:
    """The protocol's request headers. Without a verified ``Hostname`` rspamd looks the
    client's PTR up itself (and scores a missing one); ``From: <>`` is the null sender."""
    headers = [("IP", facts.client_ip)]
    if facts.helo:
        headers.append(("Helo", facts.helo))
    if facts.hostname:
        headers.append(("Hostname", facts.hostname))
    headers.append(("From", facts.sender or "<>"))
    headers.extend(("Rcpt", recipient) for recipient in facts.recipients)
    headers.append(("Queue-Id", facts.queue_id))
    if facts.user:
        headers.append(("User", facts.user))
    # Values came from the SMTP client: never let one break the request's header section.
    return [(name, _CONTROL.sub("?", value).encode("utf-8", "replace"))
            for name, value in headers]


def _number(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "none"


def _reason(error: BaseException) -> str:
    """A short reason for logs: the error's class and first line, no traceback."""
    text = str(error).splitlines()[0] if str(error) else ""
    name = type(error).__name__
    return f"{name}: {text}"[:200] if text else name
