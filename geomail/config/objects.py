"""The configuration objects: frozen, typed, with every default in its field."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from geomail.units import KiB, MiB

LISTENER_KINDS = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http",
                  "web", "webs")
WEB_KINDS = ("web", "webs")  # the public web site (docs/web.md)
STORE_FORMATS = ("maildir", "mbox")


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listening socket: what it serves and where."""

    kind: str  # one of LISTENER_KINDS
    host: str  # an IP literal ("127.0.0.1", "::1", "0.0.0.0", "::")
    port: int  # 0 asks the kernel for a free port (tests)
    allow_plaintext_auth: bool = False  # AUTH/USER/PASS without TLS (127.0.0.1 set-ups only)

    @property
    def implicit_tls(self) -> bool:
        """True for the ports that speak TLS from the first byte (RFC 8314)."""
        return self.kind in ("submissions", "pop3s", "imaps")

    @property
    def address(self) -> str:
        """``host:port`` as written in the config (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound on what a client may make the server do; RFC 5321 4.5.3 for the SMTP ones."""

    max_message_size: int = 25 * MiB  # SIZE (RFC 1870), enforced while reading
    max_recipients: int = 100  # RFC 5321 4.5.3.1.8: at least 100 must be accepted
    max_connections: int = 2000  # on listen.smtp (the public MX port)
    max_connections_per_ip: int = 20  # on listen.smtp, per client network
    # submission, submissions, pop3, pop3s, imap and imaps: a budget of their own, so that a
    # flood on port 25 cannot refuse the users; per client network the parser's default is
    # max_connections_per_ip.
    max_user_connections: int = 200
    max_user_connections_per_ip: int = 20
    ipv4_prefix: int = 32  # the network that counts as one client (per-IP limits, login throttle)
    ipv6_prefix: int = 64
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2.7: server timeout 5 minutes
    data_timeout: float = 600.0  # deadline for a DATA body / each BDAT chunk (+ min_data_rate)
    # Message text line incl. CRLF; 0: no bound but max_message_size. RFC 5321 4.5.3.1.6 says
    # 1000, but real mail has longer lines and Postfix accepts them.
    max_line_length: int = 0
    max_command_length: int = 512  # command line incl. CRLF, RFC 5321 4.5.3.1.4
    max_bad_commands: int = 10  # unknown/out-of-sequence commands before 421 and close
    # Postfix's smtpd_soft_error_limit, smtpd_hard_error_limit, smtpd_error_sleep_time and
    # smtpd_junk_command_limit, counted since the last accepted message.
    soft_error_limit: int = 10  # refused commands before each further refusal is delayed
    hard_error_limit: int = 20  # refused commands before 421 and close
    error_sleep_time: float = 1.0  # that delay
    junk_command_limit: int = 100  # NOOP/RSET/VRFY/HELP/EXPN/HELO/EHLO before they count as errors
    max_received_headers: int = 50  # more: 554 5.4.6, a mail loop (RFC 5321 6.3, hopcount_limit)
    max_auth_failures: int = 5  # failed logins per client IP before it is blocked
    auth_block_time: float = 900.0  # how long a blocked IP stays blocked
    tls_handshake_timeout: float = 30.0
    policy_timeout: float = 60.0  # a policy call (login, message store) gets this, then 4xx
    shutdown_grace: float = 30.0  # SIGTERM: time in-flight sessions get to finish
    pop3_timeout: float = 600.0  # RFC 1939 3: autologout timer of at least 10 minutes
    # RFC 9051 5.4: IMAP logged in (and IDLE) autologout after at least 30 minutes of silence;
    # before login IMAP uses pop3_timeout.
    imap_idle_timeout: float = 1800.0
    # IMAP command limits besides APPEND's message (max_message_size): one line without its
    # CRLF (RFC 7162 4: clients keep lines under 8192 octets), a literal, a whole command.
    imap_max_line: int = 64 * KiB
    imap_max_literal: int = 64 * KiB
    imap_max_command: int = 256 * KiB
    # Messages whose scans, sizes, dates and ENVELOPE/BODYSTRUCTURE all sessions share in
    # memory (store/imap_cache): about 2.5 KiB each.
    imap_cache_messages: int = 50_000
    max_connection_time: float = 3600.0  # total lifetime of one connection
    min_data_rate: int = 500  # octets/s of message data that earn more time (Postfix's default)
    spool_memory: int = 16 * MiB  # message bodies held in memory, all connections together
    # The App's thread pools: file writes and fsyncs (they wait in the kernel, so many run at
    # once), mailbox reads (Python work holding the GIL: few), argon2 (CPU: about one per core).
    io_threads: int = 16
    read_threads: int = 2
    password_threads: int = 2
    verify_threads: int = 2  # DKIM/ARC verification of large inbound messages (CPU)
    verify_processes: int = 1  # worker processes verifying DKIM/ARC (0: in the server)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where and how mailboxes are kept."""

    format: str = "maildir"
    path: str = ""


LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True, slots=True)
class ACMEConfig:
    """``tls.acme``: certificates obtained and renewed from an ACME CA (RFC 8555)."""

    email: str
    directory: str = LETSENCRYPT
    renew_before: float = 30 * 86400.0  # renew when less than this remains
    ca_file: str | None = None  # PEM bundle trusted for the directory's HTTPS (tests: pebble)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """PEM certificate chain and private key for STARTTLS/STLS and the implicit-TLS ports.

    With ``acme``, ``cert``/``key`` are the ``mail`` lineage under ``data_dir/acme/``."""

    cert: str
    key: str
    acme: ACMEConfig | None = None


@dataclass(frozen=True, slots=True)
class SmarthostConfig:
    """One relay host that takes all remote mail instead of MX delivery."""

    host: str
    port: int = 587
    tls: str = "starttls"  # "starttls" or "implicit"; TLS is always required
    username: str | None = None
    password: str | None = None
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class DANEConfig:
    """DANE for outbound SMTP (RFC 7672): the DNSSEC-validating resolvers whose AD bit is
    trusted. Only a validating resolver the operator controls (e.g. a local unbound) makes
    the AD bit mean anything."""

    nameservers: tuple[tuple[str, int], ...] = (("127.0.0.1", 53),)


@dataclass(frozen=True, slots=True)
class TLSReportsConfig:
    """SMTP TLS reporting (RFC 8460): daily reports of outbound TLS to the domains asking."""

    enabled: bool = True
    organization: str = ""  # empty: the hostname
    contact: str = ""  # empty: postmaster@ the first local domain


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Outbound delivery: DNS, retries, bounces, who may relay."""

    nameservers: tuple[tuple[str, int], ...] = ()  # empty: the system resolver
    mx_port: int = 25
    smarthost: SmarthostConfig | None = None
    retry: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    max_queue_time: float = 5 * 86400.0  # RFC 5321 4.5.4.1: give up after 4-5 days
    delay_warning: float = 4 * 3600.0  # 0 turns the delay notice off
    bounce_size_limit: int = 64 * KiB  # RET=FULL returns the message whole up to this size
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_connections: int = 50
    max_connections_per_domain: int = 5
    max_mx_hosts: int = 5
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2
    data_timeout: float = 600.0  # RFC 5321 4.5.3.2.6: end of data
    dns_timeout: float = 10.0
    verify_tls: bool = False  # opportunistic STARTTLS to MX hosts is not verified
    max_item_errors: int = 5  # consecutive internal errors before an item is set aside (held)
    dane: DANEConfig | None = None  # None: no DANE (no validating resolver named)
    mta_sts: bool = True  # RFC 8461 policies of destination domains are fetched and applied
    mta_sts_port: int = 443  # HTTPS port of mta-sts.DOMAIN: 443 (RFC 8461 3.3); tests only
    tls_ca_file: str | None = None  # PEM CAs trusted besides the system's (MTA-STS, MX certs)
    tls_reports: TLSReportsConfig = TLSReportsConfig()


@dataclass(frozen=True, slots=True)
class DKIMConfig:
    """DKIM signing keys: one per local domain (the same file may serve several)."""

    selector: str
    keys: Mapping[str, str]  # domain -> PEM private key path


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ChecksConfig:
    """Sender authentication of mail arriving on port 25 from clients that are neither logged
    in nor in ``relay.allow_networks``: SPF, DKIM, ARC, DMARC, iprev, Authentication-Results."""

    spf: bool = True  # RFC 7208, MAIL FROM (HELO when MAIL FROM is <>)
    dkim: bool = True  # RFC 6376 (+ RFC 8463 Ed25519), every signature
    arc: bool = True  # RFC 8617, reported only
    dmarc: bool = True  # RFC 7489 evaluation
    enforce_dmarc: bool = True  # p=reject -> 550, p=quarantine -> Junk
    iprev: bool = True  # RFC 8601 3: forward-confirmed reverse DNS, reported only
    authentication_results: bool = True  # RFC 8601 header, forged copies of ours removed
    spf_fail: str = "junk"  # SPF fail where DMARC has no say: one of SPF_FAIL_ACTIONS
    reject_forged_local: bool = True  # MAIL FROM in our domains from an outsider: 553 5.7.1
    skip_domains: tuple[str, ...] = ()  # From domains whose DMARC failures are not enforced
    # Clients whose mail is neither checked nor refused by the checks (default: this machine,
    # as Postfix's mynetworks_style=host): local scripts, a content filter re-injecting.
    skip_networks: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                          ipaddress.ip_network("::1/128"))


SPF_FAIL_ACTIONS = ("accept", "junk", "reject")


@dataclass(frozen=True, slots=True)
class RspamdConfig:
    """rspamd's HTTP worker (normal worker, ``/checkv2``)."""

    url: str  # e.g. http://127.0.0.1:11333
    timeout: float = 20.0
    fail_open: bool = True  # rspamd down or slow: deliver (True) or 451 (False)


@dataclass(frozen=True, slots=True)
class DNSListConfig:
    """One DNSBL or DNSWL zone and the answers that count as "listed"."""

    zone: str
    codes: tuple[str, ...] = ()  # empty: any 127.0.0.0/8 answer but 127.255.255.0/24 (errors)


@dataclass(frozen=True, slots=True)
class GreylistConfig:
    """RFC 6647 greylisting of (client network, sender, recipient) triplets."""

    delay: float = 300.0  # a new triplet is refused 451 until this much time has passed
    retry_window: float = 2 * 86400.0  # a triplet not retried within this is forgotten
    pass_lifetime: float = 36 * 86400.0  # a passed triplet (and a whitelisted client) lasts
    auto_whitelist: int = 5  # passes after which a client network skips greylisting (0: never)


@dataclass(frozen=True, slots=True)
class SpamConfig:
    """Spam defences on port 25; all but the early-talker check are off until configured."""

    rspamd: RspamdConfig | None = None
    dnsbl: tuple[DNSListConfig, ...] = ()
    dnswl: tuple[DNSListConfig, ...] = ()  # a listed client skips the DNSBLs and greylisting
    greylist: GreylistConfig | None = None
    early_talker: bool = True  # a client that sends before the greeting is refused
    greet_delay: float = 0.0  # wait this long (after a "220-" line) for early talkers


@dataclass(frozen=True, slots=True)
class SendmailConfig:
    """The account ``geomail sendmail`` logs in with (else it relies on relay.allow_networks)."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Log level and format of the lines on stderr."""

    level: str = "info"
    format: str = "text"  # "text" (key=value) or "json"


@dataclass(frozen=True, slots=True)
class UserConfig:
    """A local mailbox; without a password it receives mail but cannot log in."""

    address: str  # canonical: lower case
    password_hash: str | None = None


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The public web site's bounds (``web:``) and our MTA-STS policy (``mta_sts:``)."""

    max_connections: int = 200  # per web/webs listener
    request_timeout: float = 20.0  # seconds for a whole connection (keep-alive included)
    max_body: int = 16 * 1024  # an Autodiscover request body, bytes
    mta_sts_mode: str = "testing"  # RFC 8461 5: testing | enforce | none
    mta_sts_max_age: int = 604800  # seconds (RFC 8461 3.2: at most 31557600)
    mta_sts_mx: tuple[str, ...] = ()  # empty: the hostname
    tls_report_address: str = ""  # TLS-RPT rua (RFC 8460 3); empty: postmaster@<domain>


@dataclass(frozen=True, slots=True)
class SRSConfig:
    """``srs:``: the Sender Rewriting Scheme for mail aliases forward (docs/forwarding.md)."""

    enabled: bool = True
    domain: str = ""  # of the SRS addresses; empty: the first of ``domains``
    max_age: int = 21  # days a rewritten address is accepted back (libsrs2's default)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, as loaded from one YAML file."""

    hostname: str
    domains: tuple[str, ...]
    data_dir: str
    store: StoreConfig
    user: str | None = None
    users: Mapping[str, UserConfig] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    suffix_separator: str = "+"
    listeners: tuple[ListenerConfig, ...] = ()
    tls: TLSConfig | None = None
    relay: RelayConfig = field(default_factory=RelayConfig)
    dkim: DKIMConfig | None = None
    limits: Limits = field(default_factory=Limits)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    spam: SpamConfig = field(default_factory=SpamConfig)
    log: LogConfig = field(default_factory=LogConfig)
    http_allow_remote: bool = False
    sendmail: SendmailConfig | None = None
    web: WebConfig = field(default_factory=WebConfig)
    srs: SRSConfig = field(default_factory=SRSConfig)
    source: str = ""  # the file it came from, for messages

    @property
    def queue_dir(self) -> str:
        """Where the outbound queue keeps its items."""
        return os.path.join(self.data_dir, "queue")

    def listeners_of(self, *kinds: str) -> tuple[ListenerConfig, ...]:
        """The listeners serving any of ``kinds``."""
        return tuple(lst for lst in self.listeners if lst.kind in kinds)
