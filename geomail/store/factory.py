"""The store the config names: the one module that knows every mailbox format."""

from __future__ import annotations

from geomail.config import StoreConfig
from geomail.store.base import MessageStore


def open_store(config: StoreConfig, hostname: str) -> MessageStore:
    """The store ``config.format`` names, rooted at ``config.path``."""
    if config.format == "mbox":
        from geomail.store.mbox import MboxStore

        return MboxStore(config.path, hostname)
    from geomail.store.maildir import MaildirStore

    return MaildirStore(config.path, hostname)
