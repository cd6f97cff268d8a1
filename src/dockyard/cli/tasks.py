"""``dockyard run``, ``ps``, ``logs``, ``kill`` and ``inspect``: batch jobs and their tasks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.app import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    app,
    call,
    client,
    command_args,
    fail,
    parse_env,
)
from dockyard.client import Client, ClientError


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    image: Annotated[str, typer.Argument(help="Image reference.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command and arguments.")] = None,
    name: Annotated[str | None, typer.Option(help="Job name (default: from the image).")] = None,
    cpu: Annotated[str | None, typer.Option(help="CPU cores, e.g. 0.5 or 500m.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 64m or 1g.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE")] = None,
    kill_grace: Annotated[
        float | None, typer.Option(help="Seconds between SIGTERM and SIGKILL.")
    ] = None,
    restart: Annotated[
        str | None, typer.Option(help="Restart policy: never, on-failure or always.")
    ] = None,
    max_runtime: Annotated[
        float | None, typer.Option(help="Kill the task after this many seconds.")
    ] = None,
    volume: Annotated[
        list[str] | None,
        typer.Option("--volume", "-v", help="SOURCE:TARGET[:ro] (path: bind; name: volume)"),
    ] = None,
    privileged: Annotated[bool, typer.Option(help="Privileged mode (admin policy).")] = False,
    cap_add: Annotated[list[str] | None, typer.Option(help="Add a capability.")] = None,
    network: Annotated[str | None, typer.Option(help="Network mode, e.g. host.")] = None,
    pid: Annotated[str | None, typer.Option(help="PID namespace, e.g. host.")] = None,
    ipc: Annotated[str | None, typer.Option(help="IPC namespace, e.g. host.")] = None,
    device: Annotated[list[str] | None, typer.Option(help="Host device to add.")] = None,
    security_opt: Annotated[list[str] | None, typer.Option(help="Docker security option.")] = None,
    user: Annotated[str | None, typer.Option(help="User[:group] inside the container.")] = None,
    priority: Annotated[int, typer.Option(help="Queue priority, higher first (-1000..1000).")] = 0,
    constraint: Annotated[
        list[str] | None,
        typer.Option(help="Node label constraint: zone=a, zone!=a, 'zone in a,b'."),
    ] = None,
    gpus: Annotated[int, typer.Option(help="Whole GPUs, exclusive.")] = 0,
    port: Annotated[list[int] | None, typer.Option(help="Host port the task needs.")] = None,
    spread: Annotated[
        bool, typer.Option(help="Spread across nodes instead of bin-packing.")
    ] = False,
    array: Annotated[
        str | None,
        typer.Option(help="Job array, Slurm syntax: 1-100%10 (at most 10 at once), 1-9:2, 1,3,5."),
    ] = None,
    after: Annotated[
        list[str] | None,
        typer.Option(help="Start after job ID: ok:ID, any:ID, notok:ID (comma separated)."),
    ] = None,
    nodes: Annotated[
        int, typer.Option(help="Gang job: one task on each of N nodes, all placed at once.")
    ] = 0,
    tasks: Annotated[int, typer.Option(help="With --gang: N tasks, all placed at once.")] = 0,
    gang: Annotated[bool, typer.Option(help="Place the --tasks all at once or none.")] = False,
    build: Annotated[
        Path | None,
        typer.Option("--build", help="Build IMAGE (as <you>/IMAGE) from this context first."),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a batch job: run IMAGE [-- COMMAND...] once."""

    if tasks and not gang:
        fail("--tasks N needs --gang (N tasks placed all at once)")
    args = command_args(command)
    environment = parse_env(env)
    job_name = name or image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] or "job"
    with client(url, token) as api:
        if build is not None:
            # Imported here: at the top it would register `build` before `run` (help order).
            from dockyard.cli.build import build_image

            image = build_image(api, build, image, quiet=json_out)
        task = call(
            api.run_job,
            job_name,
            image,
            args,
            cpu=cpu,
            memory=memory,
            env=environment,
            kill_grace_s=kill_grace,
            restart=restart,
            max_runtime_s=max_runtime,
            mounts=list(volume or []),
            privileged=privileged,
            cap_add=list(cap_add or []),
            network_mode=network,
            pid_mode=pid,
            ipc_mode=ipc,
            devices=list(device or []),
            security_opt=list(security_opt or []),
            user=user,
            priority=priority,
            constraints=list(constraint or []),
            gpus=gpus,
            ports=list(port or []),
            algorithm="spread" if spread else None,
            array=array,
            after=list(after or []),
            gang_size=nodes or (tasks if gang else 0),
            gang_nodes=bool(nodes),
        )
        if array:  # an array: its id (for --after ok:ID); `dockyard ps` shows its elements
            render.emit(task, json_out, lambda a: f"{a['id']} ({a['total']} elements)")
            return
    render.emit(task, json_out, lambda t: str(t["id"]))


@app.command()
def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include finished tasks.")] = True,
    active: Annotated[bool, typer.Option("--active", help="Only tasks not yet finished.")] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List tasks: id, name, owner, state, node, uptime, exit code, reason."""
    with client(url, token) as api:
        tasks = call(api.tasks, active=active or not all_)
    render.emit(tasks, json_out, _task_table)


def _task_table(tasks: list[Any]) -> None:
    render.table(
        ["ID", "NAME", "OWNER", "STATE", "NODE", "UPTIME", "EXIT", "REASON"],
        [
            [
                t["id"],
                escape(t["name"]),
                escape(t["owner"]),
                render.state(t["state"]),
                escape(t["node"] or "-"),
                render.age(t["uptime_s"]),
                "-" if t["exit_code"] is None else str(t["exit_code"]),
                escape(render.task_reason(t)),
            ]
            for t in tasks
        ],
    )


@app.command()
def logs(
    ref: Annotated[str, typer.Argument(help="Task id or name.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow until the task ends.")
    ] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a task's stdout and stderr."""
    with client(url, token) as api:
        if follow:
            lines = (item for item in call(lambda: list_or_stream(api, ref)))
        else:
            lines = iter(call(_all_logs, api, ref))
        for item in lines:
            if item.get("end"):
                break
            if json_out:
                print(json.dumps(item, sort_keys=True), flush=True)
            elif item["stream"] == "stderr":
                print(item["line"], file=sys.stderr, flush=True)
            else:
                print(item["line"], flush=True)


def list_or_stream(api: Client, ref: str) -> Any:
    stream = api.follow_logs(ref)
    first = next(stream, None)  # surface 404/401 before printing anything
    if first is None:
        return iter(())

    def chain() -> Any:
        yield first
        try:
            yield from stream
        except ClientError as exc:
            fail(str(exc))

    return chain()


def _all_logs(api: Client, ref: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.logs(ref, after=after)
        out.extend(page["lines"])
        if not page["lines"]:
            return out
        after = page["next"]


@app.command()
def kill(
    ref: Annotated[str, typer.Argument(help="Task id or name, or an instance you launched.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop a task (SIGTERM, then SIGKILL after its grace period), or remove an instance."""
    # Imported here: at the top it would register `service ...` first (help order).
    from dockyard.cli.services import kill_instance

    with client(url, token) as api:
        removed = kill_instance(api, ref)
        if removed is not None:
            render.emit(removed, json_out, lambda r: f"instance {r['name']} removed")
            return
        task = call(api.kill, ref)
    render.emit(task, json_out, lambda t: f"{t['id']} {t['state']} (stop requested)")


@app.command()
def inspect(
    ref: Annotated[str, typer.Argument(help="Task id or name.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Everything about a task, with its events."""
    with client(url, token) as api:
        task = call(api.task, ref)
    render.emit(task, json_out, _print_task)


def _print_task(task: dict[str, Any]) -> None:
    fields = [
        ("ID", task["id"]),
        ("Name", task["name"]),
        ("Owner", task["owner"]),
        ("State", render.state(task["state"])),
        ("Desired", task["desired_state"]),
        ("Reason", escape(render.task_reason(task))),
        ("Exit code", "-" if task["exit_code"] is None else str(task["exit_code"])),
        ("Node", escape(task["node"] or "-")),
        ("Image", escape(task["image"])),
        ("Command", escape(" ".join(task["command"]) or "(image default)")),
        ("CPU", f"{task['cpu']:g}"),
        ("Memory", render.size(task["memory_bytes"])),
        ("Priority", str(task.get("priority", 0))),
        ("GPUs", ",".join(map(str, task.get("gpu_indices") or [])) or str(task.get("gpus", 0))),
        (
            "Placement",
            escape(" ".join([task.get("algorithm", "binpack"), *task.get("constraints", [])])),
        ),
        ("Container", task["container_id"][:12] or "-"),
        ("Created", render.timestamp(task["created_at"])),
        ("Started", render.timestamp(task["started_at"])),
        ("Finished", render.timestamp(task["finished_at"])),
        ("Uptime", render.age(task["uptime_s"])),
    ]
    for label, value in fields:
        render.console.print(f"[bold]{label + ':':<11}[/] {value}")
    render.console.print("[bold]Events:[/]")
    render.table(
        ["TIME", "KIND", "REASON", "MESSAGE"],
        [
            [render.timestamp(e["at"]), e["kind"], e["reason"], escape(e["message"])]
            for e in task["events"]
        ],
    )
