"""Root of every dockyard exception hierarchy.

Each layer (core, store, drivers, server, agent, client) has its own ``errors``
module whose exceptions derive from :class:`DockyardError`; third-party
exceptions are translated at the adapter that calls the library.
"""

from __future__ import annotations


class DockyardError(Exception):
    """Base class of all dockyard errors."""
