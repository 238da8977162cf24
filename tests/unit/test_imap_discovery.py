"""IMAP in what clients are told: SRV records (RFC 6186 3.1, RFC 8314 5.1: imaps preferred,
``0 0 0 .`` when not offered, 3.4), Thunderbird autoconfig, Autodiscover and the Apple profile
naming IMAP before POP3."""

from __future__ import annotations

import plistlib

from geomail import dnsrecords
from geomail.web import autoconfig
from tests.unit.test_web_site import make_config

LISTEN = {"smtp": "0.0.0.0:25", "submissions": "0.0.0.0:465", "imaps": "0.0.0.0:993",
          "imap": "0.0.0.0:143", "pop3s": "0.0.0.0:995"}


def test_srv_records_for_imap() -> None:
    """RFC 6186 3.1 with RFC 8314 5.1: ``_imaps`` priority 0, ``_imap`` 10; 3.4: not offered is
    ``0 0 0 .``."""
    found = {(r.name, r.type): r.value
             for r in dnsrecords.records(make_config(LISTEN), ["192.0.2.1"])}
    assert found[("_imaps._tcp.example.com.", "SRV")] == "0 1 993 mx.example.com."
    assert found[("_imap._tcp.example.com.", "SRV")] == "10 1 143 mx.example.com."
    without = {(r.name, r.type): r.value for r in dnsrecords.records(
        make_config({"smtp": "0.0.0.0:25", "pop3s": "0.0.0.0:995"}), ["192.0.2.1"])}
    assert without[("_imaps._tcp.example.com.", "SRV")] == "0 0 0 ."


def test_autoconfiguration_names_imap_first() -> None:
    """Mozilla clientConfig v1.1: incomingServer type="imap" (SSL on 993, then STARTTLS on 143)
    before POP3; Autodiscover and the Apple profile describe the best one, IMAP."""
    config = make_config(LISTEN)
    thunderbird = autoconfig.thunderbird(config, "example.com").decode()
    assert thunderbird.index('type="imap"') < thunderbird.index('type="pop3"')
    assert "<port>993</port>" in thunderbird and "<port>143</port>" in thunderbird
    pox = autoconfig.autodiscover(config, "alice@example.com").decode()
    assert "<Type>IMAP</Type>" in pox and "<Port>993</Port>" in pox
    profile = plistlib.loads(autoconfig.apple_profile(config, "alice@example.com",
                                                      "example.com"))
    mail = profile["PayloadContent"][0]
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["IncomingMailServerPortNumber"] == 993
