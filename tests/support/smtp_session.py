"""A fake SMTPHandler and how to build an SMTPSession (geomail/proto/smtp.py) around it: the
unit tests (tests/unit/test_proto_smtp.py) and the fuzz tests (tests/fuzz/) drive the session
with these, bytes in and outputs out, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from geomail.proto import reply as R
from geomail.proto.reply import Close, Reply, StartTLS
from geomail.proto.smtp import SessionInfo, SMTPSession, SMTPSettings

HOST = "mx.example.com"
SIZE = 25 * 1024 * 1024
ALICE = "alice@example.com"
PASSWORD = "correct horse"
QUEUED = Reply(250, "2.0.0", "Queued as 1234")
NOBODY = "nobody@example.com"

EHLO = b"EHLO client.example.org\r\n"
HELO = b"HELO client.example.org\r\n"
MAIL = b"MAIL FROM:<sender@example.org>\r\n"
RCPT = b"RCPT TO:<alice@example.com>\r\n"
TXN = EHLO + MAIL + RCPT

Output = Reply | StartTLS | Close


class FakeSink:
    """A BodySink that keeps what it is given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.discarded = False

    def write(self, data: bytes) -> None:
        assert not self.discarded, "write after discard"
        self.data += data

    def discard(self) -> None:
        self.discarded = True


@dataclass
class Message:
    """What accept_message was handed."""

    sender: str | None
    recipients: list[str]
    body_type: str
    smtputf8: bool
    content: bytes


@dataclass
class FakeHandler:
    """SMTPHandler that records every call, refuses what the test lists, accepts the rest."""

    refuse_senders: dict[str, Reply] = field(default_factory=dict)
    refuse_recipients: dict[str, Reply] = field(
        default_factory=lambda: {NOBODY: R.R550_NO_SUCH_USER})
    passwords: dict[str, str] = field(default_factory=lambda: {ALICE: PASSWORD})
    auth_failure: Reply = R.R535_AUTH_FAILED
    accept_replies: list[Reply | Exception] = field(default_factory=list)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    sinks: list[FakeSink] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    def check_sender(self, info, envelope):
        self.calls.append(("check_sender", envelope.sender))
        return self.refuse_senders.get(envelope.sender)

    def check_recipient(self, info, envelope, address):
        self.calls.append(("check_recipient", address))
        return self.refuse_recipients.get(address)

    def authenticate(self, info, credentials):
        self.calls.append(("authenticate", credentials.username, credentials.password))
        if self.passwords.get(credentials.username) == credentials.password:
            return credentials.username
        return self.auth_failure

    def open_body(self, info, envelope):
        self.calls.append(("open_body",))
        self.sinks.append(FakeSink())
        return self.sinks[-1]

    def accept_message(self, info, envelope, body):
        self.calls.append(("accept_message",))
        self.messages.append(Message(envelope.sender, list(envelope.recipients),
                                     envelope.body_type, envelope.smtputf8, bytes(body.data)))
        scripted = self.accept_replies.pop(0) if self.accept_replies else QUEUED
        if isinstance(scripted, Exception):
            raise scripted
        return scripted


def make_session(handler: FakeHandler | None = None, listener: str = "smtp",
                 tls: str | None = None, **settings) -> SMTPSession:
    info = SessionInfo("sess1", "192.0.2.7", 41000, listener=listener, tls=tls)
    return SMTPSession(handler or FakeHandler(), info, SMTPSettings(HOST, **settings))


@dataclass
class Run:
    """One fed conversation: the outputs of ``data`` (not of the setup) and what is left."""

    session: SMTPSession
    handler: FakeHandler
    outputs: list[Output]

    @property
    def replies(self) -> list[Reply]:
        return [out for out in self.outputs if isinstance(out, Reply)]

    @property
    def sink(self) -> FakeSink:
        assert len(self.handler.sinks) == 1
        return self.handler.sinks[0]

    def snapshot(self) -> tuple[object, ...]:
        return (self.outputs, self.handler.calls, self.handler.messages,
                # What a discarded sink got before the fault depends on the packet boundaries.
                [None if s.discarded else bytes(s.data) for s in self.handler.sinks],
                self.session.state, self.session.info.auth_user, self.session.envelope)
