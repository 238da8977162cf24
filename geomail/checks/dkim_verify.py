"""DKIM verification (RFC 6376, RSA and RFC 8463 Ed25519) of every signature, and the ARC
chain (RFC 8617), with dkimpy.

Split in two so that nothing slow runs on the hub: the keys are looked up first, on the hub
and concurrently (cooperative DNS, ``fetch_keys``); then hashing, canonicalisation and the
signature checks run in a worker thread (``verify``) with the keys already in hand."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import dkim as dkimpy
import dns.resolver
import gevent
from dkim.util import InvalidTagValueList, parse_tag_value

from geomail.checks import dnsquery
from geomail.checks.dnsquery import DNSTempError

# RFC 6376 6.1: a verifier may limit the signatures it checks; more are reported "policy".
MAX_SIGNATURES = 8
MAX_ARC_SETS = 50  # RFC 8617 4.2.1: instance values are 1 to 50
_SIGNATURE_FIELDS = (b"dkim-signature", b"arc-seal", b"arc-message-signature")


@dataclass(frozen=True, slots=True)
class DKIMResult:
    """One signature's verdict (RFC 8601 2.7.1)."""

    result: str  # pass, fail, neutral, policy, temperror, permerror
    domain: str  # d=
    selector: str  # s=
    algorithm: str = ""  # a=
    b: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"


@dataclass(frozen=True, slots=True)
class ARCResult:
    """The ARC chain's validation (RFC 8617 5.2): none, pass or fail."""

    result: str
    reason: str = ""


@dataclass(slots=True)
class Keys:
    """The key records the message's signatures name, fetched before verification."""

    records: dict[bytes, bytes] = field(default_factory=dict)  # lower-case name -> TXT
    failed: dict[bytes, str] = field(default_factory=dict)  # name -> "temperror"/"permerror"

    def settle(self, names: Iterable[bytes]) -> None:
        """Names whose lookup did not finish in time count as temporary failures."""
        for name in names:
            if name not in self.records and name not in self.failed:
                self.failed[name] = "temperror"

    def lookup(self, name: bytes, timeout: float = 5) -> bytes:
        """dkimpy's ``dnsfunc``: the record already fetched (no DNS from the thread)."""
        return self.records.get(name.lower().rstrip(b"."), b"")


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        tags: dict[bytes, bytes] = parse_tag_value(value)
        return tags
    except InvalidTagValueList:
        return None


def key_names(head: bytes) -> list[bytes]:
    """The ``<s>._domainkey.<d>`` names of the DKIM and ARC signatures in ``head``."""
    try:
        fields, _ = dkimpy.rfc822_parse(head + b"\n")
    except dkimpy.MessageFormatError:
        return []
    names: list[bytes] = []
    for name, value in fields:
        if name.lower() not in _SIGNATURE_FIELDS:
            continue
        tags = _tags(value)
        if tags and tags.get(b"s") and tags.get(b"d"):
            key = (tags[b"s"] + b"._domainkey." + tags[b"d"]).lower().rstrip(b".")
            if key not in names:
                names.append(key)
        if len(names) >= MAX_SIGNATURES + 2 * MAX_ARC_SETS:
            break
    return names


def fetch_keys(resolver: dns.resolver.Resolver, names: Iterable[bytes],
               keys: Keys | None = None) -> Keys:
    """Look every name up at once (cooperative DNS, bounded by the resolver's lifetime) into
    ``keys``; a caller that gives up early calls ``Keys.settle`` for what did not arrive."""
    keys = keys if keys is not None else Keys()

    def fetch(name: bytes) -> None:
        try:
            records = dnsquery.txt(resolver, name.decode("ascii", "replace"))
        except DNSTempError:
            keys.failed[name] = "temperror"
            return
        if records:
            keys.records[name] = records[0]  # RFC 6376 3.6.2.2: several records: undefined
        else:
            keys.failed[name] = "permerror"

    gevent.joinall([gevent.spawn(fetch, name) for name in names])
    return keys


def verify(message: bytes, keys: Keys, arc: bool = True) -> tuple[list[DKIMResult], ARCResult]:
    """Every DKIM signature's result, and the ARC chain's (blocking CPU work: run it in a
    thread). ``message`` has CRLF line endings."""
    checker = dkimpy.DKIM(message, logger=_silent())
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    results = [_verify_one(checker, index, keys) for index in range(min(count, MAX_SIGNATURES))]
    results += [DKIMResult("policy", "", "", reason="too many signatures")
                for _ in range(count - MAX_SIGNATURES)]
    return results, (_verify_arc(message, keys) if arc else ARCResult("none"))


def _verify_one(checker: dkimpy.DKIM, index: int, keys: Keys) -> DKIMResult:
    try:
        prepared = checker.verify_headerprep(index)
    except dkimpy.DKIMException as exc:  # RFC 6376 6.1.1: a malformed signature
        tags = _tags(_signature_value(checker, index)) or {}
        return DKIMResult("permerror", _text(tags.get(b"d")), _text(tags.get(b"s")),
                          reason=str(exc)[:200])
    assert prepared
    sig, include, fields = prepared
    domain, selector = _text(sig[b"d"]), _text(sig[b"s"])
    algorithm, b = _text(sig.get(b"a")), _text(sig.get(b"b"))[:12]
    name = (sig[b"s"] + b"._domainkey." + sig[b"d"]).lower().rstrip(b".")
    if name in keys.failed:
        reason = "key lookup failed" if keys.failed[name] == "temperror" else "no key"
        return DKIMResult(keys.failed[name], domain, selector, algorithm, b, reason)
    try:
        good = checker.verify_sig(sig, include, fields[index], keys.lookup)
    except dkimpy.ValidationError as exc:  # e.g. the body hash does not match
        return DKIMResult("fail", domain, selector, algorithm, b, str(exc)[:200])
    except dkimpy.DKIMException as exc:  # a key or signature we cannot use
        return DKIMResult("permerror", domain, selector, algorithm, b, str(exc)[:200])
    if good:
        return DKIMResult("pass", domain, selector, algorithm, b)
    return DKIMResult("fail", domain, selector, algorithm, b, "signature did not verify")


def _verify_arc(message: bytes, keys: Keys) -> ARCResult:
    try:
        cv, _results, reason = dkimpy.ARC(message, logger=_silent()).verify(dnsfunc=keys.lookup)
    except dkimpy.DKIMException as exc:
        return ARCResult("fail", str(exc)[:200])
    result = (cv or dkimpy.CV_Fail).decode("ascii")
    return ARCResult(result, "" if result == "pass" else str(reason)[:200])


def _silent() -> logging.Logger:
    """A logger for dkimpy that goes nowhere: it logs each failure at ERROR, which is a normal
    verdict here (the result says it), not an event of ours. Unregistered, so it touches no
    logging state."""
    logger = logging.Logger("dkimpy")
    logger.addHandler(logging.NullHandler())
    return logger


def _signature_value(checker: dkimpy.DKIM, index: int) -> bytes:
    values = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    return values[index] if index < len(values) else b""


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip()
