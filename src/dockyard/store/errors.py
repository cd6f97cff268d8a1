"""Store errors."""

from __future__ import annotations

from dockyard.errors import DockyardError


class StoreError(DockyardError):
    """The database could not be opened, migrated or written."""


class NotFound(StoreError):
    """No row with that id (or name) visible to the caller."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class StoreUnavailable(StoreError):
    """The database did not answer (connection lost, locked past the timeout, ...)."""
