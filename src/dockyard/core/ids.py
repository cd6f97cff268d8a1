"""Identifiers: short random hex ids like Docker's."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """A 12-hex-digit random id."""
    return secrets.token_hex(6)
