"""Maildir files as Dovecot reads and writes them (geomail/store/imap_maildir.py; Dovecot's
src/lib-storage/index/maildir/maildir-filename-flags.c knows the letters D F R S T and the
keyword letters a..z of ``dovecot-keywords``, and keeps any other letter as it is).
tests/integration/test_imap_dovecot.py checks the same against a running Dovecot."""

from __future__ import annotations

import os
from pathlib import Path

from geomail.store.imap_maildir import KEYWORDS_NAME, MaildirMailStore
from tests.support.imap_memory import Driver

MSG = b"Subject: hi\r\n\r\nbody line\r\n"


def infos(root: Path) -> list[str]:
    return sorted(name.partition(":2,")[2] for name in os.listdir(root / "cur"))


def test_forwarded_is_a_dovecot_keyword(tmp_path: Path) -> None:
    """RFC 9051 2.3.2 ($Forwarded, RFC 5788): stored as a keyword letter named in
    ``dovecot-keywords``, not as the letter P, which Dovecot ignores."""
    store = MaildirMailStore(str(tmp_path), "host")
    store.list_folders()
    store.append("INBOX", MSG, frozenset({"$Forwarded", "\\Seen"}), None)
    assert infos(tmp_path) == ["Sa"]
    assert (tmp_path / KEYWORDS_NAME).read_text() == "0 $Forwarded\n"
    assert store.view("INBOX").messages[0].flags == {"$Forwarded", "\\Seen"}
    store.store_flags("INBOX", [1], "-", frozenset({"$Forwarded"}))
    assert infos(tmp_path) == ["S"]


def test_letters_not_ours_are_kept(tmp_path: Path) -> None:
    """RFC 9051 6.4.6 STORE FLAGS: a letter that is no flag of ours (mutt's P, "passed") is
    neither shown nor dropped when the flags are replaced, as Dovecot keeps it."""
    store = MaildirMailStore(str(tmp_path), "host")
    store.list_folders()
    store.append("INBOX", MSG, frozenset(), None)
    (name,) = os.listdir(tmp_path / "cur")
    os.rename(tmp_path / "cur" / name, tmp_path / "cur" / (name.partition(":")[0] + ":2,PS"))
    assert store.view("INBOX").messages[0].flags == {"\\Seen"}
    store.store_flags("INBOX", [1], "", frozenset({"\\Flagged"}))
    assert infos(tmp_path) == ["FP"]


def test_subscription_outlives_its_mailbox(tmp_path: Path) -> None:
    """RFC 9051 6.3.5/6.3.7 (a subscription is not removed with its mailbox; Dovecot's DELETE
    and RENAME leave it), RFC 3501 6.3.9 LSUB, RFC 5258 3.4 LIST (SUBSCRIBED) with
    ``\\NonExistent``: the name stays in LSUB and LIST (SUBSCRIBED), not in a plain LIST."""
    store = MaildirMailStore(str(tmp_path), "host")
    d = Driver(store)  # type: ignore[arg-type]
    d.login()
    for command in (b"a CREATE Gone", b"b SUBSCRIBE Gone", b"c DELETE Gone"):
        assert b" OK " in d.send(command + b"\r\n")
    assert b'* LSUB (\\Noselect) "/" "Gone"\r\n' in d.send(b'd LSUB "" "*"\r\n')
    assert b'* LIST (\\NonExistent \\Subscribed) "/" "Gone"\r\n' in d.send(
        b'e LIST (SUBSCRIBED) "" "*"\r\n')
    assert b"Gone" not in d.send(b'f LIST "" "*"\r\n')
    assert b"Gone" not in d.send(b'g LIST "" "*" RETURN (STATUS (MESSAGES))\r\n')
