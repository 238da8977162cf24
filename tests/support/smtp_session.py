"""A fake policy and a driver that answers an SMTPSession's requests (geomail/proto/smtp.py)
with it, as the shell (geomail/server/smtp_conn.py) does with the real one: the unit tests
(tests/unit/test_proto_smtp.py) and the fuzz tests (tests/fuzz/) drive the session with these,
bytes in and actions out, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from geomail.proto import reply as R
from geomail.proto.reply import Close, Delay, Reply, StartTLS
from geomail.proto.smtp import SessionInfo, SMTPSession, SMTPSettings
from geomail.proto.smtp_types import (
    Authenticate,
    CheckRecipient,
    CheckSender,
    MessageAborted,
    MessageComplete,
    MessageData,
    MessageStart,
)

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

Output = Reply | StartTLS | Close | Delay


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
    """A policy that records every call, refuses what the test lists, accepts the rest (the
    hooks the old SMTPHandler had; ``SessionDriver`` calls them for the session's requests)."""

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


class SessionDriver:
    """An SMTPSession whose requests are answered by a FakeHandler at once, the way the shell
    answers them with the policy: ``feed`` returns only the actions (replies, StartTLS, Delay,
    Close); every other attribute is the session's."""

    __slots__ = ("handler", "session", "sink")

    def __init__(self, session: SMTPSession, handler: FakeHandler) -> None:
        self.session = session
        self.handler = handler
        self.sink: FakeSink | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.session, name)

    def feed(self, data: bytes) -> list[Output]:
        return self._carry_out(self.session.feed(data))

    def abort(self) -> None:
        self._carry_out(self.session.abort())

    def _carry_out(self, outputs: list) -> list[Output]:
        actions: list[Output] = []
        while outputs:
            answer: list = []
            for output in outputs:
                if isinstance(output, Reply | StartTLS | Close | Delay):
                    actions.append(output)
                elif isinstance(output, MessageData):
                    assert self.sink is not None
                    self.sink.write(output.data)
                elif isinstance(output, MessageStart):
                    assert self.sink is None, "MessageStart with a body open"
                    self.sink = self.handler.open_body(self.session.info, output.envelope)
                elif isinstance(output, MessageAborted):
                    assert self.sink is not None
                    self.sink.discard()
                    self.sink = None
                else:
                    assert output is outputs[-1], "a request is always the last output"
                    answer = self.session.answer(self._ask(output))
            outputs = answer
        return actions

    def _ask(self, request: object) -> Reply | str | None:
        handler, info = self.handler, self.session.info
        if isinstance(request, CheckSender):
            return handler.check_sender(info, request.envelope)
        if isinstance(request, CheckRecipient):
            return handler.check_recipient(info, request.envelope, request.address)
        if isinstance(request, Authenticate):
            return handler.authenticate(info, request.credentials)
        assert isinstance(request, MessageComplete) and self.sink is not None
        body, self.sink = self.sink, None
        try:
            return handler.accept_message(info, request.envelope, body)
        except Exception:  # the shell's answer to a failing policy call
            body.discard()
            return R.R451_LOCAL_ERROR


def listener_settings(listener: str, allow_plaintext_auth: bool = False) -> dict[str, bool]:
    """The settings geomail/app.py (``App._listener``) derives for a listener kind."""
    submission = listener in ("submission", "submissions")
    return {"auth_offered": submission, "auth_required": submission,
            "tls_required_for_auth": not allow_plaintext_auth,
            "implicit_tls": listener == "submissions"}


def make_session(handler: FakeHandler | None = None, listener: str = "smtp",
                 tls: str | None = None, allow_plaintext_auth: bool = False,
                 **settings) -> SessionDriver:
    """A driven session with the settings app.py gives a ``listener`` of that kind, then
    ``settings`` over them."""
    info = SessionInfo("sess1", "192.0.2.7", 41000, tls=tls)
    settings = {**listener_settings(listener, allow_plaintext_auth), **settings}
    return SessionDriver(SMTPSession(info, SMTPSettings(HOST, **settings)),
                         handler or FakeHandler())


@dataclass
class Run:
    """One fed conversation: the outputs of ``data`` (not of the setup) and what is left."""

    session: SessionDriver
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
