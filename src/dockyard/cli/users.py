"""``dockyard login``, ``whoami``, ``user ...``, ``token create``, ``accounting`` and ``users``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.app import (
    JsonOpt,
    OutputOpt,
    TokenOpt,
    UrlOpt,
    app,
    call,
    client,
    fail,
    parse_since,
    token_app,
    user_app,
)
from dockyard.client import (
    Client,
    load_contexts,
    remove_context,
    save_context,
    use_context,
)

context_app = typer.Typer(
    help="Servers you logged in to (one token per URL).", no_args_is_help=True
)
app.add_typer(context_app, name="context")


@app.command()
def login(
    server: Annotated[
        str | None, typer.Argument(help="Server URL (default: --url, $DOCKYARD_URL or local).")
    ] = None,
    token_value: Annotated[str, typer.Option("--token", prompt=True, hide_input=True)] = "",
    url: UrlOpt = None,
) -> None:
    """Check a token against SERVER and store it for that URL (0600); use that server."""
    with Client(url=server or url, token=token_value) as api:
        who = call(api.whoami)
        target = api.url
    path = save_context(target, token_value, str(who["name"]))
    print(f"logged in to {target} as {who['name']}; token saved to {path}")


@app.command()
def logout(
    server: Annotated[str | None, typer.Argument(help="Server URL (default: the current).")] = None,
) -> None:
    """Forget the token stored for SERVER."""
    target = (server or str(load_contexts().get("current") or "")).rstrip("/")
    if not target:
        fail("no current context: give the server URL (dockyard context ls)")
    if not remove_context(target):
        fail(f"no token stored for {target} (dockyard context ls)")
    print(f"logged out of {target}")


@context_app.command("ls")
def context_ls(output: OutputOpt = None, json_out: JsonOpt = False) -> None:
    """The servers you logged in to; * marks the current one. Tokens are not shown."""
    data = load_contexts()
    rows = [
        {"url": u, "user": e.get("user", ""), "current": u == data.get("current")}
        for u, e in sorted(data["contexts"].items())
    ]
    render.emit(
        rows,
        json_out,
        lambda rs: render.table(
            ["CURRENT", "URL", "USER"],
            [["*" if r["current"] else "", escape(r["url"]), escape(r["user"])] for r in rs],
        ),
    )


@context_app.command("use")
def context_use(server: Annotated[str, typer.Argument(help="Server URL.")]) -> None:
    """Make SERVER the default of later commands ($DOCKYARD_URL still wins)."""
    call(use_context, server)
    print(f"using {server.rstrip('/')}")


@app.command()
def whoami(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Show who the current token belongs to."""
    with client(url, token) as api:
        who = {**call(api.whoami), "url": api.url, "token_source": api.token_source}
    render.emit(
        who,
        json_out,
        lambda w: (
            f"{w['name']}{' (admin)' if w['admin'] else ''} on {w['url']}\n"
            f"token: {w['token_source']}"
        ),
    )


@user_app.command("add")
def user_add(
    name: str,
    admin: Annotated[bool, typer.Option(help="Make the user an admin.")] = False,
    home: Annotated[str, typer.Option(help="Home directory (default /home/NAME).")] = "",
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a user and print their first token (shown once)."""
    with client(url, token) as api:
        result = call(api.add_user, name, admin, home)
    render.emit(result, json_out, lambda r: str(r["token"]))


@user_app.command("set")
def user_set(
    name: str,
    home: Annotated[str | None, typer.Option(help="Home directory (mount root).")] = None,
    policy: Annotated[
        str | None, typer.Option(help='Container policy JSON, e.g. {"allow_privileged": true}')
    ] = None,
    quota: Annotated[
        str | None, typer.Option(help='Quota JSON, e.g. {"max_cpu": 2, "cpu_hours": 10}')
    ] = None,
    share: Annotated[float | None, typer.Option(help="Fair-share weight (default 1).")] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change a user's home, container policy, quota or fair share (admin)."""
    parsed = _json_object("--policy", policy)
    parsed_quota = _json_object("--quota", quota)
    with client(url, token) as api:
        result = call(api.update_user, name, home, parsed, parsed_quota, share)
    render.emit(
        result,
        json_out,
        lambda r: (
            f"{r['name']}: home {r['home']}, policy {json.dumps(r['policy'])}, "
            f"quota {json.dumps(r['quota'])}"
        ),
    )


def _json_object(flag: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        fail(f"{flag} is not JSON: {exc}")
    if not isinstance(parsed, dict):
        fail(f"{flag} must be a JSON object")
    return parsed


@user_app.command("ls")
def user_ls(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """List users."""
    with client(url, token) as api:
        users = call(api.users)
    render.emit(users, json_out, _user_table)


def _user_table(users: list[Any]) -> None:
    render.table(
        ["NAME", "ID", "ADMIN", "CREATED"],
        [
            [
                escape(u["name"]),
                u["id"],
                "yes" if u["admin"] else "no",
                render.timestamp(u["created_at"]),
            ]
            for u in users
        ],
    )


@token_app.command("create")
def token_create(
    user: Annotated[str | None, typer.Option(help="For this user (admins only).")] = None,
    description: str = "",
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create an API token (shown once)."""
    with client(url, token) as api:
        result = call(api.create_token, user, description)
    render.emit(result, json_out, lambda r: str(r["token"]))


@app.command()
def accounting(
    user: Annotated[str | None, typer.Option(help="Only this user (admins: anyone).")] = None,
    since: Annotated[str | None, typer.Option(help="12h, 2d, seconds or an ISO date.")] = None,
    format: Annotated[str, typer.Option(help="table, json, csv or sge.")] = "table",
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Accounting records of finished tasks (CPU seconds, max memory, wall time...)."""
    if format not in ("table", "json", "csv", "sge"):
        fail("--format must be table, json, csv or sge")
    start = parse_since(since)
    with client(url, token) as api:
        if format in ("csv", "sge"):
            sys.stdout.write(call(api.export_accounting, format, user, start))
            return
        records = call(api.accounting, user, start)
    render.emit(records, format == "json", _accounting_table)


def _accounting_table(records: list[Any]) -> None:
    render.table(
        ["TASK", "JOB", "OWNER", "NODE", "STATE", "EXIT", "WALL", "CPU s", "MAX MEM", "REASON"],
        [
            [
                r["task_id"],
                escape(r["job_name"]),
                escape(r["owner"]),
                escape(r["node"]),
                r["state"],
                "-" if r["exit_code"] is None else str(r["exit_code"]),
                render.age(r["wall_s"]),
                f"{r['cpu_s']:.2f}",
                render.size(r["max_memory_bytes"]),
                r["reason"],
            ]
            for r in records
        ],
    )


@app.command()
def users(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Per-user statistics: running, queued, finished, usage, quota."""
    with client(url, token) as api:
        stats = call(api.user_stats)
    render.emit(stats, json_out, _stats_table)


def _stats_table(stats: list[Any]) -> None:
    render.table(
        ["USER", "RUNNING", "QUEUED", "FINISHED", "CPU-HOURS", "SHARE", "FACTOR", "QUOTA"],
        [
            [
                escape(s["name"]),
                str(s["running"]),
                str(s["queued"]),
                str(s["finished"]),
                f"{s['quota_cpu_hours_used']:.3f}",
                f"{s.get('share', 1.0):g}",
                f"{s.get('factor', 1.0):.3f}",
                escape(json.dumps(s["quota"]) if s["quota"] else "-"),
            ]
            for s in stats
        ],
    )


@user_app.command("disable")
def user_disable(
    name: str, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Disable a user (admin): each of their tokens is refused at once."""
    with client(url, token) as api:
        result = call(api.disable_user, name)
    render.emit(result, json_out, lambda r: f"{r['name']} disabled")


@user_app.command("enable")
def user_enable(
    name: str, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Enable a disabled user again (admin)."""
    with client(url, token) as api:
        result = call(api.enable_user, name)
    render.emit(result, json_out, lambda r: f"{r['name']} enabled")


@user_app.command("rm")
def user_rm(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Remove a user and their tokens (admin); refused while they own work."""
    if not yes:
        typer.confirm(f"Remove user {name} and their tokens?", abort=True)
    with client(url, token) as api:
        call(api.remove_user, name)
    print(f"{name} removed")


@token_app.command("ls")
def token_ls(
    user: Annotated[str | None, typer.Option(help="Only this user's (admins).")] = None,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """API tokens (ids, never the tokens): admins see everyone's, users their own."""
    with client(url, token) as api:
        tokens = call(api.tokens, user)
    render.emit(
        tokens,
        json_out,
        lambda ts: render.table(
            ["ID", "USER", "DESCRIPTION", "CREATED", "REVOKED"],
            [
                [
                    t["id"],
                    escape(t["user"]),
                    escape(t["description"]),
                    render.timestamp(t["created_at"]),
                    "yes" if t["revoked"] else "no",
                ]
                for t in ts
            ],
        ),
    )


@token_app.command("revoke")
def token_revoke(
    token_ids: Annotated[list[str], typer.Argument(help="Token ids (dockyard token ls).")],
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke tokens: refused by the API at once (admins: any; users: their own)."""
    with client(url, token) as api:
        for token_id in token_ids:
            call(api.revoke_token, token_id)
            print(f"{token_id} revoked")
