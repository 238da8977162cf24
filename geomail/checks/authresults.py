"""The ``Authentication-Results`` field (RFC 8601): ours, built with the ``authres`` package,
and forged ones (fields that claim our authserv-id) taken out of the message (RFC 8601 5)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import authres
import authres.arc
import authres.dmarc

from geomail.checks.dkim_verify import ARCResult, DKIMResult
from geomail.checks.dmarc_policy import DMARCResult
from geomail.checks.iprev import IprevResult
from geomail.checks.spf import SPFResult
from geomail.envelope import CHUNK_SIZE, Body

# One field with its folded continuation lines (LF line endings, as bodies are kept).
_FIELD = re.compile(rb"^([^:\s]+)[ \t]*:([^\n]*\n(?:[ \t][^\n]*\n)*)", re.MULTILINE)
_COMMENT = re.compile(r"\([^()]*\)")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _value(text: str) -> str:
    """A property value as authres writes it, without anything that is not printable ASCII."""
    return _UNPRINTABLE.sub("?", text)


def build_field(authserv_id: str, spf: SPFResult | None, dkim: Sequence[DKIMResult] | None,
                arc: ARCResult | None, dmarc: Sequence[DMARCResult],
                iprev: IprevResult | None) -> bytes:
    """``Authentication-Results: <authserv-id>; ...``, one method result per folded line (LF
    endings). Methods that did not run (None) are left out; an unsigned message says
    ``dkim=none``; no result at all says ``none``."""
    results: list[authres.core.AuthenticationResult] = []
    if iprev is not None:
        results.append(authres.IPRevAuthenticationResult(
            result=iprev.result, policy_iprev=iprev.ip,
            result_comment=_value(iprev.name) or None))
    if spf is not None:
        scope = ({"smtp_mailfrom": _value(spf.identity)} if spf.scope == "mailfrom"
                 else {"smtp_helo": _value(spf.identity) or "unknown"})
        results.append(authres.SPFAuthenticationResult(result=spf.result, **scope))
    if dkim is not None and not dkim:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    for signature in dkim or ():
        results.append(authres.DKIMAuthenticationResult(
            result=signature.result, header_d=_value(signature.domain) or None,
            header_s=_value(signature.selector) or None,
            header_a=_value(signature.algorithm) or None))
    if arc is not None:
        results.append(authres.arc.ARCAuthenticationResult(result=arc.result))
    for verdict in dmarc:
        results.append(authres.dmarc.DMARCAuthenticationResult(
            result=verdict.result, header_from=_value(verdict.domain) or None,
            policy=verdict.policy or None))
    clauses = [str(result) for result in results] or ["none"]
    text = f"Authentication-Results: {authserv_id};\n\t" + ";\n\t".join(clauses) + "\n"
    return text.encode("ascii", "replace")


def claims(field_value: bytes, authserv_id: str) -> bool:
    """Does this Authentication-Results value claim ``authserv_id`` (RFC 8601 2.5)?"""
    text = _COMMENT.sub(" ", field_value.decode("ascii", "replace").replace("\n", " "))
    first = text.split(";", 1)[0].strip().split()
    found = first[0].strip('"') if first else ""
    return found.lower().rstrip(".") == authserv_id.lower().rstrip(".")


def forged_fields(head: bytes, authserv_id: str,
                  ours: tuple[bytes, ...] = ()) -> list[tuple[int, int]]:
    """(start, end) of every Authentication-Results field in ``head`` that claims our id, and
    of every field named in ``ours`` (lower case: fields only we may write, X-Spam)."""
    spans = []
    for match in _FIELD.finditer(head):
        name = match.group(1).lower()
        if name in ours or (name == b"authentication-results"
                            and claims(match.group(2), authserv_id)):
            spans.append(match.span())
    return spans


class WithoutFields:
    """A ``Body`` that reads like ``body`` less some byte spans of its header section."""

    __slots__ = ("_body", "_head", "_skip", "crlf_size", "size")

    def __init__(self, body: Body, head: bytes, spans: Sequence[tuple[int, int]]) -> None:
        kept, start = [], 0
        for begin, end in spans:
            kept.append(head[start:begin])
            start = end
        kept.append(head[start:])
        self._head = b"".join(kept)
        self._skip = len(head)
        self._body = body
        removed = head[: self._skip]
        self.size = body.size - len(removed) + len(self._head)
        self.crlf_size = (body.crlf_size - len(removed) - removed.count(b"\n")
                          + len(self._head) + self._head.count(b"\n"))

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        yield self._head
        skip = self._skip
        for chunk in self._body.chunks(chunk_size):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:]
            skip = 0
