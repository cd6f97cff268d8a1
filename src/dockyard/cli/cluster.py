"""``dockyard status``, ``version``, ``completion``; ``admin gc``, ``admin export-accounting``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from dockyard import __version__
from dockyard.cli import render
from dockyard.cli.app import (
    JsonOpt,
    OutputOpt,
    TokenOpt,
    UrlOpt,
    admin_app,
    app,
    call,
    client,
    fail,
    parse_since,
)


@app.command()
def status(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """The control plane: server instances, who leads, the term and the lease age."""
    with client(url, token) as api:
        data = call(api.status)
    render.emit(data, json_out, _print_status)


def _print_status(data: dict[str, Any]) -> None:
    lease = data.get("lease_age_s")
    render.console.print(
        f"leader {data.get('leader') or '(none)'}  term {data.get('term')}  "
        f"lease age {'-' if lease is None else f'{lease:.2f}s'} of {data.get('lease_s')}s"
    )
    render.table(
        ["instance", "role", "api", "gateway", "seen"],
        [
            [
                i["id"] + (" (this)" if i["this"] else ""),
                "leader" if i["leader"] else "follower",
                i["api_url"],
                i["gateway"],
                f"{i['seen_age_s']:.1f}s ago",
            ]
            for i in data.get("instances") or []
        ],
    )


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


SHELLS = ("bash", "zsh", "fish")


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.")],
) -> None:
    """Print the shell completion script: commands, subcommands and options.

    bash: ``source <(dockyard completion bash)`` (or save it under
    ~/.local/share/bash-completion/completions/dockyard); zsh: ``dockyard completion
    zsh > ~/.zfunc/_dockyard``; fish: ``dockyard completion fish >
    ~/.config/fish/completions/dockyard.fish``."""
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        fail(f"{shell!r}: use one of {', '.join(SHELLS)}", code=2)
    print(
        get_completion_script(prog_name="dockyard", complete_var="_DOCKYARD_COMPLETE", shell=shell)
    )


@admin_app.command("gc")
def admin_gc(
    retention: Annotated[float, typer.Option(help="Keep finished work this many days.")] = 7.0,
    accounting_retention: Annotated[
        float | None, typer.Option(help="Also drop accounting older than this many days.")
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Remove finished tasks, their logs and events past the retention, and have every
    connected node remove dead dockyard containers (reported as node events)."""
    with client(url, token) as api:
        result = call(
            api.gc,
            retention * 86400,
            None if accounting_retention is None else accounting_retention * 86400,
        )
    render.emit(result, json_out, render.counts)


@admin_app.command("export-accounting")
def admin_export_accounting(
    format: Annotated[str, typer.Option(help="sge or csv.")] = "sge",
    since: Annotated[str | None, typer.Option(help="12h, 2d, seconds or an ISO date.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every user's accounting, as an SGE accounting file (default) or CSV."""
    if format not in ("sge", "csv"):
        fail("--format must be sge or csv")
    with client(url, token) as api:
        if not call(api.whoami)["admin"]:
            fail("admin only")
        sys.stdout.write(call(api.export_accounting, format, None, parse_since(since)))
