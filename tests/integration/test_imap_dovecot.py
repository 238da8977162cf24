"""geomail's Maildir++ tree served by Dovecot's imapd (Debian dovecot-imapd), and back (issue 14):
what geomail wrote (folders in modified UTF-7, RFC 3501 5.1.3; UIDs and UIDVALIDITY in
``dovecot-uidlist``, RFC 9051 2.3.1.1; flags and keywords, RFC 9051 2.3.2; subscriptions,
RFC 9051 6.3.7; INTERNALDATE and RFC822.SIZE, RFC 9051 2.3.3-2.3.4) must read the same through
Dovecot, and what Dovecot then changes must read right through geomail. Both servers are asked
the same questions over IMAP (imaplib) and their answers compared; Dovecot's log must stay
free of complaints about the files.

Differences by design, left out of the comparison: ``\\Recent``, ``\\Marked`` and
``\\UnMarked`` (geomail gives none), and the FLAGS list of a folder (geomail lists every keyword
of ``dovecot-keywords``, Dovecot those its index saw in use; each must hold the flags in use).
Special use is compared, but Dovecot takes it from its config (``tests/support/dovecot.py``
declares geomail's five folders).
"""

from __future__ import annotations

import datetime
import imaplib
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.dovecot import Dovecot
from tests.support.geomail import PASSWORD, base_config, running_app
from tests.support.pop3 import ALICE, make_message, send

TIMEOUT = 10
ETE = "Projets/&AMk-t&AOk-"  # "Projets/Été" in modified UTF-7 (RFC 3501 5.1.3)
NIHONGO = "&ZeVnLIqe-"  # "日本語"
ACME = "Work/Clients/ACME"
DATE = "06-Mar-2024 10:20:30 +0100"
# Optional in IMAP (RFC 9051 2.3.2, 7.3.1) and by design not given by geomail.
UNCOMPARED = {"\\Recent", "\\Marked", "\\UnMarked"}

Snapshot = dict[str, Any]


def ok(response: tuple[str, list[Any]]) -> list[Any]:
    status, data = response
    assert status == "OK", data
    return data


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def geomail(tmp_path: Path, store: Path) -> Iterator[Any]:
    """A geomail App with smtp and imap (plaintext login on loopback) over ``store``."""
    raw = base_config(tmp_path, store={"path": str(store)},
                      listen={"smtp": ["127.0.0.1:0"],
                              "imap": [{"address": "127.0.0.1:0",
                                        "allow_plaintext_auth": True}]})
    with running_app(raw) as app:
        yield app


def connect(port: int, user: str = ALICE, password: str = PASSWORD) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    ok(imap.login(user, password))
    return imap


_LIST = re.compile(rb'\((?P<attrs>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)')
_META = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|RFC822\.SIZE (\d+)|INTERNALDATE \"([^\"]+)\"")


def _names(lines: list[Any]) -> dict[str, set[str]]:
    """LIST/LSUB responses: name -> attributes."""
    out = {}
    for line in lines:
        if line is None:
            continue
        match = _LIST.fullmatch(line)
        assert match, line
        name = match["name"].decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[name] = set(match["attrs"].decode().split()) - UNCOMPARED
    return out


def _date(text: bytes) -> datetime.datetime:
    return datetime.datetime.strptime(text.decode().strip(), "%d-%b-%Y %H:%M:%S %z")


def snapshot(imap: imaplib.IMAP4) -> Snapshot:
    """Everything a client sees of the mailbox: folders with attributes, subscriptions, and per
    folder UIDVALIDITY, UIDNEXT, the FLAGS list, each UID's flags, size, date and octets."""
    folders = _names(ok(imap.list('""', "*")))
    result: Snapshot = {"list": folders, "lsub": set(_names(ok(imap.lsub('""', "*")))),
                        "folders": {}}
    for name in sorted(folders):
        if "\\Noselect" in folders[name] or "\\NonExistent" in folders[name]:
            continue
        status = ok(imap.status(quote(name), "(UIDVALIDITY UIDNEXT MESSAGES)"))[0]
        numbers = dict(re.findall(rb"(UIDVALIDITY|UIDNEXT|MESSAGES) (\d+)", status))
        ok(imap.select(quote(name), readonly=True))
        flags = imap.response("FLAGS")[1][0]
        messages = {}
        if int(numbers[b"MESSAGES"]):
            for line in ok(imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")):
                found = {i: v for m in _META.finditer(line)
                         for i, v in enumerate(m.groups()) if v is not None}
                uid = int(found[0])
                body = ok(imap.uid("FETCH", str(uid), "(BODY.PEEK[])"))[0][1]
                messages[uid] = {
                    "flags": set(found[1].decode().split()) - UNCOMPARED,
                    "size": int(found[2]), "date": _date(found[3]), "body": body}
        result["folders"][name] = {
            "uidvalidity": int(numbers[b"UIDVALIDITY"]), "uidnext": int(numbers[b"UIDNEXT"]),
            "flags": set(re.sub(rb"[()]", b"", flags).decode().split()) - UNCOMPARED,
            "messages": messages}
        ok(imap.close())
    return result


def compare(geomail_view: Snapshot, dovecot_view: Snapshot) -> None:
    """The two views equal, folder by folder and message by message. The FLAGS lists may
    differ (unused keywords stay in ``dovecot-keywords``; Dovecot lists those its index has
    seen in use) but each holds every flag in use."""
    assert geomail_view["list"] == dovecot_view["list"]
    assert geomail_view["lsub"] == dovecot_view["lsub"]
    assert geomail_view["folders"].keys() == dovecot_view["folders"].keys()
    differences: list[tuple[Any, ...]] = []
    for name, ours in geomail_view["folders"].items():
        theirs = dovecot_view["folders"][name]
        for key in ("uidvalidity", "uidnext"):
            if ours[key] != theirs[key]:
                differences.append((name, key, ours[key], theirs[key]))
        if ours["messages"].keys() != theirs["messages"].keys():
            differences.append((name, "uids", sorted(ours["messages"]),
                                sorted(theirs["messages"])))
        for uid, message in ours["messages"].items():
            other = theirs["messages"].get(uid, {})
            differences += [(name, uid, key, value, other.get(key))
                            for key, value in message.items() if other.get(key) != value]
        for view in (ours, theirs):
            in_use = set().union(*(m["flags"] for m in view["messages"].values()))
            if not in_use <= view["flags"]:
                differences.append((name, "FLAGS", view["flags"], in_use))
    assert differences == []


def write_with_geomail(app: Any) -> None:
    """Deliver, create, append, flag, copy, move, expunge and subscribe through geomail."""
    for n in range(1, 6):
        send(app.ports["smtp"][0], make_message(n))
    imap = connect(app.ports["imap"][0])
    ok(imap.list('""', "*"))  # the special-use folders are made
    for name in (ACME, ETE, NIHONGO, "Projets/Old"):
        ok(imap.create(quote(name)))
    for name in (ACME, ETE, NIHONGO, "Projets/Old", "Sent", "Drafts"):
        ok(imap.subscribe(quote(name)))
    ok(imap.unsubscribe(quote("Projets/Old")))
    ok(imap.append("Sent", "(\\Seen)", f'"{DATE}"', b"Subject: sent\r\n\r\nhello\r\n"))
    ok(imap.append("Drafts", "(\\Draft $Draft-Note)", None,
                   b"Subject: draft\r\nX-8bit: \xc3\xa9\r\n\r\nunfinished\r\n"))
    ok(imap.select("INBOX"))
    ok(imap.store("1", "+FLAGS", "(\\Seen \\Flagged)"))
    ok(imap.store("2", "+FLAGS", "(\\Answered $Forwarded)"))
    ok(imap.store("3", "+FLAGS", "($Junk custom-tag NonJunk \\Seen)"))
    ok(imap.store("3", "-FLAGS", "(NonJunk)"))
    ok(imap.store("4", "+FLAGS", "(\\Deleted)"))
    ok(imap.copy("1:2", quote(ACME)))
    ok(imap._simple_command("MOVE", "3", quote(ETE)))
    ok(imap.expunge())
    ok(imap.select(quote(ACME)))
    ok(imap.store("1", "+FLAGS", "(\\Draft $MDNSent)"))
    imap.logout()
    send(app.ports["smtp"][0], make_message(6))  # numbered at the next view


def change_with_dovecot(imap: imaplib.IMAP4) -> None:
    """Dovecot's turn: flags and a new keyword, an expunge, APPENDs, CREATE, RENAME of a folder
    with children, DELETE, subscriptions."""
    ok(imap.select("INBOX"))
    ok(imap.uid("STORE", "1", "-FLAGS", "(\\Flagged)"))
    ok(imap.uid("STORE", "2", "+FLAGS", "(\\Seen $Label1 from-dovecot)"))
    ok(imap.uid("STORE", "5", "+FLAGS", "(\\Deleted)"))
    ok(imap.uid("EXPUNGE", "5"))
    ok(imap.append("INBOX", "(\\Flagged from-dovecot)", f'"{DATE}"',
                   b"Subject: by dovecot\r\n\r\nappended\r\n"))
    ok(imap.create("Dovecot/Made"))
    ok(imap.create("Dovecot/&ANw-ber"))  # "Über"
    ok(imap.rename("Projets", "Projects"))  # with its children
    ok(imap.delete("Junk"))  # a special-use folder geomail made: not made again
    ok(imap.subscribe("Dovecot/Made"))
    ok(imap.unsubscribe(quote(NIHONGO)))
    ok(imap.append("Dovecot/Made", "(\\Seen)", None, b"Subject: there\r\n\r\nx\r\n"))
    ok(imap.append(quote(ACME), None, None, b"Subject: acme\r\n\r\ny\r\n"))
    ok(imap.close())


def change_with_geomail(imap: imaplib.IMAP4) -> None:
    """geomail's turn again, over Dovecot's changes (and its index files in the maildir)."""
    ok(imap.select("INBOX"))
    ok(imap.uid("STORE", "8", "-FLAGS", "(from-dovecot)"))
    ok(imap.uid("STORE", "8", "+FLAGS", "(\\Answered $Label2)"))
    ok(imap.uid("STORE", "1", "+FLAGS", "(\\Deleted)"))
    ok(imap.expunge())
    ok(imap.append("Dovecot/Made", "(from-geomail)", None, b"Subject: back\r\n\r\nz\r\n"))
    ok(imap.rename("Projects/Old", "Projects/Renamed"))
    ok(imap.subscribe("Projects/Renamed"))
    ok(imap.delete(quote(NIHONGO)))
    ok(imap.close())


def test_geomail_maildir_read_by_dovecot_and_back(tmp_path: Path) -> None:
    """RFC 9051 2.3.1.1 (UIDs and UIDVALIDITY kept), 2.3.2 (flags, keywords), 2.3.3-2.3.4
    (INTERNALDATE, RFC822.SIZE), 6.3.7-6.3.9 (subscriptions, LIST), RFC 3501 5.1.3 (names): a
    Maildir geomail wrote reads the same through Dovecot, Dovecot's changes to it (new UIDs,
    flags, keywords, expunges, a folder, subscriptions) read the same through geomail, and
    geomail's next changes (RENAME, DELETE too) the same through Dovecot, whose index files in
    the maildir are then older than the files."""
    mail = tmp_path / "mail"
    maildir = mail / "example.com" / "alice"
    with geomail(tmp_path, mail) as app:
        write_with_geomail(app)
        imap = connect(app.ports["imap"][0])
        ours = snapshot(imap)
        imap.logout()
        send(app.ports["smtp"][0], make_message(7))  # left in new/, without a UID
    # Sanity of what is compared: the operations above did happen.
    assert ours["folders"]["INBOX"]["messages"].keys() == {1, 2, 5, 6}
    assert "$Forwarded" in ours["folders"][ACME]["messages"][2]["flags"]
    assert {"Sent", "Drafts", ETE, NIHONGO, ACME} <= ours["lsub"]

    with Dovecot(maildir, password=PASSWORD, copy=True, index_in_maildir=True) as dovecot:
        imap = connect(dovecot.port, dovecot.user, dovecot.password)
        theirs = snapshot(imap)
        # The message geomail never numbered gets geomail's UIDNEXT from Dovecot.
        inbox = theirs["folders"]["INBOX"]
        assert inbox["uidnext"] == ours["folders"]["INBOX"]["uidnext"] + 1 == 8
        assert inbox["messages"].pop(7)["body"].endswith(make_message(7))
        inbox["uidnext"] -= 1
        compare(ours, theirs)
        change_with_dovecot(imap)
        changed = snapshot(imap)
        imap.logout()
        dovecot.stop()
        assert dovecot.complaints() == []
        second = tmp_path / "second"
        shutil.copytree(dovecot.maildir, second / "example.com" / "alice", symlinks=True)

    inbox = changed["folders"]["INBOX"]
    assert inbox["messages"].keys() == {1, 2, 6, 7, 8}  # 5 expunged, 8 appended by Dovecot
    assert inbox["messages"][2]["flags"] == {"\\Answered", "\\Seen", "$Forwarded",
                                             "$Label1", "from-dovecot"}
    with geomail(tmp_path / "g2", second) as app:
        imap = connect(app.ports["imap"][0])
        again = snapshot(imap)
        compare(again, changed)
        change_with_geomail(imap)
        final = snapshot(imap)
        imap.logout()
    assert final["folders"]["INBOX"]["messages"].keys() == {2, 6, 7, 8}
    assert "Projects/Renamed" in final["list"] and NIHONGO not in final["list"]
    assert "Junk" not in final["list"] and "Dovecot/&ANw-ber" in final["list"]

    # Dovecot again, with its index in the maildir older than geomail's changes.
    maildir = second / "example.com" / "alice"
    with Dovecot(maildir, password=PASSWORD, copy=True, index_in_maildir=True) as dovecot:
        imap = connect(dovecot.port, dovecot.user, dovecot.password)
        compare(final, snapshot(imap))
        imap.logout()
        dovecot.stop()
        assert dovecot.complaints() == []
