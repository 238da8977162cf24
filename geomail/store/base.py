"""The store interface every mailbox format implements (``store.factory`` picks one)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from geomail.envelope import Body


@dataclass(frozen=True, slots=True)
class Copy:
    """One recipient's copy of a message: the mailbox and the header lines put before the body."""

    mailbox: str  # canonical user address, e.g. "alice@example.com"
    prefix: bytes  # Return-Path:, Delivered-To:, Received: lines, LF line endings
    # A folder of the mailbox instead of its inbox: JUNK for suspected spam. Maildir stores it
    # in the Maildir++ folder ".Junk" (what Dovecot and mail clients show as Junk); mbox has no
    # folders and keeps it in the one mailbox (the message carries an X-Spam: Yes field).
    folder: str = ""


JUNK = "Junk"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a maildrop as POP3 sees it."""

    uid: str  # UIDL (RFC 1939 7): unique in the mailbox, stable forever, 1-70 chars 0x21-0x7E
    size: int  # octets with CRLF line endings, as RETR sends them before dot-stuffing
    key: str  # store-specific locator (file name, offset); opaque to callers


class Maildrop(Protocol):
    """A POP3 session's exclusive view of one mailbox, a snapshot taken when it was opened."""

    messages: Sequence[StoredMessage]

    def read(self, index: int) -> Iterator[bytes]:
        """The message content (LF line endings) in chunks; cooperative (I/O off the hub)."""

    def commit(self, deleted: set[int], retrieved: set[int]) -> None:
        """POP3 UPDATE state: remove ``deleted``, mark ``retrieved`` as seen; durable."""

    def close(self) -> None:
        """Release the maildrop lock (always called, also after a dropped connection)."""


class MessageStore(Protocol):
    """Delivers into and opens per-user mailboxes. Methods are cooperative: called from
    greenlets, they run disk I/O in the threadpool and return once the result is durable."""

    def deliver(self, copies: Sequence[Copy], body: Body) -> None:
        """Store every copy durably (file and directory fsynced), or none: on failure the
        copies already written are removed and ``StoreError`` is raised."""

    def open_maildrop(self, mailbox: str) -> Maildrop:
        """Lock ``mailbox`` for one POP3 session; ``MailboxBusy`` if another session has it."""
