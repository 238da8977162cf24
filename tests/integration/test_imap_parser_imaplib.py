"""The IMAP command reader and parser (geomail/proto/imap_parser.py) fed by a real client:
Python's imaplib on 127.0.0.1 against a minimal responder that answers every command ``OK``
(no IMAP server exists yet, issue #14). Checks the framing of a real client's commands
(quoting, synchronizing literals waiting for ``+``, AUTHENTICATE continuations) and the
parsed result (RFC 9051 4.3, 6, 9)."""

from __future__ import annotations

import base64
import imaplib
import socket
from collections.abc import Iterator

import gevent
import pytest

from geomail.proto.imap_parser import (
    CommandReader,
    CommandReady,
    LineReady,
    LiteralRequest,
    ParseError,
    parse_command,
)
from geomail.proto.imap_types import (
    Append,
    Authenticate,
    Command,
    CopyMove,
    Enable,
    Expunge,
    Fetch,
    FetchAttribute,
    List,
    Login,
    MailboxCommand,
    NoArguments,
    Rename,
    Search,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchOr,
    Section,
    Select,
    SequenceSet,
    Status,
    Store,
)

CAPS = b"IMAP4rev1 ENABLE CONDSTORE MOVE UNSELECT NAMESPACE AUTH=PLAIN"


def _serve(listener: socket.socket, seen: list[Command | str]) -> None:
    """Answer each connection's commands OK; record what was parsed."""
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"* OK responder ready\r\n")
            reader = CommandReader()
            pending: Command | None = None
            while data := conn.recv(65536):
                reader.feed(data)
                while (event := reader.next_event()) is not None:
                    if isinstance(event, LiteralRequest):
                        conn.sendall(b"+ go ahead\r\n")
                        reader.accept()
                    elif isinstance(event, LineReady) and pending is not None:
                        seen.append(f"response {base64.b64decode(event.data)!r}")
                        conn.sendall(pending.tag.encode() + b" OK done\r\n")
                        pending = None
                    elif isinstance(event, CommandReady):
                        try:
                            command = parse_command(event.data)
                        except ParseError as error:
                            seen.append(f"BAD {error.reason}")
                            conn.sendall(f"{error.tag or '*'} BAD {error.reason}\r\n".encode())
                            continue
                        seen.append(command)
                        if command.name == "CAPABILITY":
                            conn.sendall(b"* CAPABILITY " + CAPS + b"\r\n")
                        if command.name == "AUTHENTICATE":
                            pending = command
                            conn.sendall(b"+ \r\n")
                            reader.expect_line()
                            continue
                        if command.name == "LOGOUT":
                            conn.sendall(b"* BYE bye\r\n")
                        conn.sendall(command.tag.encode() + b" OK done\r\n")


@pytest.fixture
def responder() -> Iterator[tuple[int, list[Command | str]]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    seen: list[Command | str] = []
    server = gevent.spawn(_serve, listener, seen)
    try:
        yield listener.getsockname()[1], seen
    finally:
        server.kill()
        listener.close()


def _arguments(seen: list[Command | str]) -> list[object]:
    return [item.arguments if isinstance(item, Command) and item.name != "CAPABILITY" else item
            for item in seen if not (isinstance(item, Command) and item.name == "CAPABILITY")]


def test_imaplib_session(responder: tuple[int, list[Command | str]]) -> None:
    """RFC 9051 6.2.3 (LOGIN with quoted specials), 6.3 (mailbox commands), 6.3.12 (APPEND with
    a synchronizing literal: imaplib waits for ``+``), 6.4 (FETCH, STORE, SEARCH, COPY, MOVE and
    their UID forms), RFC 5161 (ENABLE), as imaplib sends them."""
    port, seen = responder
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.login("fred", 'p"a\\ss word')
    client.enable("CONDSTORE")
    client.create("Archive/2024")
    client.rename("Archive/2024", "Old")
    client.status("INBOX", "(MESSAGES UIDNEXT)")
    client.list('""', "*")
    client.append("Drafts", "(\\Seen)", '"07-Feb-1994 21:52:25 -0800"',
                  b"From: a@example.org\r\n\r\nhi\r\n")
    client.select("inbox")
    client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])")
    client.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
    client.store("1,3", "+FLAGS", "(\\Deleted)")
    client.search(None, "OR", "SEEN", "FLAGGED", "SINCE", "1-Jan-2024")
    client.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", '"hi there"')
    client.uid("COPY", "1:3", "Archive")
    client.uid("MOVE", "4", "Trash")
    client.expunge()
    client.close()
    client.delete("Old")
    client.logout()
    got = _arguments(seen)
    assert got[0] == Login("fred", 'p"a\\ss word')
    assert got[1:8] == [
        Enable(("CONDSTORE",)),
        MailboxCommand("Archive/2024"),
        Rename("Archive/2024", "Old"),
        Status("INBOX", ("MESSAGES", "UIDNEXT")),
        List("", ("*",)),
        Append("Drafts", b"From: a@example.org\r\n\r\nhi\r\n", ("\\Seen",),
               got[6].date if isinstance(got[6], Append) else None),
        Select("INBOX"),
    ]
    assert isinstance(got[6], Append) and got[6].date is not None
    assert got[6].date.isoformat() == "1994-02-07T21:52:25-08:00"
    assert got[8] == Fetch(SequenceSet(((1, None),)), (
        FetchAttribute("FLAGS"), FetchAttribute("BODY", Section((), "HEADER.FIELDS", ("FROM",)),
                                                peek=True)))
    assert got[9] == Fetch(SequenceSet(((1, None),)), (FetchAttribute("UID"),
                                                       FetchAttribute("RFC822.SIZE")))
    assert got[10] == Store(SequenceSet(((1, 1), (3, 3))), "+", False, ("\\Deleted",))
    assert isinstance(got[11], Search) and got[11].key == SearchAnd((
        SearchOr(SearchFlag("\\Seen"), SearchFlag("\\Flagged")),
        SearchDate("since", got[11].key.keys[1].date)))  # type: ignore[union-attr]
    assert got[12] == Search(SearchHeader("SUBJECT", "hi there"), "UTF-8")
    assert got[13:15] == [CopyMove(SequenceSet(((1, 3),)), "Archive"),
                          CopyMove(SequenceSet(((4, 4),)), "Trash")]
    assert got[15:] == [Expunge(), NoArguments(), MailboxCommand("Old"), NoArguments()]


def test_imaplib_authenticate(responder: tuple[int, list[Command | str]]) -> None:
    """RFC 9051 6.2.2: AUTHENTICATE without an initial response gets ``+``, then the client's
    base64 response arrives as a raw line (``expect_line``)."""
    port, seen = responder
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.authenticate("PLAIN", lambda _challenge: b"\0fred\0secret")
    client.logout()
    got = _arguments(seen)
    assert got[:2] == [Authenticate("PLAIN"), "response b'\\x00fred\\x00secret'"]
