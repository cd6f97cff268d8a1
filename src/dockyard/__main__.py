"""``python -m dockyard`` runs the CLI."""

from __future__ import annotations

from dockyard.cli.main import main

main()
