"""The ``dockyard`` command line (Typer). It talks to the server only through the client."""
