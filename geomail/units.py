"""Byte units, for sizes written the way the config and the docs say them."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
