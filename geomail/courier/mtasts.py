"""MTA-STS (RFC 8461): policy discovery over DNS, fetch over verified HTTPS, durable cache.

The courier asks ``MTASTS.lookup(domain)`` before it walks a domain's MX hosts; the answer is
the policy to apply (or None) and, for TLS reporting (RFC 8460), why a policy could not be had.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.resolver
from gevent.event import AsyncResult

from geomail.address import normalize_domain
from geomail.log import event
from geomail.safeio import run_blocking, write_atomic

log = logging.getLogger(__name__)

MAX_POLICY_SIZE = 64 * 1024  # RFC 8461 3.3: "SHOULD NOT be larger than 64 kilobytes"
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most about 1 year
# Refetch when less than a day (or half of a shorter max_age) of validity is left (RFC 8461 5.1)
REFRESH_BEFORE = 86400.0
RETRY_FAILED_AFTER = 300.0  # a failed fetch is not repeated for each delivery meanwhile
MAX_FAILED = 10_000  # remembered failures (bounded: cleared when full)
MODES = ("enforce", "testing", "none")

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")  # RFC 8461 3.1: sts-id = 1*32(ALPHA / DIGIT)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_MX_PATTERN = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*"
                         r"[a-z0-9_])?)*\.?$")


class STSError(Exception):
    """A record or policy that cannot be used; ``result_type`` is RFC 8460 4.3's name."""

    def __init__(self, message: str, result_type: str) -> None:
        super().__init__(message)
        self.result_type = result_type


@dataclass(frozen=True, slots=True)
class STSPolicy:
    """A parsed policy (RFC 8461 3.2) with the TXT ``id`` it came with and when it was fetched."""

    domain: str
    id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    fetched: float
    text: str

    @property
    def expires(self) -> float:
        return self.fetched + self.max_age

    def matches(self, host: str) -> bool:
        """RFC 8461 4.1: ``host`` equals a pattern, or a ``*.`` pattern with one more label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def policy_strings(self) -> list[str]:
        """The policy's lines, as TLS-RPT's ``policy-string`` carries them (RFC 8460 4.4)."""
        return [line.strip() for line in self.text.splitlines() if line.strip()]

    def to_json(self) -> dict[str, object]:
        return {"domain": self.domain, "id": self.id, "fetched": self.fetched, "text": self.text}


@dataclass(frozen=True, slots=True)
class STSLookup:
    """What the courier applies: a policy (None: none in force), and a failure to report."""

    policy: STSPolicy | None
    failure: str | None = None  # RFC 8460 result type, e.g. sts-policy-fetch-error
    reason: str = ""


def parse_txt(strings: list[str]) -> str:
    """The ``id`` of the one ``v=STSv1`` TXT record among ``strings`` (RFC 8461 3.1)."""
    found = [s for s in strings if s.startswith("v=STSv1")]
    if len(found) != 1:
        raise STSError(f"{len(found)} v=STSv1 TXT records (exactly one needed)",
                       "sts-policy-invalid")
    fields: dict[str, str] = {}
    for part in found[0].split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise STSError(f"malformed TXT field {part!r}", "sts-policy-invalid")
        fields.setdefault(key.strip(), value.strip())
    if fields.get("v") != "STSv1":
        raise STSError("the TXT record does not start with v=STSv1", "sts-policy-invalid")
    sts_id = fields.get("id", "")
    if not _ID.match(sts_id):
        raise STSError(f"invalid id {sts_id!r} in the TXT record", "sts-policy-invalid")
    return sts_id


def parse_policy(text: str, domain: str, sts_id: str, fetched: float) -> STSPolicy:
    """RFC 8461 3.2: ``version: STSv1``, ``mode``, ``max_age`` and (unless mode none) ``mx``.
    Lines end in CRLF or LF; unknown keys are ignored; anything malformed is refused."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not colon or not _KEY.match(key):
            raise STSError(f"malformed policy line {line[:80]!r}", "sts-policy-invalid")
        if key == "mx":
            pattern = value.lower()
            if not _MX_PATTERN.match(pattern):
                raise STSError(f"invalid mx pattern {value[:80]!r}", "sts-policy-invalid")
            mx.append(pattern.rstrip("."))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise STSError("policy version is not STSv1", "sts-policy-invalid")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise STSError(f"invalid policy mode {mode[:20]!r}", "sts-policy-invalid")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise STSError(f"invalid max_age {age[:20]!r}", "sts-policy-invalid")
    if mode != "none" and not mx:
        raise STSError("policy has no mx line", "sts-policy-invalid")
    return STSPolicy(domain, sts_id, mode, tuple(mx), min(int(age), MAX_AGE_LIMIT), fetched,
                     text)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``host`` at an address we resolved ourselves (our resolver, not the system's);
    the certificate is still checked for ``host`` (SNI and name check)."""

    def __init__(self, host: str, address: str, port: int, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class MTASTS:
    """Policies by domain: in memory, and durably under ``directory`` (one JSON file each) so a
    restart does not forget a policy an attacker could otherwise strip (RFC 8461 5, 10.2).

    One fetch per domain at a time: deliveries that ask meanwhile wait for its result.
    """

    def __init__(self, resolver: dns.resolver.Resolver, directory: str,
                 tls: ssl.SSLContext, *, port: int = 443, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._resolver = resolver
        self._dir = directory
        self._tls = tls
        self._port = port
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[str, STSPolicy] = {}
        self._inflight: dict[str, AsyncResult] = {}
        self._failed: dict[str, tuple[float, str, STSLookup]] = {}  # domain -> (when, id, it)
        self._loaded = False

    def lookup(self, domain: str) -> STSLookup:
        """The policy in force for ``domain`` (RFC 8461 5.1), fetching it when needed."""
        try:
            domain = normalize_domain(domain)
        except ValueError:
            return STSLookup(None)
        if not _MX_PATTERN.match(domain) or domain.startswith("*"):
            return STSLookup(None)  # not a host name: no DNS, and never a file name
        waiting = self._inflight.get(domain)
        if waiting is not None:
            result: STSLookup = waiting.get()
            return result
        waiting = self._inflight[domain] = AsyncResult()
        try:
            found = self._lookup(domain)
        except BaseException as exc:
            waiting.set_exception(exc)
            raise
        else:
            waiting.set(found)
        finally:
            del self._inflight[domain]
        return found

    def cached(self, domain: str) -> STSPolicy | None:
        """The policy kept for ``domain``, unexpired, without any network access."""
        self._load()
        policy = self._cache.get(domain)
        return policy if policy is not None and policy.expires > self._clock() else None

    def _lookup(self, domain: str) -> STSLookup:
        cached = self.cached(domain)
        try:
            sts_id = self._txt_id(domain)
        except STSError as exc:
            if cached is not None:  # RFC 8461 5.1: DNS gone or broken, the cached one holds
                return STSLookup(cached)
            if exc.result_type == "none":
                return STSLookup(None)
            return STSLookup(None, exc.result_type, str(exc))
        now = self._clock()
        if cached is not None and cached.id == sts_id \
                and cached.expires - now > min(REFRESH_BEFORE, cached.max_age / 2):
            return STSLookup(cached)
        failed = self._failed.get(domain)
        if failed is not None and failed[1] == sts_id and now - failed[0] < RETRY_FAILED_AFTER:
            return failed[2]
        try:
            policy = self._fetch(domain, sts_id)
        except STSError as exc:
            event(log, logging.WARNING, "mta-sts-fetch-failed", domain=domain, id=sts_id,
                  error=str(exc), cached="yes" if cached else "no")
            found = STSLookup(cached, exc.result_type, str(exc))
            if len(self._failed) >= MAX_FAILED:
                self._failed.clear()
            self._failed[domain] = (now, sts_id, found)
            return found
        self._failed.pop(domain, None)
        self._cache[domain] = policy
        event(log, logging.INFO, "mta-sts-policy", domain=domain, id=sts_id, mode=policy.mode,
              max_age=policy.max_age, mx=",".join(policy.mx))
        self._save(policy)
        return STSLookup(policy)

    def _txt_id(self, domain: str) -> str:
        """The id from ``_mta-sts.DOMAIN``; STSError 'none' when there is no record."""
        try:
            answer = self._resolver.resolve(f"_mta-sts.{domain}", "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            raise STSError("no _mta-sts TXT record", "none") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise STSError(f"TXT lookup failed: {exc}", "sts-policy-fetch-error") from exc
        strings = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
        if not any(s.startswith("v=STSv1") for s in strings):
            raise STSError("no v=STSv1 TXT record", "none")
        return parse_txt(strings)

    def _fetch(self, domain: str, sts_id: str) -> STSPolicy:
        """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 3.3): PKIX-verified for
        that name, no redirects, 200 only, text/plain, at most 64 KiB, within the timeout."""
        host = f"mta-sts.{domain}"
        addresses: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = self._resolver.resolve(host, rdtype, search=False)
            except (dns.exception.DNSException, OSError):
                continue
            addresses += [r.to_text() for r in answer]
        if not addresses:
            raise STSError(f"{host} has no address", "sts-policy-fetch-error")
        last = ""
        for address in addresses:
            conn = _PinnedHTTPS(host, address, self._port, self._timeout, self._tls)
            try:
                conn.request("GET", "/.well-known/mta-sts.txt",
                             headers={"Host": host, "Accept": "text/plain"})
                response = conn.getresponse()
                if response.status != 200:  # redirects included (RFC 8461 3.3)
                    raise STSError(f"{host} answered HTTP {response.status}",
                                   "sts-policy-fetch-error")
                kind = response.getheader("Content-Type", "").split(";")[0].strip().lower()
                if kind != "text/plain":
                    raise STSError(f"{host} sent Content-Type {kind!r}, not text/plain",
                                   "sts-policy-invalid")
                data = response.read(MAX_POLICY_SIZE + 1)
                if len(data) > MAX_POLICY_SIZE:
                    raise STSError(f"{host} sent a policy over 64 KiB", "sts-policy-invalid")
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise STSError("policy is not UTF-8", "sts-policy-invalid") from exc
                return parse_policy(text, domain, sts_id, self._clock())
            except ssl.SSLCertVerificationError as exc:
                last = f"{host} [{address}]: certificate not valid: {exc.verify_message}"
                raise STSError(last, "sts-webpki-invalid") from exc
            except (OSError, http.client.HTTPException) as exc:
                last = f"{host} [{address}]: {exc or type(exc).__name__}"
            finally:
                conn.close()
        raise STSError(f"cannot fetch the policy: {last}", "sts-policy-fetch-error")

    # ------------------------------------------------------------------ durable cache

    def _path(self, domain: str) -> str:
        return os.path.join(self._dir, f"{domain}.json")

    def _save(self, policy: STSPolicy) -> None:
        data = json.dumps(policy.to_json()).encode()
        try:
            run_blocking(_write, self._dir, self._path(policy.domain), data)
        except OSError as exc:
            event(log, logging.ERROR, "mta-sts-cache-failed", domain=policy.domain,
                  error=str(exc))

    def _load(self) -> None:
        """Read the policies kept on disk, once (at the first lookup after a start)."""
        if self._loaded:
            return
        self._loaded = True
        for policy in run_blocking(_read_all, self._dir, self._clock()):
            self._cache.setdefault(policy.domain, policy)


def _write(directory: str, path: str, data: bytes) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    write_atomic(path, data)


def _read_all(directory: str, now: float) -> list[STSPolicy]:
    """The unexpired policies kept in ``directory``; expired files are removed (RFC 8461
    5.1: a policy past its max_age is not used again)."""
    found: list[STSPolicy] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as handle:
                raw = json.loads(handle.read(4 * MAX_POLICY_SIZE))
            policy = parse_policy(str(raw["text"]), str(raw["domain"]), str(raw["id"]),
                                  float(raw["fetched"]))
            if policy.expires <= now:
                os.unlink(os.path.join(directory, name))
                continue
            found.append(policy)
        except (OSError, ValueError, KeyError, TypeError, STSError) as exc:
            event(log, logging.WARNING, "mta-sts-cache-unreadable", file=name, error=str(exc))
    return found
