"""SASL client responses as tests type them: base64 of text or octets (RFC 4648 4), as SMTP
AUTH (RFC 4954 4) and POP3 AUTH (RFC 5034 4) carry them."""

from __future__ import annotations

import base64


def b64(data: str | bytes) -> str:
    """``data`` (text is UTF-8 encoded) in base64, as a client sends a SASL response."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()
