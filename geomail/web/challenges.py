"""ACME http-01 challenge responses (RFC 8555 8.3), shared by the ACME client and the web site."""

from __future__ import annotations


class ChallengeStore:
    """Key authorizations by token while an order is pending; the web site answers
    ``GET /.well-known/acme-challenge/<token>`` from here. Only the hub touches it."""

    def __init__(self) -> None:
        self._by_token: dict[str, str] = {}

    def put(self, token: str, key_authorization: str) -> None:
        """Serve ``key_authorization`` for ``token`` until ``remove``."""
        self._by_token[token] = key_authorization

    def get(self, token: str) -> str | None:
        """The key authorization for ``token``, or None if no challenge is pending for it."""
        return self._by_token.get(token)

    def remove(self, token: str) -> None:
        """Stop serving ``token`` (the order is done, or failed)."""
        self._by_token.pop(token, None)
