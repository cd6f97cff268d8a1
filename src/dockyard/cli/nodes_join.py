"""``dockyard node token create|ls|revoke``: join tokens for new nodes (admin)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from dockyard.cli import render
from dockyard.cli.app import JsonOpt, OutputOpt, TokenOpt, UrlOpt, app, call, client

node_app = typer.Typer(help="Nodes: join tokens (admin).", no_args_is_help=True)
token_app = typer.Typer(help="Join tokens new agents need (--join-token).", no_args_is_help=True)
node_app.add_typer(token_app, name="token")
app.add_typer(node_app, name="node")


def _when(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"


@token_app.command("create")
def token_create(
    description: Annotated[str, typer.Option(help="What the token is for.")] = "",
    ttl: Annotated[
        float | None, typer.Option(help="Seconds until it expires (default: never).")
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a join token; it is shown once: dockyard agent --join-token TOKEN."""
    with client(url, token) as api:
        result = call(api.create_join_token, description, ttl)
    render.emit(result, json_out, lambda r: str(r["token"]))


@token_app.command("ls")
def token_ls(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """List join tokens (never their secrets)."""
    with client(url, token) as api:
        rows = call(api.join_tokens)
    render.emit(rows, json_out, _join_token_table)


def _join_token_table(rows: list[Any]) -> None:
    render.table(
        ["ID", "STATE", "USES", "CREATED", "EXPIRES", "LAST USED", "DESCRIPTION"],
        [
            [
                r["id"],
                r["state"],
                str(r["uses"]),
                _when(r["created_at"]),
                _when(r["expires_at"]),
                _when(r["last_used_at"]),
                r["description"],
            ]
            for r in rows
        ],
    )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (from ls).")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke a join token: no new node can join with it (joined nodes stay)."""
    with client(url, token) as api:
        result = call(api.revoke_join_token, token_id)
    render.emit(result, json_out, lambda r: f"revoked {r['id']}")
