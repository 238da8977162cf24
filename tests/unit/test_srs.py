"""The Sender Rewriting Scheme (geomail.srs) against the scheme as libsrs2 documents it
(Shevek, "Sender Rewriting Scheme"; RFC 7208 1.2 on why forwarders need it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from geomail.safeio import write_atomic
from geomail.srs import SRS, Expired, Forged, SRSError, is_srs, load_keys

KEY = b"k" * 32
DAY = 86400
NOW = 20000 * DAY + 3600  # day 20000: 20000 % 1024 = 544 -> "RA"


def make(now: float = NOW, keys: tuple[bytes, ...] = (KEY,), max_age: int = 21) -> SRS:
    return SRS(keys, "fwd.test", max_age, clock=lambda: now)


def test_srs0_format_and_round_trip() -> None:
    """SRS0=HHHH=TT=domain=local@forwarder: hash = base64(HMAC-SHA1(key, TT domain local
    lower-cased))[:4], TT = day mod 1024 in base32; reversal gives the original back."""
    srs = make()
    address = srs.forward("Alice@Origin.test")
    assert address == f"SRS0={address[5:9]}=RA=Origin.test=Alice@fwd.test"
    mac = hmac.new(KEY, b"raorigin.testalice", hashlib.sha1).digest()
    assert address[5:9] == base64.b64encode(mac).decode()[:4]
    assert srs.reverse(address) == "Alice@Origin.test"
    assert is_srs(address) and is_srs(address.lower()) and not is_srs("srs2=x@y")


def test_hash_and_tag_compare_case_insensitively() -> None:
    """libsrs2: the hash is checked case-insensitively, since MTAs may change local-part case
    (RFC 5321 2.4 lets only the receiving host interpret it)."""
    srs = make()
    address = srs.forward("alice@origin.test")
    assert srs.reverse(address.upper()).lower() == "alice@origin.test"
    assert srs.reverse(address.lower()) == "alice@origin.test"


def test_forged_hash_wrong_key_and_malformed_are_refused() -> None:
    """A bounce address we never made is refused (no open relay through SRS addresses)."""
    srs = make()
    address = srs.forward("alice@origin.test")
    local = address.split("@")[0]
    tampered = local.replace("origin.test", "evil.test")
    for bad in (tampered + "@fwd.test", "SRS0=AAAA=RA=origin.test=alice@fwd.test",
                "SRS0=@fwd.test", "SRS0==RA=origin.test=alice@fwd.test",
                "SRS0=" + local[5:9] + "=RA=origin.test@fwd.test", "SRS1=x@fwd.test",
                "SRS1=AAAA=host.test==@fwd.test", "notsrs@fwd.test",
                "SRS0=" + "A" * 2000 + "@fwd.test", "SRS0=ÄÄÄÄ=RA=örigin.test=ä@fwd.test"):
        with pytest.raises(Forged):
            srs.reverse(bad)
    with pytest.raises(Forged):
        make(keys=(b"other" * 8,)).reverse(address)


def test_timestamp_max_age_and_wrap() -> None:
    """libsrs2 timestamp: 10 bits of days; accepted up to max_age days old, across the wrap at
    1024; older (or 'future') stamps are Expired, not Forged."""
    address = make().forward("alice@origin.test")
    assert make(NOW + 21 * DAY).reverse(address) == "alice@origin.test"
    with pytest.raises(Expired):
        make(NOW + 22 * DAY).reverse(address)
    with pytest.raises(Expired):
        make(NOW - DAY).reverse(address)
    wrap = 1023 * DAY + 7  # day 1023 -> "77"; two days later the day counter reads 1
    late = make(wrap).forward("a@b.test")
    assert late.split("=")[2] == "77" and make(wrap + 2 * DAY).reverse(late) == "a@b.test"


def test_srs0_of_another_forwarder_becomes_srs1_and_back() -> None:
    """The scheme's SRS1: forwarding an SRS0 address points back at the first forwarder
    (SRS1=HHHH=first==HHHH=TT=domain=local@us); reversing gives that SRS0 address, which the
    first forwarder reverses; an SRS1 forwarded again keeps the first forwarder."""
    first = SRS((b"1" * 32,), "first.test", clock=lambda: NOW)
    second = SRS((b"2" * 32,), "second.test", clock=lambda: NOW)
    third = SRS((b"3" * 32,), "third.test", clock=lambda: NOW)
    srs0 = first.forward("alice@origin.test")
    srs1 = second.forward(srs0)
    assert srs1.startswith("SRS1=") and "=first.test==" in srs1 and srs1.endswith("@second.test")
    assert second.reverse(srs1) == srs0 and first.reverse(srs0) == "alice@origin.test"
    again = third.forward(srs1)
    assert "=first.test==" in again and third.reverse(again) == srs0
    assert second.reverse(srs1.lower()).lower() == srs0.lower()
    with pytest.raises(Forged):
        third.reverse(srs1)


def test_non_ascii_sender_round_trips() -> None:
    """RFC 6531 3.3: UTF-8 local parts are hashed as UTF-8 and come back unchanged."""
    srs = make()
    assert srs.reverse(srs.forward("jösé@bücher.test")) == "jösé@bücher.test"
    with pytest.raises(SRSError):
        srs.forward("no-at-sign")


def test_rotated_keys_verify_and_the_first_signs() -> None:
    """Key rotation (libsrs2 keeps several secrets): old addresses still reverse."""
    old = make(keys=(b"old" * 11,)).forward("alice@origin.test")
    both = make(keys=(KEY, b"old" * 11))
    assert both.reverse(old) == "alice@origin.test"
    assert make().reverse(both.forward("alice@origin.test")) == "alice@origin.test"


def test_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    """32 random bytes in data_dir/srs.key, mode 0600; the same key on the next start; a bad
    file is an error naming it."""
    first = load_keys(str(tmp_path), write_atomic)
    path = tmp_path / "srs.key"
    assert len(first) == 1 and len(first[0]) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_keys(str(tmp_path), write_atomic) == first
    path.write_text("# rotated\n" + "ab" * 32 + "\n" + first[0].hex() + "\n")
    assert load_keys(str(tmp_path), write_atomic) == [b"\xab" * 32, first[0]]
    path.write_text("not hex\n")
    with pytest.raises(ValueError, match=r"srs\.key"):
        load_keys(str(tmp_path), write_atomic)


def test_router_reverses_our_srs_addresses_only() -> None:
    """A valid SRS address of a local domain routes to the original sender (the bounce goes
    home); a forged one exists for nobody (550 at RCPT, RFC 5321 3.6.2); SRS addresses of
    other domains are just remote addresses."""
    from geomail.routing import Router

    srs = make()
    router = Router(["fwd.test"], ["carol@fwd.test"], {}, srs=srs)
    address = srs.forward("alice@origin.test")
    found = router.resolve(address)
    assert found is not None and found.remote == ("alice@origin.test",)
    assert router.srs_refusal(address) is None
    forged = "SRS0=AAAA" + address[9:]
    assert router.resolve(forged) is None
    assert (router.srs_refusal(forged) or "").startswith("forged")
    other = address.replace("@fwd.test", "@elsewhere.test")
    assert router.resolve(other) is not None and router.resolve(other).remote == (other,)
    inner = router.resolve(make().forward("carol@fwd.test"))  # a bounce to a local user
    assert inner is not None and inner.mailboxes == ("carol@fwd.test",)


def test_srs_config_defaults_and_checks() -> None:
    """``srs:``: on, the first local domain, 21 days; the domain must be one of ours."""
    from geomail.config import ConfigError, parse_config

    base = {"hostname": "mx.fwd.test", "domains": ["fwd.test", "other.test"],
            "data_dir": "/tmp/x", "listen": {"smtp": ["127.0.0.1:0"]}}
    srs = parse_config(base, source="<test>").srs
    assert (srs.enabled, srs.domain, srs.max_age) == (True, "fwd.test", 21)
    srs = parse_config({**base, "srs": {"domain": "Other.Test", "max_age": 5,
                                        "enabled": False}}, source="<test>").srs
    assert (srs.enabled, srs.domain, srs.max_age) == (False, "other.test", 5)
    with pytest.raises(ConfigError, match=r"srs\.domain"):
        parse_config({**base, "srs": {"domain": "elsewhere.test"}}, source="<test>")
    with pytest.raises(ConfigError, match=r"srs\.max_age"):
        parse_config({**base, "srs": {"max_age": 0}}, source="<test>")
    with pytest.raises(ConfigError, match=r"srs\.color"):
        parse_config({**base, "srs": {"color": 1}}, source="<test>")
