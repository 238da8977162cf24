"""The IMAP session (geomail/proto/imap.py), driven with bytes over an in-memory folder store."""

from __future__ import annotations

import base64

from geomail.proto.imap import IdleStart, IdleStop, State
from geomail.proto.reply import Close, StartTLS
from tests.support.imap_memory import Driver, MemoryStore

SIMPLE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
          b"Subject: hello there\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n"
          b"Message-ID: <1@example.org>\r\n\r\nThe body text.\r\n")
OTHER = (b"From: carol@example.com\r\nTo: bob@example.net\r\nSubject: lunch\r\n"
         b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nPizza?\r\n")


def three() -> Driver:
    store = MemoryStore()
    store.add("INBOX", SIMPLE, ["\\Seen"])
    store.add("INBOX", OTHER)
    store.add("INBOX", SIMPLE, ["\\Flagged"])
    return Driver(store)


def test_greeting_and_capability() -> None:
    """RFC 9051 7.1.1 greeting with CAPABILITY code; 6.1.1 CAPABILITY; LOGINDISABLED before TLS
    when plaintext logins are not allowed (6.2.3)."""
    d = Driver(allow_plaintext_auth=False, tls_available=True)
    assert d.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
    reply = d.send(b"a CAPABILITY\r\n")
    assert b"STARTTLS" in reply and b"LOGINDISABLED" in reply and b"AUTH=PLAIN" not in reply
    assert reply.endswith(b"a OK CAPABILITY completed\r\n")
    assert d.send(b"b LOGIN alice secret\r\n") == b"b NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"


def test_starttls() -> None:
    """RFC 9051 6.2.1: tagged OK, then the TLS negotiation; pipelined plaintext is refused."""
    d = Driver(allow_plaintext_auth=False, tls_available=True)
    assert d.send(b"t STARTTLS\r\n") == b"t OK Begin TLS negotiation now\r\n"
    assert isinstance(d.outputs[-1], StartTLS)
    assert b"AUTH=PLAIN" in d.send(b"c CAPABILITY\r\n")
    d2 = Driver(allow_plaintext_auth=False, tls_available=True)
    reply = d2.send(b"t STARTTLS\r\nx LOGIN alice secret\r\n")
    assert b"BYE" in reply and isinstance(d2.outputs[-1], Close)


def test_login_and_failures() -> None:
    """RFC 9051 6.2.3: LOGIN; NO [AUTHENTICATIONFAILED] on bad credentials (7.1)."""
    d = Driver()
    assert d.send(b"a LOGIN alice wrong\r\n") == b"a NO [AUTHENTICATIONFAILED] " \
        b"Authentication failed\r\n"
    reply = d.login()
    assert reply.startswith(b"L1 OK [CAPABILITY IMAP4rev1")
    assert d.session.state is State.AUTHENTICATED
    assert d.send(b"b LOGIN alice secret\r\n").startswith(b"b BAD")


def test_authenticate_plain_with_and_without_initial_response() -> None:
    """RFC 9051 6.2.2 AUTHENTICATE, RFC 4959 SASL-IR, RFC 4616 PLAIN."""
    token = base64.b64encode(b"\0alice\0secret")
    d = Driver()
    assert d.send(b"a AUTHENTICATE PLAIN " + token + b"\r\n").startswith(b"a OK [CAPABILITY")
    d = Driver()
    assert d.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert d.send(token + b"\r\n").startswith(b"a OK")
    d = Driver()
    d.send(b"a AUTHENTICATE PLAIN\r\n")
    assert d.send(b"*\r\n") == b"a BAD Authentication cancelled\r\n"


def test_wrong_state_bad_and_unknown_commands() -> None:
    """RFC 9051 6 (valid states per command), 7.1.5 BAD for unknown or malformed commands."""
    d = Driver()
    assert d.send(b"a SELECT INBOX\r\n") == b"a BAD Log in first\r\n"
    d.login()
    assert d.send(b"b FETCH 1 FLAGS\r\n") == b"b BAD No mailbox selected\r\n"
    assert d.send(b"c FROB\r\n").startswith(b"c BAD")
    assert d.send(b"d FETCH\r\n").startswith(b"d BAD")
    assert d.send(b"\r\n").startswith(b"* BAD")


def test_too_many_bad_commands_close() -> None:
    """RFC 9051 7.1.5: a server may close after repeated errors (our max_bad_commands)."""
    d = Driver(max_bad_commands=3)
    reply = d.send(b"a X\r\nb X\r\nc X\r\n")
    assert b"* BYE" in reply and isinstance(d.outputs[-1], Close)


def test_logout() -> None:
    """RFC 9051 6.1.3: BYE, tagged OK, close."""
    d = Driver()
    assert d.send(b"z LOGOUT\r\n") == b"* BYE Logging out\r\nz OK LOGOUT completed\r\n"
    assert isinstance(d.outputs[-1], Close)


def test_select_responses() -> None:
    """RFC 9051 6.3.2 SELECT (rev1 client: RECENT and UNSEEN, 7.3.2 RFC 3501), 6.3.3 EXAMINE."""
    d = three()
    reply = d.select()
    assert b"* 3 EXISTS\r\n" in reply and b"* 0 RECENT\r\n" in reply
    assert b"* OK [UIDVALIDITY 1000]" in reply and b"* OK [UIDNEXT 4]" in reply
    assert b"* OK [UNSEEN 2]" in reply and b"[PERMANENTFLAGS (\\* " in reply
    assert reply.endswith(b"S1 OK [READ-WRITE] SELECT completed\r\n")
    reply = d.send(b"e EXAMINE INBOX\r\n")
    assert reply.startswith(b"* OK [CLOSED]")
    assert reply.endswith(b"[READ-ONLY] EXAMINE completed\r\n")
    assert b"\r\nf NO [NONEXISTENT]" in d.send(b"f SELECT nope\r\n")
    assert d.session.state is State.AUTHENTICATED


def test_select_rev2_and_condstore() -> None:
    """RFC 9051 6.3.2 (rev2: LIST response, no RECENT), 6.3.1 ENABLE, RFC 7162 3.1.1
    HIGHESTMODSEQ."""
    d = three()
    d.login()
    assert d.send(b"a ENABLE IMAP4rev2 CONDSTORE\r\n") == (
        b"* ENABLED IMAP4REV2 CONDSTORE\r\na OK ENABLE completed\r\n")
    reply = d.send(b"b SELECT INBOX\r\n")
    assert b"RECENT" not in reply and b'* LIST () "/" "INBOX"' in reply
    assert b"[HIGHESTMODSEQ 4]" in reply


def test_list_patterns_special_use_children() -> None:
    """RFC 9051 6.3.9 LIST with * and %, RFC 6154 special-use, RFC 3348/5258 CHILDREN."""
    store = MemoryStore()
    store.create("Sent", frozenset({"\\Sent"}))
    store.create("Work", frozenset())
    store.create("Work/Projects", frozenset())
    d = Driver(store)
    d.login()
    reply = d.send(b'a LIST "" "*"\r\n')
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in reply
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in reply
    assert b'* LIST (\\HasChildren) "/" "Work"' in reply
    assert b'"Work/Projects"' in reply
    reply = d.send(b'b LIST "" "%"\r\n')
    assert b"Projects" not in reply and b'"Work"' in reply
    assert d.send(b'c LIST "" ""\r\n').startswith(b'* LIST (\\Noselect) "/" ""')
    reply = d.send(b'd LIST (SPECIAL-USE) "" "*"\r\n')
    assert b"Sent" in reply and b"Work" not in reply
    assert b'"INBOX"' in d.send(b'e LIST "" "inbox"\r\n')
    reply = d.send(b'f LSUB "" "*"\r\n')
    assert b'* LSUB (\\HasNoChildren) "/" "INBOX"' in reply and b"Sent" not in reply


def test_mailbox_management_and_utf7_names() -> None:
    """RFC 9051 6.3.4-6.3.8 CREATE DELETE RENAME SUBSCRIBE; 5.1.3 (RFC 3501) modified UTF-7."""
    d = Driver()
    d.login()
    assert d.send(b"a CREATE Entw&APw-rfe\r\n") == b"a OK CREATE completed\r\n"
    assert "Entwürfe" in d.store.folders
    assert d.send(b"b CREATE Entw&APw-rfe\r\n").startswith(b"b NO [ALREADYEXISTS]")
    assert b'"Entw&APw-rfe"' in d.send(b'c LIST "" "*"\r\n')
    assert d.send(b"d RENAME Entw&APw-rfe Drafts\r\n") == b"d OK RENAME completed\r\n"
    assert d.send(b"e SUBSCRIBE Drafts\r\n") == b"e OK SUBSCRIBE completed\r\n"
    assert "Drafts" in d.store.subscribed
    assert d.send(b"f DELETE Drafts\r\n") == b"f OK DELETE completed\r\n"
    assert d.send(b"g DELETE INBOX\r\n").startswith(b"g NO [CANNOT]")
    assert d.send(b"h CREATE a.b\r\n").startswith(b"h NO [CANNOT]")
    assert d.send(b"i CREATE X (USE (\\Sent))\r\n") == b"i OK CREATE completed\r\n"


def test_status() -> None:
    """RFC 9051 6.3.11 STATUS."""
    d = three()
    d.login()
    assert d.send(b"a STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY DELETED)\r\n") == (
        b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 2 UIDNEXT 4 UIDVALIDITY 1000 DELETED 0)\r\n'
        b"a OK STATUS completed\r\n")


def test_append_literal_and_toobig() -> None:
    """RFC 9051 6.3.12 APPEND with a synchronizing literal, RFC 4315 APPENDUID, 7.1 TOOBIG,
    TRYCREATE for a missing mailbox, RFC 7888 LITERAL+."""
    d = Driver()
    d.login()
    assert d.send(b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(SIMPLE)) == (
        b"+ Ready for literal data\r\n")
    assert d.send(SIMPLE + b"\r\n") == b"a OK [APPENDUID 1000 1] APPEND completed\r\n"
    assert d.store.folders["INBOX"].messages[1][0].flags == {"\\Seen"}
    assert d.send(b"b APPEND Nope {%d+}\r\n" % len(SIMPLE) + SIMPLE + b"\r\n").startswith(
        b"b NO [TRYCREATE]")
    from geomail.proto.imap_parser import ReaderLimits
    small = Driver(limits=ReaderLimits(max_message=10))
    small.login()
    assert small.send(b"c APPEND INBOX {100}\r\n") == b"c NO [TOOBIG] Literal too big\r\n"
    assert small.send(b"d NOOP\r\n") == b"d OK NOOP completed\r\n"


def test_append_to_selected_reports_exists() -> None:
    """RFC 9051 7.4.1 EXISTS after a message was added to the selected mailbox."""
    d = three()
    d.select()
    reply = d.send(b"a APPEND INBOX {%d+}\r\n" % len(OTHER) + OTHER + b"\r\n")
    assert reply == b"* 4 EXISTS\r\na OK [APPENDUID 1000 4] APPEND completed\r\n"


def test_fetch_basic_items() -> None:
    """RFC 9051 6.4.5 FETCH FLAGS UID RFC822.SIZE INTERNALDATE, 7.5.2."""
    d = three()
    d.select()
    reply = d.send(b"a FETCH 1:2 (FLAGS UID RFC822.SIZE INTERNALDATE)\r\n")
    assert reply == (
        b'* 1 FETCH (FLAGS (\\Seen) UID 1 RFC822.SIZE %d INTERNALDATE "06-Dec-2026 12:00:00 +0000")'
        b'\r\n* 2 FETCH (FLAGS () UID 2 RFC822.SIZE %d INTERNALDATE "06-Dec-2026 12:00:00 +0000")'
        b"\r\na OK FETCH completed\r\n" % (len(SIMPLE), len(OTHER)))
    assert d.send(b"b UID FETCH 3:* FLAGS\r\n") == (
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged))\r\nb OK UID FETCH completed\r\n")
    assert d.send(b"c FETCH 9 FLAGS\r\n").startswith(b"c BAD")
    assert d.send(b"d UID FETCH 9 FLAGS\r\n") == b"d OK UID FETCH completed\r\n"


def test_fetch_body_sets_seen_unless_peek() -> None:
    """RFC 9051 6.4.5: BODY[] sets \\Seen, BODY.PEEK[] does not; partial <origin.length>."""
    d = three()
    d.select()
    reply = d.send(b"a FETCH 2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]\r\n")
    assert reply == (b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: lunch\r\n\r\n)"
                     b"\r\na OK FETCH completed\r\n")
    assert "\\Seen" not in d.store.view("INBOX").messages[1].flags
    reply = d.send(b"b FETCH 2 BODY[TEXT]<0.5>\r\n")
    assert reply == (b"* 2 FETCH (BODY[TEXT]<0> {5}\r\nPizza FLAGS (\\Seen))\r\n"
                     b"b OK FETCH completed\r\n")
    assert "\\Seen" in d.store.view("INBOX").messages[1].flags
    reply = d.send(b"c EXAMINE INBOX\r\nd FETCH 3 RFC822\r\n")
    assert b"* 3 FETCH (RFC822 {%d}\r\n" % len(SIMPLE) in reply
    assert "\\Seen" not in d.store.view("INBOX").messages[2].flags


def test_fetch_envelope() -> None:
    """RFC 9051 7.5.2 ENVELOPE: sender and reply-to default to from."""
    d = three()
    d.select()
    reply = d.send(b"a FETCH 1 ENVELOPE\r\n")
    assert reply.startswith(
        b'* 1 FETCH (ENVELOPE ("Sun, 06 Dec 2026 10:00:00 +0000" "hello there" '
        b'(("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org")) '
        b'(("Alice" NIL "alice" "example.org")) ((NIL NIL "bob" "example.net")) NIL NIL NIL '
        b'"<1@example.org>"))')


def test_store_flags() -> None:
    """RFC 9051 6.4.6 STORE +FLAGS, -FLAGS.SILENT, UID STORE; 6.3.2 READ-ONLY refuses."""
    d = three()
    d.select()
    assert d.send(b"a STORE 1:2 +FLAGS (\\Deleted)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Deleted \\Seen))\r\n* 2 FETCH (FLAGS (\\Deleted))\r\n"
        b"a OK STORE completed\r\n")
    assert d.send(b"b STORE 2 -FLAGS.SILENT (\\Deleted)\r\n") == b"b OK STORE completed\r\n"
    assert d.send(b"c UID STORE 3 FLAGS (foo)\r\n") == (  # 7.3.5: a new keyword, FLAGS first
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen foo)\r\n"
        b"* 3 FETCH (FLAGS (foo) UID 3)\r\nc OK UID STORE completed\r\n")
    d.send(b"x EXAMINE INBOX\r\n")
    assert d.send(b"e STORE 1 +FLAGS (\\Seen)\r\n").startswith(b"e NO [READ-ONLY]")


def test_store_unchangedsince() -> None:
    """RFC 7162 3.1.3 STORE UNCHANGEDSINCE and the MODIFIED response code."""
    d = three()
    d.select()
    reply = d.send(b"a STORE 1:3 (UNCHANGEDSINCE 2) +FLAGS (\\Answered)\r\n")
    assert b"[MODIFIED 2:3]" in reply
    # RFC 7162 3.2.4: once CONDSTORE is on, UID and MODSEQ in every untagged FETCH
    assert b"* 1 FETCH (FLAGS (\\Answered \\Seen) UID 1 MODSEQ (5))" in reply


def test_expunge_and_uid_expunge() -> None:
    """RFC 9051 6.4.3 EXPUNGE (7.5.1 EXPUNGE responses, descending), RFC 4315 UID EXPUNGE."""
    d = three()
    d.select()
    d.send(b"a STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\n")
    assert d.send(b"b UID EXPUNGE 2\r\n") == b"* 2 EXPUNGE\r\nb OK UID EXPUNGE completed\r\n"
    assert d.send(b"c EXPUNGE\r\n") == b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nc OK EXPUNGE completed\r\n"
    assert d.store.view("INBOX").messages == ()


def test_close_expunges_silently_unselect_does_not() -> None:
    """RFC 9051 6.4.1 CLOSE (no EXPUNGE responses), 6.4.2 UNSELECT."""
    d = three()
    d.select()
    d.send(b"a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert d.send(b"b UNSELECT\r\n") == b"b OK UNSELECT completed\r\n"
    assert len(d.store.view("INBOX").messages) == 3
    d.send(b"c SELECT INBOX\r\n")
    assert d.send(b"d CLOSE\r\n") == b"d OK CLOSE completed\r\n"
    assert len(d.store.view("INBOX").messages) == 2
    assert d.session.state is State.AUTHENTICATED


def test_copy_and_move_with_copyuid() -> None:
    """RFC 9051 6.4.7 COPY, 6.4.8 MOVE, RFC 4315 COPYUID, TRYCREATE."""
    d = three()
    d.store.create("Archive", frozenset({"\\Archive"}))
    d.select()
    assert d.send(b"a COPY 1:2 Archive\r\n") == b"a OK [COPYUID 1001 1:2 1:2] COPY completed\r\n"
    assert d.send(b"b COPY 1 Nope\r\n").startswith(b"b NO [TRYCREATE]")
    assert d.send(b"c UID MOVE 2:3 Archive\r\n") == (
        b"* OK [COPYUID 1001 2:3 3:4] Moved\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n"
        b"c OK UID MOVE completed\r\n")
    assert len(d.store.view("Archive").messages) == 4


def test_search() -> None:
    """RFC 9051 6.4.4 SEARCH: flags, headers, text, dates, sets; UID SEARCH; ESEARCH RETURN
    (RFC 4731) and SEARCHRES $ (RFC 5182); BADCHARSET."""
    d = three()
    d.select()
    assert d.send(b"a SEARCH UNSEEN\r\n") == b"* SEARCH 2 3\r\na OK SEARCH completed\r\n"
    assert d.send(b"b SEARCH FROM carol\r\n") == b"* SEARCH 2\r\nb OK SEARCH completed\r\n"
    assert d.send(b"c SEARCH BODY pizza\r\n") == b"* SEARCH 2\r\nc OK SEARCH completed\r\n"
    assert d.send(b"d SEARCH OR FLAGGED SEEN\r\n") == b"* SEARCH 1 3\r\nd OK SEARCH completed\r\n"
    assert d.send(b"e SEARCH SENTSINCE 7-Dec-2026\r\n") == (
        b"* SEARCH 2\r\ne OK SEARCH completed\r\n")
    assert d.send(b"f UID SEARCH NOT 1\r\n") == b"* SEARCH 2 3\r\nf OK UID SEARCH completed\r\n"
    assert d.send(b"g SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT hello\r\n") == (
        b'* ESEARCH (TAG "g") MIN 1 MAX 3 COUNT 2 ALL 1,3\r\ng OK SEARCH completed\r\n')
    assert d.send(b"h SEARCH RETURN (SAVE) FLAGGED\r\n") == b"h OK SEARCH completed\r\n"
    assert d.send(b"i FETCH $ UID\r\n") == b"* 3 FETCH (UID 3)\r\ni OK FETCH completed\r\n"
    assert d.send(b"j SEARCH CHARSET KOI8-R ALL\r\n").startswith(b"j NO [BADCHARSET")
    assert d.send(b"k SEARCH TEXT example.org\r\n") == b"* SEARCH 1 3\r\nk OK SEARCH completed\r\n"


def test_noop_reports_changes() -> None:
    """RFC 9051 6.1.2 NOOP, 7.4.1 EXPUNGE and EXISTS, 7.5.2 FETCH FLAGS for other sessions'
    changes."""
    d = three()
    d.select()
    d.store.add("INBOX", OTHER)
    d.store.store_flags("INBOX", [1], "+", frozenset({"\\Answered"}))
    d.store.folders["INBOX"].messages.pop(2)
    assert d.send(b"a NOOP\r\n") == (
        b"* 2 EXPUNGE\r\n* 1 FETCH (FLAGS (\\Answered \\Seen))\r\n* 3 EXISTS\r\n"
        b"a OK NOOP completed\r\n")
    assert d.send(b"b FETCH 3 UID\r\n") == b"* 3 FETCH (UID 4)\r\nb OK FETCH completed\r\n"


def test_fetch_does_not_report_expunges() -> None:
    """RFC 9051 7.5.1: no EXPUNGE during FETCH; a vanished message gives NO [EXPUNGEISSUED]."""
    d = three()
    d.select()
    d.store.folders["INBOX"].messages.pop(2)
    reply = d.send(b"a FETCH 1:3 RFC822.HEADER\r\n")
    assert b"EXPUNGE\r\n" not in reply and reply.endswith(b"a NO [EXPUNGEISSUED] Some messages "
                                                           b"were expunged\r\n")


def test_idle() -> None:
    """RFC 9051 6.3.13 IDLE: continuation, untagged updates while idling, DONE ends it."""
    d = three()
    d.select()
    assert d.send(b"a IDLE\r\n") == b"+ idling\r\n"
    assert isinstance(d.outputs[-1], IdleStart)
    d.store.add("INBOX", OTHER)
    assert d.changed() == b"* 4 EXISTS\r\n"
    assert d.changed() == b""
    assert d.send(b"DONE\r\n") == b"a OK IDLE terminated\r\n"
    assert any(isinstance(o, IdleStop) for o in d.outputs)
    assert d.send(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_id_namespace_enable_state() -> None:
    """RFC 2971 ID, RFC 9051 6.3.10 NAMESPACE, 6.3.1 ENABLE only in AUTHENTICATED state."""
    d = Driver()
    assert d.send(b'a ID ("name" "test")\r\n') == (
        b'* ID ("name" "geomail")\r\na OK ID completed\r\n')
    d.login()
    assert d.send(b"b NAMESPACE\r\n") == (b'* NAMESPACE (("" "/")) NIL NIL\r\n'
                                          b"b OK NAMESPACE completed\r\n")
    assert d.send(b"c ENABLE FOO\r\n") == b"* ENABLED\r\nc OK ENABLE completed\r\n"


def test_rev2_search_answers_esearch() -> None:
    """RFC 9051 6.4.4: an IMAP4rev2 client gets ESEARCH, 7.3.4."""
    d = three()
    d.login()
    d.send(b"e ENABLE IMAP4rev2\r\n")
    d.send(b"s SELECT INBOX\r\n")
    assert d.send(b"a UID SEARCH ALL\r\n") == (b'* ESEARCH (TAG "a") UID ALL 1:3\r\n'
                                               b"a OK UID SEARCH completed\r\n")


def test_end_of_stream_closes() -> None:
    """RFC 9051 3: the connection may end at any time; the session closes."""
    d = Driver()
    d.send(b"")
    assert isinstance(d.outputs[-1], Close) and d.session.state is State.LOGOUT


def test_pipelined_commands_and_literal_plus_login() -> None:
    """RFC 9051 5.5 (pipelining: answers in order), RFC 7888 LITERAL+ in LOGIN."""
    d = three()
    reply = d.send(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\nb SELECT INBOX\r\nc FETCH * UID\r\n")
    assert reply.startswith(b"a OK [CAPABILITY")
    assert reply.endswith(b"* 3 FETCH (UID 3)\r\nc OK FETCH completed\r\n")


def test_fetch_changedsince_and_modseq() -> None:
    """RFC 7162 3.1.4 FETCH CHANGEDSINCE (implies MODSEQ), 3.1.2 CONDSTORE enabled by use."""
    d = three()
    d.select()
    assert d.send(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 3)\r\n") == (
        b"* 3 FETCH (FLAGS (\\Flagged) MODSEQ (4))\r\na OK FETCH completed\r\n")


def test_fetch_binary_and_binary_size() -> None:
    """RFC 9051 6.4.5 BINARY[] / BINARY.SIZE[] (RFC 3516): a literal8 on the wire (4.3.1)
    only when the decoded octets hold a NUL, else an ordinary literal (as Dovecot: clients
    built on imaplib, such as imapclient, cannot read ~{n})."""
    store = MemoryStore()
    store.add("INBOX", b"Subject: b\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n")
    store.add("INBOX", b"Subject: b\r\nContent-Transfer-Encoding: base64\r\n\r\naABp\r\n")
    d = Driver(store)
    d.select()
    assert d.send(b"a FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n") == (
        b"* 1 FETCH (BINARY[1] {2}\r\nhi BINARY.SIZE[1] 2)\r\na OK FETCH completed\r\n")
    assert d.send(b"a FETCH 2 (BINARY.PEEK[1])\r\n") == (
        b"* 2 FETCH (BINARY[1] ~{3}\r\nh\x00i)\r\na OK FETCH completed\r\n")


def test_list_return_status() -> None:
    """RFC 5819 LIST-STATUS: STATUS responses after the LIST responses."""
    d = three()
    d.login()
    assert d.send(b'a LIST "" INBOX RETURN (STATUS (MESSAGES UNSEEN))\r\n') == (
        b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n* STATUS "INBOX" (MESSAGES 3 UNSEEN 2)\r\n'
        b"a OK LIST completed\r\n")


def test_idle_needs_done() -> None:
    """RFC 9051 6.3.13: anything but DONE ends IDLE with BAD."""
    d = three()
    d.select()
    d.send(b"a IDLE\r\n")
    assert d.send(b"NOOP\r\n") == b"a BAD Expected DONE\r\n"
    assert isinstance(d.outputs[-2], IdleStop)


def test_move_read_only_refused() -> None:
    """RFC 9051 6.4.8 MOVE needs a read-write mailbox (6.3.3 EXAMINE is read-only)."""
    d = three()
    d.login()
    d.send(b"e EXAMINE INBOX\r\n")
    assert d.send(b"a MOVE 1 INBOX\r\n").startswith(b"a NO [READ-ONLY]")
    assert d.send(b"b EXPUNGE\r\n").startswith(b"b NO [READ-ONLY]")


def test_store_unavailable_is_no() -> None:
    """RFC 9051 7.1 UNAVAILABLE: a store that cannot answer gives NO, the session goes on."""
    from geomail.proto.imap import Unavailable
    from geomail.proto.imap_mailbox import ViewFolder
    d = Driver()
    d.login()
    outputs = d.session.feed(b"a SELECT INBOX\r\n")
    assert isinstance(outputs[-1], ViewFolder)
    assert d._carry(d.session.answer(Unavailable())) == b"a NO [UNAVAILABLE] Try again later\r\n"
    assert d.send(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_binary_unknown_encoding() -> None:
    """RFC 9051 6.4.5 BINARY, 7.1 UNKNOWN-CTE: an encoding the server cannot decode."""
    store = MemoryStore()
    store.add("INBOX", b"Subject: b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n")
    d = Driver(store)
    d.select()
    assert d.send(b"a FETCH 1 BINARY.PEEK[1]\r\n").startswith(b"a NO [UNKNOWN-CTE]")


def test_qresync_select_and_vanished() -> None:
    """RFC 7162 3.2.3 ENABLE QRESYNC, 3.2.5.1 SELECT (QRESYNC ...): VANISHED (EARLIER) and the
    changed flags; 3.2.10 VANISHED instead of EXPUNGE; 3.2.6 UID FETCH (CHANGEDSINCE VANISHED)."""
    d = three()
    d.login()
    assert d.send(b"a ENABLE QRESYNC\r\n") == b"* ENABLED QRESYNC\r\na OK ENABLE completed\r\n"
    d.store.folders["INBOX"].messages.pop(2)
    d.store.store_flags("INBOX", [3], "+", frozenset({"\\Seen"}))
    reply = d.send(b"b SELECT INBOX (QRESYNC (1000 4 1:3))\r\n")
    assert b"* VANISHED (EARLIER) 2\r\n* 2 FETCH (UID 3 FLAGS (\\Flagged \\Seen) MODSEQ (5))\r\n" \
        in reply
    d.send(b"c STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert d.send(b"d EXPUNGE\r\n") == b"* VANISHED 1\r\nd OK EXPUNGE completed\r\n"
    assert d.send(b"e UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)\r\n") == (
        b"* VANISHED (EARLIER) 1:2\r\n* 1 FETCH (UID 3 FLAGS (\\Flagged \\Seen) MODSEQ (5))\r\n"
        b"e OK UID FETCH completed\r\n")
    assert d.send(b"f FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)\r\n").startswith(b"f BAD")


def test_utf8_mailbox_names_once_imap4rev2_is_enabled() -> None:
    """RFC 9051 5.1 (with RFC 9755 1, IMAP4rev2 includes UTF8=ACCEPT): after ENABLE IMAP4rev2
    names travel as UTF-8 both ways and "&" is an ordinary character; a rev1 session of the
    same store still sees modified UTF-7."""
    d = Driver()
    d.login()
    assert d.send(b"e ENABLE IMAP4rev2\r\n").startswith(b"* ENABLED IMAP4REV2")
    assert d.send('a CREATE "Entwürfe"\r\n'.encode()) == b"a OK CREATE completed\r\n"
    assert d.send(b"b CREATE R&D\r\n") == b"b OK CREATE completed\r\n"
    assert {"Entwürfe", "R&D"} <= set(d.store.folders)
    listing = d.send(b'c LIST "" "*"\r\n')
    assert "Entwürfe\r\n".encode() in listing  # UTF-8 goes out as a literal
    assert b'"R&D"' in listing
    assert b"&APw-" not in listing
    rev1 = Driver(d.store)
    rev1.login()
    listing = rev1.send(b'c LIST "" "*"\r\n')
    assert b'"Entw&APw-rfe"' in listing and b'"R&-D"' in listing
