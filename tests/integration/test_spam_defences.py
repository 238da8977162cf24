"""The built-in spam defences of port 25 (issue 12 item 7) with a real App and dnsmasq: DNS
block- and allow-lists at connect (RFC 5782; the refusal of RFC 5321 3.1), greylisting at RCPT
(RFC 6647), and the early-talker check with its greeting delay (Postfix postscreen's pregreet
test).

Clients connect from 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all loopback); ``checks.skip_networks:
[]`` makes them outsiders. dnsmasq lists 127.0.0.2 in ``bl.test``, 127.0.0.3 in ``bl.test`` and
``wl.test``, and answers the lists' error code 127.255.255.254 for 127.0.0.1 in ``err.test``;
``slow.test`` never answers. The sender authentication checks are off: they are not under test.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gevent import monkey

from tests.support import wait_for
from tests.support.dialog import Dialog, wait_closed
from tests.support.dns import Dnsmasq
from tests.support.geomail import PASSWORD, base_config, running_app
from tests.support.smtp import stored
from tests.support.tools import program

LISTED, BOTH, CLEAN = "127.0.0.2", "127.0.0.3", "127.0.0.1"
SENDER, RCPT = "someone@sender.test", "test1@test.com"
MESSAGE = b"From: someone@sender.test\r\nSubject: spam defences\r\n\r\nhello\r\n"
NO_AUTH_CHECKS = {"skip_networks": [], "spf": False, "dkim": False, "arc": False,
                  "dmarc": False, "iprev": False}


@pytest.fixture(scope="module")
def dns() -> Iterator[Dnsmasq]:
    server = (Dnsmasq()
              .host("2.0.0.127.bl.test", "127.0.0.2")
              .host("3.0.0.127.bl.test", "127.0.0.4")
              .host("3.0.0.127.wl.test", "127.0.0.15")
              .host("1.0.0.127.err.test", "127.255.255.254")
              .host(".".join(["1"] + ["0"] * 31) + ".bl.test", "127.0.0.2")  # ::1
              .timeout("slow.test"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spam_app(make_app: Callable[..., Any], dns: Dnsmasq) -> Callable[..., Any]:
    """``spam_app(spam={...}, ...)``: an App whose port 25 treats loopback as the internet."""
    def start(spam: dict[str, Any], **overrides: Any) -> Any:
        return make_app(**_config(dns, spam), **overrides)

    return start


def _config(dns: Dnsmasq, spam: dict[str, Any]) -> dict[str, Any]:
    return {"relay": {"nameservers": [dns.nameserver], "dns_timeout": "1s"},
            "checks": NO_AUTH_CHECKS, "spam": spam}


def _port(app: Any, kind: str = "smtp") -> int:
    port: int = app.ports[kind][0]
    return port


def _mail_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "geomail.mail" and getattr(r, "geomail_event", "") == name]


def _send(port: int, source: str = CLEAN, recipient: str = RCPT) -> tuple[int, str]:
    """smtplib from ``source``: the RCPT reply if refused, else the final reply of DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as client:
        client.ehlo("client.sender.test")
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt(recipient)
        if code != 250:
            return code, text.decode()
        code, text = client.data(MESSAGE)
        return code, text.decode()


# ------------------------------------------------------------------ DNS lists


def test_listed_client_gets_554_then_503_until_quit(spam_app, caplog):
    """RFC 5321 3.1 and RFC 5782 (issue 12 item 7): a client a DNSBL lists is greeted with
    554 5.7.1 naming the list (Postfix's text) instead of 220; every command but QUIT then gets
    503 5.5.1, QUIT 221 and the close. One ``dnsbl-listed`` line with the zone and answer code,
    and ``geomail_dnsbl_total{result="listed"}``."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = spam_app({"dnsbl": ["err.test", "bl.test"], "dnswl": ["wl.test"]})
    with Dialog(_port(app), source=LISTED) as smtp:
        smtp.expect(f"554 5.7.1 Service unavailable; client [{LISTED}] blocked using bl.test")
        smtp.cmd("EHLO client.sender.test", "503 5.5.1")
        smtp.cmd(f"MAIL FROM:<{SENDER}>", "503 5.5.1")
        smtp.cmd(f"RCPT TO:<{RCPT}>", "503 5.5.1")
        smtp.cmd("QUIT", "221 ")
        smtp.expect_closed()
    [line] = _mail_lines(caplog, "dnsbl-listed")
    assert re.fullmatch(rf"dnsbl-listed session=\w+ client={LISTED} zone=bl.test "
                        r"code=127.0.0.2", line), line
    assert app.metrics.value("geomail_dnsbl_total", result="listed") == 1
    assert stored(app, RCPT) == []


def test_unlisted_client_is_delivered_and_error_codes_do_not_list(spam_app, caplog):
    """RFC 5782 2.3 and issue 12 item 7: a client no list lists is greeted and its mail
    delivered; an answer in 127.255.255.0/24 (Spamhaus' "query via a public resolver") is the
    list's error, not a listing: it is named in the ``dnsbl-clean`` line (INFO)."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = spam_app({"dnsbl": ["err.test", "bl.test"]})
    code, text = _send(_port(app), CLEAN)
    assert code == 250, text
    assert len(stored(app, RCPT)) == 1
    [line] = _mail_lines(caplog, "dnsbl-clean")
    assert line.endswith(f"client={CLEAN} failed=err.test:error-code-127.255.255.254"), line
    assert app.metrics.value("geomail_dnsbl_total", result="clean") == 1


def test_dnswl_skips_dnsbl_and_greylisting(spam_app, caplog):
    """Issue 12 item 7 (DNSWL to skip checks): a client on an allow-list is greeted although a
    block-list lists it too, and its mail is not greylisted."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = spam_app({"dnsbl": ["bl.test"], "dnswl": [{"zone": "wl.test"}],
                    "greylist": {"delay": "1h"}})
    code, text = _send(_port(app), BOTH)
    assert code == 250, text
    [line] = _mail_lines(caplog, "dnswl-listed")
    assert f"client={BOTH} zone=wl.test code=127.0.0.15" in line
    assert app.metrics.value("geomail_dnsbl_total", result="allowed") == 1
    assert app.metrics.value("geomail_greylist_total", result="greylisted") == 0


def test_answer_codes_restrict_what_lists(spam_app):
    """RFC 5782 2.3 (issue 12 item 7: "with the zone's answer codes"): with ``codes`` given,
    only those answers list; 127.0.0.3's answer 127.0.0.4 is not one of them."""
    app = spam_app({"dnsbl": [{"zone": "bl.test", "codes": ["127.0.0.2"]}]})
    with Dialog(_port(app), source=BOTH) as smtp:
        smtp.greeting()
    with Dialog(_port(app), source=LISTED) as smtp:
        smtp.expect("554 5.7.1")


def test_list_timing_out_does_not_block_mail(spam_app, caplog):
    """RFC 5782 (lists are advisory) and issue 12 item 7: a zone that never answers counts as
    not listed once the resolver's lifetime (``relay.dns_timeout``) is up: the client is
    greeted and delivers, the other zones still count, and the failure is logged."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = spam_app({"dnsbl": ["slow.test", "bl.test"]})
    started = time.monotonic()
    code, text = _send(_port(app), CLEAN)
    assert code == 250, text
    assert time.monotonic() - started < 5
    [line] = _mail_lines(caplog, "dnsbl-clean")
    assert line.endswith("failed=slow.test:timeout"), line
    with Dialog(_port(app), source=LISTED) as smtp:
        smtp.expect("554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test")


def test_ipv6_client_is_asked_by_nibbles(spam_app):
    """RFC 5782 2.4 (issue 12 item 7): an IPv6 client is looked up by the 32 nibbles of its
    address, reversed: ``::1`` is listed in ``bl.test`` as ``1.0.0.(...).0.bl.test``."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback (::1) here")
    app = spam_app({"dnsbl": ["bl.test"]}, listen={"smtp": ["[::1]:0"]})
    with Dialog(_port(app), "::1") as smtp:
        smtp.expect("554 5.7.1 Service unavailable; client [::1] blocked using bl.test")
        smtp.cmd("QUIT", "221 ")


def test_defences_spare_exempt_clients_and_submission(spam_app, dns, make_app, tmp_path):
    """Issue 12 item 7 (port 25 only) and Postfix postscreen's ``permit_mynetworks``: with
    the default ``checks.skip_networks`` (this machine) a listed client is greeted on port 25
    without a greeting delay, and the submission port never asks the lists."""
    config = _config(dns, {"dnsbl": ["bl.test"], "greet_delay": "5s",
                           "greylist": {"delay": "1h"}})
    del config["checks"]
    app = make_app(**config)
    with Dialog(_port(app), source=LISTED) as smtp:
        reply = smtp.greeting()
        assert len(reply.lines) == 1
    assert _send(_port(app), LISTED)[0] == 250  # not greylisted either
    app = spam_app({"dnsbl": ["bl.test"]},
                   listen={"smtp": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"]},
                   data_dir=str(tmp_path / "second"))
    with Dialog(_port(app, "submission"), source=LISTED) as smtp:
        smtp.greeting()
    assert app.metrics.value("geomail_dnsbl_total", result="listed") == 0


# ------------------------------------------------------------------ greylisting


def test_greylisted_then_passes_after_delay(spam_app, caplog):
    """RFC 6647 2.1 (issue 12 item 7): the first attempt of a new triplet gets 451 4.7.1 with
    the time to wait and no client data; an early retry is refused again; a retry after the
    delay is accepted and delivered; each decision is a log line and a counter."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = spam_app({"greylist": {"delay": "1s"}})
    code, text = _send(_port(app))
    assert (code, text) == (451, "4.7.1 Greylisted, try again in 1 seconds")
    assert _send(_port(app))[0] == 451
    time.sleep(1.1)  # the delay is the behaviour under test
    code, text = _send(_port(app))
    assert code == 250, text
    assert len(stored(app, RCPT)) == 1
    greylisted = _mail_lines(caplog, "greylisted")
    assert len(greylisted) == 2
    assert re.fullmatch(rf"greylisted session=\w+ client={CLEAN} from=<{SENDER}> to={RCPT} "
                        r"retry=1 network=127.0.0.0/24", greylisted[0]), greylisted[0]
    [passed] = _mail_lines(caplog, "greylist-passed")
    assert "reason=retried passes=1" in passed
    assert app.metrics.value("geomail_greylist_total", result="greylisted") == 2
    assert app.metrics.value("geomail_greylist_total", result="passed") == 1


def test_greylist_survives_restart(tmp_path, dns):
    """Issue 12 item 7 (greylisting durable across restarts, RFC 6647 2.2): a triplet
    greylisted by one App passes after the delay at a new App on the same data directory,
    instead of being greylisted afresh."""
    raw = base_config(tmp_path, **_config(dns, {"greylist": {"delay": "1s"}}))
    with running_app(raw) as app:
        assert _send(_port(app))[0] == 451
    time.sleep(1.1)  # the delay is the behaviour under test
    with running_app(raw) as app:
        code, text = _send(_port(app))
        assert code == 250, text
        assert (tmp_path / "data" / "greylist.sqlite").exists()


def test_auto_whitelist_after_passes(spam_app):
    """RFC 6647 6.4 (issue 12 item 7, auto-whitelist after N passes): once a client network
    passed ``auto_whitelist`` times, new triplets from it are not greylisted."""
    app = spam_app({"greylist": {"delay": "1s", "auto_whitelist": 1}})
    assert _send(_port(app), recipient="alice@example.com")[0] == 451
    time.sleep(1.1)  # the delay is the behaviour under test
    assert _send(_port(app), recipient="alice@example.com")[0] == 250
    assert _send(_port(app), recipient="bob@example.com")[0] == 250
    assert app.metrics.value("geomail_greylist_total", result="whitelisted") == 1


def test_logged_in_users_are_not_greylisted(spam_app):
    """RFC 6647 (greylisting is for unknown MTAs) and issue 12 item 7: a logged-in user is
    not greylisted; on port 25 itself nobody logs in, and the submission port is never
    greylisted."""
    app = spam_app({"greylist": {"delay": "1h"}},
                   listen={"smtp": ["127.0.0.1:0"],
                           "submission": [{"address": "127.0.0.1:0",
                                           "allow_plaintext_auth": True}]})
    with smtplib.SMTP("127.0.0.1", _port(app, "submission"), timeout=10) as client:
        client.login("alice@example.com", PASSWORD)
        own = MESSAGE.replace(SENDER.encode(), b"alice@example.com")
        assert client.sendmail("alice@example.com", [RCPT], own) == {}
    assert app.metrics.value("geomail_greylist_total", result="greylisted") == 0


# ------------------------------------------------------------------ early talker


def test_early_talker_with_greet_delay_is_refused(spam_app, caplog):
    """Postfix postscreen's pregreet test (issue 12 item 7): with ``greet_delay`` the server
    sends ``220-`` (RFC 5321 4.2.1, a reply not yet complete) and waits; a client that talks
    before the final greeting line gets 554 5.5.1 and is disconnected."""
    caplog.set_level(logging.INFO, logger="geomail.mail")
    app = spam_app({"greet_delay": "5s"})
    with Dialog(_port(app)) as smtp:
        assert smtp.read_line() == "220-mx.test.com ESMTP"
        started = time.monotonic()
        smtp.line("EHLO bot.example")
        assert smtp.read_line().startswith("554 5.5.1")
        _, rest = wait_closed(smtp.sock, 5)
        assert rest == b""
        assert time.monotonic() - started < 4  # at once, not after the delay
    [line] = _mail_lines(caplog, "early-talker")
    assert re.fullmatch(rf"early-talker session=\w+ client={CLEAN} delay=5.0", line), line
    assert app.metrics.value("geomail_early_talkers_total") == 1
    wait_for(lambda: any("reason=early-talker" in x for x in _mail_lines(caplog, "disconnect")))


def test_early_talker_without_delay_is_refused(spam_app):
    """Postfix postscreen's pregreet test with no delay (issue 12 item 7): bytes already
    waiting when the greeting is due mean the client did not wait for it: 554 5.5.1 and close.
    The client connects and sends with plain (not gevent) socket calls, so the bytes are in the
    server's socket buffer before the server's greenlet ever runs."""
    app = spam_app({})
    blocking = monkey.get_original("socket", "socket")(socket.AF_INET, socket.SOCK_STREAM)
    blocking.connect(("127.0.0.1", _port(app)))
    blocking.sendall(b"EHLO bot.example\r\n")
    with socket.socket(fileno=blocking.detach()) as sock:
        sock.settimeout(5)
        _, received = wait_closed(sock, 5)
    assert received.startswith(b"554 5.5.1 "), received
    assert app.metrics.value("geomail_early_talkers_total") == 1


def test_patient_client_gets_multiline_greeting_and_delivers(spam_app):
    """RFC 5321 4.2.1 (multi-line replies) and issue 12 item 7: with ``greet_delay`` a client
    that waits gets ``220-`` then, after the delay, the final ``220`` line, and delivers as
    usual (smtplib, and swaks below); the early-talker counter stays 0."""
    app = spam_app({"greet_delay": "1s"})
    with Dialog(_port(app)) as smtp:
        started = time.monotonic()
        reply = smtp.greeting()
        assert time.monotonic() - started >= 0.9
        assert reply.lines == ("220-mx.test.com ESMTP", "220 mx.test.com ESMTP geomail")
        smtp.ehlo()
    code, text = _send(_port(app))
    assert code == 250, text
    assert app.metrics.value("geomail_early_talkers_total") == 0


def test_swaks_waits_for_delayed_greeting(spam_app):
    """Issue 12 item 7 with a real client: swaks reads the multi-line greeting of
    ``greet_delay`` (RFC 5321 4.2.1) and its message is delivered."""
    swaks = program("swaks", "swaks libnet-ssleay-perl")
    app = spam_app({"greet_delay": "1s"})
    done = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(_port(app)),
                           "--helo", "client.sender.test", "--from", SENDER, "--to", RCPT,
                           "--header", "Subject: patient-swaks"], capture_output=True,
                          timeout=30)
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, out
    assert "<-  220-mx.test.com ESMTP" in out, out
    assert any(b"patient-swaks" in message.raw for message in stored(app, RCPT))
