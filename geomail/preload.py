"""Everything the server imports lazily, imported and initialised while it still runs as root.

After ``system.drop_privileges`` the service user may not be able to read the interpreter's
library, the venv or geomail itself (a venv under /root, a 0700 directory): any import then
fails at first use, hours later, in the middle of a delivery (``ModuleNotFoundError:
gevent.threadpool`` at the first pool use). So ``App.run`` calls ``before_privilege_drop`` first.
"""

from __future__ import annotations

import contextlib
import importlib
import logging

from geomail.log import event

log = logging.getLogger(__name__)

# Modules some code path imports on first use (inside a function, or through a registry such as
# dnspython's rdata classes, the codec registry or gevent's hub attributes).
MODULES = (
    # gevent: the threadpool (fsync, hashing), the resolver, TLS, servers
    "gevent.threadpool", "gevent._threading", "gevent.resolver.thread", "gevent.resolver.blocking",
    "gevent.ssl", "gevent.server", "gevent.baseserver", "gevent.pool", "gevent.queue",
    "gevent.lock", "gevent.event", "gevent.timeout", "gevent.socket", "gevent.select",
    "pprint",  # a hub made late (at exit, in a thread) reads GEVENT_CONFIG.format_context
    # TLS, hashing, codecs
    "ssl", "hashlib", "hmac", "secrets", "base64", "binascii", "encodings.idna",
    "encodings.utf_8", "encodings.ascii", "encodings.latin_1", "encodings.punycode",
    "stringprep", "unicodedata",
    # DSNs and message parsing (email builds these on demand)
    "email.mime.multipart", "email.mime.base", "email.mime.text", "email.mime.nonmultipart",
    "email.generator", "email.policy", "email.headerregistry", "email._header_value_parser",
    "email.feedparser", "email.parser", "email.charset", "email.encoders", "email.base64mime",
    "email.quoprimime", "email.header", "email.utils", "email.iterators", "email.contentmanager",
    "email.message", "calendar", "uuid", "random", "json", "json.decoder", "json.encoder",
    # DKIM and password hashes
    "dkim", "dkim.canonicalization", "dkim.crypto", "dkim.util", "dkim.asn1",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.hazmat.primitives.asymmetric.padding",
    "cryptography.hazmat.primitives.hashes", "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.bindings.openssl.binding",
    "argon2", "argon2.low_level", "argon2.exceptions", "_argon2_cffi_bindings",
    # Inbound checks: SPF, DMARC, Authentication-Results, Ed25519 DKIM keys
    "spf", "dmarc", "authres", "authres.core", "authres.dmarc", "authres.arc",
    "publicsuffixlist", "nacl.signing", "nacl.exceptions",
    # DNS (MX lookups): the resolver and the record classes it loads by name
    "dns.resolver", "dns.query", "dns.message", "dns.rdata", "dns.rdataclass", "dns.rdatatype",
    "dns.rrset", "dns.edns", "dns.flags", "dns.rcode", "dns.inet", "dns.ipv4", "dns.ipv6",
    "dns.name", "dns.exception", "dns.renderer", "dns.tsig", "dns.entropy", "dns.reversename",
    # geomail's own lazy imports
    "geomail.store.maildir", "geomail.store.mbox", "geomail.queue.control",
    "geomail.queue.dsn", "geomail.courier.smtp", "geomail.courier.mx",
    "geomail.courier.dane", "cryptography.x509.verification",
    # MTA-STS policy fetches and TLS reports (gzip attachments)
    "http.client", "gzip", "zlib", "_ssl", "geomail.courier.mtasts", "geomail.courier.tlsrpt",
    "geomail.courier.tls_policy",
)
OPTIONAL = ("idna", "idna.codec", "idna.core", "idna.uts46data", "dns.quic", "dns._ddr",
            "dns.nameserver")
RECORD_TYPES = ("A", "AAAA", "MX", "TXT", "CNAME", "DNAME", "PTR", "SOA", "NS", "OPT", "SPF",
                # DANE: TLSA answers with DNSSEC records beside them (the DO bit)
                "TLSA", "RRSIG", "NSEC", "NSEC3", "DNSKEY", "DS")


def before_privilege_drop(threadpool_size: int) -> None:
    """Import every lazily imported module and create the hub's threadpool and resolver (with
    one worker thread started), so that nothing needs a file after the privileges are gone.
    A module that cannot be imported even now is logged (``preload-missing``): the path that
    needs it would fail later whatever the user."""
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            event(log, logging.WARNING, "preload-missing", module=name, error=str(exc))
    for name in OPTIONAL:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    for rdtype in RECORD_TYPES:
        dns.rdata.get_rdata_class(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    for codec in ("idna", "utf-8", "ascii", "latin-1", "punycode"):
        "geomail.example".encode(codec)
    import gevent

    hub = gevent.get_hub()
    hub.threadpool.maxsize = threadpool_size
    hub.threadpool.spawn(lambda: None).get()
    _ = hub.resolver
    event(log, logging.DEBUG, "preloaded", modules=len(MODULES))
