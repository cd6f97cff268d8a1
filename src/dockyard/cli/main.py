"""The ``dockyard`` entry point: registers every command module on the app, runs it.

The modules register their commands on :data:`dockyard.cli.app.app` when imported,
in this order (the order ``dockyard --help`` lists them in); none imports this module.
"""

from __future__ import annotations

# Not sorted: this is the order of the help.
# isort: off
from dockyard.cli import (  # noqa: F401  (imported to register their commands)
    daemons,  # server, agent, up, config
    tasks,  # run, ps, logs, kill, inspect
    nodes,  # nodes, events, drain, undrain
    users,  # login, whoami, user ..., token create, accounting, users
    cluster,  # status, version, admin ...
    scheduling,  # queue ..., plan
    build,  # build
    deploy,  # deploy, apply
    exec,  # exec
    nodes_join,  # node token ...
    services,  # service ..., template ..., launch, instances
    secrets,  # secret ..., config ...
)

# isort: on
from dockyard.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
