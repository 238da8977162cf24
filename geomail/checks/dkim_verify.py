"""DKIM verification (RFC 6376, RSA and RFC 8463 Ed25519) of every signature, and the ARC
chain (RFC 8617), with dkimpy.

Split in two so that nothing slow runs on the hub: the keys are looked up first, on the hub
and concurrently (cooperative DNS, ``fetch_keys``); then hashing, canonicalisation and the
signature checks run in a worker thread (``verify``) with the keys already in hand."""

from __future__ import annotations

import base64
import logging
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dkim as dkimpy
import dns.resolver
import gevent
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.util import InvalidTagValueList, parse_tag_value

from geomail.checks import dnsquery
from geomail.checks.dnsquery import DNSTempError

# RFC 6376 6.1: a verifier may limit the signatures it checks; more are reported "policy".
MAX_SIGNATURES = 8
MAX_ARC_SETS = 50  # RFC 8617 4.2.1: instance values are 1 to 50
MAX_KEYS = 1024  # parsed key records and OpenSSL key objects kept per App
_HASHES: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}
_Signer = TypeVar("_Signer", bound=dkimpy.DomainSigner)
# A signature field with its continuation lines (LF endings, as bodies are kept).
_SIGNATURE_FIELD = re.compile(rb"^(?:dkim-signature|arc-seal|arc-message-signature)[ \t]*:"
                              rb"([^\n]*\n(?:[ \t][^\n]*\n)*)", re.IGNORECASE | re.MULTILINE)


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
    names: list[bytes] = []
    for match in _SIGNATURE_FIELD.finditer(head):
        tags = _tags(match.group(1))
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

    names = list(names)
    if len(names) == 1:  # the usual message: one signature, no greenlet needed
        fetch(names[0])
    else:
        gevent.joinall([gevent.spawn(fetch, name) for name in names])
    return keys


class DKIMVerifier:
    """Verifies DKIM signatures and ARC chains with dkimpy's own code, two steps swapped:

    - the RSA step (RFC 8017 8.2.2) is OpenSSL's, through ``cryptography``, as in
      ``geomail.dkim`` for signing: dkimpy's pure-Python big-integer arithmetic costs more CPU
      than everything else in a verification together, and holds the GIL while it does;
    - a key record is parsed once per App, not once per message.

    dkimpy's methods ``verify_sig`` and ``verify_sig_process`` run with a namespace of this
    verifier's in which those two functions are replaced; dkimpy's module is not patched.
    ``tests/unit/test_dkim_verifier.py`` fails if dkimpy stops calling them by those names."""

    def __init__(self) -> None:
        namespace = dict(vars(dkimpy), RSASSA_PKCS1_v1_5_verify=self._rsa_verify,
                         load_pk_from_dns=self._load_key)
        methods = dkimpy.DomainSigner
        self._verify_sig = _rebind(methods.verify_sig, namespace)
        self._verify_sig_process = _rebind(methods.verify_sig_process, namespace)
        self._parsed: dict[bytes, tuple[Any, ...]] = {}  # key record -> evaluate_pk's result
        self._rsa: dict[tuple[int, int], rsa.RSAPublicKey] = {}

    def verify(self, message: bytes, keys: Keys,
               arc: bool = True) -> tuple[list[DKIMResult], ARCResult]:
        """Every DKIM signature's result, and the ARC chain's (blocking CPU work: short for
        ordinary messages). ``message`` has CRLF line endings."""
        checker = self._adopt(dkimpy.DKIM(message, logger=_silent()))
        count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
        results = [_verify_one(checker, index, keys)
                   for index in range(min(count, MAX_SIGNATURES))]
        results += [DKIMResult("policy", "", "", reason="too many signatures")
                    for _ in range(count - MAX_SIGNATURES)]
        sealed = any(name.lower() == b"arc-seal" for name, _ in checker.headers)
        return results, (self._verify_arc(message, keys) if arc and sealed
                         else ARCResult("none"))

    def _verify_arc(self, message: bytes, keys: Keys) -> ARCResult:
        try:
            sealer = self._adopt(dkimpy.ARC(message, logger=_silent()))
            cv, _results, reason = sealer.verify(dnsfunc=keys.lookup)
        except dkimpy.DKIMException as exc:
            return ARCResult("fail", str(exc)[:200])
        result = (cv or dkimpy.CV_Fail).decode("ascii")
        return ARCResult(result, "" if result == "pass" else str(reason)[:200])

    def _adopt(self, signer: _Signer) -> _Signer:
        signer.verify_sig = types.MethodType(self._verify_sig, signer)
        signer.verify_sig_process = types.MethodType(self._verify_sig_process, signer)
        return signer

    def _load_key(self, name: bytes, dnsfunc: Callable[..., bytes],
                  timeout: float = 5) -> tuple[Any, ...]:
        """dkimpy's ``load_pk_from_dns``, with each distinct record parsed once."""
        record = dnsfunc(name, timeout=timeout)
        parsed = self._parsed.get(record)
        if parsed is None:
            parsed = tuple(dkimpy.evaluate_pk(name, record))
            if len(self._parsed) >= MAX_KEYS:
                self._parsed.clear()
            self._parsed[record] = parsed
        return parsed

    def _rsa_verify(self, digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
        """dkimpy's ``RSASSA_PKCS1_v1_5_verify(hash, signature, key)`` done by OpenSSL."""
        numbers = (public_key["modulus"], public_key["publicExponent"])
        key = self._rsa.get(numbers)
        if key is None:
            key = rsa.RSAPublicNumbers(numbers[1], numbers[0]).public_key()
            if len(self._rsa) >= MAX_KEYS:
                self._rsa.clear()
            self._rsa[numbers] = key
        algorithm = _HASHES.get(digest.name.lower())
        if algorithm is None:
            return False
        try:
            key.verify(signature, digest.digest(), padding.PKCS1v15(), Prehashed(algorithm))
        except (InvalidSignature, ValueError):
            return False
        return True


def verify(message: bytes, keys: Keys, arc: bool = True) -> tuple[list[DKIMResult], ARCResult]:
    """``DKIMVerifier().verify`` for callers without an App's verifier (tests)."""
    return DKIMVerifier().verify(message, keys, arc)


def warm_up(verifier: DKIMVerifier) -> list[DKIMResult]:
    """Verify one RSA- and one Ed25519-signed message, so that every module verification
    loads on first use is loaded now (a worker does it before it gives up root: the one-file
    binary's unpacked files are readable only by root)."""
    message = b"From: a@warm.invalid\r\nSubject: w\r\n\r\nw\r\n"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    seed = base64.b64encode(ed_key.private_bytes(serialization.Encoding.Raw,
                                                 serialization.PrivateFormat.Raw,
                                                 serialization.NoEncryption()))
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw)
    signed = (dkimpy.sign(message, b"r", b"warm.invalid", pem)
              + dkimpy.sign(message, b"e", b"warm.invalid", seed,
                            signature_algorithm=b"ed25519-sha256") + message)
    keys = Keys({b"r._domainkey.warm.invalid": b"v=DKIM1; k=rsa; p=" + base64.b64encode(der),
                 b"e._domainkey.warm.invalid": b"v=DKIM1; k=ed25519; p="
                 + base64.b64encode(ed_public)})
    return verifier.verify(signed, keys, arc=True)[0]


def _rebind(method: Callable[..., Any], namespace: dict[str, Any]) -> types.FunctionType:
    code = method.__code__
    return types.FunctionType(code, namespace, method.__name__, method.__defaults__)


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


def _silent() -> logging.Logger:
    """A logger for dkimpy that goes nowhere: it logs each failure at ERROR, which is a normal
    verdict here (the result says it), not an event of ours. Unregistered, so it touches no
    logging state."""
    logger = logging.Logger("dkimpy", level=logging.CRITICAL + 1)  # no records built at all
    logger.addHandler(logging.NullHandler())
    return logger


def _signature_value(checker: dkimpy.DKIM, index: int) -> bytes:
    values = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    return values[index] if index < len(values) else b""


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip()
