"""Store errors."""

from __future__ import annotations

from sqlalchemy.exc import InternalError, OperationalError

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


#: Driver errors that mean "the store did not answer in time" (a lock or statement
#: timeout, a lost connection; PostgreSQL's idle-in-transaction timeout, SQLSTATE
#: 25P03, arrives as an InternalError): the HTTP layer answers them 503, retryable.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    StoreUnavailable,
    OperationalError,
    InternalError,
)
