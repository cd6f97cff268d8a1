"""The Typer app every command module registers on, the options they share and the
helpers they call (talking to the server only through :mod:`dockyard.client`).

This module imports no command module: ``cli/main.py`` imports them to register them.
"""

from __future__ import annotations

import errno
import os
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperGroup

from dockyard.cli import render
from dockyard.client import Client, ClientError
from dockyard.errors import DockyardError


def expected_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error a user can cause or fix (server down, a 4xx or
    5xx from the API, a bad config, a port in use); None for a bug (keep its traceback)."""
    import httpx

    if isinstance(exc, ClientError):
        return f"{exc} (field: {exc.field})" if exc.field else str(exc)
    if isinstance(exc, httpx.HTTPError):
        return f"cannot talk to the dockyard API: {exc}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"a port is in use ({exc.strerror or exc}): choose another with --port / "
            "--gateway-port, or set server.port in the config file"
        )
    if isinstance(exc, DockyardError):
        return str(exc)
    return None


class DockyardGroup(TyperGroup):
    """The top-level group: an expected error from any command is one line on stderr
    and exit code 1 (never a traceback); a bug still shows its traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = expected_error_message(exc)
            if message is None:  # typer.Exit, usage errors, bugs: as they are
                raise
            render.err_console.print(f"[red]error:[/] {escape(message)}")
            raise typer.Exit(1) from None


if "_DOCKYARD_COMPLETE" in os.environ:  # a shell asks for completions (dockyard completion)
    from typer._completion_classes import completion_init

    completion_init()

app = typer.Typer(
    name="dockyard",
    cls=DockyardGroup,
    help="A cluster manager for containers: batch jobs and services on Docker.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from dockyard import __version__

        print(f"dockyard {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    render.output = None  # each command sets its own -o
    render.wide = False
    render.reset_consoles()


user_app = typer.Typer(help="Manage users (admin).", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
admin_app = typer.Typer(help="Cluster maintenance (admin).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (documented schema).")]


def _set_output(value: str | None) -> str | None:
    if value is not None and value not in render.OUTPUTS:
        raise typer.BadParameter(f"use one of {', '.join(render.OUTPUTS)}")
    render.output = value
    render.wide = value == "wide"
    return value


OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="json, yaml, name (ids or names) or wide (every column).",
        callback=_set_output,
        metavar="FORMAT",
    ),
]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="DOCKYARD_URL", help="API URL.")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="DOCKYARD_TOKEN", help="Bearer token.")
]


def complete_task(incomplete: str) -> list[str]:
    """Shell completion of a task reference: names and ids of your newest tasks (the
    server, token from the usual places; nothing when it cannot be reached)."""
    try:
        with Client(timeout=3) as api:
            tasks = api.tasks(limit=200, page_size=200)
    except (ClientError, OSError):
        return []
    seen = {str(t["name"]): None for t in tasks} | {str(t["id"]): None for t in tasks}
    return [ref for ref in seen if ref.startswith(incomplete)]


def complete_service(incomplete: str) -> list[str]:
    """Shell completion of a service name (yours; admins: all)."""
    try:
        with Client(timeout=3) as api:
            names = [str(s["name"]) for s in api.services()]
    except (ClientError, OSError):
        return []
    return [name for name in names if name.startswith(incomplete)]


def fail(message: str, code: int = 1) -> NoReturn:
    render.err_console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def client(url: str | None, token: str | None) -> Client:
    return Client(url=url, token=token)


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        fail(expected_error_message(exc) or str(exc))


def command_args(command: list[str] | None) -> list[str]:
    """The COMMAND arguments after an optional leading ``--``."""
    args = list(command or [])
    return args[1:] if args[:1] == ["--"] else args


def parse_env(items: list[str] | None) -> dict[str, str]:
    """``--env KEY=VALUE`` options as a map; exits with a message on a malformed one."""
    environment: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--env {item!r} must be KEY=VALUE")
        environment[key] = value
    return environment


def parse_since(value: str | None, flag: str = "--since") -> float | None:
    """``--since``: ``3600`` (seconds ago), ``2d``/``12h``/``30m`` ago, or an ISO date."""
    import datetime
    import time

    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
            return time.time() - float(value[:-1]) * units[value[-1]]
        if value.replace(".", "", 1).isdigit():
            return time.time() - float(value)
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        fail(f"{flag} {value!r}: use seconds, 12h, 2d or an ISO date", code=2)
