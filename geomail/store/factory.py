"""The store the config names: the one module that knows every mailbox format."""

from __future__ import annotations

from geomail.config import StoreConfig
from geomail.safeio import Runner, run_blocking
from geomail.store.base import MessageStore


def open_store(config: StoreConfig, hostname: str,
               reader: Runner = run_blocking) -> MessageStore:
    """The store ``config.format`` names, rooted at ``config.path``; POP3 reads go through
    ``reader`` (the App's read pool)."""
    if config.format == "mbox":
        from geomail.store.mbox import MboxStore

        return MboxStore(config.path, hostname, reader=reader)
    from geomail.store.maildir import MaildirStore

    return MaildirStore(config.path, hostname, reader=reader)
