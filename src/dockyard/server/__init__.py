"""The control plane: HTTP API, agent gateway, control loops."""
