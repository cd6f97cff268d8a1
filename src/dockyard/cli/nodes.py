"""``dockyard nodes``, ``top``, ``events`` (the cluster's event log), ``drain``, ``undrain``."""

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


@app.command()
def top(
    last: Annotated[int, typer.Option("--last", "-n", help="At most N running tasks.")] = 20,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print once and exit.")] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Live usage: each node's CPU and memory in use, and your running tasks' (admins:
    everyone's) CPU cores and memory now, from the agents' samples. Ctrl-C ends it;
    without a terminal (or with --once / --json) it prints once."""
    import time

    from rich.live import Live

    with client(url, token) as api:
        if once or json_out or not render.console.is_terminal:
            data = _usage_now(api, last)
            render.emit(data, json_out, _print_top)
            return
        with Live(console=render.console, auto_refresh=False) as live:
            try:
                while True:
                    live.update(_top_renderable(_usage_now(api, last)), refresh=True)
                    time.sleep(max(0.2, interval))
            except KeyboardInterrupt:
                return


def _usage_now(api: Any, last: int) -> dict[str, Any]:
    """``{"nodes": [...], "tasks": [...]}``: what ``top`` shows, newest samples."""
    nodes_now = call(api.nodes)
    running = call(api.tasks, states=["running"], limit=max(1, last))
    tasks = []
    for task in running[:last]:
        try:
            series = api.task_usage(task["id"], 60)
        except Exception:  # a task that just ended: skip it this round
            continue
        point = series["points"][-1] if series["points"] else None
        tasks.append(
            {
                "id": task["id"],
                "name": task["name"],
                "owner": task.get("owner", ""),
                "node": task.get("node") or "",
                "cpu": point["cpu"] if point else None,
                "cpu_limit": series.get("cpu_limit"),
                "memory_bytes": point["memory_bytes"] if point else None,
                "memory_limit_bytes": series.get("memory_limit_bytes"),
            }
        )
    nodes_out = [
        {
            "name": n["name"],
            "state": n["state"],
            "cpu_percent": n.get("used_cpu_percent", 0.0),
            "memory_bytes": n.get("used_memory_bytes", 0),
            "memory_total_bytes": n.get("memory_bytes", 0),
            "tasks": n.get("tasks", 0),
        }
        for n in nodes_now
    ]
    return {"nodes": nodes_out, "tasks": tasks}


def _top_renderable(data: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    def grid(columns: list[str], rows: list[list[str]]) -> Table:
        out = Table(box=None, pad_edge=False, header_style="bold")
        for column in columns:
            out.add_column(column, no_wrap=True)
        for row in rows:
            out.add_row(*row)
        return out

    return Group(*(grid(cols, rows) for cols, rows in _top_rows(data)))


def _top_rows(data: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    def mem(used: int | None, total: int | None) -> str:
        if used is None:
            return "-"
        return render.size(used) + (f" / {render.size(total)}" if total else "")

    nodes_rows = [
        [escape(n["name"]), n["state"], f"{n['cpu_percent']:.0f}%",
         mem(n["memory_bytes"], n["memory_total_bytes"])]
        for n in data["nodes"]
    ]  # fmt: skip
    task_rows = [
        [t["id"], escape(t["name"]), escape(t["owner"]), escape(t["node"]),
         "-" if t["cpu"] is None else f"{t['cpu']:.2f}" + (
             f" / {t['cpu_limit']:g}" if t["cpu_limit"] else ""),
         mem(t["memory_bytes"], t["memory_limit_bytes"])]
        for t in data["tasks"]
    ]  # fmt: skip
    return [
        (["NODE", "STATE", "CPU", "MEMORY"], nodes_rows),
        (["TASK", "NAME", "OWNER", "NODE", "CPU (cores)", "MEMORY"], task_rows),
    ]


def _print_top(data: dict[str, Any]) -> None:
    for columns, rows in _top_rows(data):
        render.table(columns, rows)
        render.console.print()


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
