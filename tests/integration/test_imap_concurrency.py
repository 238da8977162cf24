"""Several sessions on one mailbox at once (RFC 9051 5.2, 7.5.1): two to four IMAP clients,
a POP3 session and SMTP deliveries on alice's INBOX, over real sockets against an in-process
geomail. Every untagged response the IMAP clients get is applied to a client-side model of
the mailbox (``Mailbox``): EXISTS may only grow the count (RFC 9051 7.3.1), EXPUNGE names a
current sequence number (7.4.1), VANISHED names UIDs (RFC 7162 3.2.10), a FETCH naming a
UID must name the UID that sequence number holds (7.5.2); at the end the model must equal
what ``FETCH 1:* (UID FLAGS)`` says, and that must equal the Maildir on disk.

The raw client reads responses line by line with their literals (RFC 9051 4.3), so a test
sees exactly which untagged responses came before which tagged one; waits have deadlines
(socket timeouts), never sleeps."""

from __future__ import annotations

import os
import poplib
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import pytest

from geomail.store.imap_uids import UidMap
from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE, make_message, send

TIMEOUT = 10.0
LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
FETCH = re.compile(rb"^\* (\d+) FETCH \((.*)\)$", re.S)
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                 "S": "\\Seen", "T": "\\Deleted"}


@pytest.fixture
def imap_app(make_app: Callable[..., Any]) -> Any:
    """smtp, imap (plaintext login on loopback) and pop3 over one Maildir store."""
    return make_app(listen={"smtp": ["127.0.0.1:0"],
                            "imap": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}],
                            "pop3": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]})


# ---- a client that sees every response ---------------------------------------------------------

@dataclass
class Mailbox:
    """What a client knows of its selected mailbox, from the untagged responses alone."""

    uids: list[int | None] = field(default_factory=list)  # sequence order; None: not seen yet
    flags: list[frozenset[str] | None] = field(default_factory=list)  # the same order
    modseqs: dict[int, int] = field(default_factory=dict)

    def flags_of(self, uid: int) -> frozenset[str] | None:
        return self.flags[self.uids.index(uid)] if uid in self.uids else None

    def apply(self, response: bytes) -> None:
        if m := re.fullmatch(rb"\* (\d+) EXISTS", response):
            count = int(m[1])
            assert count >= len(self.uids), f"EXISTS went down without EXPUNGE: {response!r}"
            self.uids.extend([None] * (count - len(self.uids)))
            self.flags.extend([None] * (count - len(self.flags)))
        elif m := re.fullmatch(rb"\* (\d+) EXPUNGE", response):
            seq = int(m[1])
            assert 1 <= seq <= len(self.uids), f"EXPUNGE of no message: {response!r}"
            del self.uids[seq - 1], self.flags[seq - 1]
        elif m := re.fullmatch(rb"\* VANISHED ([0-9:,]+)", response):
            for uid in uid_set(m[1]):
                assert uid in self.uids, f"VANISHED of a UID never seen: {response!r}"
                index = self.uids.index(uid)
                del self.uids[index], self.flags[index]
        elif m := FETCH.fullmatch(response):
            seq = int(m[1])
            assert 1 <= seq <= len(self.uids), f"FETCH of no message: {response!r}"
            items = m[2]
            if u := re.search(rb"(?:^| )UID (\d+)", items):
                uid = int(u[1])
                known = self.uids[seq - 1]
                assert known in (None, uid), f"seq {seq} is UID {known}: {response!r}"
                self.uids[seq - 1] = uid
            if f := re.search(rb"(?:^| )FLAGS \(([^)]*)\)", items):
                self.flags[seq - 1] = frozenset(f[1].decode().split())
            uid_now = self.uids[seq - 1]
            if (s := re.search(rb"MODSEQ \((\d+)\)", items)) and uid_now is not None:
                self.modseqs[uid_now] = int(s[1])

    def state(self) -> list[tuple[int | None, frozenset[str] | None]]:
        return list(zip(self.uids, self.flags, strict=True))


def uid_set(text: bytes) -> list[int]:
    result: list[int] = []
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        result.extend(range(int(low), int(high or low) + 1))
    return result


class Client:
    """A raw IMAP client: responses with their literals cut out (``text``) and kept apart."""

    def __init__(self, port: int, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.reader = self.sock.makefile("rb")
        self.name = name
        self.tags = 0
        self.box = Mailbox()
        self.literals: list[bytes] = []
        greeting = self.read()
        assert greeting.startswith(b"* OK"), greeting

    def read(self, timeout: float = TIMEOUT) -> bytes:
        """One whole response; a literal ``{n}`` becomes ``{n}`` in the text and its octets
        go to ``self.literals``. The deadline is the socket's timeout."""
        self.sock.settimeout(timeout)
        text = b""
        while True:
            line = self.reader.readline()
            assert line.endswith(b"\r\n"), f"{self.name}: connection ended: {text + line!r}"
            literal = LITERAL.search(line)
            if literal is None:
                return text + line[:-2]
            size = int(literal[1])
            data = self.reader.read(size)
            assert len(data) == size
            self.literals.append(data)
            text += line[:literal.start()] + b"{" + literal[1] + b"}"

    def send(self, command: str) -> str:
        self.tags += 1
        tag = f"{self.name}{self.tags}"
        self.sock.sendall(f"{tag} {command}\r\n".encode())
        return tag

    def run(self, command: str, status: str = "OK") -> tuple[list[bytes], bytes]:
        """Send ``command``; its untagged responses (applied to the model) and tagged one."""
        if command.split()[0] in ("SELECT", "EXAMINE"):
            self.box = Mailbox()
        tag = self.send(command)
        untagged = []
        while not (response := self.read()).startswith(tag.encode() + b" "):
            assert response.startswith(b"* "), response
            untagged.append(response)
            self.box.apply(response)
        assert response.split(b" ")[1] == status.encode(), (command, response)
        return untagged, response

    def login_select(self, enable: str = "") -> None:
        self.run(f'LOGIN {ALICE} "{PASSWORD}"')
        if enable:
            untagged, _ = self.run(f"ENABLE {enable}")
            assert untagged == [f"* ENABLED {enable}".encode()]
        self.run("SELECT INBOX")

    def idle(self) -> None:
        self.idle_tag = self.send("IDLE")
        assert self.read().startswith(b"+ ")

    def until(self, done: Callable[[], bool], deadline: float = TIMEOUT) -> list[bytes]:
        """During IDLE: untagged responses until ``done()`` holds for the model."""
        seen: list[bytes] = []
        end = time.monotonic() + deadline
        while not done():
            remaining = end - time.monotonic()
            assert remaining > 0, f"{self.name}: not reached; had {seen!r}"
            response = self.read(remaining)
            assert response.startswith(b"* "), response
            seen.append(response)
            self.box.apply(response)
        return seen

    def done(self) -> list[bytes]:
        self.sock.sendall(b"DONE\r\n")
        untagged = []
        while not (response := self.read()).startswith(self.idle_tag.encode() + b" "):
            untagged.append(response)
            self.box.apply(response)
        assert response.startswith(self.idle_tag.encode() + b" OK"), response
        return untagged

    def check_quiet(self) -> None:
        """Nothing more is pending on the wire (a NOOP answers with nothing untagged)."""
        untagged, _ = self.run("NOOP")
        assert untagged == [], f"{self.name}: {untagged!r}"

    def learn(self) -> None:
        """``FETCH 1:* (UID FLAGS)`` applied to the model: every UID and flag known."""
        if self.box.uids:
            self.run("FETCH 1:* (UID FLAGS)")

    def learn_new(self) -> None:
        """``FETCH (UID FLAGS)`` of the messages known only from EXISTS, applied to the
        model; what the model knew already stays as the notifications made it."""
        unknown = [str(seq) for seq, uid in enumerate(self.box.uids, start=1) if uid is None]
        if unknown:
            self.run(f"FETCH {','.join(unknown)} (UID FLAGS)")

    def server_state(self) -> list[tuple[int | None, frozenset[str] | None]]:
        """``FETCH 1:* (UID FLAGS)`` (an empty list when empty), not applied to the model."""
        if not self.box.uids:
            return []
        tag = self.send("FETCH 1:* (UID FLAGS)")
        result = []
        while not (response := self.read()).startswith(tag.encode() + b" "):
            m = FETCH.fullmatch(response)
            assert m, response
            uid = re.search(rb"UID (\d+)", m[2])
            flags = re.search(rb"FLAGS \(([^)]*)\)", m[2])
            assert uid and flags, response
            assert int(m[1]) == len(result) + 1
            result.append((int(uid[1]), frozenset(flags[1].decode().split())))
        assert response.split(b" ")[1] == b"OK", response
        return result

    def close(self) -> None:
        self.run("LOGOUT")
        self.reader.close()
        self.sock.close()


def deliver(app: Any, numbers: Iterable[int]) -> None:
    for n in numbers:
        send(app.ports["smtp"][0], make_message(n))


def clients(app: Any, *names: str, enable: dict[str, str] | None = None) -> list[Client]:
    result = []
    for name in names:
        client = Client(app.ports["imap"][0], name)
        client.login_select((enable or {}).get(name, ""))
        result.append(client)
    return result


def maildir_state(app: Any) -> list[tuple[int, frozenset[str]]]:
    """The INBOX as the files say: (UID from dovecot-uidlist, flags from the info)."""
    root = Path(app.imap_access.maildir_of(ALICE))
    uidlist = UidMap(str(root)).load()
    assert uidlist is not None
    files = {name.partition(":")[0]: name.partition(":2,")[2]
             for sub in ("new", "cur") for name in os.listdir(root / sub)}
    assert set(files) == set(uidlist.records), "files and dovecot-uidlist disagree"
    result = [(uidlist.records[base].uid,
               frozenset(MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS))
              for base, info in files.items()]
    return sorted(result)


def message_id(client: Client, seq: int) -> bytes:
    client.run(f"FETCH {seq} (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    return client.literals[-1].strip()


# ---- the scenarios -----------------------------------------------------------------------------

def test_delivery_reaches_idle_at_once_and_noop_later(imap_app):
    """RFC 9051 7.3.1 EXISTS and 6.3.13 IDLE (RFC 2177): three SMTP deliveries reach an idling
    client as untagged EXISTS without a command (the count only grows, to 3); a selected
    client that does not idle hears of them at its next NOOP (RFC 9051 6.1.2, 7.5.1), as one
    ``* 3 EXISTS``. A message delivered between two IDLEs is reported as the second starts;
    one APPENDed by B is reported to A during IDLE and to B in its APPEND response."""
    a, b = clients(imap_app, "a", "b")
    a.idle()
    deliver(imap_app, range(1, 4))
    a.until(lambda: len(a.box.uids) == 3)
    untagged, _ = b.run("NOOP")
    assert untagged == [b"* 3 EXISTS"]
    assert a.done() == []
    assert a.server_state() == b.server_state() == [(1, frozenset()), (2, frozenset()),
                                                      (3, frozenset())]
    deliver(imap_app, [4])  # between two IDLEs: the next one reports it at once
    a.idle()
    assert a.until(lambda: len(a.box.uids) == 4) == [b"* 4 EXISTS"]
    # an APPEND to the selected mailbox: EXISTS in its own response too (RFC 9051 6.3.12)
    b.sock.sendall(b"b9 APPEND INBOX {18+}\r\nSubject: x\r\n\r\nhi\r\n\r\n")
    assert b.read() == b"* 5 EXISTS"  # the delivery and its own message at once
    assert b.read().startswith(b"b9 OK [APPENDUID ")
    b.box.apply(b"* 5 EXISTS")
    assert a.until(lambda: len(a.box.uids) == 5) == [b"* 5 EXISTS"]
    assert a.done() == []
    for client in (a, b):
        client.check_quiet()
        client.close()


def test_flag_change_reaches_the_others(imap_app):
    """RFC 9051 7.5.2 FETCH and 7.5.1: a STORE by B reaches A during IDLE and C at its NOOP as
    an untagged ``FETCH (FLAGS ...)`` for the right sequence number. A enabled CONDSTORE, so
    its FETCH carries MODSEQ, greater than before, and the UID (RFC 7162 3.2.4: "include both
    UID and mod-sequence data in all subsequent untagged FETCH responses ... whether they were
    caused by a regular STORE ... a FETCH/UID FETCH that implicitly set the \\Seen flag, or
    an external agent"); B's own STORE and FETCH responses do too once B enabled CONDSTORE."""
    deliver(imap_app, range(1, 4))
    a, b, c = clients(imap_app, "a", "b", "c", enable={"a": "CONDSTORE", "b": "CONDSTORE"})
    for client in (a, b, c):
        client.learn()
        assert client.box.state() == [(1, frozenset()), (2, frozenset()), (3, frozenset())]
    a.run("FETCH 1:3 (UID MODSEQ)")
    before = dict(a.box.modseqs)
    a.idle()
    untagged, _ = b.run("STORE 2 +FLAGS (\\Flagged)")
    assert len(untagged) == 1 and re.fullmatch(
        rb"\* 2 FETCH \(FLAGS \(\\Flagged\) UID 2 MODSEQ \(\d+\)\)", untagged[0]), untagged
    seen = a.until(lambda: a.box.flags_of(2) == {"\\Flagged"})
    assert len(seen) == 1, seen
    assert re.fullmatch(rb"\* 2 FETCH \(FLAGS \(\\Flagged\) UID 2 MODSEQ \((\d+)\)\)",
                        seen[0]), seen
    assert a.box.modseqs[2] > before[2] and a.box.modseqs[2] == b.box.modseqs[2]
    untagged, _ = c.run("NOOP")
    assert len(untagged) == 1 and re.fullmatch(
        rb"\* 2 FETCH \(FLAGS \(\\Flagged\)( UID 2)?\)", untagged[0]), untagged
    modseqs = dict(b.box.modseqs)
    untagged, _ = b.run("STORE 1:3 -FLAGS.SILENT (\\Flagged)")  # silent, yet CONDSTORE: MODSEQ
    assert b"* 2 FETCH (FLAGS () UID 2 MODSEQ (" in b"".join(untagged), untagged
    assert b.box.modseqs[2] > modseqs[2] and b.box.modseqs[1] == modseqs[1]
    seen = a.until(lambda: a.box.flags_of(2) == frozenset())
    assert [s.split(b" (")[0] for s in seen] == [b"* 2 FETCH"], seen
    assert a.done() == []
    assert c.run("NOOP")[0] == [b"* 2 FETCH (FLAGS ())"]
    # a FETCH that sets \\Seen implicitly (RFC 9051 6.4.5) is a flag change too: UID, MODSEQ
    untagged, _ = b.run("FETCH 3 (BODY[HEADER.FIELDS (SUBJECT)])")
    assert re.fullmatch(rb"\* 3 FETCH \(BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{\d+\} "
                        rb"MODSEQ \(\d+\) FLAGS \(\\Seen\) UID 3\)", untagged[0]), untagged
    assert a.run("NOOP")[0] == [f"* 3 FETCH (FLAGS (\\Seen) UID 3 MODSEQ "
                                f"({b.box.modseqs[3]}))".encode()]
    assert c.run("NOOP")[0] == [b"* 3 FETCH (FLAGS (\\Seen))"]
    state = [(1, frozenset()), (2, frozenset()), (3, frozenset({"\\Seen"}))]
    for client in (a, b, c):
        assert client.box.state() == client.server_state() == state
    assert maildir_state(imap_app) == state
    for client in (a, b, c):
        client.check_quiet()
        client.close()


def test_expunge_reaches_the_others(imap_app):
    """RFC 9051 7.4.1 EXPUNGE and 7.5.1: B expunges messages 2 and 4 of 5; A (idling) gets
    ``* 4 EXPUNGE`` then ``* 2 EXPUNGE`` (each number valid when it is sent: from the highest
    down), C at its NOOP too; Q, which enabled QRESYNC, gets one ``* VANISHED 2,4`` (RFC 7162
    3.2.10, UIDs) and no EXPUNGE. After that every client's sequence numbers name the same
    UIDs as the server's."""
    deliver(imap_app, range(1, 6))
    a, b, c, q = clients(imap_app, "a", "b", "c", "q", enable={"q": "QRESYNC"})
    for client in (a, b, c, q):
        client.learn()  # the UIDs, so that the model checks every response
    a.idle()
    q.idle()
    b.run("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    seen_a = a.until(lambda: a.box.flags_of(2) == {"\\Deleted"}
                     and a.box.flags_of(4) == {"\\Deleted"})
    assert sorted(seen_a) == [b"* 2 FETCH (FLAGS (\\Deleted))", b"* 4 FETCH (FLAGS (\\Deleted))"]
    q.until(lambda: q.box.flags_of(2) == {"\\Deleted"} and q.box.flags_of(4) == {"\\Deleted"})
    untagged, _ = b.run("EXPUNGE")
    assert untagged == [b"* 4 EXPUNGE", b"* 2 EXPUNGE"]
    assert a.until(lambda: len(a.box.uids) == 3) == [b"* 4 EXPUNGE", b"* 2 EXPUNGE"]
    assert q.until(lambda: len(q.box.uids) == 3) == [b"* VANISHED 2,4"]
    untagged, _ = c.run("NOOP")
    assert untagged == [b"* 4 EXPUNGE", b"* 2 EXPUNGE"]
    assert a.done() == [] and q.done() == []
    state = [(1, frozenset()), (3, frozenset()), (5, frozenset())]
    for client in (a, b, c, q):
        assert client.box.state() == client.server_state() == state
    assert maildir_state(imap_app) == state
    for client in (a, b, c, q):
        client.check_quiet()
        client.close()


def test_move_and_own_expunge_reach_the_others(imap_app):
    """RFC 6851 3.3 (MOVE: the source messages are expunged, so the others get EXPUNGE, RFC
    9051 7.4.1), RFC 7162 3.2.7 (a QRESYNC client's own EXPUNGE answers ``* VANISHED``) and
    RFC 4315 2.1 UID EXPUNGE (only the UIDs named): A idles on INBOX, W has Archive selected
    and hears of the moved message at NOOP (7.3.1 EXISTS)."""
    deliver(imap_app, range(1, 5))
    a, q, w = clients(imap_app, "a", "q", "w", enable={"q": "QRESYNC"})
    w.run("SELECT Archive")
    for client in (a, q):
        client.learn()
    a.idle()
    untagged, _ = q.run("MOVE 2 Archive")
    assert untagged[-1] == b"* VANISHED 2" and b"COPYUID" in b"".join(untagged)
    assert a.until(lambda: len(a.box.uids) == 3) == [b"* 2 EXPUNGE"]
    assert w.run("NOOP")[0] == [b"* 1 EXISTS"]
    q.run("STORE 1,3 +FLAGS.SILENT (\\Deleted)")  # UIDs 1 and 4
    a.until(lambda: a.box.flags_of(1) == a.box.flags_of(4) == {"\\Deleted"})
    untagged, _ = q.run("UID EXPUNGE 4")
    assert untagged == [b"* VANISHED 4"]
    assert a.until(lambda: len(a.box.uids) == 2) == [b"* 3 EXPUNGE"]
    untagged, _ = q.run("EXPUNGE")
    assert untagged == [b"* VANISHED 1"]
    assert a.until(lambda: len(a.box.uids) == 1) == [b"* 1 EXPUNGE"]
    assert a.done() == []
    assert a.box.state() == a.server_state() == q.box.state() == [(3, frozenset())]
    assert maildir_state(imap_app) == [(3, frozenset())]
    for client in (a, q, w):
        client.check_quiet()
        client.close()


def test_expunge_removes_what_another_session_marked(imap_app):
    """RFC 9051 6.4.3 ("EXPUNGE ... permanently removes all messages that have the \\Deleted
    flag set"), 6.4.1 CLOSE likewise, RFC 4315 2.1 UID EXPUNGE (those of the set): the flag
    counts as the mailbox has it, not as this session last heard of it. B marks, A (which has
    not heard of the marks yet) expunges; a mark B takes back is not expunged."""
    deliver(imap_app, range(1, 6))
    a, b = clients(imap_app, "a", "b")
    for client in (a, b):
        client.learn()
    b.run("STORE 2,3,4 +FLAGS.SILENT (\\Deleted)")
    untagged, _ = a.run("UID EXPUNGE 1:3")
    assert untagged == [b"* 3 EXPUNGE", b"* 2 EXPUNGE",
                        b"* 2 FETCH (FLAGS (\\Deleted) UID 4)"]
    a.run("STORE 3 +FLAGS.SILENT (\\Deleted)")  # UID 5
    b.run("STORE 5 -FLAGS.SILENT (\\Deleted)")
    untagged, _ = a.run("EXPUNGE")
    assert untagged == [b"* 2 EXPUNGE", b"* 2 FETCH (FLAGS ())"]
    assert a.box.state() == a.server_state() == [(1, frozenset()), (5, frozenset())]
    b.run("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.run("CLOSE")
    assert maildir_state(imap_app) == [(5, frozenset())]
    untagged, _ = b.run("NOOP")
    assert untagged == [b"* 4 EXPUNGE", b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    for client in (a, b):
        client.close()


def test_pop3_session_beside_imap(imap_app):
    """RFC 1939 5 and 6 beside RFC 9051 7.5.1: while a POP3 session holds the maildrop, IMAP
    still reads, stores and reports new mail; POP3's RETR changes nothing IMAP sees until
    QUIT (the UPDATE state), then only ``\\Seen`` on the message retrieved (flags set over
    IMAP are kept, TOP marks nothing); its DELE reaches the idling IMAP client as
    ``* n EXPUNGE`` and the other at NOOP, and the sequence numbers then name the right
    messages."""
    deliver(imap_app, range(1, 4))
    a, b = clients(imap_app, "a", "b")
    for client in (a, b):
        client.learn()
    b.run("STORE 1 +FLAGS (\\Flagged)")
    pop = poplib.POP3("127.0.0.1", imap_app.ports["pop3"][0], timeout=TIMEOUT)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == 3
    lines = pop.retr(1)[1]
    assert b"Message-ID: <msg1@elsewhere.org>" in lines
    assert b"Message-ID: <msg3@elsewhere.org>" in pop.top(3, 0)[1]  # TOP marks nothing
    pop.dele(2)
    # the maildrop is held: IMAP goes on, and sees nothing of RETR or DELE yet
    untagged, _ = a.run("NOOP")
    assert untagged == [b"* 1 FETCH (FLAGS (\\Flagged))"]
    b.run("STORE 3 +FLAGS (\\Answered)")
    deliver(imap_app, [4])
    untagged, _ = a.run("NOOP")
    assert untagged == [b"* 3 FETCH (FLAGS (\\Answered))", b"* 4 EXISTS"]
    assert message_id(a, 2) == b"Message-ID: <msg2@elsewhere.org>"
    a.idle()
    pop.quit()
    a.until(lambda: len(a.box.uids) == 3 and "\\Seen" in (a.box.flags_of(1) or ()))
    assert a.done() == []
    untagged, _ = b.run("NOOP")
    # 7.4.1 then 7.5.2 then 7.3.1: numbers after the EXPUNGE; B knew its own \\Answered
    assert untagged == [b"* 2 EXPUNGE", b"* 1 FETCH (FLAGS (\\Flagged \\Seen))",
                        b"* 3 EXISTS"], untagged
    state = [(1, frozenset({"\\Flagged", "\\Seen"})), (3, frozenset({"\\Answered"})),
             (4, frozenset())]
    for client in (a, b):
        client.learn_new()
        assert client.box.state() == client.server_state() == state
    assert maildir_state(imap_app) == state
    assert message_id(a, 2) == b"Message-ID: <msg3@elsewhere.org>"
    for client in (a, b):
        client.check_quiet()
        client.close()


def test_no_expunge_during_fetch_store_search(imap_app):
    """RFC 9051 7.5.1: "An EXPUNGE response MUST NOT be sent when no command is in progress,
    nor while responding to a FETCH, STORE, or SEARCH command". B expunges message 2 while A
    keeps its view: A's FETCH, STORE and SEARCH still number the messages as A knows them;
    A's FETCH of message 2's text is ``NO [EXPUNGEISSUED]`` (7.1), never another message's;
    only A's NOOP brings ``* 2 EXPUNGE``, after which 2 is the former 3."""
    deliver(imap_app, range(1, 4))
    a, b = clients(imap_app, "a", "b")
    b.run("STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.run("EXPUNGE")
    untagged, _ = a.run("FETCH 1:3 (UID)")
    assert untagged == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)"]
    untagged, tagged = a.run("FETCH 2 (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", status="NO")
    assert b"[EXPUNGEISSUED]" in tagged and untagged == []
    assert message_id(a, 3) == b"Message-ID: <msg3@elsewhere.org>"
    untagged, tagged = a.run("FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", status="NO")
    assert [u.split(b" (")[0] for u in untagged] == [b"* 1 FETCH", b"* 3 FETCH"], untagged
    assert b"msg1@" in a.literals[-2] and b"msg3@" in a.literals[-1]
    untagged, _ = a.run("STORE 3 +FLAGS (\\Seen)")
    assert untagged == [b"* 3 FETCH (FLAGS (\\Seen))"]
    untagged, _ = a.run("SEARCH ALL")
    assert untagged == [b"* SEARCH 1 2 3"]
    untagged, _ = a.run("SEARCH UNSEEN")
    assert untagged == [b"* SEARCH 1 2"]
    untagged, _ = a.run("NOOP")
    assert untagged == [b"* 2 EXPUNGE"]
    untagged, _ = b.run("NOOP")
    assert untagged == [b"* 2 FETCH (FLAGS (\\Seen))"]
    assert message_id(a, 2) == b"Message-ID: <msg3@elsewhere.org>"
    state = [(1, frozenset()), (3, frozenset({"\\Seen"}))]
    for client in (a, b):
        assert client.server_state() == state
    assert maildir_state(imap_app) == state
    for client in (a, b):
        client.check_quiet()
        client.close()


def test_mixed_burst(imap_app):
    """RFC 9051 2.3.1.1 (UIDs strictly ascending, never reused), 7.3.1, 7.4.1, 7.5.2, RFC 7162
    3.2.10: twelve SMTP deliveries at once while A and B STORE flags and B expunges, and C
    (QRESYNC) idles throughout (RFC 2177); every untagged response each client got is applied
    to its model, which must end equal to the server's answer, the same for all three, and
    equal to the Maildir on disk."""
    deliver(imap_app, range(1, 5))
    a, b, c = clients(imap_app, "a", "b", "c", enable={"c": "QRESYNC"})
    for client in (a, b, c):
        client.learn()
    c.idle()
    senders = [gevent.spawn(deliver, imap_app, [n]) for n in range(5, 17)]
    rounds = 0
    while not all(s.ready() for s in senders) or rounds < 3:
        rounds += 1
        a.run("STORE 1:* +FLAGS (\\Seen)")
        a.run("NOOP")
        b.run(f"STORE {len(b.box.uids)} +FLAGS ($Label{rounds % 3} \\Flagged)")
        if rounds <= 4:
            b.run("STORE 1 +FLAGS.SILENT (\\Deleted)")
            b.run("EXPUNGE")
        b.run("NOOP")
        assert rounds < 200
    gevent.joinall(senders, raise_error=True)
    for client in (a, b):
        client.run("NOOP")
        client.learn_new()
    state = a.server_state()
    assert a.box.state() == state and b.box.state() == b.server_state() == state
    uids = [uid for uid, _ in state]
    assert uids == sorted(set(uids))  # ascending, no repeats
    expunged = min(rounds, 4)
    assert len(uids) == 16 - expunged and uids[0] == expunged + 1
    assert maildir_state(imap_app) == [(uid, flags - {"$Label0", "$Label1", "$Label2"})
                                       for uid, flags in state]
    c.until(lambda: len(c.box.uids) == len(state)
            and all(entry in state or entry == (None, None) for entry in c.box.state()))
    assert c.done() == []
    c.learn_new()
    assert c.box.state() == c.server_state() == state
    for client in (a, b, c):
        client.check_quiet()
        client.close()
