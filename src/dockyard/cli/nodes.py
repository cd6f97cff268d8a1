"""``dockyard nodes``, ``events`` (the cluster's event log), ``drain`` and ``undrain``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.app import JsonOpt, OutputOpt, TokenOpt, UrlOpt, app, call, client, parse_since


@app.command()
def nodes(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """List nodes: state, capacity, allocation, usage, heartbeat age."""
    with client(url, token) as api:
        items = call(api.nodes)
    render.emit(items, json_out, _node_table)


def _node_table(items: list[Any]) -> None:
    render.table(
        [
            "NAME",
            "ID",
            "STATE",
            "CPU (alloc/cap)",
            "MEMORY (alloc/cap)",
            "MEM USED",
            "TASKS",
            "HEARTBEAT",
        ],
        [
            [
                escape(n["name"]),
                n["id"],
                render.state(n["state"]),
                f"{n['allocated_cpu']:g}/{n['cpu']:g}",
                f"{render.size(n['allocated_memory_bytes'])}/{render.size(n['memory_bytes'])}",
                render.size(n["used_memory_bytes"]),
                str(n["tasks"]),
                render.age(n["heartbeat_age_s"]) + " ago",
            ]
            for n in items
        ],
    )


def _event_rows(items: list[Any]) -> list[list[str]]:
    return [
        [
            render.timestamp(e["at"]),
            e["kind"],
            e["reason"],
            e["task_id"] or "-",
            e["node_id"] or "-",
            escape(e["message"]),
        ]
        for e in items
    ]


EVENT_COLUMNS = ["TIME", "KIND", "REASON", "TASK", "NODE", "MESSAGE"]


@app.command()
def events(
    task: Annotated[str | None, typer.Option(help="Only events of this task id.")] = None,
    node: Annotated[str | None, typer.Option(help="Only events of this node id.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only events of this kind (task, node...).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only since: 3600 (seconds ago), 10m, 2h, 2d, or a date.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only until: 3600 (seconds ago), 10m, 2h, 2d, or a date.")
    ] = None,
    last: Annotated[
        int, typer.Option("--last", "-n", min=1, max=10_000, help="The N newest (default 100).")
    ] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print new events from now on, as they come.")
    ] = False,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List the newest events (state changes with reasons), oldest of them first; -f
    follows from now (with --json: one JSON object a line)."""
    import time

    start, end = parse_since(since), parse_since(until, "--until")
    filters: dict[str, Any] = {"task": task, "node": node, "kind": kind}
    with client(url, token) as api:
        if not follow:
            items = call(api.events, newest=last, since=start, until=end, **filters)
            render.emit(items, json_out, lambda e: render.table(EVENT_COLUMNS, _event_rows(e)))
            return
        newest = call(api.events, newest=1)
        cursor = int(newest[-1]["id"]) if newest else 0
        try:
            while True:
                for item in call(api.events, after=cursor, **filters):
                    cursor = max(cursor, int(item["id"]))
                    if json_out or render.machine():
                        print(json.dumps(item, sort_keys=True), flush=True)
                    else:
                        render.console.print("  ".join(_event_rows([item])[0]))
                time.sleep(0.5)
        except KeyboardInterrupt:
            return


@app.command()
def drain(
    node: Annotated[str, typer.Argument(help="Node name or id.")],
    deadline: Annotated[float, typer.Option(help="Seconds before running jobs are moved.")] = 60.0,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop placing work on a node; move its jobs after the deadline (admin)."""
    with client(url, token) as api:
        result = call(api.drain, node, deadline)
    render.emit(result, json_out, lambda r: f"{r['name']} draining ({r['tasks']} tasks left)")


@app.command()
def undrain(
    node: Annotated[str, typer.Argument(help="Node name or id.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Let a drained node take work again (admin)."""
    with client(url, token) as api:
        result = call(api.undrain, node)
    render.emit(result, json_out, lambda r: f"{r['name']} {r['state']}")
