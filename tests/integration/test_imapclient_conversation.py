"""Protocol conversations with the ``imapclient`` library against geomail's IMAP server on
127.0.0.1 (plaintext login allowed on loopback): CONDSTORE/QRESYNC (RFC 7162), UIDPLUS
(RFC 4315), MOVE (RFC 6851), SPECIAL-USE (RFC 6154), ID (RFC 2971), NAMESPACE (RFC 2342),
STATUS (RFC 9051 6.3.11, RFC 8438 SIZE), SEARCH (RFC 9051 6.4.4), FETCH BODYSTRUCTURE, partial
BODY[] and BINARY[] (RFC 9051 6.4.5, 7.5.2), mailbox names in modified UTF-7 (RFC 9051 5.1.3)
and malformed commands (RFC 9051 7.1.5 BAD)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.message import Message
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.response_types import BodyData

from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE

TIMEOUT = 10


@pytest.fixture
def imap_app(make_app: Callable[..., Any]) -> Any:
    """imap on loopback with plaintext login allowed (the conversations, not TLS, are tested)."""
    return make_app(listen={"smtp": ["127.0.0.1:0"],
                            "imap": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]})


@pytest.fixture
def connect(imap_app: Any) -> Iterator[Callable[[], IMAPClient]]:
    """Logged-in IMAPClients (UIDs on), logged out at the end of the test."""
    clients: list[IMAPClient] = []

    def open_client() -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=imap_app.ports["imap"][0], ssl=False,
                            timeout=TIMEOUT)
        client.login(ALICE, PASSWORD)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        with contextlib.suppress(IMAPClientError, OSError):
            client.logout()


def raw(client: IMAPClient, command: bytes, *args: bytes, uid: bool = False) -> tuple[
        str, list[Any], dict[str, list[Any]]]:
    """A command imapclient has no method for: (status, tagged text, untagged responses)."""
    client._imap.untagged_responses.clear()
    status, data = client._raw_command(command, list(args), uid=uid)
    return status, data, dict(client._imap.untagged_responses)


def message(n: int, subject: str | None = None, body: str = "", extra: str = "") -> bytes:
    subject = subject if subject is not None else f"message {n}"
    return (f"From: Bob <bob{n}@example.org>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <m{n}@example.org>\r\nDate: Mon, 7 Dec 2026 10:0{n % 10}:00 +0000\r\n"
            f"{extra}\r\n{body or f'body of message {n}'}\r\n").encode()


def seed(client: IMAPClient, count: int = 3, folder: str = "INBOX") -> list[int]:
    """APPEND ``count`` messages; their UIDs from APPENDUID (RFC 4315 3)."""
    uids = []
    for n in range(1, count + 1):
        reply = client.append(folder, message(n))
        assert reply.startswith(b"[APPENDUID "), reply
        uids.append(int(reply.split(b"]")[0].split()[2]))
    return uids


# --------------------------------------------------------------------------------------------
# CONDSTORE / QRESYNC
# --------------------------------------------------------------------------------------------


def test_condstore_changedsince_and_unchangedsince(connect):
    """RFC 7162 3.1: ENABLE CONDSTORE (RFC 5161); SELECT reports HIGHESTMODSEQ (3.1.2.1);
    FETCH (CHANGEDSINCE n) returns only messages whose mod-sequence is above n, each with its
    MODSEQ (3.1.4.1, 3.1.5); UID STORE (UNCHANGEDSINCE n) changes the unchanged message and
    refuses the changed one with OK [MODIFIED uid] (3.1.3)."""
    client = connect()
    assert b"CONDSTORE" in client.capabilities()
    assert client.enable("CONDSTORE") == [b"CONDSTORE"]
    uids = seed(client)
    selected = client.select_folder("INBOX")
    highest = selected[b"HIGHESTMODSEQ"]
    assert highest > 0
    client.add_flags([uids[1]], [b"\\Flagged"])
    changed = client.fetch(uids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
    assert list(changed) == [uids[1]]
    assert b"\\Flagged" in changed[uids[1]][b"FLAGS"]
    flagged_modseq = changed[uids[1]][b"MODSEQ"][0]
    assert flagged_modseq > highest
    assert client.folder_status("INBOX", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"] == flagged_modseq
    found = client.search(["MODSEQ", highest + 1])  # 3.1.5: SEARCH MODSEQ, (MODSEQ n) in answer
    assert list(found) == [uids[1]] and found.modseq == flagged_modseq

    status, tagged, _ = raw(client, b"STORE", f"{uids[0]},{uids[1]}".encode(),
                            f"(UNCHANGEDSINCE {highest})".encode(), b"+FLAGS", b"(\\Seen)",
                            uid=True)
    assert status == "OK" and tagged[0].startswith(f"[MODIFIED {uids[1]}]".encode()), tagged
    flags = client.get_flags(uids)
    assert b"\\Seen" in flags[uids[0]] and b"\\Seen" not in flags[uids[1]]
    after = client.fetch(uids, ["MODSEQ"])
    assert after[uids[0]][b"MODSEQ"][0] > flagged_modseq
    assert after[uids[1]][b"MODSEQ"][0] == flagged_modseq
    assert after[uids[2]][b"MODSEQ"][0] <= highest


def test_qresync_select_vanished_earlier(connect):
    """RFC 7162 3.2.5: SELECT (QRESYNC (uidvalidity modseq)) after another session expunged
    one message and flagged another gives * VANISHED (EARLIER) with the expunged UID
    (3.2.10) and an untagged FETCH with the new FLAGS and MODSEQ of the changed one; and
    UID FETCH (CHANGEDSINCE n VANISHED) says the same (3.2.6)."""
    other = connect()
    uids = seed(other, 4)
    client = connect()
    assert client.enable("QRESYNC") == [b"QRESYNC"]
    selected = client.select_folder("INBOX")
    validity, highest = selected[b"UIDVALIDITY"], selected[b"HIGHESTMODSEQ"]
    client.unselect_folder()

    other.select_folder("INBOX")
    other.delete_messages([uids[1]])
    other.uid_expunge([uids[1]])
    other.add_flags([uids[2]], [b"$Important"])

    status, _, untagged = raw(client, b"SELECT", b"INBOX",
                              f"(QRESYNC ({validity} {highest}))".encode())
    assert status == "OK"
    assert untagged["VANISHED"] == [f"(EARLIER) {uids[1]}".encode()], untagged
    fetches = untagged["FETCH"]
    assert len(fetches) == 1 and f"UID {uids[2]}".encode() in fetches[0], fetches
    assert b"$Important" in fetches[0] and b"MODSEQ (" in fetches[0]
    assert untagged["EXISTS"] == [b"3"]

    status, _, untagged = raw(client, b"FETCH", b"1:*", b"(FLAGS)",
                              f"(CHANGEDSINCE {highest} VANISHED)".encode(), uid=True)
    assert status == "OK"
    assert untagged["VANISHED"] == [f"(EARLIER) {uids[1]}".encode()], untagged
    assert len(untagged["FETCH"]) == 1 and b"$Important" in untagged["FETCH"][0]

    # QRESYNC with a stale UIDVALIDITY: a plain SELECT, no VANISHED (RFC 7162 3.2.5.2)
    status, _, untagged = raw(client, b"SELECT", b"INBOX",
                              f"(QRESYNC ({validity + 1} {highest}))".encode())
    assert status == "OK" and "VANISHED" not in untagged and "FETCH" not in untagged

    # RFC 7162 3.2.10: once QRESYNC is enabled, expunges are VANISHED, also during IDLE
    # (RFC 2177), where a new message is announced with EXISTS
    client.idle()
    other.delete_messages([uids[0]])
    other.uid_expunge([uids[0]])
    other.append("INBOX", message(9))
    seen: list[Any] = []
    while (3, b"EXISTS") not in seen:  # the changes may come in more than one wake-up
        got = client.idle_check(timeout=TIMEOUT)
        assert got, f"IDLE woke with nothing after {seen}"
        seen.extend(got)
    client.idle_done()
    assert (b"VANISHED", uids[0]) in seen, seen
    assert not any(b"EXPUNGE" in response for response in seen), seen


# --------------------------------------------------------------------------------------------
# UIDPLUS, MOVE
# --------------------------------------------------------------------------------------------


def test_uidplus_copyuid_uid_expunge(connect):
    """RFC 4315 3: APPEND answers [APPENDUID validity uid], COPY answers
    [COPYUID validity source-uids dest-uids] with the destination's UIDVALIDITY; 2.1:
    UID EXPUNGE removes only the listed \\Deleted messages."""
    client = connect()
    uids = seed(client, 3)
    archive = client.select_folder("Archive")
    client.select_folder("INBOX")
    # imapclient's copy() returns the untagged data of UID COPY, so the tagged text is read raw
    status, tagged, _ = raw(client, b"COPY", f"{uids[0]},{uids[1]}".encode(), b"Archive",
                            uid=True)
    assert status == "OK"
    code = tagged[0].split(b"]")[0].split()
    assert code[0] == b"[COPYUID" and int(code[1]) == archive[b"UIDVALIDITY"], tagged
    assert code[2] == f"{uids[0]}:{uids[1]}".encode() or code[2] == f"{uids[0]},{uids[1]}".encode()
    dest = code[3]
    next_uid = archive[b"UIDNEXT"]
    assert dest in (f"{next_uid}:{next_uid + 1}".encode(), f"{next_uid},{next_uid + 1}".encode())

    client.delete_messages(uids)
    client.uid_expunge([uids[0]])
    left = client.search("ALL")
    assert left == uids[1:]
    assert all(b"\\Deleted" in flags for flags in client.get_flags(left).values())
    client.close_folder()  # RFC 9051 6.4.1: CLOSE expunges the rest, silently
    assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
    client.select_folder("Archive")
    got = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    assert sorted(v[b"BODY[HEADER.FIELDS (SUBJECT)]"] for v in got.values()) == [
        b"Subject: message 1\r\n\r\n", b"Subject: message 2\r\n\r\n"]


def test_move(connect):
    """RFC 6851 3.3: UID MOVE sends [COPYUID ...] (before the EXPUNGE or VANISHED responses)
    and the messages leave the source; another session sees them in the destination."""
    client = connect()
    uids = seed(client, 3)
    trash = client.select_folder("Trash")
    client.select_folder("INBOX")
    status, tagged, untagged = raw(client, b"MOVE", f"{uids[0]},{uids[2]}".encode(), b"Trash",
                                   uid=True)
    assert status == "OK", tagged
    first, second = trash[b"UIDNEXT"], trash[b"UIDNEXT"] + 1
    assert untagged["OK"][0].startswith(f"[COPYUID {trash[b'UIDVALIDITY']} {uids[0]},{uids[2]} "
                                        f"{first}:{second}]".encode()), untagged
    assert untagged["EXPUNGE"] == [b"3", b"1"] or untagged["EXPUNGE"] == [b"1", b"2"], untagged
    assert client.search("ALL") == [uids[1]]
    other = connect()
    other.select_folder("Trash", readonly=True)
    envelopes = other.fetch(other.search(), ["ENVELOPE"])
    subjects = sorted(v[b"ENVELOPE"].subject for v in envelopes.values())
    assert subjects == [b"message 1", b"message 3"]


# --------------------------------------------------------------------------------------------
# LIST with special use, ID, NAMESPACE, STATUS
# --------------------------------------------------------------------------------------------


def test_special_use_list(connect):
    """RFC 6154 2: LIST shows \\Sent \\Drafts \\Trash \\Junk \\Archive on the special folders
    (imapclient's find_special_folder relies on it); RFC 6154 5.1 / RFC 5258:
    LIST (SPECIAL-USE) "" "*" returns only those folders."""
    client = connect()
    folders = {name: set(flags) for flags, _, name in client.list_folders()}
    assert "INBOX" in folders
    for use in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert f"\\{use}".encode() in folders[use], folders
        assert client.find_special_folder(f"\\{use}".encode()) == use
    assert not any(f"\\{use}".encode() in folders["INBOX"]
                   for use in ("Sent", "Drafts", "Trash", "Junk", "Archive"))
    client.create_folder("Projects")
    status, _, untagged = raw(client, b"LIST", b"(SPECIAL-USE)", b'""', b'"*"')
    assert status == "OK"
    listed = b"\n".join(x for x in untagged["LIST"] if isinstance(x, bytes))
    assert b"Archive" in listed and b"Sent" in listed
    assert b"INBOX" not in listed and b"Projects" not in listed, listed


def test_id_and_namespace(connect):
    """RFC 2971 3.1: ID with the client's fields gets the server's (a parenthesized list of
    string pairs, or NIL); RFC 2342 5: NAMESPACE is one personal namespace "" with the
    separator "/" and no other users' or shared namespaces."""
    client = connect()
    answer = client.id_({"name": "imapclient-test", "version": "1"})
    fields = dict(zip(answer[0][::2], answer[0][1::2], strict=True))
    assert fields[b"name"] == b"geomail", answer
    namespaces = client.namespace()
    assert namespaces.personal == (("", "/"),)
    assert namespaces.other is None and namespaces.shared is None


def test_status_items(connect):
    """RFC 9051 6.3.11 STATUS MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE (RFC 8438) and
    HIGHESTMODSEQ (RFC 7162 3.1.2.3) agree with SELECT and FETCH of the same folder."""
    client = connect()
    uids = seed(client, 3)
    client.select_folder("INBOX")
    client.add_flags([uids[0]], [b"\\Seen"])
    client.add_flags([uids[1]], [b"\\Deleted"])
    sizes = client.fetch(uids, ["RFC822.SIZE", "MODSEQ"])
    client.unselect_folder()
    status = client.folder_status("INBOX", ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                                            "DELETED", "SIZE", "HIGHESTMODSEQ", "RECENT"])
    selected = client.select_folder("INBOX", readonly=True)
    assert status[b"MESSAGES"] == 3 == selected[b"EXISTS"]
    assert status[b"UIDNEXT"] == selected[b"UIDNEXT"] == uids[-1] + 1
    assert status[b"UIDVALIDITY"] == selected[b"UIDVALIDITY"]
    assert status[b"UNSEEN"] == 2 and status[b"DELETED"] == 1
    assert status[b"SIZE"] == sum(v[b"RFC822.SIZE"] for v in sizes.values())
    assert status[b"HIGHESTMODSEQ"] == max(v[b"MODSEQ"][0] for v in sizes.values())
    assert status[b"HIGHESTMODSEQ"] == selected[b"HIGHESTMODSEQ"]
    assert status[b"RECENT"] == 0


# --------------------------------------------------------------------------------------------
# SEARCH
# --------------------------------------------------------------------------------------------


def test_search_keys_and_utf8(connect):
    """RFC 9051 6.4.4: SEARCH with several keys (AND of them), OR, NOT, HEADER, LARGER, UID,
    SINCE/BEFORE (internal date), flags; CHARSET UTF-8 with non-ASCII text matches an RFC 2047
    encoded Subject and an 8-bit body (sent as literals); an unknown charset is
    NO [BADCHARSET] (7.1)."""
    client = connect()
    u1 = int(client.append("INBOX", message(1, "alpha report", extra="X-Tag: one\r\n"))
             .split(b"]")[0].split()[2])
    u2 = int(client.append("INBOX", message(
        2, "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
        "Ein naïves Café\r\n" * 20, "X-Tag: two\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n")).split(b"]")[0].split()[2])
    u3 = int(client.append("INBOX", message(3, "beta notes"), flags=[b"\\Flagged"])
             .split(b"]")[0].split()[2])
    client.select_folder("INBOX")
    assert client.search(["SUBJECT", "alpha", "FROM", "bob1"]) == [u1]
    assert client.search(["SUBJECT", "alpha", "FROM", "bob3"]) == []
    assert sorted(client.search(["OR", "SUBJECT", "alpha", "SUBJECT", "beta"])) == [u1, u3]
    assert client.search(["HEADER", "X-Tag", "two"]) == [u2]
    assert sorted(client.search(["NOT", "FLAGGED", "UNSEEN"])) == [u1, u2]
    assert client.search(["LARGER", 400]) == [u2]
    assert sorted(client.search(["UID", f"{u2}:*"])) == [u2, u3]
    assert sorted(client.search(["SINCE", "1-Jan-2000", "NOT", "BEFORE", "1-Jan-2000"])) == [
        u1, u2, u3]
    assert client.search(["SUBJECT", "grüße aus köln"], charset="UTF-8") == [u2]
    assert client.search(["BODY", "NAÏVES CAFÉ"], charset="UTF-8") == [u2]
    assert client.search(["TEXT", "Köln"], charset="UTF-8") == [u2]
    assert client.search(["SUBJECT", "Grüße", "FLAGGED"], charset="UTF-8") == []
    # imapclient encodes the criteria in the charset itself, so an unknown one is sent raw
    status, tagged, _ = raw(client, b"SEARCH", b"CHARSET", b"X-NO-SUCH-CHARSET", b"SUBJECT",
                            b"alpha")
    assert status == "NO" and tagged[0].startswith(b"[BADCHARSET"), tagged


# --------------------------------------------------------------------------------------------
# FETCH BODYSTRUCTURE, partial body sections, BINARY
# --------------------------------------------------------------------------------------------

ATTACHMENT = bytes(range(1, 256)) * 3  # 8-bit but no NUL: an ordinary literal (4.3)


def multipart_message() -> bytes:
    """multipart/mixed: a multipart/alternative (text/plain QP, text/html 8bit) and a base64
    application/octet-stream attachment; built by hand so the octets are known."""
    import base64
    encoded = base64.encodebytes(ATTACHMENT).decode().replace("\n", "\r\n")
    html = "<html><body><p>Caf\u00e9 cr\u00e8me, tr\u00e8s bien</p></body></html>\r\n" * 3
    return (
        f"From: Bob <bob@example.org>\r\nTo: {ALICE}\r\nSubject: structure\r\n"
        "Message-ID: <structure@example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        "preamble\r\n--outer\r\n"
        'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
        "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "Caf=C3=A9 cr=C3=A8me, tr=C3=A8s bien\r\nsecond line\r\n"
        "--inner\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"{html}"
        "--inner--\r\n"
        "--outer\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n"
        "Content-Disposition: attachment; filename=\"data.bin\"\r\n"
        "Content-Transfer-Encoding: base64\r\nContent-ID: <att@example.org>\r\n"
        "Content-Description: some bytes\r\n\r\n"
        f"{encoded}"
        "--outer--\r\nepilogue\r\n"
    ).encode()


def leaves(part: Message) -> list[Message]:
    if part.is_multipart():
        return [leaf for sub in part.get_payload() for leaf in leaves(sub)]
    return [part]


def payload_octets(part: Message) -> bytes:
    """The part's body as sent: compat32 hands 8-bit text back decoded with its charset."""
    charset = part.get_content_charset() or "ascii"
    return str(part.get_payload(decode=False)).encode(charset, "surrogateescape")


def check_structure(structure: BodyData, part: Message) -> None:
    """One BODYSTRUCTURE level against the email package's view of the same part."""
    if part.is_multipart():
        assert structure.is_multipart
        children, subtype = structure[0], structure[1]
        assert subtype.decode().lower() == part.get_content_subtype()
        assert len(children) == len(part.get_payload())
        for child, sub in zip(children, part.get_payload(), strict=True):
            check_structure(child, sub)
        params = {k.decode().lower(): v.decode()
                  for k, v in zip(structure[2][::2], structure[2][1::2], strict=True)}
        assert params == {"boundary": part.get_boundary()}
        return
    assert not structure.is_multipart
    mtype, subtype, params, content_id, description, encoding, size = structure[:7]
    assert (mtype.decode().lower(), subtype.decode().lower()) == (
        part.get_content_maintype(), part.get_content_subtype())
    params = {k.decode().lower(): v.decode() for k, v in zip(params[::2], params[1::2],
                                                              strict=True)}
    assert params == {k.lower(): v for k, v in part.get_params()[1:]}
    assert (content_id.decode() if content_id else None) == part["Content-ID"]
    assert (description.decode() if description else None) == part["Content-Description"]
    assert encoding.decode().lower() == (part["Content-Transfer-Encoding"] or "7bit").lower()
    body = payload_octets(part)
    assert size == len(body)
    extension = list(structure[7:])
    if part.get_content_maintype() == "text":
        assert extension.pop(0) == body.count(b"\r\n") + (not body.endswith(b"\r\n"))
    _md5, disposition = extension[:2]
    if part.get_content_disposition() is None:
        assert disposition is None
    else:
        assert disposition[0].decode().lower() == part.get_content_disposition()
        fields = dict(zip(disposition[1][::2], disposition[1][1::2], strict=True))
        assert {k.decode().lower(): v.decode() for k, v in fields.items()} == {
            "filename": part.get_filename()}


def test_bodystructure_and_sections(connect):
    """RFC 9051 7.5.2 BODYSTRUCTURE of a nested multipart message agrees with the stdlib email
    package (types, parameters, id, description, encoding, octets, lines); BODY[1.2]<10.20>
    is those octets of the HTML part (6.4.5 partial fetch, answered as BODY[1.2]<10>);
    BINARY[2] is the attachment decoded from base64 (RFC 3516 / 9051 6.4.5), BINARY.SIZE[2]
    its length; BINARY[1.1] is the quoted-printable text decoded."""
    client = connect()
    raw_message = multipart_message()
    uid = int(client.append("INBOX", raw_message).split(b"]")[0].split()[2])
    client.select_folder("INBOX")
    parsed = email.message_from_bytes(raw_message, policy=email.policy.compat32)
    got = client.fetch([uid], ["BODYSTRUCTURE", "BODY.PEEK[1.2]<10.20>", "BINARY.PEEK[2]",
                               "BINARY.SIZE[2]", "BINARY.PEEK[1.1]", "BODY.PEEK[2.MIME]"])[uid]
    check_structure(got[b"BODYSTRUCTURE"], parsed)
    html = payload_octets(leaves(parsed)[1])
    assert got[b"BODY[1.2]<10>"] == html[10:30]
    assert got[b"BINARY[2]"] == ATTACHMENT
    assert got[b"BINARY.SIZE[2]"] == len(ATTACHMENT)
    assert got[b"BINARY[1.1]"] == "Café crème, très bien\r\nsecond line".encode()
    assert got[b"BODY[2.MIME]"].startswith(b"Content-Type: application/octet-stream")
    assert got[b"BODY[2.MIME]"].endswith(b"\r\n\r\n")
    whole = client.fetch([uid], ["RFC822.SIZE", "BODY.PEEK[]", "BODY.PEEK[TEXT]<0.8>"])[uid]
    assert whole[b"BODY[]"] == raw_message and whole[b"RFC822.SIZE"] == len(raw_message)
    assert whole[b"BODY[TEXT]<0>"] == b"preamble"
    assert client.get_flags([uid])[uid] == ()  # every item was a PEEK


# --------------------------------------------------------------------------------------------
# Mailbox names in modified UTF-7
# --------------------------------------------------------------------------------------------


def test_non_ascii_mailbox_names(connect):
    """RFC 9051 5.1.3 / RFC 3501 5.1.3: CREATE, RENAME, SELECT, STATUS and DELETE of names
    with non-ASCII characters sent in modified UTF-7 (imapclient encodes them); LIST gives the
    same encoding back (checked undecoded), children move with a RENAME, and the decoded names
    round-trip."""
    client = connect()
    client.create_folder("Reçus/Été 2026")
    names = {name for _, _, name in client.list_folders()}
    assert {"Reçus", "Reçus/Été 2026"} <= names
    client.folder_encode = False
    raw_names = {name for _, _, name in client.list_folders()}
    assert {b"Re&AOc-us/&AMk-t&AOk- 2026", b"Re&AOc-us"} <= raw_names, raw_names
    client.folder_encode = True
    client.append("Reçus/Été 2026", message(1))
    client.rename_folder("Reçus", "Ελληνικά & 日本語")
    names = {name for _, _, name in client.list_folders()}
    assert "Reçus" not in names and "Reçus/Été 2026" not in names
    assert {"Ελληνικά & 日本語", "Ελληνικά & 日本語/Été 2026"} <= names
    assert client.folder_status("Ελληνικά & 日本語/Été 2026", ["MESSAGES"])[b"MESSAGES"] == 1
    client.folder_encode = False
    raw_names = {name for _, _, name in client.list_folders()}
    assert b"&A5UDuwO7A7cDvQO5A7oDrA- &- &ZeVnLIqe-" in raw_names, raw_names
    client.folder_encode = True
    assert client.select_folder("Ελληνικά & 日本語/Été 2026")[b"EXISTS"] == 1
    client.unselect_folder()
    client.delete_folder("Ελληνικά & 日本語/Été 2026")
    client.delete_folder("Ελληνικά & 日本語")
    names = {name for _, _, name in client.list_folders()}
    assert not any(name.startswith("Ελληνικά") for name in names)
    # a name that is not valid modified UTF-7 (a raw 8-bit octet) is refused, not stored
    client.folder_encode = False
    status, tagged, _ = raw_or_error(client, b"CREATE", "Caf\u00e9".encode())
    assert status in ("NO", "BAD"), tagged
    client.folder_encode = True
    assert not any(name.startswith("Caf") for _, _, name in client.list_folders())


def raw_or_error(client: IMAPClient, command: bytes, *args: bytes) -> tuple[str, Any, Any]:
    try:
        return raw(client, command, *args)
    except imaplib.IMAP4.error as error:
        return "BAD", str(error), {}


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_malformed_commands_get_bad_and_connection_survives(connect):
    """RFC 9051 7.1.5: a malformed command (unbalanced parenthesis, unknown command, unknown
    FETCH item, a sequence set of letters, STORE without flags) is answered BAD with the
    command's tag, and the session goes on: NOOP, FETCH and SEARCH still work afterwards."""
    client = connect()
    uids = seed(client, 2)
    client.select_folder("INBOX")
    for command, args in ((b"FETCH", [b"1:*", b"(FLAGS"]),
                          (b"XYZZY", [b"plugh"]),
                          (b"FETCH", [b"1", b"(NOSUCHITEM)"]),
                          (b"FETCH", [b"a:b", b"(FLAGS)"]),
                          (b"STORE", [b"1", b"+FLAGS"]),
                          (b"SEARCH", [b"(SUBJECT"])):
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):
            raw(client, command, *args)
        assert client._imap.noop()[0] == "OK"
    assert sorted(client.search("ALL")) == uids
    assert list(client.fetch(uids, ["FLAGS"])) == uids


# --------------------------------------------------------------------------------------------
# Flags, keywords, INTERNALDATE, subscriptions
# --------------------------------------------------------------------------------------------


def test_flags_keywords_and_internaldate(connect):
    """RFC 9051 2.3.2: system flags and keywords (incl. $Forwarded, kept as Maildir's P) set,
    removed and replaced by STORE (6.4.6) are what FETCH FLAGS and SEARCH KEYWORD see from
    another session; PERMANENTFLAGS has \\* (new keywords allowed); APPEND's date-time is the
    INTERNALDATE (6.3.12, 2.3.3), the same instant in any zone."""
    client = connect()
    when = datetime(2025, 3, 9, 23, 30, 15, tzinfo=timezone(timedelta(hours=-5)))
    uid = int(client.append("INBOX", message(1), flags=[b"$Forwarded", b"\\Answered"],
                            msg_time=when).split(b"]")[0].split()[2])
    selected = client.select_folder("INBOX")
    assert b"\\*" in selected[b"PERMANENTFLAGS"]
    assert set(client.get_flags([uid])[uid]) == {b"$Forwarded", b"\\Answered"}
    client.add_flags([uid], [b"$label1", b"Work", b"\\Flagged"])
    client.remove_flags([uid], [b"\\Answered"])
    other = connect()
    other.normalise_times = False
    other.select_folder("INBOX", readonly=True)
    expected = {b"$Forwarded", b"$label1", b"Work", b"\\Flagged"}
    got = other.fetch([uid], ["FLAGS", "INTERNALDATE"])[uid]
    assert set(got[b"FLAGS"]) == expected
    assert got[b"INTERNALDATE"] == when
    assert other.search(["KEYWORD", "Work", "KEYWORD", "$Forwarded", "UNKEYWORD", "Other"]) == [
        uid]
    client.set_flags([uid], [b"\\Seen"])
    # RFC 9051 6.1.2: the other session learns of the change at its NOOP, as FETCH FLAGS
    _, responses = other.noop()
    assert responses == [(1, b"FETCH", (b"FLAGS", (b"\\Seen",)))], responses
    assert other.get_flags([uid])[uid] == (b"\\Seen",)
    assert other.search(["KEYWORD", "Work"]) == []


def test_subscriptions_with_non_ascii_names(connect):
    """RFC 9051 6.3.7/6.3.8 SUBSCRIBE/UNSUBSCRIBE and LIST (SUBSCRIBED) (RFC 5258) with a
    modified UTF-7 name; STATUS of a missing mailbox is NO [NONEXISTENT] (7.1)."""
    client = connect()
    client.create_folder("Été")
    client.subscribe_folder("Été")
    assert "Été" in {name for _, _, name in client.list_sub_folders()}
    client.unsubscribe_folder("Été")
    assert "Été" not in {name for _, _, name in client.list_sub_folders()}
    assert "Été" in {name for _, _, name in client.list_folders()}
    with pytest.raises(IMAPClientError, match="NONEXISTENT"):
        client.folder_status("Nowhere", ["MESSAGES"])


def test_authenticate_plain_with_continuation(imap_app):
    """RFC 9051 6.2.2 AUTHENTICATE PLAIN (RFC 4616) without an initial response: the server
    sends an empty continuation and takes the credentials on the next line; a wrong password
    is NO [AUTHENTICATIONFAILED] (7.1) and the session can try again."""
    client = IMAPClient("127.0.0.1", port=imap_app.ports["imap"][0], ssl=False, timeout=TIMEOUT)
    with pytest.raises(IMAPClientError, match="AUTHENTICATIONFAILED"):
        client.plain_login(ALICE, "wrong password")
    client.plain_login(ALICE, PASSWORD)
    assert client.select_folder("INBOX")[b"EXISTS"] == 0
    client.logout()
