"""``dockyard queue`` and ``dockyard plan``: the scheduler's queue and dry runs."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.app import JsonOpt, OutputOpt, TokenOpt, UrlOpt, app, call, client, command_args

queue_app = typer.Typer(
    help="The queue: position, priority, fair-share factor, reason (lock/unlock: admin).",
    invoke_without_command=True,
)
app.add_typer(queue_app, name="queue")


@queue_app.callback()
def queue(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="Show at most this many entries.")] = 1000,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List queued tasks in the order the scheduler tries them."""
    if ctx.invoked_subcommand is not None:
        return
    with client(url, token) as api:
        result = call(api.queue, limit)
    render.emit(result, json_out, _print_queue)


def _print_queue(result: dict[str, Any]) -> None:
    if result["locked"]:
        render.console.print(
            f"[bold red]queue locked[/] by {escape(str(result['locked_by']))}: nothing new starts"
        )
    render.table(
        [
            *("POS", "ID", "NAME", "OWNER", "PRIO", "FACTOR"),
            *("CPU", "MEM", "GPUS", "AGE", "ETA", "REASON"),
        ],
        [
            [
                str(e["position"]),
                e["id"],
                escape(e["name"]),
                escape(e["owner"]),
                str(e["priority"]),
                f"{e['factor']:.3f}",
                f"{e['cpu']:g}",
                render.size(e["memory_bytes"]),
                str(e["gpus"]),
                render.age(_age(e["submitted_at"])),
                _eta(e.get("estimated_start")),
                escape(f"{e['reason']}: {e['message']}" if e["message"] else e["reason"]),
            ]
            for e in result["entries"]
        ],
    )
    if result["total"] > len(result["entries"]):
        print(f"... {result['total'] - len(result['entries'])} more")


def _eta(start: float | None) -> str:
    """``now``, ``in 5m`` (from declared runtimes), or ``-`` (no estimate)."""
    if start is None:
        return "-"
    wait = start - _now()
    return "now" if wait <= 1 else f"in {render.age(wait)}"


def _now() -> float:
    import time

    return time.time()


def _age(epoch: float) -> float:
    import time

    return time.time() - epoch


@queue_app.command("lock")
def queue_lock(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Lock the queue (admin): running work continues, nothing new starts."""
    with client(url, token) as api:
        result = call(api.lock_queue)
    render.emit(result, json_out, lambda _: "queue locked")


@queue_app.command("unlock")
def queue_unlock(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Unlock the queue (admin)."""
    with client(url, token) as api:
        result = call(api.unlock_queue)
    render.emit(result, json_out, lambda _: "queue unlocked")


@queue_app.command("rm")
def queue_rm(
    refs: Annotated[list[str], typer.Argument(help="Queued task ids or names.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete queued entries (yours; admins: anyone's). Placed tasks need `kill`."""
    removed = []
    with client(url, token) as api:
        for ref in refs:
            removed.append(call(api.delete_queued, ref))
    render.emit(removed, json_out, _print_removed)


def _print_removed(removed: list[Any]) -> None:
    for entry in removed:
        print(f"{entry['id']} removed from the queue")


@queue_app.command("clear-history")
def queue_clear_history(
    older_than: Annotated[
        float, typer.Option(help="Only finished work older than this many days.")
    ] = 0.0,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Clear finished tasks, their logs and events (admin). Accounting is kept, so
    fair share still remembers the usage. Asks first, unless --yes."""
    if not yes:
        which = f"older than {older_than:g} day(s)" if older_than else "all"
        typer.confirm(f"Delete {which} finished tasks, their logs and events?", abort=True)
    with client(url, token) as api:
        result = call(api.gc, older_than * 86400)
    render.emit(result, json_out, render.counts)


@app.command(context_settings={"allow_interspersed_args": False})
def plan(
    image: Annotated[str, typer.Argument(help="Image reference.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command and arguments.")] = None,
    name: Annotated[str, typer.Option(help="Job name.")] = "plan",
    cpu: Annotated[str | None, typer.Option(help="CPU cores, e.g. 0.5 or 500m.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 64m or 1g.")] = None,
    max_runtime: Annotated[float | None, typer.Option(help="Max runtime, seconds.")] = None,
    priority: Annotated[int, typer.Option(help="Queue priority.")] = 0,
    constraint: Annotated[list[str] | None, typer.Option(help="Node label constraint.")] = None,
    gpus: Annotated[int, typer.Option(help="Whole GPUs.")] = 0,
    port: Annotated[list[int] | None, typer.Option(help="Host port.")] = None,
    spread: Annotated[bool, typer.Option(help="Spread instead of bin-packing.")] = False,
    preempt: Annotated[
        bool, typer.Option(help="Also show the running work it would evict (preemption).")
    ] = False,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Dry run: where a job would be placed now, or why not (nothing is submitted).

    Exits 0 when it would be placed now, 1 when no node fits it now (said why)."""
    args = command_args(command)
    with client(url, token) as api:
        result = call(
            api.plan,
            name,
            image,
            command=args,
            cpu=cpu,
            memory=memory,
            max_runtime_s=max_runtime,
            priority=priority or None,
            constraints=list(constraint or []),
            gpus=gpus or None,
            ports=list(port or []),
            algorithm="spread" if spread else None,
            preempt=preempt,
        )
    render.emit(result, json_out, _print_plan)
    if not result["fits"]:
        raise typer.Exit(1)


def _print_plan(result: dict[str, Any]) -> None:
    if result["fits"]:
        gpus_note = f" with GPUs {','.join(map(str, result['gpus']))}" if result["gpus"] else ""
        print(f"would be placed on {result['node']}{gpus_note}")
    else:
        print(f"would wait: {result['reason']}")
    print(f"queue position {result['queue_position']} ({result['queued_ahead']} ahead)")
    for e in result.get("evictions") or []:
        print(f"would evict {e['task_id']} on {e['node']}: {e['why']}")
