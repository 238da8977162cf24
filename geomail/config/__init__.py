"""The YAML configuration: parsed once into frozen, typed objects; faults name their key path.

Only this package reads YAML. ``load_config(path)`` for files, ``parse_config(raw)`` for an
already-loaded document (tests), ``check_files(config)`` for the files a config names.
"""

from geomail.config.loader import check_files, load_config
from geomail.config.objects import (
    LISTENER_KINDS,
    STORE_FORMATS,
    ACMEConfig,
    ChecksConfig,
    Config,
    DANEConfig,
    DKIMConfig,
    DNSListConfig,
    GreylistConfig,
    Limits,
    ListenerConfig,
    LogConfig,
    RelayConfig,
    RspamdConfig,
    SendmailConfig,
    SmarthostConfig,
    SpamConfig,
    StoreConfig,
    TLSConfig,
    UserConfig,
)
from geomail.config.schema import parse_config
from geomail.config.values import (
    parse_duration,
    parse_hostport,
    parse_size,
)
from geomail.errors import ConfigError

__all__ = [
    "LISTENER_KINDS", "STORE_FORMATS", "ACMEConfig", "ChecksConfig", "Config", "ConfigError",
    "DANEConfig", "DKIMConfig",
    "DNSListConfig", "GreylistConfig", "Limits", "ListenerConfig", "LogConfig", "RelayConfig",
    "RspamdConfig", "SendmailConfig", "SmarthostConfig", "SpamConfig", "StoreConfig",
    "TLSConfig", "UserConfig", "check_files", "load_config",
    "parse_config", "parse_duration", "parse_hostport", "parse_size",
]
