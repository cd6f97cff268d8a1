"""``dockyard run``, ``ps``, ``logs``, ``kill`` and ``inspect``: batch jobs and their tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli import render, waiting
from dockyard.cli.app import (
    JsonOpt,
    OutputOpt,
    TokenOpt,
    UrlOpt,
    app,
    call,
    client,
    command_args,
    complete_task,
    fail,
    parse_env,
    parse_since,
)
from dockyard.cli.waiting import guarded
from dockyard.client import Client, ClientError


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    ctx: typer.Context,
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
        str | None,
        typer.Option(help="Restart policy: never, on-failure[:MAX_RESTARTS] or always."),
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
    min_runtime: Annotated[
        float | None, typer.Option(help="Never preempted before it ran this many seconds.")
    ] = None,
    checkpoint: Annotated[
        bool,
        typer.Option(
            help="Before a preemption or drain stop send SIGUSR1 (not SIGTERM); keep "
            "$DOCKYARD_CHECKPOINT_DIR for the next attempt (DOCKYARD_RESUME=1)."
        ),
    ] = False,
    checkpoint_signal: Annotated[
        str | None,
        typer.Option(help="--checkpoint with this signal instead of SIGUSR1, e.g. SIGUSR2."),
    ] = None,
    build: Annotated[
        Path | None,
        typer.Option("--build", help="Build IMAGE (as <you>/IMAGE) from this context first."),
    ] = None,
    hold: Annotated[
        bool,
        typer.Option(
            "--hold", help="Queue it even if no node could fit it now (else it is refused)."
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait for the job to end; exit with its exit code."),
    ] = False,
    attach: Annotated[
        bool,
        typer.Option("--attach", help="Stream its logs until it ends; exit with its code."),
    ] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a batch job: run IMAGE [-- COMMAND...] once.

    With --wait or --attach this exits with the job's exit code, or 125 when dockyard
    itself failed (refused, unreachable, or the task ended without an exit code)."""

    refuse_misplaced_options(ctx, command)
    if tasks and not gang:
        fail("--tasks N needs --gang (N tasks placed all at once)")
    args = command_args(command)
    environment = parse_env(env)
    submit = guarded if wait or attach else call
    job_name = name or image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] or "job"
    with client(url, token) as api:
        if build is not None:
            # Imported here: at the top it would register `build` before `run` (help order).
            from dockyard.cli.build import build_image

            image = build_image(api, build, image, quiet=json_out)
        task = submit(
            api.run_job,
            job_name,
            image,
            args,
            cpu=cpu,
            memory=memory,
            env=environment,
            kill_grace_s=kill_grace,
            restart=restart_policy(restart),
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
            min_runtime_s=min_runtime,
            checkpoint_signal=checkpoint_signal or ("SIGUSR1" if checkpoint else None),
            hold=hold,
        )
        if array:  # an array: its id (for --after ok:ID); `dockyard ps` shows its elements
            render.emit(task, json_out, lambda a: f"{a['id']} ({a['total']} elements)")
            return
        if attach:
            raise typer.Exit(guarded(waiting.attach, api, task["id"], json_out))
        if wait:
            if not json_out:
                print(task["id"], flush=True)
            ended = guarded(waiting.wait, api, task["id"])
            if json_out:
                render.print_json(ended)
            raise typer.Exit(waiting.report_end(ended))
    render.emit(task, json_out, lambda t: str(t["id"]))


def restart_policy(value: str | None) -> str | dict[str, Any] | None:
    """``--restart on-failure:3`` (docker's form) as the API's policy object."""
    if value is None or ":" not in value:
        return value
    mode, _, count = value.partition(":")
    if not count.isdigit():
        fail(f"--restart {value!r}: the count after ':' must be a whole number", code=2)
    return {"mode": mode, "max_attempts": int(count)}


def refuse_misplaced_options(ctx: typer.Context, command: list[str] | None) -> None:
    """``run IMAGE --cpu 2 sh`` would run ``--cpu 2 sh`` in the container: an option of
    this command after the image, without ``--`` before the command, is refused."""
    args = list(command or [])
    if not args or args[0] == "--":
        return
    known = {opt for param in ctx.command.params for opt in param.opts}
    head = args[0].split("=", 1)[0]
    if head in known:
        fail(
            f"{head} comes after the image, so it would be the container's command: "
            f"put options before the image, or write -- before the command "
            f"(run [OPTIONS] IMAGE -- {' '.join(args)})",
            code=2,
        )
    later = [a for a in args[1:] if a.startswith("--") and a.split("=", 1)[0] in known]
    if later:
        render.err_console.print(
            f"[yellow]warning:[/] {escape(later[0])} is passed to the container's command "
            "(options of `dockyard run` go before the image; write -- before the command "
            "to silence this)"
        )


FILTER_KEYS = ("state", "owner", "node", "name")


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """``--filter state=running,pending,owner=bob --filter node=n1``: values by key (a
    part without ``=`` is another value of the key before it)."""
    out: dict[str, list[str]] = {}
    key: str | None = None
    for item in items or []:
        for part in item.split(","):
            if "=" in part:
                key, _, value = part.partition("=")
                key = key.strip()
                if key not in FILTER_KEYS:
                    fail(f"--filter {key!r}: use {', '.join(FILTER_KEYS)}", code=2)
            elif key is None:
                fail(f"--filter {item!r} must be KEY=VALUE ({', '.join(FILTER_KEYS)})", code=2)
            else:
                value = part
            if value.strip():
                out.setdefault(key, []).append(value.strip())
    return out


def _one(filters: dict[str, list[str]], key: str) -> str | None:
    values = filters.get(key) or []
    if len(values) > 1:
        fail(f"--filter {key}: give one value", code=2)
    return values[0] if values else None


@app.command()
def ps(
    all_: Annotated[
        bool, typer.Option("--all", "-a", help="Finished tasks too (default: active only).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only task ids.")] = False,
    filter_: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="state=S[,S...], owner=USER, node=NODE, name=PREFIX; comma-separated.",
        ),
    ] = None,
    last: Annotated[
        int | None, typer.Option("--last", "-n", min=1, help="Only the N newest tasks.")
    ] = None,
    active: Annotated[bool, typer.Option("--active", hidden=True)] = False,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List tasks, newest first: active ones (-a: all); id, name, owner, state, node,
    uptime, exit code, reason."""
    filters = parse_filters(filter_)
    states = [s for value in filters.get("state", []) for s in value.split("|")]
    with client(url, token) as api:
        tasks = call(
            api.tasks,
            active=not all_ and not states,
            states=states or None,
            q=_one(filters, "name"),
            owner=_one(filters, "owner"),
            node=_one(filters, "node"),
            limit=last,
        )
    if quiet:
        for t in tasks:
            print(t["id"])
        return
    render.emit(tasks, json_out, _task_table)


def _task_table(tasks: list[Any]) -> None:
    wide = ["IMAGE", "CPU", "MEMORY", "CREATED", "ATTEMPT"] if render.wide else []
    render.table(
        ["ID", "NAME", "OWNER", "STATE", "NODE", "UPTIME", "EXIT", "REASON", *wide],
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
                *(
                    [
                        escape(t["image"]),
                        f"{t['cpu']:g}",
                        render.size(t["memory_bytes"]),
                        render.timestamp(t["created_at"]),
                        str(t["attempt"]),
                    ]
                    if render.wide
                    else []
                ),
            ]
            for t in tasks
        ],
    )


@app.command()
def logs(
    ref: Annotated[str, typer.Argument(help="Task id or name.", autocompletion=complete_task)],
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Follow until the task ends; exit with its code."),
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", min=1, max=10_000, help="Only the last N lines.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only lines since: 3600 (seconds), 10m, 2h, or a date.")
    ] = None,
    timestamps: Annotated[
        bool, typer.Option("--timestamps", "-t", help="Prefix each line with its time.")
    ] = False,
    stdout_only: Annotated[bool, typer.Option("--stdout", help="Only stdout.")] = False,
    stderr_only: Annotated[bool, typer.Option("--stderr", help="Only stderr.")] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a task's stdout (to stdout) and stderr (to stderr).

    With -f it follows until the task ends and exits with the task's exit code
    (125: it ended without one, or dockyard failed)."""
    if stdout_only and stderr_only:
        fail("--stdout and --stderr: give at most one", code=2)
    stream = "stdout" if stdout_only else "stderr" if stderr_only else None
    start = parse_since(since)
    with client(url, token) as api:
        task_id = call(api.task, ref)["id"]
        after = 0
        if tail is not None:
            page = call(api.logs, task_id, stream=stream, tail=tail)
            _print_lines(page["lines"], start, json_out, timestamps)
            after = page["next"]
        elif not follow or start is not None:
            after = _print_all(api, task_id, after, stream, start, json_out, timestamps)
        if not follow:
            return
        guarded(_follow_lines, api, task_id, after, stream, json_out, timestamps)
        task = guarded(waiting.wait_ended, api, task_id)
    raise typer.Exit(waiting.report_end(task))


def _follow_lines(
    api: Client, task_id: str, after: int, stream: str | None, json_out: bool, timestamps: bool
) -> None:
    for item in waiting.follow(api, task_id, after, stream):
        waiting.print_line(item, json_out, timestamps)


def _print_lines(
    lines: list[dict[str, Any]], start: float | None, json_out: bool, timestamps: bool
) -> None:
    for item in lines:
        if start is None or log_time(item["ts"]) >= start:
            waiting.print_line(item, json_out, timestamps)


def _print_all(
    api: Client,
    task_id: str,
    after: int,
    stream: str | None,
    start: float | None,
    json_out: bool,
    timestamps: bool,
) -> int:
    """Print every stored line after ``after`` page by page; the cursor past the last."""
    while True:
        page = call(api.logs, task_id, after=after, stream=stream)
        _print_lines(page["lines"], start, json_out, timestamps)
        if not page["lines"]:
            return after
        after = page["next"]


def log_time(ts: str) -> float:
    """A log line's time (RFC 3339, as the runtime stamped it) as epoch seconds."""
    import datetime

    text = ts.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # at most microseconds for fromisoformat
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


@app.command()
def kill(
    refs: Annotated[
        list[str],
        typer.Argument(
            help="Task ids or names, or instances you launched.", autocompletion=complete_task
        ),
    ],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop tasks (SIGTERM, then SIGKILL after each one's grace period), or remove
    instances. Every one is tried; exits 1 if any could not be stopped."""
    _stop_all(refs, json_out, url, token, None)


@app.command()
def stop(
    refs: Annotated[
        list[str], typer.Argument(help="Task ids or names.", autocompletion=complete_task)
    ],
    time_s: Annotated[
        float | None,
        typer.Option(
            "--time",
            "-t",
            min=0,
            max=3600,
            help="Seconds to wait for it to stop before SIGKILL (default: the job's "
            "--kill-grace); 0 kills at once. Given again, it replaces the first.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop tasks gracefully: SIGTERM, then SIGKILL after --time or the job's
    --kill-grace (as docker stop -t)."""
    _stop_all(refs, json_out, url, token, time_s)


def _stop_all(
    refs: list[str], json_out: bool, url: str | None, token: str | None, grace_s: float | None
) -> None:
    # Imported here: at the top it would register `service ...` first (help order).
    from dockyard.cli.services import kill_instance

    done: list[Any] = []
    failed = 0
    with client(url, token) as api:
        for ref in refs:
            try:
                removed = kill_instance(api, ref)
                if removed is not None:
                    done.append(removed)
                    if not json_out:
                        print(f"instance {removed['name']} removed")
                    continue
                task = api.kill(ref, grace_s)
            except ClientError as exc:
                failed += 1
                render.err_console.print(f"[red]error:[/] {escape(ref)}: {escape(str(exc))}")
                continue
            done.append(task)
            if not json_out:
                print(f"{task['id']} {task['state']} (stop requested)")
    if json_out:
        render.print_json(done[0] if len(refs) == 1 and done else done)
    if failed:
        raise typer.Exit(1)


@app.command()
def rm(
    refs: Annotated[
        list[str], typer.Argument(help="Ended task ids or names.", autocompletion=complete_task)
    ],
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Kill a running task first, then remove it.")
    ] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete ended tasks from the history with their logs and events (accounting stays).
    Every one is tried; exits 1 if any could not be removed."""
    done: list[Any] = []
    failed = 0
    with client(url, token) as api:
        for ref in refs:
            try:
                if force:
                    task = api.task(ref)
                    if task["state"] not in waiting.TERMINAL:
                        api.kill(task["id"])
                        waiting.wait_ended(api, task["id"])
                    ref = task["id"]
                removed = api.remove_task(ref)
            except ClientError as exc:
                failed += 1
                render.err_console.print(f"[red]error:[/] {escape(ref)}: {escape(str(exc))}")
                continue
            done.append(removed)
            if not json_out:
                print(removed["id"])
    if json_out:
        render.print_json(done)
    if failed:
        raise typer.Exit(1)


@app.command()
def inspect(
    ref: Annotated[str, typer.Argument(help="Task id or name.", autocompletion=complete_task)],
    output: OutputOpt = None,
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
