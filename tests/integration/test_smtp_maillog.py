"""The operator's mail log (DESIGN rule 6, geomail/maillog.py): one key=value line per connection
event and per message, with the client, session, id, envelope, size and reply."""

from __future__ import annotations

import base64
import logging
import re

import pytest

from geomail.log import KeyValueFormatter
from tests.support import wait_for
from tests.support.dialog import Dialog
from tests.support.geomail import PASSWORD, GeomailProcess
from tests.support.smtp import process_config, send

FORMAT = KeyValueFormatter()


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The mail log as an operator reads it, without the timestamp and level."""
    return [FORMAT.format(r).split(" ", 2)[2] for r in caplog.records if r.name == "geomail.mail"]


def _find(caplog: pytest.LogCaptureFixture, pattern: str) -> re.Match[str]:
    def found() -> re.Match[str] | None:
        return next((m for line in _lines(caplog) if (m := re.fullmatch(pattern, line))), None)

    return wait_for(found, timeout=5, message=f"a mail log line like {pattern!r}")


def test_maillog_for_a_delivery(app, caplog):
    """RFC 5321 4.4 (trace information) / DESIGN rule 6: connect, rejected (with stage, from,
    to and the reply), accepted (with id, from, to, size, route) and disconnect (reason and
    count) are logged with the same session id."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    data = b"Subject: log\r\n\r\nhello\r\n"
    with Dialog(app.ports["smtp"][0]) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd("MAIL FROM:<s@remote.example>", "250 2.1.0")
        smtp.cmd("RCPT TO:<nobody@test.com>", "550 5.1.1")
        smtp.cmd("RCPT TO:<relay@elsewhere.example>", "554 5.7.1")
        smtp.cmd("RCPT TO:<test1@test.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        smtp.send(data + b".\r\n")
        msgid = smtp.expect("250 2.0.0").last.rsplit(" ", 1)[1]
        smtp.cmd("QUIT", "221")
    session = _find(caplog, r"connect session=(\w+) service=smtp client=127\.0\.0\.1")[1]
    _find(caplog, rf"rejected session={session} client=127\.0\.0\.1 stage=rcpt "
                  r"from=<s@remote\.example> to=<nobody@test\.com> "
                  r'reply="550 5\.1\.1 No such user here"')
    _find(caplog, rf"rejected session={session} client=127\.0\.0\.1 stage=rcpt "
                  r"from=<s@remote\.example> to=<relay@elsewhere\.example> "
                  r'reply="554 5\.7\.1 Relay access denied"')
    _find(caplog, rf"accepted id={msgid} session={session} client=127\.0\.0\.1 "
                  rf"from=<s@remote\.example> to=test1@test\.com size={len(data)} route=local")
    _find(caplog, rf"disconnect session={session} client=127\.0\.0\.1 reason=quit messages=1")


def test_maillog_for_submission_and_refusals(make_app, tls_files, client_tls, caplog):
    """RFC 6409 / DESIGN rule 6: a submitted message's accepted line names the user; a refused
    sender is a rejected line at stage mail; a connection over the per-IP limit of port 25 is a
    refused line naming the limit reached (the submission session does not count there: it has
    ``limits.max_user_connections``)."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = make_app(tls={"cert": tls_files["cert"], "key": tls_files["key"]},
                   listen={"smtp": ["127.0.0.1:0"], "submissions": ["127.0.0.1:0"]},
                   limits={"max_connections_per_ip": 1})
    plain = base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode()).decode()
    with Dialog(app.ports["submissions"][0], tls=client_tls) as smtp:
        smtp.greeting()
        smtp.ehlo()
        smtp.cmd(f"AUTH PLAIN {plain}", "235 2.7.0")
        smtp.cmd("MAIL FROM:<bob@example.com>", "553 5.7.1")
        with Dialog(app.ports["smtp"][0]) as holder:
            holder.greeting()
            with Dialog(app.ports["smtp"][0]) as refused:
                refused.expect("421 4.7.0")
        smtp.cmd("MAIL FROM:<alice@example.com>", "250 2.1.0")
        smtp.cmd("RCPT TO:<bob@example.com>", "250 2.1.5")
        smtp.cmd("DATA", "354 ")
        smtp.send(b"Subject: s\r\n\r\nx\r\n.\r\n")
        smtp.expect("250 2.0.0")
    _find(caplog, r"rejected session=\w+ client=127\.0\.0\.1 stage=mail from=<bob@example\.com> "
                  r'reply="553 5\.7\.1 Sender address not owned by the authenticated user"')
    _find(caplog, r"refused service=smtp client=127\.0\.0\.1 reason=too-many-from-ip "
                  r"limit=limits\.max_connections_per_ip")
    _find(caplog, r"accepted id=\w+ session=\w+ client=127\.0\.0\.1 from=<alice@example\.com> "
                  r"to=bob@example\.com size=\d+ route=local user=alice@example\.com")


def test_maillog_in_the_process_log(tmp_path):
    """DESIGN rule 6 (logs a person can grep): ``geomail serve`` writes the same lines to
    stderr, with a timestamp and level."""
    server = GeomailProcess(process_config(tmp_path)).start()
    try:
        code, _ = send(server.port(), "s@remote.example", ["test1@test.com"],
                       b"Subject: p\r\n\r\nx\r\n")
        assert code == 250
    finally:
        assert server.stop() == 0
    log = server.log()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO "
    assert re.search(stamp + r"connect session=\w+ service=smtp client=127\.0\.0\.1\n", log)
    assert re.search(stamp + r"accepted id=\w+ session=\w+ client=127\.0\.0\.1 "
                             r"from=<s@remote\.example> to=test1@test\.com size=\d+ route=local\n",
                     log)
    assert re.search(stamp + r"disconnect session=\w+ client=127\.0\.0\.1 reason=quit "
                             r"messages=1\n", log)
