"""The local users (mailboxes and their password hashes): an immutable lookup table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from geomail.address import normalize_address
from geomail.config import UserConfig


class UserDB:
    """Users by canonical address; immutable, so a reload (SIGHUP) builds a new one and swaps it."""

    __slots__ = ("_users",)

    def __init__(self, users: Mapping[str, UserConfig]) -> None:
        table = {user.address.lower(): user for user in users.values()}
        self._users: Mapping[str, UserConfig] = MappingProxyType(table)

    def lookup(self, address: str) -> UserConfig | None:
        """The user whose address is ``address`` (any case), or None; a bare name never matches."""
        user = self._users.get(address.lower())
        if user is not None or "@" not in address:
            return user
        try:  # "Alice@Bücher.example" -> "alice@xn--bcher-kva.example", as config.py stores it
            canonical = normalize_address(address)
        except (ValueError, UnicodeError):
            return None
        return self._users.get(canonical)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.lookup(address) is not None

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_users"):
            raise AttributeError("UserDB is immutable; build a new one to reload")
        object.__setattr__(self, name, value)
