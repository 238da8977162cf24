"""The message content of an SMTP session: DATA (RFC 5321 4.1.1.4) and BDAT chunks (RFC 3030),
read through the dot and chunk readers, with the Received hops counted (RFC 5321 6.3) and the
content handed to the shell as ``MessageData``; the end of the content asks ``MessageComplete``.

A mixin of ``SMTPSession`` (its methods run on the session's own slots), so the per-chunk path
stays plain method calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geomail.proto import reply as R
from geomail.proto.dotreader import ChunkReader, DataFault, DotReader
from geomail.proto.hopcount import HopCounter
from geomail.proto.reply import Reply
from geomail.proto.smtp_types import (
    MessageAborted,
    MessageComplete,
    MessageData,
    MessageStart,
    State,
)

if TYPE_CHECKING:
    from geomail.envelope import Envelope
    from geomail.proto.lines import LineBuffer
    from geomail.proto.smtp import Output
    from geomail.proto.smtp_types import Request, SMTPSettings

MESSAGE_ABORTED = MessageAborted()


class MessageContent:
    """The DATA and BDAT verbs and the reading of their content (mixed into SMTPSession)."""

    # The content slots live here, the rest of the session's in SMTPSession.
    __slots__ = ("_bdat_last", "_bdat_left", "_bdat_refusal", "_body_open", "_chunks", "_data",
                 "_hops", "_resume_state", "state")
    settings: SMTPSettings
    state: State
    envelope: Envelope
    _lines: LineBuffer
    _out: list[Output]
    _data: DotReader | None
    _chunks: ChunkReader | None
    _hops: HopCounter | None
    _body_open: bool
    _bdat_left: int
    _bdat_last: bool
    _bdat_refusal: Reply | None
    _resume_state: State

    if TYPE_CHECKING:
        def _ask(self, request: Request) -> None: ...
        def _close(self, out: list[Output]) -> None: ...
        def _idle_state(self) -> State: ...
        def _reset_transaction(self) -> None: ...
        def _respond(self, reply: Reply, out: list[Output], *, junk: bool = False,
                     protocol: bool = False) -> None: ...

    def cmd_DATA(self, arg: str) -> Reply:
        """RFC 5321 4.1.1.4: 354, then content until CRLF.CRLF."""
        refusal = self._transaction_refusal()
        if refusal is not None:
            return refusal
        if self._in_bdat():
            return R.R503_BAD_SEQUENCE.with_text("DATA cannot follow BDAT")  # RFC 3030 2
        if arg:
            return R.R501_SYNTAX.with_text("DATA takes no arguments")
        self._start_message()
        self._data = DotReader(self._write_body, self.settings.max_message_size,
                               self.settings.max_line_length)
        self.state = State.DATA
        return R.R354_START_DATA

    def _start_message(self) -> None:
        self._body_open = True
        self._hops = HopCounter()
        self._out.append(MessageStart(self.envelope))

    def _in_bdat(self) -> bool:
        """A BDAT chunk of this transaction has been read (accepted or refused)."""
        return self._chunks is not None or self._bdat_refusal is not None

    def _transaction_refusal(self) -> Reply | None:
        if self.state is State.INITIAL:
            return R.R503_HELO_FIRST
        if self.state is State.READY:
            return R.R503_NEED_MAIL
        if self.state is State.MAIL:
            return R.R554_NO_VALID_RECIPIENTS  # RFC 5321 3.3
        return None

    def cmd_BDAT(self, arg: str) -> Reply | None:
        """RFC 3030 2: ``BDAT <size> [LAST]``; the chunk is read even when refused, except one
        that would take the message past the size limit: 552 and close, unread."""
        parts = arg.split()
        size = parts[0] if parts else ""
        if not (size.isascii() and size.isdigit()) or len(size) > 15 or len(parts) > 2 or (
                len(parts) == 2 and parts[1].upper() != "LAST"):
            self.state = State.CLOSED  # without a size the octets that follow cannot be framed
            return R.R501_SYNTAX.with_text("Syntax: BDAT <size> [LAST]; closing connection")
        received = self._chunks.size if self._chunks is not None else 0
        if int(size) + received > self.settings.max_message_size:
            # Reading octets only to refuse them would let one command cost gigabytes of
            # bandwidth and time: refuse and close unread (RFC 1870 6.1).
            self.state = State.CLOSED
            return R.R552_TOO_BIG.with_text("Message too big for system; closing connection")
        self._bdat_left = int(size)
        self._bdat_last = len(parts) == 2
        self._bdat_refusal = self._transaction_refusal() or self._bdat_refusal
        if self._bdat_refusal is None and self._chunks is None:
            self._start_message()
            self._chunks = ChunkReader(self._write_body, self.settings.max_message_size,
                                       self.settings.max_line_length)
        self._resume_state = self.state
        self.state = State.BDAT
        return None

    def _write_body(self, data: bytes) -> None:
        """The readers' sink: count the hops while the header section lasts; hand the content
        to the shell."""
        hops = self._hops
        if hops is not None and not hops.done:
            hops.feed(data)
        self._out.append(MessageData(data))

    def _read_data(self, out: list[Output]) -> bool:
        """Feed buffered bytes to the DATA reader; True when the message ended."""
        assert self._data is not None
        buffered = self._lines.take()
        used = self._data.feed(buffered)
        self._lines.unread(buffered[used:])
        if self._data.fault is DataFault.BARE_NEWLINE:
            out.append(R.R521_BARE_NEWLINE)
            self._close(out)
            return False
        if not self._data.done:
            return False
        self._finish_message(self._data.fault, out)
        return True

    def _read_chunk(self, out: list[Output]) -> bool:
        """Feed buffered bytes to the current BDAT chunk; True when the chunk is complete."""
        if self._bdat_left:
            buffered = self._lines.take()
            part, rest = buffered[: self._bdat_left], buffered[self._bdat_left :]
            self._bdat_left -= len(part)
            if self._chunks is not None and self._bdat_refusal is None:
                self._chunks.feed(part)
            self._lines.unread(rest)
            if self._bdat_left:
                return False
        self.state = self._resume_state
        if self._bdat_refusal is not None:
            refusal = self._bdat_refusal
            if self._bdat_last:
                self._reset_transaction()
                self.state = self._idle_state()
            self._respond(refusal, out)
            return True
        assert self._chunks is not None
        if self._bdat_last:
            self._chunks.finish()
        fault = self._chunks.fault
        if self._bdat_last:
            self._finish_message(fault, out)
        elif fault is not None:
            self._bdat_refusal = _fault_reply(fault)
            self._respond(self._bdat_refusal, out)
        else:
            out.append(Reply(250, "2.0.0", f"{self._chunks.size} octets received"))
        return True

    def _finish_message(self, fault: DataFault | None, out: list[Output]) -> None:
        """The content ended: refuse it (fault, mail loop) or ask the shell to accept it."""
        envelope, hops = self.envelope, self._hops
        self._body_open = False
        self._reset_transaction()
        self.state = self._idle_state()
        assert hops is not None
        if fault is None:
            hops.finish()
            if hops.count <= self.settings.max_received_headers:
                self._ask(MessageComplete(envelope))
                return
        out.append(MESSAGE_ABORTED)
        # RFC 5321 6.3: too many Received fields is a mail loop.
        self._respond(_fault_reply(fault) if fault is not None else R.R554_MAIL_LOOP, out)



def _fault_reply(fault: DataFault) -> Reply:
    return {DataFault.TOO_BIG: R.R552_TOO_BIG, DataFault.LINE_TOO_LONG: R.R554_LINE_TOO_LONG,
            DataFault.BARE_NEWLINE: R.R554_BARE_NEWLINE_IN_BDAT}[fault]
