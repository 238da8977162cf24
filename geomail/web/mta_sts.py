"""Our MTA-STS policy (RFC 8461 3.2) and its ``id`` for the ``_mta-sts`` TXT record (3.1)."""

from __future__ import annotations

import hashlib

from geomail.config.objects import Config


def mx_patterns(config: Config) -> tuple[str, ...]:
    """The ``mx`` lines: ``mta_sts.mx`` or, by default, the hostname."""
    return config.web.mta_sts_mx or (config.hostname,)


def policy_text(config: Config) -> str:
    """The policy file, CRLF lines (RFC 8461 3.2); the same for every domain we serve."""
    web = config.web
    lines = ["version: STSv1", f"mode: {web.mta_sts_mode}"]
    lines += [f"mx: {mx}" for mx in mx_patterns(config)]
    lines.append(f"max_age: {web.mta_sts_max_age}")
    return "".join(f"{line}\r\n" for line in lines)


def policy_id(config: Config) -> str:
    """RFC 8461 3.1 ``id`` (1-32 alphanumerics): a hash of the policy text, so it changes
    exactly when the policy does."""
    return hashlib.sha256(policy_text(config).encode()).hexdigest()[:20]


def txt_record(config: Config) -> str:
    """The ``_mta-sts.<domain>`` TXT value (RFC 8461 3.1)."""
    return f"v=STSv1; id={policy_id(config)}"
