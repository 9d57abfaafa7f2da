"""The dataplane's error tree: every kernel failure surfaces as a ``DataplaneError``.

Invariant: drivers translate backend exceptions once, here, with the cause chained.
"""

from __future__ import annotations


class DataplaneError(Exception):
    """A kernel operation failed."""


class NftError(DataplaneError):
    """nft refused a transaction; nothing in it was applied (transactions are atomic)."""

    def __init__(self, message: str, script: str = "") -> None:
        super().__init__(message)
        self.script = script


class RouteError(DataplaneError):
    """A netlink route operation failed."""
