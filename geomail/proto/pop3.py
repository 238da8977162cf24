"""The POP3 server session (RFC 1939, CAPA RFC 2449, STLS RFC 2595, AUTH RFC 5034) as a sans-IO
state machine.

| command            | AUTHORIZATION           | TRANSACTION              |
|--------------------|-------------------------|--------------------------|
| CAPA, QUIT         | ok                      | ok (QUIT enters UPDATE)  |
| USER, PASS, AUTH   | ok (when login allowed) | -ERR                     |
| STLS               | ok (once, before login) | -ERR                     |
| STAT LIST RETR DELE NOOP RSET TOP UIDL | -ERR | ok                      |

The session never calls out: ``feed``, ``resume`` and ``answer`` return outputs for the
connection shell to carry out, in order. Some are plain actions:

- ``Send``: response lines; ``SendMessage``: RETR/TOP, the shell streams the message itself.
- ``StartTLS`` (after ``+OK`` to STLS), ``CloseMaildrop`` (release the lock; no answer), ``Close``.

Others are requests that need an answer; one is always the last output of its batch, and the
session reads no further command until the shell passes the result to ``answer``:

| request                        | sent at                        | answer                   |
|--------------------------------|--------------------------------|--------------------------|
| ``Authenticate(credentials)``  | PASS, AUTH PLAIN (RFC 1939 7)  | the user (a ``str``),    |
|                                |                                | ``LoginRefused`` or      |
|                                |                                | ``Unavailable``          |
| ``OpenMaildrop(user)``         | a login accepted (RFC 1939 4)  | ``Listing``,             |
|                                |                                | ``MailboxInUse`` or      |
|                                |                                | ``Unavailable``          |
| ``Commit(deleted, retrieved)`` | QUIT in TRANSACTION (UPDATE    | ``Committed`` or         |
|                                | state, RFC 1939 6)             | ``Unavailable`` (-ERR)   |

The session works on the ``Listing`` (sizes and UIDs) only. Deletions are only marks until
QUIT. ``Commit`` also ends the maildrop: the shell releases the lock once the deletions are
done (not before: a late commit still runs to its end); leaving TRANSACTION any other way emits
``CloseMaildrop`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from geomail.proto.lines import LineBuffer, LineFault
from geomail.proto.pop3_types import (
    ANSWERS,
    Answer,
    Authenticate,
    CloseMaildrop,
    Commit,
    Committed,
    Listing,
    LoginRefused,
    MailboxInUse,
    MessageInfo,
    OpenMaildrop,
    Output,
    POP3Settings,
    Request,
    Send,
    SendMessage,
    State,
    Unavailable,
)
from geomail.proto.reply import Close, StartTLS
from geomail.proto.sasl import MAX_RESPONSE, Credentials, SASLError, SASLExchange, encode_challenge

MAX_COMMAND = 255  # RFC 2449 4: a command line is at most 255 octets
MAX_AUTH_FAILURES_PER_CONNECTION = 3
IMPLEMENTATION = "geomail"


def _is_number(text: str) -> bool:
    """A decimal number of at most 9 ASCII digits (str.isdigit also takes superscripts)."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def _ok(text: str = "") -> bytes:
    return f"+OK {text}\r\n".encode() if text else b"+OK\r\n"


def _err(text: str) -> bytes:
    return f"-ERR {text}\r\n".encode()


class POP3Session:
    """One POP3 conversation: ``feed(bytes)`` returns the outputs to carry out, in order;
    a request among them is answered with ``answer(result)`` (see the module docstring)."""

    def __init__(self, settings: POP3Settings, tls_active: bool = False) -> None:
        self.settings = settings
        self.tls_active = tls_active
        self.state = State.AUTHORIZATION
        self.user: str | None = None
        self.pending: Request | None = None  # the request waiting for ``answer``
        self._eof = False
        self._messages: list[MessageInfo] = []
        self._deleted: set[int] = set()
        self._retrieved: set[int] = set()
        self._lines = LineBuffer(MAX_RESPONSE + 2)
        self._username: str | None = None  # from USER, waiting for PASS
        self._sasl: SASLExchange | None = None
        self._bad_commands = 0
        self._auth_failures = 0
        self._starttls = False

    def greeting(self) -> bytes:
        """RFC 1939 4; no APOP timestamp, since APOP is not offered."""
        return _ok(f"{IMPLEMENTATION} POP3 server ready")

    def feed(self, data: bytes) -> list[Output]:
        """Take received bytes (``b""`` at end of stream); return what to send and do. While a
        request waits for its answer the bytes are only buffered."""
        if self.state is State.CLOSED:
            return []
        if not data:
            self._eof = True
        else:
            self._lines.feed(data)
        return [] if self.pending is not None else self.resume()

    def resume(self) -> list[Output]:
        """Answer the commands already buffered; ``feed`` and ``answer`` call it, and the shell
        again after carrying out a ``SendMessage``, until it returns nothing.

        It stops after each ``SendMessage``, since the message must be streamed before a
        pipelined command that follows (QUIT's commit above all) changes the maildrop, and after
        each request, since what follows depends on the answer.
        """
        out: list[Output] = []
        while self.state is not State.CLOSED and self.pending is None:
            line = self._lines.next_line()
            if line is None:
                break
            self._handle_line(line, out)
            if self._starttls:
                self._starttls = False
                if self._lines.injected_before_tls():
                    out[-1] = Send(_err("Commands pipelined after STLS"))
                    self._close(out)
                else:
                    out.append(StartTLS())
                return out
            if out and isinstance(out[-1], SendMessage):
                return out
        if self._eof and self.pending is None and self.state is not State.CLOSED:
            self._close(out)  # the client went away without QUIT: nothing is deleted
        return out

    def answer(self, result: Answer) -> list[Output]:
        """The shell's answer to ``pending``; returns the outputs that follow, like ``feed``."""
        request = self.pending
        if request is None or not isinstance(result, ANSWERS[type(request)]):
            raise ValueError(f"{result!r} does not answer {request!r}")
        self.pending = None
        out: list[Output] = []
        if isinstance(request, Authenticate):
            out.append(self._authenticated(result))
        elif isinstance(request, OpenMaildrop):
            out.append(Send(self._opened(request.user, result)))
        else:
            out += self._committed(result)
        if isinstance(out[-1], Send):
            self._close_if_done(out)
            out += self.resume()
        return out

    def tls_started(self) -> None:
        """STLS completed: start over in AUTHORIZATION (RFC 2595 4)."""
        self.tls_active = True
        self._username = None

    def abort(self) -> None:
        """The connection is going away without QUIT; the shell releases the maildrop itself."""
        self.state = State.CLOSED
        self.pending = None

    # ---- dispatch ---------------------------------------------------------------------------

    def _handle_line(self, line: bytes | LineFault, out: list[Output]) -> None:
        if isinstance(line, LineFault):
            self._sasl = None
            self._error("Line too long" if line is LineFault.TOO_LONG else
                        "Lines must end in CRLF", out)
            return
        text = line.decode("utf-8", "replace")
        if self._sasl is not None:
            result = self._auth_result(self._sasl.step(text))
            out.extend([Send(result)] if isinstance(result, bytes) else result)
            return
        if len(line) + 2 > MAX_COMMAND and not text[:5].upper().startswith(("AUTH ", "PASS ")):
            self._error("Line too long", out)
            return
        verb, _, arg = text.partition(" ")
        command = COMMANDS.get(verb.upper())
        if command is None:
            self._error("Unknown command", out)
            return
        allowed = AUTHORIZATION_COMMANDS if self.state is State.AUTHORIZATION \
            else TRANSACTION_COMMANDS
        if verb.upper() not in allowed:
            self._error("Command not valid in this state", out)
            return
        result = command(self, arg)
        out.extend([Send(result)] if isinstance(result, bytes) else result)
        self._close_if_done(out)

    def _close_if_done(self, out: list[Output]) -> None:
        if self.state is State.CLOSED and not (out and isinstance(out[-1], Close)):
            out.append(Close())

    def _error(self, text: str, out: list[Output]) -> None:
        out.append(Send(_err(text)))
        self._bad_commands += 1
        if self._bad_commands >= self.settings.max_bad_commands:
            out.append(Send(_err("Too many errors, closing connection")))
            self._close(out)

    def _close(self, out: list[Output]) -> None:
        if self.state is State.TRANSACTION:
            out.append(CloseMaildrop())
        self.abort()
        out.append(Close())

    @property
    def _login_allowed(self) -> bool:
        return self.tls_active or self.settings.allow_plaintext_auth

    # ---- AUTHORIZATION ----------------------------------------------------------------------

    def cmd_CAPA(self, arg: str) -> bytes:
        """RFC 2449 5."""
        caps = ["CAPA", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION and self._login_allowed:
            caps += ["USER", "SASL PLAIN"]
        if self.state is State.AUTHORIZATION and self.settings.tls_available \
                and not self.tls_active:
            caps.append("STLS")
        caps.append(f"IMPLEMENTATION {IMPLEMENTATION}")
        return _ok("Capability list follows") + "".join(f"{c}\r\n" for c in caps).encode() \
            + b".\r\n"

    def cmd_STLS(self, arg: str) -> bytes:
        """RFC 2595 4."""
        if not self.settings.tls_available:
            return _err("STLS not available")
        if self.tls_active:
            return _err("TLS already active")
        self._starttls = True
        return _ok("Begin TLS negotiation")

    def cmd_USER(self, arg: str) -> bytes:
        """RFC 1939 7."""
        if not self._login_allowed:
            return _err("[AUTH] Plaintext login is disabled; use STLS first")
        if not arg.strip():
            return _err("USER needs a name")
        self._username = arg.strip()
        return _ok("Send PASS")

    def cmd_PASS(self, arg: str) -> bytes | list[Output]:
        """RFC 1939 7: the password is the rest of the line, spaces included."""
        if not self._login_allowed:
            return _err("[AUTH] Plaintext login is disabled; use STLS first")
        if self._username is None:
            return _err("USER first")
        username, self._username = self._username, None
        return self._login(Credentials(username, arg))

    def cmd_AUTH(self, arg: str) -> bytes | list[Output]:
        """RFC 5034 4 (SASL PLAIN, optionally with an initial response)."""
        if not self._login_allowed:
            return _err("[AUTH] Plaintext login is disabled; use STLS first")
        mechanism, _, initial = arg.strip().partition(" ")
        if not mechanism:
            return _ok("Mechanisms follow") + b"PLAIN\r\n.\r\n"
        if mechanism.upper() != "PLAIN":
            return _err("Unrecognized authentication mechanism")
        self._sasl = SASLExchange("PLAIN")
        return self._auth_result(self._sasl.start(initial or None))

    def _auth_result(self, result: str | Credentials | SASLError) -> bytes | list[Output]:
        if isinstance(result, str):
            return f"+ {encode_challenge(result)}\r\n".encode()
        self._sasl = None
        if result is SASLError.CANCELLED:
            return _err("Authentication cancelled")
        if isinstance(result, SASLError):
            return _err("Malformed authentication data")
        return self._login(result)

    def _login(self, credentials: Credentials) -> list[Output]:
        self.pending = Authenticate(credentials)
        return [self.pending]

    def _authenticated(self, result: Answer) -> Output:
        """The answer to ``Authenticate``: open the maildrop (RFC 1939 4) or refuse."""
        if isinstance(result, str):
            self.pending = OpenMaildrop(result)
            return self.pending
        if isinstance(result, Unavailable):  # RFC 3206 4: the client may try again later
            return Send(_err("[SYS/TEMP] Login temporarily unavailable"))
        self._auth_failures += 1
        if (isinstance(result, LoginRefused) and result.blocked) \
                or self._auth_failures >= MAX_AUTH_FAILURES_PER_CONNECTION:
            self.abort()
            return Send(_err("[SYS/TEMP] Too many failed logins, try again later"))
        return Send(_err("[AUTH] Invalid username or password"))

    def _opened(self, user: str, result: Answer) -> bytes:
        """The answer to ``OpenMaildrop``: TRANSACTION on the listing, or stay in AUTHORIZATION."""
        if isinstance(result, MailboxInUse):
            return _err("[IN-USE] Mailbox is open in another session")
        if not isinstance(result, Listing):  # RFC 3206 4: the client may try again later
            return _err("[SYS/TEMP] Mailbox temporarily unavailable")
        self.user = user
        self._messages = list(result.messages)
        self.state = State.TRANSACTION
        count, size = self._totals()
        return _ok(f"Logged in, {count} messages ({size} octets)")

    def cmd_APOP(self, arg: str) -> bytes:
        """RFC 1939 7: APOP needs the plain-text password on the server; not offered."""
        return _err("APOP is not supported")

    def cmd_QUIT(self, arg: str) -> bytes | list[Output]:
        """RFC 1939 5 (AUTHORIZATION) and 6 (UPDATE): deletions take effect only here."""
        if self.state is State.AUTHORIZATION:
            self.state = State.CLOSED
            return _ok("Bye")
        self.pending = Commit(frozenset(self._deleted), frozenset(self._retrieved))
        return [self.pending]

    def _committed(self, result: Answer) -> list[Output]:
        """The answer to ``Commit`` (which released the maildrop): say goodbye (RFC 1939 6:
        -ERR when some deletions were not made)."""
        if isinstance(result, Committed):
            reply = _ok(f"Bye, {len(self._deleted)} messages deleted")
        else:
            reply = _err("[SYS/TEMP] Some deleted messages were not removed")
        self.abort()
        return [Send(reply), Close()]

    # ---- TRANSACTION ------------------------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        live = [m.size for i, m in enumerate(self._messages) if i not in self._deleted]
        return len(live), sum(live)

    def _message(self, arg: str) -> int | bytes:
        """The 0-based index named by ``arg``, or the -ERR to send."""
        text = arg.strip()
        if not _is_number(text):
            return _err("Invalid message number")
        index = int(text) - 1
        if not 0 <= index < len(self._messages):
            return _err("No such message")
        if index in self._deleted:
            return _err(f"Message {index + 1} is deleted")
        return index

    def cmd_STAT(self, arg: str) -> bytes:
        """RFC 1939 5."""
        count, size = self._totals()
        return _ok(f"{count} {size}")

    def cmd_LIST(self, arg: str) -> bytes:
        """RFC 1939 5: sizes are exact octet counts as RETR sends them (before stuffing)."""
        return self._listing(arg, lambda i: str(self._messages[i].size))

    def cmd_UIDL(self, arg: str) -> bytes:
        """RFC 1939 7: unique, persistent ids."""
        return self._listing(arg, lambda i: self._messages[i].uid)

    def _listing(self, arg: str, value: Callable[[int], str]) -> bytes:
        if arg.strip():
            index = self._message(arg)
            if isinstance(index, bytes):
                return index
            return _ok(f"{index + 1} {value(index)}")
        count, size = self._totals()
        lines = [f"{i + 1} {value(i)}\r\n" for i in range(len(self._messages))
                 if i not in self._deleted]
        return _ok(f"{count} messages ({size} octets)") + "".join(lines).encode() + b".\r\n"

    def cmd_RETR(self, arg: str) -> bytes | list[Output]:
        """RFC 1939 5."""
        index = self._message(arg)
        if isinstance(index, bytes):
            return index
        self._retrieved.add(index)
        return [SendMessage(_ok(f"{self._messages[index].size} octets"), index)]

    def cmd_TOP(self, arg: str) -> bytes | list[Output]:
        """RFC 1939 7: the header, a blank line and the first n lines of the body."""
        parts = arg.split()
        if len(parts) != 2 or not _is_number(parts[1]):
            return _err("Usage: TOP message lines")
        index = self._message(parts[0])
        if isinstance(index, bytes):
            return index
        return [SendMessage(_ok("Top of message follows"), index, int(parts[1]))]

    def cmd_DELE(self, arg: str) -> bytes:
        """RFC 1939 5: marked now, removed at QUIT."""
        index = self._message(arg)
        if isinstance(index, bytes):
            return index
        self._deleted.add(index)
        return _ok(f"Message {index + 1} deleted")

    def cmd_NOOP(self, arg: str) -> bytes:
        """RFC 1939 5."""
        return _ok()

    def cmd_RSET(self, arg: str) -> bytes:
        """RFC 1939 5: unmark every deleted message."""
        self._deleted.clear()
        count, size = self._totals()
        return _ok(f"{count} messages ({size} octets)")


def top_of_message(chunks: Iterable[bytes], body_lines: int) -> Iterator[bytes]:
    """The header, the blank line and ``body_lines`` lines of the body (LF line endings)."""
    header_done = False
    previous = b"\n"  # a message that starts with a blank line has an empty header
    left = body_lines
    for chunk in chunks:
        if not chunk:
            continue
        start = 0
        if not header_done:
            end = (previous + chunk).find(b"\n\n")
            previous = chunk[-1:]
            if end < 0:
                yield chunk
                continue
            header_done = True
            start = end + 1  # (end + 2) in previous+chunk is end + 1 in chunk
            yield chunk[:start]
        while left and start < len(chunk):
            newline = chunk.find(b"\n", start)
            stop = len(chunk) if newline < 0 else newline + 1
            yield chunk[start:stop]
            start = stop
            if newline >= 0:
                left -= 1
        if not left:
            return


COMMANDS: dict[str, Callable[[POP3Session, str], bytes | list[Output]]] = {
    "CAPA": POP3Session.cmd_CAPA, "STLS": POP3Session.cmd_STLS, "USER": POP3Session.cmd_USER,
    "PASS": POP3Session.cmd_PASS, "AUTH": POP3Session.cmd_AUTH, "APOP": POP3Session.cmd_APOP,
    "QUIT": POP3Session.cmd_QUIT, "STAT": POP3Session.cmd_STAT, "LIST": POP3Session.cmd_LIST,
    "UIDL": POP3Session.cmd_UIDL, "RETR": POP3Session.cmd_RETR, "TOP": POP3Session.cmd_TOP,
    "DELE": POP3Session.cmd_DELE, "NOOP": POP3Session.cmd_NOOP, "RSET": POP3Session.cmd_RSET,
}
AUTHORIZATION_COMMANDS = frozenset({"CAPA", "STLS", "USER", "PASS", "AUTH", "APOP", "QUIT"})
TRANSACTION_COMMANDS = frozenset({"CAPA", "QUIT", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE",
                                  "NOOP", "RSET"})
