"""``dockyard nodes``, ``events`` (the cluster's event log), ``drain`` and ``undrain``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.app import JsonOpt, TokenOpt, UrlOpt, app, call, client


@app.command()
def nodes(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
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
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List events (state changes with reasons); -f follows (one JSON object a line)."""
    import time

    with client(url, token) as api:
        items = call(api.events, task=task, node=node)
        if not follow:
            render.emit(items, json_out, lambda e: render.table(EVENT_COLUMNS, _event_rows(e)))
            return
        cursor = 0
        while True:
            for item in items:
                cursor = max(cursor, int(item["id"]))
                if json_out:
                    print(json.dumps(item, sort_keys=True), flush=True)
                else:
                    render.console.print("  ".join(_event_rows([item])[0]))
            time.sleep(0.5)
            items = call(api.events, after=cursor, task=task, node=node)


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
