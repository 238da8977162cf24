"""Router (geomail/routing.py): users, aliases, suffixes, catch-alls, postmaster, owns()."""

from __future__ import annotations

import pytest

from geomail.routing import Resolution, Router

USERS = ["alice@example.com", "bob@example.com", "carol@example.org", "a+b@example.com"]
ALIASES = {
    "team@example.com": ("alice@example.com", "bob@example.com"),
    "sales@example.com": ("team@example.com", "dave@elsewhere.net"),
    "info@example.com": ("alice@example.com",),
    "chain@example.com": ("info@example.com",),
    "loop1@example.com": ("loop2@example.com",),
    "loop2@example.com": ("loop1@example.com", "bob@example.com"),
    "fwd@example.com": ("someone@elsewhere.net",),
    "@example.org": ("carol@example.org",),
    "postmaster@example.org": ("bob@example.com",),
}


@pytest.fixture
def router() -> Router:
    return Router(["example.com", "example.org"], USERS, ALIASES, suffix_separator="+-")


@pytest.mark.parametrize(("address", "mailboxes", "remote"), [
    ("alice@example.com", ["alice@example.com"], []),
    ("Alice@EXAMPLE.com", ["alice@example.com"], []),
    ("alice@example.com.", ["alice@example.com"], []),
    ("alice+news@example.com", ["alice@example.com"], []),
    ("alice-news@example.com", ["alice@example.com"], []),
    ("alice+a-b@example.com", ["alice@example.com"], []),
    ("a+b@example.com", ["a+b@example.com"], []),  # an exact user beats suffix stripping
    ("a+c@example.com", None, []),  # 'a' is nobody
    ("team@example.com", ["alice@example.com", "bob@example.com"], []),
    ("team+x@example.com", ["alice@example.com", "bob@example.com"], []),
    ("sales@example.com", ["alice@example.com", "bob@example.com"], ["dave@elsewhere.net"]),
    ("chain@example.com", ["alice@example.com"], []),
    ("loop1@example.com", ["bob@example.com"], []),
    ("fwd@example.com", [], ["someone@elsewhere.net"]),
    ("anything@example.org", ["carol@example.org"], []),  # catch-all
    ("carol+x@example.org", ["carol@example.org"], []),
    ("nobody@example.com", None, []),
    ("+tag@example.com", None, []),  # a leading separator is not a suffix
    ("postmaster@example.org", ["bob@example.com"], []),  # an alias wins
])
def test_resolve_local(router, address, mailboxes, remote):
    """Local parts and domains compare case-insensitively; user or alias, then without its
    +suffix, then the domain's catch-all; unknown local is None (550 5.1.1
    at RCPT time, RFC 5321 3.6.2 no backscatter)."""
    found = router.resolve(address)
    if mailboxes is None:
        assert found is None
    else:
        assert found == Resolution(tuple(mailboxes), tuple(remote))


@pytest.mark.parametrize("address", ["postmaster@example.com", "Postmaster@Example.COM",
                                     "postmaster"])
def test_postmaster_always_exists(router, address):
    """postmaster@ every local domain, and bare "postmaster", are accepted (RFC 5321 4.5.1)."""
    found = router.resolve(address)
    assert found is not None and len(found.mailboxes) == 1 and not found.remote


def test_postmaster_without_users():
    """With no users at all postmaster still resolves (to its own address)."""
    router = Router(["example.com"], [], {})
    assert router.resolve("postmaster@example.com") == Resolution(("postmaster@example.com",))


def test_remote_addresses(router):
    """An address outside the local domains is remote, unchanged (RFC 5321 2.3.5)."""
    assert router.resolve("Someone@Elsewhere.NET") == Resolution(remote=("Someone@Elsewhere.NET",))


def test_is_local_domain(router):
    assert router.is_local_domain("EXAMPLE.com.")
    assert router.is_local_domain("example.org")
    assert not router.is_local_domain("example.net")
    assert not router.is_local_domain("sub.example.com")


def test_idn_domains():
    """A U-label domain matches its A-label form (RFC 5890 2.3.2.1, RFC 6531 3.2)."""
    router = Router(["xn--bcher-kva.example"], ["anna@xn--bcher-kva.example"], {})
    assert router.is_local_domain("bücher.example")
    assert router.resolve("Anna@Bücher.example") == Resolution(("anna@xn--bcher-kva.example",))


def test_canonical(router):
    assert router.canonical("Alice@Example.COM") == "alice@example.com"
    assert router.canonical("postmaster") == "postmaster@example.com"
    assert router.canonical("POSTMASTER") == "postmaster@example.com"
    assert router.canonical("not an address") == "not an address"


def test_suffixes_off():
    """An empty separator turns suffix addressing off."""
    router = Router(["example.com"], ["alice@example.com"], {}, suffix_separator="")
    assert router.resolve("alice+x@example.com") is None


def test_deep_alias_chain_stops():
    """A chain deeper than MAX_ALIAS_DEPTH stops instead of recursing without end, and the
    address is refused (550 at RCPT time) rather than accepted and delivered nowhere."""
    aliases = {f"a{i}@example.com": (f"a{i + 1}@example.com",) for i in range(30)}
    aliases["a30@example.com"] = ("alice@example.com",)
    router = Router(["example.com"], ["alice@example.com"], aliases)
    assert router.resolve("a0@example.com") is None
    assert router.resolve("a25@example.com") == Resolution(("alice@example.com",))


@pytest.mark.parametrize(("user", "address", "owned"), [
    ("alice@example.com", "alice@example.com", True),
    ("alice@example.com", "Alice@Example.COM", True),
    ("alice@example.com", "alice+lists@example.com", True),
    ("alice@example.com", "info@example.com", True),  # an alias that reaches only alice
    ("alice@example.com", "chain@example.com", True),
    ("alice@example.com", "info+x@example.com", True),
    ("alice@example.com", "team@example.com", False),  # reaches bob too
    ("alice@example.com", "bob@example.com", False),
    ("alice@example.com", "bob+alice@example.com", False),
    ("alice@example.com", "nobody@example.com", False),
    ("carol@example.org", "anything@example.org", False),  # never through a catch-all
    ("alice@example.com", "alice@elsewhere.net", False),
    ("alice@example.com", "postmaster@example.com", False),
    ("a+b@example.com", "a+b@example.com", True),
])
def test_owns(router, user, address, owned):
    """Which sender addresses a logged-in user may use (RFC 6409 6.1): their own, with any
    suffix, and aliases that reach only them."""
    assert router.owns(user, address) is owned
