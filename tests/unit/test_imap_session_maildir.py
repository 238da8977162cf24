"""The IMAP session (geomail/proto/imap.py) over the real Maildir folder store
(geomail/store/imap_maildir.py) on a temporary directory: the MailStore boundary, both sides
real."""

from __future__ import annotations

from pathlib import Path

from geomail.store.imap_maildir import MaildirMailStore
from tests.support.imap_memory import Driver

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n")


def test_append_select_fetch_store_move_expunge(tmp_path: Path) -> None:
    """RFC 9051 6.3.12 APPEND, 6.3.2 SELECT, 6.4.5 FETCH, 6.4.6 STORE, 6.4.8 MOVE (RFC 4315
    COPYUID), 6.4.3 EXPUNGE, 7.4.1 EXISTS at NOOP, over Maildir++ folders."""
    store = MaildirMailStore(str(tmp_path), "host")
    d = Driver(store)  # type: ignore[arg-type]
    d.login()
    literal = b"{%d+}\r\n" % len(MESSAGE) + MESSAGE
    assert d.send(b"a APPEND INBOX (\\Seen) " + literal + b"\r\n").startswith(
        b"a OK [APPENDUID ")
    reply = d.send(b"b SELECT INBOX\r\n")
    assert b"* 1 EXISTS\r\n" in reply and reply.endswith(b"[READ-WRITE] SELECT completed\r\n")
    reply = d.send(b"c FETCH 1 (UID FLAGS RFC822.SIZE BODY.PEEK[1] BODYSTRUCTURE)\r\n")
    assert b"* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE %d BODY[1] {5}\r\nhello " % len(
        MESSAGE) in reply
    assert b'"MIXED" ("BOUNDARY" "b") NIL NIL NIL))' in reply
    assert d.send(b"d STORE 1 +FLAGS (\\Flagged)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Seen))\r\nd OK STORE completed\r\n")
    store.append("INBOX", MESSAGE, frozenset(), None)  # another session delivers
    assert d.send(b"e NOOP\r\n") == b"* 2 EXISTS\r\ne OK NOOP completed\r\n"
    d.send(b"x CREATE Archive\r\n")  # or it exists already (the store's special-use folders)
    reply = d.send(b"f MOVE 1 Archive\r\n")
    assert b"[COPYUID " in reply and b"* 1 EXPUNGE\r\n" in reply
    assert d.send(b"g STATUS Archive (MESSAGES)\r\n").startswith(
        b'* STATUS "Archive" (MESSAGES 1)')
    d.send(b"h STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert d.send(b"i EXPUNGE\r\n") == b"* 1 EXPUNGE\r\ni OK EXPUNGE completed\r\n"
    assert d.send(b"j SEARCH ALL\r\n") == b"* SEARCH\r\nj OK SEARCH completed\r\n"
