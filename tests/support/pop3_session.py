"""A fake POP3 policy and maildrop, and a driver that plays the connection shell's part for a
POP3Session (geomail/proto/pop3.py): it answers the session's requests from the fakes at once,
as server/pop3_conn.py does from the real policy and store. The unit tests
(tests/unit/test_proto_pop3.py) and the fuzz tests (tests/fuzz/) use it, bytes in and outputs
out, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geomail.errors import StoreError
from geomail.proto.pop3 import POP3Session
from geomail.proto.pop3_types import (
    Answer,
    Authenticate,
    CloseMaildrop,
    Commit,
    Committed,
    Listing,
    LoginRefused,
    MailboxInUse,
    OpenMaildrop,
    Output,
    POP3Settings,
    Request,
    Send,
    SendMessage,
    Unavailable,
)
from geomail.proto.sasl import Credentials

ALICE = "alice@example.com"
PASSWORD = "correct horse battery staple"  # spaces on purpose: PASS takes the rest of the line
CLIENT = "192.0.2.7"
LOGIN = f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode()
REQUESTS = (Authenticate, OpenMaildrop, Commit)


@dataclass(frozen=True)
class FakeMessage:
    uid: str
    size: int


@dataclass
class FakeMaildrop:
    """Records commit and close; ``fail_commit`` makes commit raise."""

    messages: list[FakeMessage]
    fail_commit: bool = False
    commits: list[tuple[set[int], set[int]]] = field(default_factory=list)
    closes: int = 0

    def commit(self, deleted: set[int], retrieved: set[int]) -> None:
        assert not self.closes, "commit after close"
        self.commits.append((set(deleted), set(retrieved)))
        if self.fail_commit:
            raise StoreError("cannot update the mailbox: No space left on device")

    def close(self) -> None:
        self.closes += 1


def three_messages() -> list[FakeMessage]:
    return [FakeMessage("uid-a", 100), FakeMessage("uid-b", 200), FakeMessage("uid-c", 300)]


@dataclass
class FakeHandler:
    """The policy: ALICE/PASSWORD logs in (any case of the name; the canonical name is lower
    case); ``busy`` users' mailboxes are in use, ``blocked`` refuses every login as throttled,
    ``store_error`` makes every mailbox unavailable."""

    passwords: dict[str, str] = field(default_factory=lambda: {ALICE: PASSWORD})
    busy: set[str] = field(default_factory=set)
    blocked: bool = False
    store_error: bool = False
    messages: list[FakeMessage] = field(default_factory=three_messages)
    fail_commit: bool = False
    calls: list[tuple[object, ...]] = field(default_factory=list)
    maildrops: list[FakeMaildrop] = field(default_factory=list)

    def authenticate(self, client_ip: str, credentials: Credentials) -> str | LoginRefused:
        self.calls.append(("authenticate", client_ip, credentials.username, credentials.password))
        if self.blocked:
            return LoginRefused(blocked=True)
        user = credentials.username.lower()
        if self.passwords.get(user) != credentials.password:
            return LoginRefused()
        return user

    def open_maildrop(self, user: str) -> FakeMaildrop | MailboxInUse | Unavailable:
        self.calls.append(("open_maildrop", user))
        if user in self.busy:
            return MailboxInUse()
        if self.store_error:  # what POP3Policy makes of a StoreError
            return Unavailable("store error")
        self.maildrops.append(FakeMaildrop(list(self.messages), self.fail_commit))
        return self.maildrops[-1]

    @property
    def maildrop(self) -> FakeMaildrop:
        assert len(self.maildrops) == 1
        return self.maildrops[0]


class Driven:
    """A POP3Session with the shell's part played over a FakeHandler. ``feed`` and ``resume``
    answer every request at once and return the other outputs (CloseMaildrop is carried out
    on the fake, not returned), so a dialog reads as it did when the session called the
    handler itself. The session's own attributes (``state``, ``user``...) are passed through."""

    def __init__(self, session: POP3Session, handler: FakeHandler) -> None:
        self.session = session
        self.handler = handler
        self.maildrop: FakeMaildrop | None = None  # open for the session, as the shell holds it
        self.answers: list[Answer] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def feed(self, data: bytes) -> list[Output]:
        return self._carry_out(self.session.feed(data))

    def resume(self) -> list[Output]:
        return self._carry_out(self.session.resume())

    def abort(self) -> None:
        """What the shell does when the connection ends: the session closes, the lock goes."""
        self.session.abort()
        self._close()

    def _carry_out(self, outputs: list[Output]) -> list[Output]:
        shown: list[Output] = []
        while True:
            # The session's promise to the shell: a request ends its batch.
            assert not any(isinstance(out, REQUESTS) for out in outputs[:-1]), outputs
            for out in outputs:
                if isinstance(out, CloseMaildrop):
                    assert self.maildrop is not None, "CloseMaildrop without a maildrop"
                    self._close()
                elif not isinstance(out, REQUESTS):
                    shown.append(out)
            if not outputs or not isinstance(outputs[-1], REQUESTS):
                return shown
            assert self.session.pending == outputs[-1]
            self.answers.append(self._answer(outputs[-1]))
            outputs = self.session.answer(self.answers[-1])

    def _answer(self, request: Request) -> Answer:
        if isinstance(request, Authenticate):
            return self.handler.authenticate(CLIENT, request.credentials)
        if isinstance(request, OpenMaildrop):
            assert self.maildrop is None, "a second maildrop opened"
            opened = self.handler.open_maildrop(request.user)
            if isinstance(opened, MailboxInUse | Unavailable):
                return opened
            self.maildrop = opened
            return Listing(list(opened.messages))
        assert self.maildrop is not None, "Commit without a maildrop"
        try:  # as the shell: UPDATE, then the lock goes (Commit ends the maildrop)
            self.maildrop.commit(set(request.deleted), set(request.retrieved))
        except StoreError as exc:
            return Unavailable(str(exc))
        finally:
            self._close()
        return Committed()

    def _close(self) -> None:
        if self.maildrop is not None:
            maildrop, self.maildrop = self.maildrop, None
            maildrop.close()
            self.maildrop = None


def make_session(handler: FakeHandler | None = None, *, tls_active: bool = False,
                 tls_available: bool = True, allow_plaintext_auth: bool = True,
                 max_bad_commands: int = 10) -> Driven:
    settings = POP3Settings(tls_available=tls_available,
                            allow_plaintext_auth=allow_plaintext_auth,
                            max_bad_commands=max_bad_commands)
    return Driven(POP3Session(settings, tls_active=tls_active), handler or FakeHandler())


def drive(session: Driven, data: bytes) -> list[object]:
    """What the shell does: feed, then ``resume`` after each batch until nothing is left."""
    outputs: list[object] = list(session.feed(data))
    while more := session.resume():
        outputs += more
    return outputs


@dataclass
class Run:
    session: Driven
    handler: FakeHandler
    outputs: list[object]

    @property
    def sent(self) -> bytes:
        """The Send outputs joined, as the client would read them (messages as placeholders)."""
        parts = []
        for out in self.outputs:
            if isinstance(out, Send):
                parts.append(out.data)
            elif isinstance(out, SendMessage):
                parts.append(out.header + f"<message {out.index} {out.body_lines}>".encode())
        return b"".join(parts)

    def snapshot(self) -> tuple[object, ...]:
        return (self.outputs, self.handler.calls,
                [(m.commits, m.closes) for m in self.handler.maildrops],
                self.session.state, self.session.user)
