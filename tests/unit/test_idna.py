"""Domain normalisation is IDNA 2008 with the UTS 46 mapping (RFC 5891): one function,
``geomail.address.normalize_domain``, for config, routing, MX lookup and the wire."""

from __future__ import annotations

import pytest

from geomail.address import normalize_address, normalize_domain
from geomail.config import ConfigError, parse_config
from geomail.routing import Router


@pytest.mark.parametrize(("domain", "expected"), [
    ("faß.de", "xn--fa-hia.de"),  # IDNA 2003 (the stdlib codec) says fass.de: another domain
    ("FAß.DE.", "xn--fa-hia.de"),  # UTS 46 maps case; the trailing dot goes
    ("βόλος.example", "xn--nxasmm1c.example"),  # final sigma kept (non-transitional)
    ("ශ්\u200dරී.example", "xn--10cl1a0b660p.example"),  # ZWJ where RFC 5892 A.2 allows it
    ("bücher.example", "xn--bcher-kva.example"),
    ("\uff22ücher\uff0eexample", "xn--bcher-kva.example"),  # full-width letter and full stop mapped
    ("xn--fa-hia.de", "xn--fa-hia.de"),
    ("Example.COM", "example.com"),
])
def test_idna2008_a_labels(domain: str, expected: str) -> None:
    """RFC 5891 4 / UTS 46 4 (non-transitional processing): U-labels become the A-labels
    IDNA 2008 registers; ß, final sigma and ZWJ are not mapped away as IDNA 2003 did."""
    assert normalize_domain(domain) == expected


@pytest.mark.parametrize("domain", ["☃.example", "a\u200db.example", "-fa\u00df.example",
                                    "\u0301a.example"])
def test_invalid_idna_is_a_value_error(domain: str) -> None:
    """RFC 5892 (symbols, a misplaced joiner, a leading hyphen or combining mark are not valid
    in IDNA 2008): a ValueError that names the domain, never a silent IDNA 2003 fallback."""
    with pytest.raises(ValueError, match="IDNA 2008"):
        normalize_domain(domain)


def test_config_domain_users_and_aliases_use_idna2008() -> None:
    """RFC 5891 and UTS 46: ``faß.example`` in the config is ``xn--fa-hia.example`` in domains,
    users and aliases; ``fass.example`` is not ours."""
    config = parse_config({"domains": ["faß.example"], "data_dir": "/tmp/x",
                           "listen": {"smtp": ["127.0.0.1:0"]}, "users": {"anna@FAß.example": {}},
                           "aliases": {"info@faß.example": "anna@faß.example"}})
    assert config.domains == ("xn--fa-hia.example",)
    assert set(config.users) == {"anna@xn--fa-hia.example"}
    assert config.aliases == {"info@xn--fa-hia.example": ("anna@xn--fa-hia.example",)}
    router = Router(config.domains, config.users, config.aliases)
    assert not router.is_local_domain("fass.example")
    assert router.resolve("info@fass.example") is not None
    assert router.resolve("info@fass.example").remote == ("info@fass.example",)
    assert router.resolve("Info@Faß.example").mailboxes == ("anna@xn--fa-hia.example",)
    assert normalize_address("Anna@Faß.Example") == "anna@xn--fa-hia.example"


def test_config_invalid_idna_names_the_key_path() -> None:
    """Config errors name their key path (README): an invalid IDN in domains or users."""
    with pytest.raises(ConfigError) as info:
        parse_config({"domains": ["example.com", "☃.example"], "data_dir": "/tmp/x",
                      "listen": {"smtp": ["127.0.0.1:0"]}, "users": {"a@\u200d.example": {}}})
    text = str(info.value)
    assert "domains[1]: '☃.example' is not a valid internationalised domain name" in text
    assert "users.a@\u200d.example: " in text
