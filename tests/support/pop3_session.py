"""A fake POP3Handler and maildrop and how to build a POP3Session (geomail/proto/pop3.py) around
them: the unit tests (tests/unit/test_proto_pop3.py) and the fuzz tests (tests/fuzz/) drive the
session with these, bytes in and outputs out, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from geomail.errors import StoreError
from geomail.proto.pop3 import (
    LoginRefused,
    MailboxInUse,
    MaildropUnavailable,
    POP3Session,
    POP3Settings,
    Send,
    SendMessage,
)
from geomail.proto.sasl import Credentials

ALICE = "alice@example.com"
PASSWORD = "correct horse battery staple"  # spaces on purpose: PASS takes the rest of the line
CLIENT = "192.0.2.7"
LOGIN = f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode()


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
    """POP3Handler: ALICE/PASSWORD logs in (any case of the name; the canonical name is lower
    case); ``busy`` users raise MailboxInUse, ``blocked`` refuses every login as throttled."""

    passwords: dict[str, str] = field(default_factory=lambda: {ALICE: PASSWORD})
    busy: set[str] = field(default_factory=set)
    blocked: bool = False
    store_error: bool = False
    messages: list[FakeMessage] = field(default_factory=three_messages)
    fail_commit: bool = False
    calls: list[tuple[object, ...]] = field(default_factory=list)
    maildrops: list[FakeMaildrop] = field(default_factory=list)

    def authenticate(self, client_ip: str, credentials: Credentials) -> str:
        self.calls.append(("authenticate", client_ip, credentials.username, credentials.password))
        if self.blocked:
            raise LoginRefused(blocked=True)
        user = credentials.username.lower()
        if self.passwords.get(user) != credentials.password:
            raise LoginRefused()
        return user

    def open_maildrop(self, user: str) -> FakeMaildrop:
        self.calls.append(("open_maildrop", user))
        if user in self.busy:
            raise MailboxInUse(user)
        if self.store_error:  # what POP3Policy makes of a StoreError
            raise MaildropUnavailable(user)
        self.maildrops.append(FakeMaildrop(list(self.messages), self.fail_commit))
        return self.maildrops[-1]

    @property
    def maildrop(self) -> FakeMaildrop:
        assert len(self.maildrops) == 1
        return self.maildrops[0]


def make_session(handler: FakeHandler | None = None, *, tls_active: bool = False,
                 tls_available: bool = True, allow_plaintext_auth: bool = True,
                 max_bad_commands: int = 10) -> POP3Session:
    settings = POP3Settings(tls_available=tls_available,
                            allow_plaintext_auth=allow_plaintext_auth,
                            max_bad_commands=max_bad_commands)
    return POP3Session(handler or FakeHandler(), CLIENT, settings, tls_active=tls_active)


def drive(session: POP3Session, data: bytes) -> list[object]:
    """What the shell does: feed, then ``resume`` after each batch until nothing is left."""
    outputs: list[object] = list(session.feed(data))
    while more := session.resume():
        outputs += more
    return outputs


@dataclass
class Run:
    session: POP3Session
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
