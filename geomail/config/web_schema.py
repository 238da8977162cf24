"""The ``web:`` (public web site bounds) and ``mta_sts:`` (our MTA-STS policy) sections."""

from __future__ import annotations

from geomail.config.objects import WebConfig
from geomail.config.values import (
    _choice,
    _int_range,
    _list,
    _parse_domain,
    _parse_mailbox_address,
    _positive_duration,
    _positive_size,
    _Section,
    parse_duration,
)

MTA_STS_MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: max_age is at most a year


def _max_age(value: object) -> int:
    seconds = int(parse_duration(value))
    if not 0 < seconds <= MTA_STS_MAX_AGE_LIMIT:
        raise ValueError(f"must be from 1s to {MTA_STS_MAX_AGE_LIMIT}s (RFC 8461 3.2)")
    return seconds


def parse_web(web: _Section, mta_sts: _Section) -> WebConfig:
    """Both sections into one WebConfig; problems are collected in the sections."""
    d = WebConfig()
    max_connections = web.get("max_connections", _int_range(1, 100000), d.max_connections)
    request_timeout = web.get("request_timeout", _positive_duration, d.request_timeout)
    max_body = web.get("max_body", _positive_size, d.max_body)
    web.finish()
    mode = mta_sts.get("mode", _choice("testing", "enforce", "none"), d.mta_sts_mode)
    max_age = mta_sts.get("max_age", _max_age, d.mta_sts_max_age)
    mx: list[str] = []
    for path, item in _list(mta_sts, "mx"):
        pattern = str(item)
        wildcard = pattern.startswith("*.")
        try:
            name = _parse_domain(pattern[2:] if wildcard else pattern)
        except ValueError as exc:
            mta_sts.problems.append(f"{path}: {exc}")
            continue
        mx.append(f"*.{name}" if wildcard else name)  # RFC 8461 3.2: "*." wildcards allowed
    report = mta_sts.get("tls_report_address", _parse_mailbox_address, d.tls_report_address)
    mta_sts.finish()
    return WebConfig(max_connections=max_connections, request_timeout=request_timeout,
                     max_body=max_body, mta_sts_mode=mode, mta_sts_max_age=max_age,
                     mta_sts_mx=tuple(mx), tls_report_address=report)
