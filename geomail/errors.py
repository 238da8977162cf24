"""The few typed errors geomail raises on purpose; anything else escaping is a bug."""

from __future__ import annotations


class GeomailError(Exception):
    """Base class of geomail's own errors."""


class ConfigError(GeomailError):
    """The configuration is invalid; ``problems`` holds one line per fault, each naming its key."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(GeomailError):
    """A mailbox could not be read or written (disk full, permissions, corrupt file)."""


class MailboxBusy(StoreError):
    """Another session holds the mailbox lock (POP3 ``[IN-USE]``)."""
