"""UserDB: lookups of local users by address."""

from __future__ import annotations

import pytest

from geomail.config import UserConfig, parse_config
from geomail.userdb import UserDB

USERS = {
    "alice@example.com": UserConfig("alice@example.com", "$argon2id$v=19$m=19456,t=2,p=1$x$y"),
    "bob@example.com": UserConfig("bob@example.com", None),
    "ana@xn--bcher-kva.example": UserConfig("ana@xn--bcher-kva.example", None),
}


def test_lookup_exact_and_any_case() -> None:
    """Addresses are compared case-insensitively (geomail canonicalises local parts to lower
    case; RFC 5321 2.4 lets a server do so for its own mailboxes)."""
    db = UserDB(USERS)
    assert db.lookup("alice@example.com") is USERS["alice@example.com"]
    assert db.lookup("Alice@EXAMPLE.com") is USERS["alice@example.com"]
    assert db.lookup("BOB@example.COM") is USERS["bob@example.com"]


def test_lookup_unknown_and_bare_names() -> None:
    """Unknown addresses and names without a domain are not users."""
    db = UserDB(USERS)
    assert db.lookup("carol@example.com") is None
    assert db.lookup("alice") is None
    assert db.lookup("") is None
    assert db.lookup("alice@example.com.evil") is None
    assert db.lookup("@") is None


def test_lookup_internationalised_domain() -> None:
    """A U-label domain finds the user stored under its A-label (RFC 5890), as config stores it."""
    db = UserDB(USERS)
    assert db.lookup("Ana@Bücher.example") is USERS["ana@xn--bcher-kva.example"]


def test_immutable_and_container_protocol() -> None:
    """A UserDB cannot be changed after it is built; reload swaps in a new instance."""
    source = dict(USERS)
    db = UserDB(source)
    source.pop("alice@example.com")  # the caller's mapping is copied
    assert "alice@example.com" in db and "ALICE@example.com" in db
    assert 42 not in db
    assert len(db) == 3
    assert sorted(db) == sorted(USERS)
    with pytest.raises(AttributeError):
        db._users = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        db._users["x@example.com"] = USERS["bob@example.com"]  # type: ignore[index]


def test_from_config() -> None:
    """Built from the parsed YAML, users keep their canonical address and hash."""
    config = parse_config({
        "domains": ["example.com"],
        "listen": {"smtp": ["127.0.0.1:0"]},
        "users": {"Alice@Example.com": {"password": USERS["alice@example.com"].password_hash},
                  "bob@example.com": None},
    })
    db = UserDB(config.users)
    alice = db.lookup("ALICE@example.com")
    assert alice is not None and alice.address == "alice@example.com"
    assert alice.password_hash == USERS["alice@example.com"].password_hash
    bob = db.lookup("bob@example.com")
    assert bob is not None and bob.password_hash is None
