"""``dockyard secret create|ls|rm`` and ``dockyard configs create|ls|rm``.

Values are read from a file or standard input (``-``) and sent to the server,
which stores them encrypted; nothing here ever prints one (the server never
returns them). A service mounts them with ``service create --secret/--config``
or Compose ``secrets:``/``configs:`` (docs/security.md, docs/compose.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dockyard.cli import render
from dockyard.cli.app import JsonOpt, OutputOpt, TokenOpt, UrlOpt, app, call, client, fail
from dockyard.core.secrets import MAX_VALUE_BYTES, FileKind


def _when(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"


def _table(rows: list[Any]) -> None:
    render.table(
        ["NAME", "OWNER", "SIZE", "CREATED", "UPDATED", "LABELS"],
        [
            [
                r["name"],
                r["owner"],
                str(r["size"]),
                _when(r["created_at"]),
                _when(r["updated_at"]),
                ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())),
            ]
            for r in rows
        ],
    )


def _read(source: str, what: str) -> bytes:
    if source == "-":
        data = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            fail(f"cannot read {source}: {exc.strerror}")
    if len(data) > MAX_VALUE_BYTES:
        fail(f"a {what} holds at most {MAX_VALUE_BYTES} bytes")
    return data


def _commands(kind: FileKind) -> typer.Typer:
    what = kind.value
    group = typer.Typer(
        help=f"Your {kind.plural}: stored encrypted, mounted as files, never shown again.",
        no_args_is_help=True,
    )

    @group.command("create")
    def create(
        name: Annotated[str, typer.Argument(help="Its name.")],
        source: Annotated[str, typer.Argument(help="A file holding the value, or - for stdin.")],
        label: Annotated[
            list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE (repeatable).")
        ] = None,
        replace: Annotated[
            bool, typer.Option("--replace", help="Replace the value if the name exists.")
        ] = False,
        json_out: JsonOpt = False,
        url: UrlOpt = None,
        token: TokenOpt = None,
    ) -> None:
        labels = {}
        for item in label or ():
            key, sep, value = item.partition("=")
            if not sep or not key:
                fail(f"--label {item!r}: expected KEY=VALUE")
            labels[key] = value
        data = _read(source, what)
        with client(url, token) as api:
            out = call(api.create_secret, name, data, kind=what, labels=labels, replace=replace)
        render.emit(out, json_out, lambda r: f"stored {what} {r['name']} ({r['size']} bytes)")

    create.__doc__ = f"Store a {what} from FILE (or - for stdin); its value is never shown."

    @group.command("ls")
    def ls(
        output: OutputOpt = None,
        json_out: JsonOpt = False,
        url: UrlOpt = None,
        token: TokenOpt = None,
    ) -> None:
        with client(url, token) as api:
            rows = call(api.secrets, what)
        render.emit(rows, json_out, _table)

    ls.__doc__ = f"List your {kind.plural} (admins: everyone's): names, sizes, dates, owners."

    @group.command("rm")
    def rm(
        names: Annotated[list[str], typer.Argument(help="Names.")],
        owner: Annotated[str | None, typer.Option(help="Another user's (admins only).")] = None,
        json_out: JsonOpt = False,
        url: UrlOpt = None,
        token: TokenOpt = None,
    ) -> None:
        with client(url, token) as api:
            for name in names:
                call(api.remove_secret, name, what, owner)
        render.emit({"removed": names}, json_out, lambda r: f"removed {', '.join(r['removed'])}")

    rm.__doc__ = f"Remove {kind.plural}; refused while a service mounts one (names it)."
    return group


# ``dockyard config`` prints the effective configuration (cli/daemons.py): configs
# are ``dockyard configs create|ls|rm``.
app.add_typer(_commands(FileKind.SECRET), name="secret")
app.add_typer(_commands(FileKind.CONFIG), name="configs")
