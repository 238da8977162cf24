"""What a POP3 session shares with its shell: the session's State, the per-listener knobs
(POP3Settings), the outputs it returns, the requests it hands out for the shell to answer and
the answers (see ``proto/pop3.py`` for when each is sent)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from geomail.proto.reply import Close, StartTLS
from geomail.proto.sasl import Credentials


class State(enum.Enum):
    """RFC 1939 3: the session's states (UPDATE is passed through on QUIT)."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Send:
    """Output: bytes to send (one or more complete response lines)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Output: after ``header``, stream message ``index`` (0-based), all of it or, for TOP,
    its header and the first ``body_lines`` lines, dot-stuffed and ending in ``.``."""

    header: bytes
    index: int
    body_lines: int | None = None


@dataclass(frozen=True, slots=True)
class CloseMaildrop:
    """Output: release the maildrop (its lock), deleting nothing more; needs no answer."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Request: check a login. Answer: the canonical user, ``LoginRefused`` or ``Unavailable``."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class OpenMaildrop:
    """Request: lock and list ``user``'s mailbox. Answer: ``Listing``, ``MailboxInUse`` or
    ``Unavailable``."""

    user: str


@dataclass(frozen=True, slots=True)
class Commit:
    """Request (UPDATE state, RFC 1939 6): remove ``deleted``, mark ``retrieved`` as seen
    (0-based indexes of the listing). Answer: ``Committed`` or ``Unavailable``."""

    deleted: frozenset[int]
    retrieved: frozenset[int]


Request = Authenticate | OpenMaildrop | Commit
Output = Send | SendMessage | StartTLS | CloseMaildrop | Close | Request


class MessageInfo(Protocol):
    @property
    def uid(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """Answer to ``Authenticate``: bad credentials; ``blocked`` when the client is throttled."""

    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Listing:
    """Answer to ``OpenMaildrop``: the mailbox is locked; its messages, in POP3 order."""

    messages: Sequence[MessageInfo]


@dataclass(frozen=True, slots=True)
class MailboxInUse:
    """Answer to ``OpenMaildrop``: another session holds the lock."""


@dataclass(frozen=True, slots=True)
class Committed:
    """Answer to ``Commit``: every deletion is durable."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Answer to any request: no answer now (a store fault, or the shell's deadline passed)."""

    reason: str = ""


Answer = str | LoginRefused | Listing | MailboxInUse | Committed | Unavailable
ANSWERS: dict[type[Request], tuple[type, ...]] = {
    Authenticate: (str, LoginRefused, Unavailable),
    OpenMaildrop: (Listing, MailboxInUse, Unavailable),
    Commit: (Committed, Unavailable),
}


@dataclass(frozen=True, slots=True)
class POP3Settings:
    """The per-listener knobs of a session."""

    tls_available: bool = False  # offer STLS until TLS is active
    allow_plaintext_auth: bool = False
    max_bad_commands: int = 10
