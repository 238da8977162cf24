"""A real IMAP client from Debian (fetchmail) against geomail on 127.0.0.1: it downloads every
message over STARTTLS (RFC 9051 6.2.1) or implicit TLS (RFC 8314 3.1) checked against the test
CA, deletes them when asked (STORE \\Deleted and EXPUNGE, RFC 9051 6.4.6, 6.4.3), and what it
stored matches what geomail holds, apart from the trace field fetchmail adds."""

from __future__ import annotations

import imaplib
from typing import Any

import pytest

from tests.support.fetchmail import fetchmail, without_field
from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE, make_message, send

pytest_plugins = ["tests.support.pop3_fixtures"]

COUNT = 3


@pytest.fixture
def imap_app(make_app, pop3_tls: dict[str, str]) -> Any:
    """smtp, imap (STARTTLS required) and imaps over the Maildir store."""
    return make_app(tls={"cert": pop3_tls["cert"], "key": pop3_tls["key"]},
                    listen={"smtp": ["127.0.0.1:0"], "imap": ["127.0.0.1:0"],
                            "imaps": ["127.0.0.1:0"]})


def inbox(app: Any, context: Any) -> list[bytes]:
    """The INBOX's messages as imaplib fetches them (CRLF)."""
    imap = imaplib.IMAP4_SSL("127.0.0.1", app.ports["imaps"][0], ssl_context=context,
                             timeout=10)
    imap.login(ALICE, PASSWORD)
    _, [count] = imap.select("INBOX", readonly=True)
    found = []
    if int(count):
        _, data = imap.fetch(f"1:{int(count)}", "(BODY.PEEK[])")
        found = [item[1] for item in data if isinstance(item, tuple)]
    imap.logout()
    return sorted(found)


@pytest.mark.parametrize("mode", ["imaps-keep", "starttls-delete"])
def test_fetchmail(tmp_path, imap_app, pop3_tls, pop3_client_tls, mode):
    """fetchmail over implicit TLS keeping the mail, and over STARTTLS deleting it: every
    message arrives, equal to the stored one but for fetchmail's Received field."""
    for n in range(1, COUNT + 1):
        send(imap_app.ports["smtp"][0], make_message(n))
    stored = inbox(imap_app, pop3_client_tls)
    assert len(stored) == COUNT
    if mode == "imaps-keep":
        fetched, log = fetchmail(tmp_path, "IMAP", imap_app.ports["imaps"][0], pop3_tls,
                                 'ssl sslproto "TLS1.2+"', keep=True)
    else:
        fetched, log = fetchmail(tmp_path, "IMAP", imap_app.ports["imap"][0], pop3_tls,
                                 'sslproto "TLS1.2+"', keep=False)
        assert "STARTTLS" in log
    assert sorted(without_field(m, b"(fetchmail-").replace(b"\n", b"\r\n")
                  for m in fetched) == stored, log
    assert len(inbox(imap_app, pop3_client_tls)) == (COUNT if mode == "imaps-keep" else 0)
