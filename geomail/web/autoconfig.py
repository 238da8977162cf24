"""Client autoconfiguration documents: Thunderbird's clientConfig v1.1, Microsoft Autodiscover
(POX, outlook responseschema 2006a) and an Apple configuration profile. Pure: config in,
bytes out. Every server, port and TLS mode comes from the configured listeners (``clients``)."""

from __future__ import annotations

import plistlib
import re
import uuid
import xml.etree.ElementTree as ET

from geomail.address import normalize_domain
from geomail.config.objects import Config
from geomail.web.clients import ClientService, incoming, outgoing

AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
PROFILE_NAMESPACE = "5b2c7f0e-3c1e-4d0f-9a59-6a2f2f1d0c11"  # geomail's own uuid5 namespace
# A conservative local part: what we put into a profile must be an address, not arbitrary text.
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")


class BadRequest(Exception):
    """The request cannot be answered (bad address, not our domain, hostile XML)."""


def our_address(config: Config, address: str) -> tuple[str, str]:
    """``address`` as (address, domain) if it is a plausible address in one of our domains;
    BadRequest otherwise, so nothing arbitrary is reflected into a document."""
    if len(address) > 254:
        raise BadRequest("address too long")
    local, sep, domain = address.rpartition("@")
    if not sep or not _LOCAL_RE.fullmatch(local) or local.startswith(".") or ".." in local:
        raise BadRequest("not an address")
    try:
        domain = normalize_domain(domain)
    except ValueError:
        raise BadRequest("not a domain") from None
    if domain not in config.domains:
        raise BadRequest("not one of our domains")
    return f"{local}@{domain}", domain


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def thunderbird(config: Config, domain: str) -> bytes:
    """clientConfig v1.1 (the Mozilla autoconfig format) for ``domain``."""
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider", id=domain)
    for name in config.domains:
        _sub(provider, "domain", name)
    _sub(provider, "displayName", f"{domain} mail")
    _sub(provider, "displayShortName", domain)
    for tag, services in (("incomingServer", incoming(config)),
                          ("outgoingServer", outgoing(config))):
        for service in services:
            server = _sub(provider, tag, type=service.protocol)
            _sub(server, "hostname", config.hostname)
            _sub(server, "port", str(service.port))
            _sub(server, "socketType", "SSL" if service.implicit_tls else "STARTTLS")
            _sub(server, "username", "%EMAILADDRESS%")
            _sub(server, "authentication", "password-cleartext")
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def parse_autodiscover_request(body: bytes) -> str:
    """The EMailAddress of an Autodiscover POX request. DOCTYPE and entity declarations are
    refused before parsing (no entity expansion, no external fetches); the caller caps size."""
    lowered = body.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise BadRequest("DOCTYPE/ENTITY not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise BadRequest("not XML") from None
    for element in root.iter():
        if element.tag.rpartition("}")[2] == "EMailAddress" and element.text:
            return element.text.strip()
    raise BadRequest("no EMailAddress")


def _protocol(account: ET.Element, config: Config, service: ClientService, address: str) -> None:
    protocol = _sub(account, "Protocol")
    _sub(protocol, "Type", service.protocol.upper())
    _sub(protocol, "Server", config.hostname)
    _sub(protocol, "Port", str(service.port))
    _sub(protocol, "LoginName", address)
    _sub(protocol, "DomainRequired", "off")
    _sub(protocol, "SPA", "off")
    _sub(protocol, "SSL", "on")  # never plaintext: STARTTLS is "SSL on, Encryption TLS"
    _sub(protocol, "Encryption", "SSL" if service.implicit_tls else "TLS")
    _sub(protocol, "AuthRequired", "on")


def autodiscover(config: Config, address: str) -> bytes:
    """The POX response (outlook responseschema 2006a): the best IMAP/POP3 and SMTP
    listener."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_NS)
    response = _sub(root, "Response", xmlns=OUTLOOK_NS)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for services in (incoming(config), outgoing(config)):
        if services:
            _protocol(account, config, services[0], address)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _uuid(kind: str, domain: str, address: str) -> str:
    return str(uuid.uuid5(uuid.UUID(PROFILE_NAMESPACE), f"{kind}:{domain}:{address}")).upper()


def apple_profile(config: Config, address: str, domain: str) -> bytes:
    """An unsigned .mobileconfig with one com.apple.mail.managed payload; UUIDs are stable
    (uuid5 of domain and address), so installing it again replaces the old profile."""
    pop, smtp = incoming(config), outgoing(config)
    if not pop or not smtp:
        raise BadRequest("no POP3 or submission listener configured")
    identifier = ".".join(reversed(domain.split("."))) + ".geomail"
    mail: dict[str, object] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.mail.{address}",
        "PayloadUUID": _uuid("mail", domain, address),
        "PayloadDisplayName": f"{address}",
        "EmailAccountDescription": f"{domain} mail",
        "EmailAccountName": address,
        "EmailAccountType": "EmailTypeIMAP" if pop[0].protocol == "imap" else "EmailTypePOP",
        "EmailAddress": address,
        "IncomingMailServerHostName": config.hostname,
        "IncomingMailServerPortNumber": pop[0].port,
        "IncomingMailServerUseSSL": True,  # TLS always; STARTTLS on a STARTTLS port
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": config.hostname,
        "OutgoingMailServerPortNumber": smtp[0].port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.{address}",
        "PayloadUUID": _uuid("profile", domain, address),
        "PayloadDisplayName": f"{domain} mail",
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
