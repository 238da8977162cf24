"""Fuzzing the IMAP session (geomail/proto/imap.py): whatever a client sends, in any state,
the session answers without raising (RFC 9051 7.1.5: malformed input gets BAD)."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from geomail.proto.imap_parser import ReaderLimits
from tests.fuzz.mutations import mutated
from tests.support.imap_memory import Driver, MemoryStore

MESSAGE = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: s\r\n"
           b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
           b"Content-Type: text/plain\r\n\r\nhello\r\n--x--\r\n")
SEEDS = [
    b"a CAPABILITY\r\n", b"a NOOP\r\n", b"a SELECT INBOX\r\n", b"a EXAMINE Sent (CONDSTORE)\r\n",
    b"a ENABLE IMAP4rev2 CONDSTORE\r\n", b"a CREATE Work/x\r\n", b"a RENAME Work W2\r\n",
    b"a DELETE Sent\r\n", b'a LIST "" *\r\n', b'a LIST (SPECIAL-USE) "" % RETURN (STATUS '
    b"(MESSAGES))\r\n", b'a LSUB "" *\r\n', b"a STATUS INBOX (MESSAGES UNSEEN SIZE)\r\n",
    b"a APPEND INBOX (\\Seen) {5+}\r\nhello\r\n", b"a APPEND INBOX {5}\r\nhello\r\n",
    b"a FETCH 1:* (FLAGS BODY[1.MIME] BODYSTRUCTURE ENVELOPE BINARY[1]<0.3> BINARY.SIZE[1])\r\n",
    b"a UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM)] RFC822.SIZE) (CHANGEDSINCE 1)\r\n",
    b"a STORE 1:* +FLAGS (\\Deleted)\r\n", b"a UID STORE 2 (UNCHANGEDSINCE 1) FLAGS (x)\r\n",
    b"a SEARCH RETURN (SAVE MIN) OR FROM a TEXT hello\r\n", b"a UID SEARCH $ NOT SEEN\r\n",
    b"a COPY 1 Sent\r\n", b"a UID MOVE 1:* Sent\r\n", b"a EXPUNGE\r\n", b"a UID EXPUNGE 1\r\n",
    b"a IDLE\r\nDONE\r\n", b"a CLOSE\r\n", b"a UNSELECT\r\n", b"a LOGOUT\r\n", b"a CHECK\r\n",
    b"a AUTHENTICATE PLAIN\r\n" + base64.b64encode(b"\0alice\0secret") + b"\r\n",
    b"a STARTTLS\r\n", b'a ID ("name" "x")\r\n', b"a NAMESPACE\r\n",
    b"a ENABLE QRESYNC\r\n", b"a SELECT INBOX (QRESYNC (1000 2 1:9 (1,2 1,3)))\r\n",
    b"a UID FETCH 1:*,7:4294967295 FLAGS (CHANGEDSINCE 1 VANISHED)\r\n",
]
LINES = st.lists(st.one_of(mutated(SEEDS), st.binary(max_size=80)), max_size=8)


def make() -> Driver:
    store = MemoryStore()
    store.create("Sent", frozenset({"\\Sent"}))
    store.add("INBOX", MESSAGE, ["\\Seen"])
    store.add("INBOX", MESSAGE)
    store.add("INBOX", b"From: J\xc3\xb6rg <j@b\xc3\xbc.example>\r\nSubject: \xff\r\n"
              b"Content-Type: text/plain; charset=bogus\r\n\r\n\xc3\xbc\x80\r\n", ["x"])
    return Driver(store, tls_available=True, max_bad_commands=1000,
                  limits=ReaderLimits(max_line=300, max_literal=100, max_message=300))


@given(LINES, st.sampled_from(["none", "login", "select"]))
def test_session_never_raises(lines: list[bytes], start: str) -> None:
    """RFC 9051 7.1.5: any input, in any state, gets responses (BAD for junk), never an
    exception; IDLE change polls interleave."""
    d = make()
    if start != "none":
        d.login()
    if start == "select":
        d.send(b"s SELECT INBOX\r\n")
    for line in lines:
        d.send(line)
        d.changed()
    d.send(b"")
