"""No client can forge a log field or line (docs/logging.md's format): what clients send (a HELO
name, a sender address, a login name) holding `` client=6.6.6.6 ``, quotes, newlines, ESC, C1
controls or U+2028 comes out, in the text format, as one line whose fields are exactly the event's
own, each value quoted and escaped; the JSON format carries the same fields with the same values.
Real SMTP sessions on loopback; the records are formatted by geomail's own formatters."""

from __future__ import annotations

import base64
import json
import logging
import re
import shlex

import pytest

from geomail.log import EVENT_FIELDS, JSONFormatter, KeyValueFormatter
from tests.support.dialog import Dialog

FAKE = " client=6.6.6.6 "
# A quoted local part may hold spaces, '=' and escaped quotes (RFC 5321 4.1.2 Quoted-string).
QUOTED_SENDER = '"x' + FAKE + '\\"y\\" z=1"@remote.example'
# SMTPUTF8 local parts may hold any non-ASCII character (RFC 6531 3.3): C1 CSI and U+2028.
UTF8_SENDER = "\u009b2J" + "a\u2028b\u202e@remote.example"
LOGIN = "u" + FAKE + "\n2026-01-01T00:00:00.000Z WARNING auth-failed client=6.6.6.6 \x1b[2J"
TOKEN = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')
ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(.))")


def unescape(token: str) -> str:
    """A value as the text format writes it, back to the value itself."""
    if not token.startswith('"'):
        return token

    def one(match: re.Match[str]) -> str:
        code = match[1] or match[2] or match[3]
        if code:
            return chr(int(code, 16))
        return {"n": "\n", "r": "\r", "t": "\t"}.get(match[4], match[4])

    return ESCAPE.sub(one, token[1:-1])


def parse_line(line: str) -> tuple[str, str, str, dict[str, str]]:
    """timestamp, level, event and the key=value fields of one text-format line; every
    character of the line must belong to a field (nothing left over that could be a fake)."""
    stamp, level, name, rest = line.split(" ", 3) if line.count(" ") >= 3 else (
        *line.split(" ", 2), "")
    fields: dict[str, str] = {}
    end = 0
    for match in TOKEN.finditer(rest):
        assert match.start() == end, f"stray text in {line!r}"
        assert match[1] not in fields, f"{match[1]} twice in {line!r}"
        fields[match[1]] = unescape(match[2])
        end = match.end()
    assert end == len(rest), f"stray text at the end of {line!r}"
    # The same line read as POSIX shell words gives the same keys (docs/logging.md).
    words = shlex.split(line)
    assert words[:3] == [stamp, level, name]
    assert [w.split("=", 1)[0] for w in words[3:]] == list(fields)
    return stamp, level, name, fields


@pytest.fixture
def app(make_app):
    return make_app(listen={"smtp": ["127.0.0.1:0"], "submission": [
        {"address": "127.0.0.1:0", "allow_plaintext_auth": True}]})


def test_hostile_values_stay_inside_their_fields(app, caplog) -> None:
    """RFC 5321 4.1.2 and RFC 6531 3.3 (what a sender address may hold) /
    RFC 4616 (what a login name may hold): a HELO name, two sender addresses and a login name
    crafted to look like `` client=6.6.6.6 `` and a new log line are logged as values of their
    own fields: each text line parses to exactly the event's fields, with ``client`` the real
    peer, the values come back exactly, no raw newline, ESC, C1 or U+2028 reaches the log;
    the JSON line of every event has the same fields and values."""
    caplog.set_level(logging.DEBUG, logger="geomail")
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.line("EHLO evil" + FAKE + "\x1b[2J\u2028")
        smtp.reply()
        smtp.cmd("EHLO client.example", "250")
        smtp.cmd(f"MAIL FROM:<{QUOTED_SENDER}>", "250 ")
        smtp.cmd("RCPT TO:<nobody@example.com>", "550 ")
        smtp.cmd("RSET", "250 ")
        smtp.cmd(f"MAIL FROM:<{UTF8_SENDER}> SMTPUTF8", "250 ")
        smtp.cmd("RCPT TO:<alice@example.com>", "250 ")
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        smtp.expect("250 ")
    with Dialog(app.ports["submission"][0]) as sub:
        sub.greeting()
        sub.cmd("EHLO client.example", "250")
        plain = base64.b64encode(f"\0{LOGIN}\0wrong".encode()).decode()
        sub.cmd(f"AUTH PLAIN {plain}", "535 ")

    text, as_json = KeyValueFormatter(), JSONFormatter()
    events = [r for r in caplog.records if r.name.startswith("geomail")]
    assert events and all(hasattr(r, EVENT_FIELDS) for r in events), \
        [r.getMessage() for r in events if not hasattr(r, EVENT_FIELDS)]
    parsed = []
    for record in events:
        line = text.format(record)
        assert "\n" not in line and not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202e]",
                                                  line), line
        _, _, name, fields = parse_line(line)
        data = json.loads(as_json.format(record))
        assert (data.pop("event"), data.pop("level")) == (name, record.levelname.lower())
        data.pop("ts")
        assert {k: str(v) for k, v in data.items()} == fields, line
        assert fields.get("client", "127.0.0.1") == "127.0.0.1", line
        parsed.append((name, fields))

    by_name: dict[str, list[dict[str, str]]] = {}
    for name, fields in parsed:
        by_name.setdefault(name, []).append(fields)
    [rejected] = by_name["rejected"]
    assert set(rejected) == {"session", "client", "stage", "from", "to", "reply"}
    assert rejected["from"] == f"<{QUOTED_SENDER}>"
    [accepted] = by_name["accepted"]
    assert accepted["from"] == f"<{UTF8_SENDER}>"
    [failed] = by_name["auth-failed"]
    assert set(failed) == {"client", "user", "reason"} and failed["user"] == LOGIN
    helo = [f["line"] for f in by_name["transcript"] if f["line"].startswith("EHLO evil")]
    assert helo == ["EHLO evil" + FAKE + "\x1b[2J\u2028"]
