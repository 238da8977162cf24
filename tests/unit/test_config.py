"""The YAML configuration (geomail/config.py): values, defaults, and every error naming its key."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from geomail.address import normalize_address, normalize_domain
from geomail.config import (
    Config,
    Limits,
    ListenerConfig,
    RelayConfig,
    SmarthostConfig,
    check_files,
    load_config,
    parse_config,
    parse_duration,
    parse_hostport,
    parse_size,
)
from geomail.errors import ConfigError
from tests.support.privileges import owned_tempdir, unprivileged

REPO = Path(__file__).resolve().parents[2]
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def base(**overrides: Any) -> dict[str, Any]:
    """The smallest valid configuration, with top-level keys replaced."""
    raw: dict[str, Any] = {"hostname": "mx.example.com", "domains": ["example.com"],
                           "data_dir": "/srv/geomail", "listen": {"smtp": ["127.0.0.1:25"]}}
    raw.update(overrides)
    return raw


def problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


# --------------------------------------------------------------------------------------------
# Value parsers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (1000, 1000), ("1000", 1000), ("25MiB", 25 * 1024 * 1024), ("25mib", 25 * 1024**2),
    ("10MB", 10_000_000), ("512KiB", 512 * 1024), ("1k", 1024), ("1kb", 1000), ("1.5KiB", 1536),
    ("2GiB", 2 * 1024**3), ("1GB", 10**9), (" 100 b ", 100),
])
def test_parse_size(value, expected):
    """Sizes: bytes or a number with a unit (DESIGN: '25MiB'-style strings)."""
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", [-1, 2.5, True, None, "", "MiB", "5 TiB", "1,5MiB", "ten",
                                   "-5MiB", [1]])
def test_parse_size_errors(value):
    with pytest.raises(ValueError, match="expected a size like '25MiB'"):
        parse_size(value)


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0.0), (10, 10.0), (0.5, 0.5), ("10", 10.0), ("90s", 90.0), ("5m", 300.0),
    ("2h", 7200.0), ("5d", 432000.0), ("1w", 604800.0), ("500ms", 0.5), ("1.5h", 5400.0),
    (" 5 m ", 300.0),
])
def test_parse_duration(value, expected):
    """Durations: seconds or a number with ms/s/m/h/d/w (DESIGN: '90s', '5m', '2h', '5d')."""
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", [-1, True, None, "", "5 min", "5M", "1h30m", "soon", "-5s"])
def test_parse_duration_errors(value):
    with pytest.raises(ValueError, match="expected a duration like"):
        parse_duration(value)


@pytest.mark.parametrize(("value", "default", "expected"), [
    ("127.0.0.1:25", None, ("127.0.0.1", 25)),
    ("0.0.0.0:0", None, ("0.0.0.0", 0)),
    ("[::1]:587", None, ("::1", 587)),
    ("[::]:25", None, ("::", 25)),
    ("localhost:2525", None, ("localhost", 2525)),
    ("[::1]", 53, ("::1", 53)),
    ("10.0.0.1", 53, ("10.0.0.1", 53)),
    (" smtp.provider.net:465 ", 587, ("smtp.provider.net", 465)),
])
def test_parse_hostport(value, default, expected):
    """``host:port`` with IPv6 in brackets (RFC 3986 3.2.2 style)."""
    assert parse_hostport(value, default) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("0.0.0.0:99999", "'0.0.0.0:99999' is not a valid port"),
    ("0.0.0.0:-1", "'0.0.0.0:-1' is not a valid port"),
    ("0.0.0.0:²", "'0.0.0.0:²' is not a valid port"),
    ("host:", "'host:' is not a valid port"),
    ("0.0.0.0", "'0.0.0.0' has no port; write 'host:port'"),
    ("::1:25", "'::1:25': write IPv6 addresses as '[::1]:port'"),
    ("[::1:25", "'[::1:25' has an unclosed '['"),
    ("[::1]25", "'[::1]25' is not 'host:port'"),
    ("", "expected 'host:port', got ''"),
    (25, "expected 'host:port', got 25"),
])
def test_parse_hostport_errors(value, message):
    with pytest.raises(ValueError) as info:
        parse_hostport(value)
    assert str(info.value) == message


@pytest.mark.parametrize(("domain", "expected"), [
    ("Example.COM.", "example.com"), (" example.com ", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
])
def test_normalize_domain(domain, expected):
    """Lower case, no trailing dot, IDNs as A-labels (RFC 5890 2.3.2.1)."""
    assert normalize_domain(domain) == expected


def test_normalize_address():
    """Local part and domain lower-cased; the last '@' splits (RFC 5321 4.1.2 Quoted-string)."""
    assert normalize_address("Alice@Example.COM") == "alice@example.com"
    assert normalize_address('"a@b"@Example.com') == '"a@b"@example.com'
    for bad in ("alice", "@example.com", "alice@"):
        with pytest.raises(ValueError):
            normalize_address(bad)


# --------------------------------------------------------------------------------------------
# Good configurations
# --------------------------------------------------------------------------------------------


def test_minimal_config_defaults():
    """Every omitted section gets its defaults (DESIGN: defaults live in the fields)."""
    config = parse_config(base())
    assert config.hostname == "mx.example.com"
    assert config.domains == ("example.com",)
    assert config.data_dir == "/srv/geomail"
    assert config.queue_dir == "/srv/geomail/queue"
    assert config.store.format == "maildir"
    assert config.store.path == "/srv/geomail/mail"
    assert config.listeners == (ListenerConfig("smtp", "127.0.0.1", 25),)
    assert config.limits == Limits()
    assert config.relay == RelayConfig()
    assert config.tls is None and config.dkim is None and config.user is None
    assert config.suffix_separator == "+"
    assert (config.log.level, config.log.format) == ("info", "text")
    assert config.users == {} and config.aliases == {}


def test_default_limits_follow_the_rfcs():
    """RFC 5321 4.5.3.1.4 (512), 4.5.3.1.8 (100 recipients), 4.5.3.2.7 (5 minutes); RFC 1939 3
    (10 minutes). Body lines: no bound but the message size, as Postfix;
    error and junk limits and the hop count as Postfix's defaults (smtpd_*_error_limit,
    smtpd_junk_command_limit, hopcount_limit)."""
    limits = Limits()
    assert limits.max_command_length == 512
    assert limits.max_line_length == 0
    assert (limits.soft_error_limit, limits.hard_error_limit, limits.error_sleep_time,
            limits.junk_command_limit, limits.max_received_headers) == (10, 20, 1.0, 100, 50)
    assert limits.max_recipients == 100
    assert limits.command_timeout == 300
    assert limits.pop3_timeout == 600
    assert (limits.max_connection_time, limits.min_data_rate, limits.spool_memory) == (
        3600, 500, 16 * 1024 * 1024)  # 500 octets/s as Postfix
    assert limits.max_message_size == 25 * 1024 * 1024


def test_full_config():
    """Every section parsed into its typed object, names normalised."""
    config = parse_config(base(
        hostname="MX.Example.COM.",
        domains=["Example.com", "example.org"],
        user="geomail",
        store={"format": "mbox", "path": "/var/mail"},
        users={"Alice@Example.com": {"password": HASH}, "bob@example.org": None},
        aliases={"Team@example.com": ["alice@example.com", "Carol@Elsewhere.net"],
                 "postmaster@example.org": "bob@example.org",
                 "@example.org": "bob@example.org"},
        suffix_separator="+-",
        listen={"smtp": ["0.0.0.0:25", "[::]:25"],
                "submission": [{"address": "127.0.0.1:587", "allow_plaintext_auth": True}],
                "submissions": "127.0.0.1:465", "pop3s": ["localhost:995"],
                "http": ["127.0.0.1:8025"]},
        tls={"cert": "/etc/tls/cert.pem", "key": "/etc/tls/key.pem"},
        relay={"nameservers": ["127.0.0.1:5353", "[::1]"], "mx_port": 2525,
               "smarthost": {"host": "smtp.provider.net:465", "username": "u", "password": "p"},
               "retry": ["30s", "1m"], "max_queue_time": "2d", "allow_networks": ["10.0.0.0/8"]},
        dkim={"selector": "sel", "key": "/etc/dkim.key", "keys": {"example.org": "/etc/org.key"}},
        limits={"max_message_size": "10MiB", "max_recipients": 50, "command_timeout": "2m",
                "data_timeout": 60},
        log={"level": "debug", "format": "json"},
    ))
    assert config.hostname == "mx.example.com"
    assert config.domains == ("example.com", "example.org")
    assert (config.store.format, config.store.path) == ("mbox", "/var/mail")
    assert config.users["alice@example.com"].password_hash == HASH
    assert config.users["bob@example.org"].password_hash is None
    assert config.aliases == {"team@example.com": ("alice@example.com", "carol@elsewhere.net"),
                              "postmaster@example.org": ("bob@example.org",),
                              "@example.org": ("bob@example.org",)}
    assert config.suffix_separator == "+-"
    assert [(lst.kind, lst.address, lst.allow_plaintext_auth) for lst in config.listeners] == [
        ("smtp", "0.0.0.0:25", False), ("smtp", "[::]:25", False),
        ("submission", "127.0.0.1:587", True), ("submissions", "127.0.0.1:465", False),
        ("pop3s", "127.0.0.1:995", False), ("http", "127.0.0.1:8025", False)]
    assert [lst.implicit_tls for lst in config.listeners_of("submissions", "pop3s")] == [True] * 2
    assert config.relay.nameservers == (("127.0.0.1", 5353), ("::1", 53))
    assert config.relay.mx_port == 2525
    assert config.relay.smarthost == SmarthostConfig("smtp.provider.net", 465, "implicit", "u", "p")
    assert config.relay.retry == (30.0, 60.0)
    assert config.relay.max_queue_time == 2 * 86400
    assert config.relay.allow_networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert config.dkim is not None and config.dkim.selector == "sel"
    assert dict(config.dkim.keys) == {"example.com": "/etc/dkim.key",
                                      "example.org": "/etc/org.key"}
    assert config.limits.max_message_size == 10 * 1024 * 1024
    assert config.limits.command_timeout == 120.0 and config.limits.data_timeout == 60.0
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_config_is_frozen():
    config = parse_config(base())
    with pytest.raises(AttributeError):
        config.hostname = "other"  # type: ignore[misc]


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    """Relative paths are resolved once, at load, against the working directory."""
    monkeypatch.chdir(tmp_path)
    config = parse_config(base(data_dir="./var", tls={"cert": "c.pem", "key": "k.pem"}))
    assert config.data_dir == str(tmp_path / "var")
    assert config.store.path == str(tmp_path / "var" / "mail")
    assert config.tls is not None and config.tls.cert == str(tmp_path / "c.pem")


def test_smarthost_tls_follows_the_port():
    """Port 465 means implicit TLS (RFC 8314 3.3), anything else STARTTLS; default port 587."""
    def smarthost(**spec: Any) -> SmarthostConfig | None:
        return parse_config(base(relay={"smarthost": spec})).relay.smarthost

    assert smarthost(host="relay.example") == SmarthostConfig("relay.example", 587, "starttls")
    assert smarthost(host="relay.example:465").tls == "implicit"  # type: ignore[union-attr]
    assert smarthost(host="relay.example:2525", tls="implicit").tls == "implicit"  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# Bad configurations: every problem, one line each, naming its key (chasquid t-20-bad_configs)
# --------------------------------------------------------------------------------------------

NO_LISTENER = "listen: no smtp, submission or pop3 listener configured"
NO_DOMAIN = "domains: list at least one domain to receive mail for"
BAD_CONFIGS: list[tuple[str, object, list[str]]] = [
    ("not a mapping", ["a", "b"],
     ["(top level): expected a mapping, got list", NO_DOMAIN, NO_LISTENER]),
    ("empty document", None, [NO_DOMAIN, NO_LISTENER]),
    ("unknown key", base(hostnme="x"), ["hostnme: unknown key"]),
    ("bad hostname", base(hostname="not valid!"),
     ["hostname: 'not valid!' is not a valid domain name"]),
    ("no domains", base(domains=[]), [NO_DOMAIN]),
    ("bad domain", base(domains=["example.com", "exa mple.com"]),
     ["domains[1]: 'exa mple.com' is not a valid domain name"]),
    ("duplicate domain", base(domains=["example.com", "EXAMPLE.com."]),
     ["domains[1]: duplicate domain 'example.com'"]),
    ("empty data_dir", base(data_dir=""), ["data_dir: expected a non-empty string, got ''"]),
    ("bad port", base(listen={"smtp": ["0.0.0.0:99999"]}),
     ["listen.smtp[0]: '0.0.0.0:99999' is not a valid port", NO_LISTENER]),
    ("no port", base(listen={"smtp": ["127.0.0.1:25", "0.0.0.0"]}),
     ["listen.smtp[1]: '0.0.0.0' has no port; write 'host:port'"]),
    ("host name to listen on", base(listen={"smtp": ["127.0.0.1:25"],
                                            "pop3": ["mail.example.com:110"]}),
     ["listen.pop3[0]: 'mail.example.com' is not an IP address to listen on"]),
    ("IPv6 without brackets", base(listen={"smtp": ["127.0.0.1:25", "::1:25"]}),
     ["listen.smtp[1]: '::1:25': write IPv6 addresses as '[::1]:port'"]),
    ("unknown listener kind", base(listen={"smtp": ["127.0.0.1:25"], "imapx": ["127.0.0.1:143"]}),
     ["listen.imapx: unknown key"]),
    ("listener without address", base(listen={"smtp": ["127.0.0.1:25"],
                                              "submission": [{"allow_plaintext_auth": True}]}),
     ["listen.submission[0].address: missing"]),
    ("plaintext auth on port 25",
     base(listen={"smtp": [{"address": "127.0.0.1:25", "allow_plaintext_auth": True}]}),
     ["listen.smtp[0].allow_plaintext_auth: only submission, pop3 and imap listeners log in"]),
    ("unknown listener key", base(listen={"smtp": [{"address": "127.0.0.1:25", "tls": True}]}),
     ["listen.smtp[0].tls: unknown key"]),
    ("address used twice", base(listen={"smtp": ["127.0.0.1:25"],
                                        "submission": ["127.0.0.1:25"]}),
     ["listen.submission: 127.0.0.1:25 is already used by listen.smtp"]),
    ("only http", base(listen={"http": ["127.0.0.1:8025"]}), [NO_LISTENER]),
    ("http not on loopback", base(listen={"smtp": ["127.0.0.1:25"], "http": ["0.0.0.0:8025"]}),
     ["listen.http: 0.0.0.0:8025 is not a loopback address; set 'http_allow_remote: true' to "
      "expose health and metrics"]),
    ("implicit TLS without a certificate", base(listen={"submissions": ["127.0.0.1:465"]}),
     ["listen.submissions: 127.0.0.1:465 needs a 'tls' certificate"]),
    ("listen not a mapping", base(listen="127.0.0.1:25"),
     ["listen: expected a mapping, got str", NO_LISTENER]),
    ("tls half", base(tls={"cert": "/etc/c.pem"}), ["tls: needs both 'cert' and 'key'"]),
    ("bad size", base(limits={"max_message_size": "25 potatoes"}),
     ["limits.max_message_size: expected a size like '25MiB' or '512KiB', got '25 potatoes'"]),
    ("zero size", base(limits={"max_message_size": 0}),
     ["limits.max_message_size: must be greater than zero"]),
    ("bad duration", base(limits={"command_timeout": "5 minutes"}),
     ["limits.command_timeout: expected a duration like '90s', '5m', '2h' or '5d', "
      "got '5 minutes'"]),
    ("zero duration", base(limits={"data_timeout": "0s"}),
     ["limits.data_timeout: must be longer than zero"]),
    ("out of range", base(limits={"max_recipients": 0}),
     ["limits.max_recipients: expected a whole number from 1 to 100000, got 0"]),
    ("boolean for a number", base(limits={"max_recipients": True}),
     ["limits.max_recipients: expected a whole number from 1 to 100000, got True"]),
    ("command length below the RFC", base(limits={"max_command_length": 100}),
     ["limits.max_command_length: expected a whole number from 512 to 65536, got 100"]),
    ("line length below the RFC", base(limits={"max_line_length": 998}),
     ["limits.max_line_length: expected 0 (no limit) or at least 1000 (RFC 5321 4.5.3.1.6), "
      "got 998"]),
    ("error delay too long", base(limits={"error_sleep_time": "5m"}),
     ["limits.error_sleep_time: expected a duration of at most 60s, got '5m'"]),
    ("hard error limit zero", base(limits={"hard_error_limit": 0}),
     ["limits.hard_error_limit: expected a whole number from 1 to 1000000, got 0"]),
    ("zero connection lifetime", base(limits={"max_connection_time": "0s"}),
     ["limits.max_connection_time: must be longer than zero"]),
    ("negative data rate", base(limits={"min_data_rate": -1}),
     ["limits.min_data_rate: expected a whole number from 0 to 1000000000, got -1"]),
    ("zero spool memory", base(limits={"spool_memory": 0}),
     ["limits.spool_memory: must be greater than zero"]),
    ("zero io threads", base(limits={"io_threads": 0}),
     ["limits.io_threads: expected a whole number from 1 to 1024, got 0"]),
    ("password threads not a number", base(limits={"password_threads": "two"}),
     ["limits.password_threads: expected a whole number from 1 to 256, got 'two'"]),
    ("unknown limit", base(limits={"max_mesage_size": "1MiB"}),
     ["limits.max_mesage_size: unknown key"]),
    ("limits not a mapping", base(limits=["a"]), ["limits: expected a mapping, got list"]),
    ("store format", base(store={"format": "mh"}),
     ["store.format: expected one of maildir, mbox, got 'mh'"]),
    ("store unknown key", base(store={"compress": True}), ["store.compress: unknown key"]),
    ("user without a domain", base(users={"alice": {}}),
     ["users.alice: 'alice' is not an address like 'user@example.com'"]),
    ("user of another domain", base(users={"alice@other.org": {}}),
     ["users.alice@other.org: the domain is not one of the local 'domains'"]),
    ("plain-text password", base(users={"alice@example.com": {"password": "hunter2"}}),
     ["users.alice@example.com.password: looks like a plain-text password; run 'geomail "
      "passwd' and paste the hash it prints"]),
    ("duplicate user", base(users={"alice@example.com": {}, "Alice@example.com": {}}),
     ["users.Alice@example.com: duplicate user (addresses ignore case)"]),
    ("slash in a user", base(users={"a/b@example.com": {}}),
     ["users.a/b@example.com: 'a/b@example.com': the local part may not contain '/', spaces "
      "or start with '.'"]),
    ("dot-first user", base(users={".a@example.com": {}}),
     ["users..a@example.com: '.a@example.com': the local part may not contain '/', spaces or "
      "start with '.'"]),
    ("unknown user key", base(users={"alice@example.com": {"quota": 1}}),
     ["users.alice@example.com.quota: unknown key"]),
    ("user not a mapping", base(users={"alice@example.com": "hash"}),
     ["users.alice@example.com: expected a mapping, got str"]),
    ("alias to nobody", base(users={"alice@example.com": {}},
                             aliases={"team@example.com": "bob@example.com"}),
     ["aliases.team@example.com: target 'bob@example.com' is neither a user nor an alias"]),
    ("alias without targets", base(users={"alice@example.com": {}},
                                   aliases={"team@example.com": []}),
     ["aliases.team@example.com: needs at least one target address"]),
    ("alias loop", base(aliases={"a@example.com": "b@example.com",
                                 "b@example.com": "a@example.com"}),
     ["aliases.a@example.com: alias loop a@example.com -> b@example.com -> a@example.com",
      "aliases.b@example.com: alias loop b@example.com -> a@example.com -> b@example.com"]),
    ("alias of another domain", base(users={"alice@example.com": {}},
                                     aliases={"x@other.org": "alice@example.com"}),
     ["aliases.x@other.org: aliases are for the local 'domains' only"]),
    ("bad alias target", base(users={"alice@example.com": {}},
                              aliases={"x@example.com": ["alice@example.com", "nope"]}),
     ["aliases.x@example.com[1]: 'nope' is not an address like 'user@example.com'"]),
    ("bad catch-all domain", base(aliases={"@exa mple.com": "a@b.org"}),
     ["aliases.@exa mple.com: 'exa mple.com' is not a valid domain name"]),
    ("suffix separator", base(suffix_separator="@"),
     ["suffix_separator: may not contain '@' or spaces"]),
    ("nameserver by name", base(relay={"nameservers": ["dns.google"]}),
     ["relay.nameservers[0]: 'dns.google' is not an IP address (with an optional :port)"]),
    ("bad network", base(relay={"allow_networks": ["10.0.0.0/33"]}),
     ["relay.allow_networks[0]: '10.0.0.0/33' is not a network like '10.0.0.0/8'"]),
    ("bad retry", base(relay={"retry": ["1m", "soon"]}),
     ["relay.retry[1]: expected a duration like '90s', '5m', '2h' or '5d', got 'soon'"]),
    ("mx_port zero", base(relay={"mx_port": 0}),
     ["relay.mx_port: expected a whole number from 1 to 65535, got 0"]),
    ("smarthost without host", base(relay={"smarthost": {"username": "u", "password": "p"}}),
     ["relay.smarthost.host: missing (write 'smtp.provider.net:587')"]),
    ("smarthost half login", base(relay={"smarthost": {"host": "smtp.provider.net",
                                                       "username": "u"}}),
     ["relay.smarthost: needs both 'username' and 'password', or neither"]),
    ("smarthost tls", base(relay={"smarthost": {"host": "smtp.provider.net", "tls": "none"}}),
     ["relay.smarthost.tls: expected one of starttls, implicit, got 'none'"]),
    ("dkim without a key", base(dkim={"selector": "s"}),
     ["dkim: needs 'key' (one key for every domain) or 'keys' (per domain)"]),
    ("dkim selector", base(dkim={"selector": "bad selector", "key": "/k"}),
     ["dkim.selector: 'bad selector' is not a valid DNS label"]),
    ("dkim key for another domain", base(dkim={"keys": {"other.org": "/k"}}),
     ["dkim.keys.other.org: is not one of the local 'domains'",
      "dkim: needs 'key' (one key for every domain) or 'keys' (per domain)"]),
    ("log", base(log={"level": "verbose", "format": "xml"}),
     ["log.level: expected one of debug, info, warning, error, got 'verbose'",
      "log.format: expected one of text, json, got 'xml'"]),
    ("http_allow_remote not a boolean", base(http_allow_remote="yes"),
     ["http_allow_remote: expected true or false, got 'yes'"]),
    ("several at once", base(hostname="bad host", limits={"max_recipients": -1}, extra=1),
     ["hostname: 'bad host' is not a valid domain name",
      "limits.max_recipients: expected a whole number from 1 to 100000, got -1",
      "extra: unknown key"]),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config(raw, expected):
    """Each fault is reported, on its own line, with the key path (STYLE 5.4)."""
    assert problems(raw) == expected


def test_config_error_message_has_one_line_per_problem():
    with pytest.raises(ConfigError) as info:
        parse_config(base(hostname="bad host", extra=1))
    assert str(info.value) == "hostname: 'bad host' is not a valid domain name\nextra: unknown key"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_load_dev_config(monkeypatch):
    """conf/dev.yaml loads: 127.0.0.1, high ports, ./var (DESIGN, configuration contract)."""
    monkeypatch.chdir(REPO)
    config = load_config(str(REPO / "conf/dev.yaml"))
    assert isinstance(config, Config)
    assert config.source.endswith("conf/dev.yaml")
    assert config.data_dir == str(REPO / "var")
    for listener in config.listeners:
        assert ipaddress.ip_address(listener.host).is_loopback
        assert listener.port > 1024
    assert {lst.kind for lst in config.listeners} >= {"smtp", "submission"}


def test_load_example_config():
    """conf/geomail.yaml, the documented example the packages install, exists and loads
    (STYLE 5.4)."""
    config = load_config(str(REPO / "conf/geomail.yaml"))
    assert config.listeners
    assert config.limits.max_message_size > 0


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]


@pytest.mark.parametrize(("text", "message"), [
    ("hostname: [unclosed\n", "not valid YAML (line 2, column 1): expected ',' or ']', but got "
                              "'<stream end>'"),
    ("a: 1\n\tb: 2\n", "not valid YAML (line 2, column 1): found character '\\t' that cannot "
                       "start any token"),
])
def test_load_invalid_yaml(tmp_path, text, message):
    """YAML syntax errors name the file, line and column."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [f"{path}: {message}"]


def test_load_reports_parse_problems(tmp_path):
    path = tmp_path / "geomail.yaml"
    path.write_text("domains: [example.com]\nlisten: {smtp: ['127.0.0.1:99999']}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems[0] == "listen.smtp[0]: '127.0.0.1:99999' is not a valid port"


def test_check_files():
    """Certificate and key files that are missing or unreadable are reported with their key.
    Checked as an unprivileged user also under root, which reads any file."""
    with owned_tempdir() as directory:
        cert, key, dkim_key = (directory / name for name in ("cert.pem", "key.pem", "dkim.key"))
        config = parse_config(base(tls={"cert": str(cert), "key": str(key)},
                                   dkim={"key": str(dkim_key)}))
        with unprivileged():
            cert.write_text("x")
            assert check_files(config) == [
                f"tls.key: file {key} does not exist",
                f"dkim.keys.example.com: file {dkim_key} does not exist"]
            key.write_text("x")
            dkim_key.write_text("x")
            assert check_files(config) == []
            key.chmod(0)
            assert check_files(config) == [f"tls.key: file {key} is not readable"]


def test_thread_pools_are_sized_from_limits():
    """No process-global state: the App's thread pools are sized by
    limits.io_threads / read_threads / password_threads (defaults 16 / 2 / 2, as the
    GEOMAIL_IO_THREADS variable and the built-in pools they replace), not by the environment."""
    assert (Limits().io_threads, Limits().read_threads, Limits().password_threads) == (16, 2, 2)
    config = parse_config(base(limits={"io_threads": 4, "read_threads": 1,
                                       "password_threads": 3}))
    assert (config.limits.io_threads, config.limits.read_threads,
            config.limits.password_threads) == (4, 1, 3)
