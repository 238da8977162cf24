"""An in-memory ``MailStore`` (``geomail/proto/imap_mailbox``): a test double of the folder
store, not of the IMAP session, plus a driver that answers the session's requests as the shell
will (``perform`` against the store)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from geomail.proto.imap import (
    Authenticate,
    IMAPSession,
    IMAPSettings,
    LoginRefused,
    Output,
    Send,
)
from geomail.proto.imap_fetch import Summary, summarize
from geomail.proto.imap_mailbox import (
    ALREADYEXISTS,
    CANNOT,
    NONEXISTENT,
    Appended,
    Copied,
    FolderInfo,
    FolderView,
    MailboxError,
    MessageInfo,
    perform,
)

WHEN = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


@dataclass
class _Folder:
    uidvalidity: int
    uidnext: int = 1
    modseq: int = 1
    messages: dict[int, tuple[MessageInfo, bytes]] = field(default_factory=dict)
    special_use: frozenset[str] = frozenset()


class MemoryStore:
    """Folders in dicts; names as the session passes them (decoded, ``/`` separated)."""

    def __init__(self) -> None:
        self.folders: dict[str, _Folder] = {"INBOX": _Folder(1000)}
        self.subscribed: set[str] = {"INBOX"}
        self._validity = 1000

    def _folder(self, name: str) -> _Folder:
        folder = self.folders.get(name)
        if folder is None:
            raise MailboxError(NONEXISTENT, "no such mailbox")
        return folder

    def add(self, name: str, message: bytes, flags: Sequence[str] = (),
            when: datetime.datetime = WHEN) -> int:
        """Deliver a message (as the MTA would)."""
        folder = self._folder(name)
        folder.modseq += 1
        uid = folder.uidnext
        folder.uidnext += 1
        size = len(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        info = MessageInfo(uid, frozenset(flags), size, when, folder.modseq)
        folder.messages[uid] = (info, message)
        return uid

    def list_folders(self) -> Sequence[FolderInfo]:
        return [FolderInfo(name, f.special_use,
                           any(n.startswith(name + "/") for n in self.folders),
                           name in self.subscribed)
                for name, f in self.folders.items()]

    def create(self, name: str, special_use: frozenset[str]) -> None:
        if name in self.folders:
            raise MailboxError(ALREADYEXISTS, "mailbox exists")
        self._validity += 1
        self.folders[name] = _Folder(self._validity, special_use=special_use)

    def delete(self, name: str) -> None:
        self._folder(name)
        if name == "INBOX":
            raise MailboxError(CANNOT, "cannot delete INBOX")
        del self.folders[name]

    def rename(self, old: str, new: str) -> None:
        folder = self._folder(old)
        if new in self.folders:
            raise MailboxError(ALREADYEXISTS, "mailbox exists")
        self.folders[new] = folder
        del self.folders[old]

    def subscribe(self, name: str, subscribed: bool) -> None:
        (self.subscribed.add if subscribed else self.subscribed.discard)(name)

    def view(self, name: str) -> FolderView:
        folder = self._folder(name)
        infos = tuple(info for _, (info, _data) in sorted(folder.messages.items()))
        return FolderView(folder.uidvalidity, folder.uidnext, folder.modseq, infos)

    def fetch(self, name: str, uid: int) -> bytes | None:
        entry = self._folder(name).messages.get(uid)
        return entry[1] if entry else None

    def fetch_many(self, name: str, uids: Sequence[int],
                   max_bytes: int) -> Sequence[tuple[int, bytes | None]]:
        return [(uid, self.fetch(name, uid)) for uid in uids]

    def summaries(self, name: str, uids: Sequence[int]) -> Sequence[tuple[int, Summary | None]]:
        return [(uid, summarize(data) if (data := self.fetch(name, uid)) is not None else None)
                for uid in uids]

    def store_flags(self, name: str, uids: Sequence[int], mode: str, flags: frozenset[str],
                    unchangedsince: int | None = None) -> Sequence[MessageInfo]:
        folder = self._folder(name)
        out = []
        for uid in uids:
            entry = folder.messages.get(uid)
            if entry is None:
                continue
            info, data = entry
            if unchangedsince is not None and info.modseq > unchangedsince:
                continue
            new = (info.flags | flags if mode == "+" else info.flags - flags if mode == "-"
                   else flags)
            if new != info.flags:
                folder.modseq += 1
                info = replace(info, flags=new, modseq=folder.modseq)
                folder.messages[uid] = (info, data)
            out.append(info)
        return out

    def append(self, name: str, message: bytes, flags: frozenset[str],
               date: datetime.datetime | None) -> Appended:
        folder = self._folder(name)
        uid = self.add(name, message, sorted(flags), date or WHEN)
        return Appended(folder.uidvalidity, uid)

    def copy(self, source: str, uids: Sequence[int], dest: str, move: bool) -> Copied:
        src, dst = self._folder(source), self._folder(dest)
        done, new = [], []
        for uid in uids:
            entry = src.messages.get(uid)
            if entry is None:
                continue
            info, data = entry
            done.append(uid)
            new.append(self.add(dest, data, sorted(info.flags), info.internaldate))
            if move:
                del src.messages[uid]
        return Copied(dst.uidvalidity, tuple(done), tuple(new))

    def expunge(self, name: str, uids: Sequence[int]) -> Sequence[int]:
        folder = self._folder(name)
        gone = [u for u in uids if u in folder.messages
                and "\\Deleted" in folder.messages[u][0].flags]
        for uid in gone:
            del folder.messages[uid]
        return gone


USERS = {"alice": "secret"}


class Driver:
    """Feeds a session and answers its requests as the shell does; collects what it sends."""

    def __init__(self, store: MemoryStore | None = None, **settings: object) -> None:
        options: dict[str, object] = {"allow_plaintext_auth": True, **settings}
        self.session = IMAPSession(IMAPSettings(**options))  # type: ignore[arg-type]
        self.store = store or MemoryStore()
        self.outputs: list[Output] = []
        self.greeting = self.session.greeting()

    def _carry(self, outputs: list[Output]) -> bytes:
        sent: list[bytes] = []
        outputs = outputs[::-1]  # a stack: answers are carried out before what follows
        while outputs:
            output = outputs.pop()
            self.outputs.append(output)
            if isinstance(output, Send):
                sent.append(output.data)
            elif isinstance(output, Authenticate):
                creds = output.credentials
                ok = USERS.get(creds.username) == creds.password
                outputs.extend(self.session.answer(creds.username if ok else LoginRefused())[::-1])
            elif type(output).__module__ == "geomail.proto.imap_mailbox":
                answer = self.session.answer(perform(self.store, output))  # type: ignore[arg-type]
                outputs.extend(answer[::-1])
        return b"".join(sent)

    def send(self, data: bytes) -> bytes:
        """Feed ``data``; return every octet the session sends in answer."""
        return self._carry(self.session.feed(data))

    def changed(self) -> bytes:
        return self._carry(self.session.changed())

    def login(self) -> bytes:
        return self.send(b"L1 LOGIN alice secret\r\n")

    def select(self, name: str = "INBOX") -> bytes:
        self.login()
        return self.send(f"S1 SELECT {name}\r\n".encode())

