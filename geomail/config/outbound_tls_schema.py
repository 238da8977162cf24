"""``relay:`` keys of outbound TLS policy: MTA-STS (RFC 8461), extra CAs, TLS reports
(RFC 8460). Read by ``schema._parse_relay``; the objects are in ``objects``."""

from __future__ import annotations

import os
from typing import Any

from geomail.config.objects import RelayConfig, TLSReportsConfig
from geomail.config.values import _bool, _int_range, _Section, _str


def parse_outbound_tls(sec: _Section) -> dict[str, Any]:
    """The RelayConfig fields of ``mta_sts``, ``mta_sts_port``, ``tls_ca_file``,
    ``tls_reports`` found in the ``relay`` section ``sec``."""
    d = RelayConfig()
    ca_file = sec.get("tls_ca_file", _str, "")
    fields: dict[str, Any] = {
        "mta_sts": sec.get("mta_sts", _bool, d.mta_sts),
        "mta_sts_port": sec.get("mta_sts_port", _int_range(1, 65535), d.mta_sts_port),
        "tls_ca_file": os.path.abspath(ca_file) if ca_file else None,
    }
    if sec.has("tls_reports"):
        reports = sec.section("tls_reports")
        r = TLSReportsConfig()
        contact = reports.get("contact", _str, r.contact)
        if contact and "@" not in contact and not contact.startswith(("http:", "https:")):
            reports.problem("contact", "expected an e-mail address or an https: URL")
        fields["tls_reports"] = TLSReportsConfig(
            enabled=reports.get("enabled", _bool, r.enabled),
            organization=reports.get("organization", _str, r.organization),
            contact=contact)
        reports.finish()
    sec.seen.add("tls_reports")
    return fields
