"""Errors raised by the pure core (validation of user input)."""

from __future__ import annotations

from dockyard.errors import DockyardError


class CoreError(DockyardError):
    """Base class of core errors."""


class ValidationError(CoreError):
    """User input is invalid; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidTransition(CoreError):
    """A task state change that the state machine does not allow."""
