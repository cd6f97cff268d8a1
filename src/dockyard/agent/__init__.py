"""The node agent: connection to the server, reconciler, log shipping."""
