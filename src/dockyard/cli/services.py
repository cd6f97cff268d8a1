"""``dockyard service ...``, ``template ...``, ``launch`` and ``instances``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
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
    command_args,
    complete_service,
    fail,
    parse_env,
)
from dockyard.cli.specfile import SpecFileError, load_documents
from dockyard.client import Client, ClientError

service_app = typer.Typer(help="Long-running services: replicas, health checks, rolling updates.")
app.add_typer(service_app, name="service")
template_app = typer.Typer(help="Templates users launch instances of (create/rm: admin).")
app.add_typer(template_app, name="template")

ROLLOUT_DONE = ("stable", "completed", "reverted")

# Options shared by create and update (update: only those given change).
ImageOpt = Annotated[str | None, typer.Option("--image", help="Container image.")]
ReplicasOpt = Annotated[int | None, typer.Option(help="Replicas to keep running.")]
PortOpt = Annotated[
    list[int] | None, typer.Option("--port", help="Container port to publish (repeatable).")
]
CpuOpt = Annotated[str | None, typer.Option(help="CPU cores per replica: 0.5, 2, 500m.")]
MemOpt = Annotated[str | None, typer.Option(help="Memory per replica: 64m, 1g.")]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE (repeatable).")]
HttpOpt = Annotated[str | None, typer.Option("--health-http", help="HTTP check: GET this path.")]
TcpOpt = Annotated[bool, typer.Option("--health-tcp", help="TCP check on the first port.")]
CmdOpt = Annotated[
    str | None, typer.Option("--health-cmd", help="Command check (sh -c), exit 0 = healthy.")
]
IntervalOpt = Annotated[float | None, typer.Option("--health-interval", help="Seconds.")]
TimeoutOpt = Annotated[float | None, typer.Option("--health-timeout", help="Seconds.")]
RetriesOpt = Annotated[int | None, typer.Option("--health-retries", help="Failures in a row.")]
StartOpt = Annotated[
    float | None, typer.Option("--health-start-period", help="Seconds before failures count.")
]
ParallelOpt = Annotated[int | None, typer.Option("--update-parallel", help="New replicas at once.")]
OrderOpt = Annotated[
    str | None, typer.Option("--update-order", help="start-first (default) or stop-first.")
]
DeadlineOpt = Annotated[
    float | None, typer.Option("--update-deadline", help="Seconds a new replica has to be ready.")
]
RevertOpt = Annotated[
    bool | None, typer.Option("--auto-revert/--no-auto-revert", help="Revert a failed update.")
]
ConstraintOpt = Annotated[
    list[str] | None, typer.Option("--constraint", help="Node label constraint (repeatable).")
]
DetachOpt = Annotated[
    bool, typer.Option("--detach", "-d", help="Return at once; don't follow the rollout.")
]
WaitOpt = Annotated[float, typer.Option(help="Seconds to wait for it to be ready.")]
HoldOpt = Annotated[
    bool,
    typer.Option(
        "--hold", help="Keep it even if no node could fit a replica now (else it is refused)."
    ),
]


def _health(
    current: dict[str, Any] | None,
    http: str | None,
    tcp: bool,
    cmd: str | None,
    interval: float | None,
    timeout: float | None,
    retries: int | None,
    start_period: float | None,
) -> dict[str, Any] | None:
    kinds = [k for k, on in (("http", http), ("tcp", tcp), ("cmd", cmd)) if on]
    if len(kinds) > 1:
        fail("give at most one of --health-http, --health-tcp, --health-cmd")
    check = dict(current or {})
    if kinds:
        check = {"kind": kinds[0], **({"path": http} if http else {})}
        if cmd:
            check["command"] = ["sh", "-c", cmd]
    tuning = {
        "interval_s": interval,
        "timeout_s": timeout,
        "retries": retries,
        "start_period_s": start_period,
    }
    given = {k: v for k, v in tuning.items() if v is not None}
    if given and not check:
        fail("health check options need --health-http, --health-tcp or --health-cmd")
    return {**check, **given} if check else None


def _file_ref(text: str) -> dict[str, str]:
    """``NAME[:TARGET[:MODE]]`` as an API reference (the server checks it)."""
    parts = text.split(":")
    ref = {"source": parts[0]}
    if len(parts) > 1 and parts[1]:
        ref["target"] = parts[1]
    if len(parts) > 2 and parts[2]:
        ref["mode"] = parts[2]
    return ref


def _update_cfg(
    current: dict[str, Any] | None,
    parallel: int | None,
    order: str | None,
    deadline: float | None,
    revert: bool | None,
) -> dict[str, Any]:
    given = {
        "max_parallel": parallel,
        "order": order,
        "deadline_s": deadline,
        "auto_revert": revert,
    }
    return {**(current or {}), **{k: v for k, v in given.items() if v is not None}}


def _print_service(svc: dict[str, Any]) -> None:
    rollout = svc["rollout"]
    print(f"{svc['name']}  version {svc['version']}  {svc['image']}  owner {svc['owner']}")
    print(
        f"replicas: {svc['ready']}/{svc['replicas']} ready, {svc['running']} running;"
        f" rollout: {rollout.get('status', 'stable')} {rollout.get('message', '')}".rstrip()
    )
    print(f"url: {svc['url']}")
    if svc.get("expires_at"):
        print(f"expires in {render.age(svc['expires_at'] - time.time())}")
    render.table(
        ["TASK", "VERSION", "STATE", "HEALTH", "NODE", "ENDPOINTS"],
        [
            [
                r["task_id"],
                str(r["version"]),
                render.state(r["state"]),
                r["health"] or "-",
                escape(r["node"] or "-"),
                ", ".join(
                    f"{e['address']}:{e['host_port']}->{e['container_port']}"
                    for e in r["endpoints"]
                )
                or "-",
            ]
            for r in svc["replicas_detail"]
        ],
    )


def follow_rollout(api: Client, name: str, timeout: float) -> dict[str, Any]:
    """Show rollout progress until it settles (a progress bar on a terminal, else a
    line per change); the final service (exit 1 if it did not settle in time)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = (
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            console=render.err_console,
        )
        if render.err_console.is_terminal
        else None
    )  # fmt: skip
    if bar is None:
        return _follow_rollout(api, name, timeout, None)
    with bar:
        return _follow_rollout(api, name, timeout, bar)


def _follow_rollout(api: Client, name: str, timeout: float, bar: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    seen: dict[str, None] = {}  # every replica task of the rollout, in order
    progress_id = bar.add_task(f"{name}: starting", total=None) if bar is not None else None
    while True:
        svc: dict[str, Any] = call(api.service, name)
        seen.update((str(r["task_id"]), None) for r in svc["replicas_detail"])
        rollout = svc["rollout"]
        status = rollout.get("status", "stable")
        new = sum(1 for r in svc["replicas_detail"] if r["version"] == svc["version"])
        ready_new = sum(
            1 for r in svc["replicas_detail"] if r["version"] == svc["version"] and r["ready"]
        )
        line = (
            f"{status}: version {svc['version']} {ready_new}/{svc['replicas']} ready"
            f" ({new} started, {len(svc['replicas_detail']) - new} old left)"
        )
        if bar is not None:
            bar.update(
                progress_id,
                description=f"{escape(name)} v{svc['version']} {status}, replicas ready",
                total=svc["replicas"],
                completed=ready_new,
            )
        elif line != last:
            render.err_console.print(escape(line))
            last = line
        settled = ready_new >= svc["replicas"] and new == len(svc["replicas_detail"])
        if status == "failed" or (status in ROLLOUT_DONE and settled):
            if not settled:
                explain_unready(api, list(seen))
            return svc
        if time.monotonic() > deadline:
            explain_unready(api, list(seen))
            fail(f"rollout of {name} not settled after {timeout:g}s ({status})")
        time.sleep(0.5)


#: Task events that say why a replica is not ready.
WHY_NOT_READY = ("unhealthy", "health_starting")


def explain_unready(api: Client, task_ids: list[str], most: int = 5) -> None:
    """On stderr, for the newest replicas of a rollout that did not settle: which
    health check failed and what it said, or why the task ended."""
    for task_id in task_ids[-most:]:
        try:
            task = api.task(task_id)
        except ClientError:
            continue
        events = task.get("events") or []
        health = [e for e in events if e["reason"] in WHY_NOT_READY]
        failed = [e for e in health if e["reason"] == "unhealthy"]
        if failed:  # the first: the check's own words (later ones may be the stop's)
            why = f"health check failed: {failed[0]['message']}"
        elif task["state"] in ("failed", "killed", "lost", "expired"):
            why = f"{task['state']} ({task.get('reason') or '-'}): {task.get('message') or ''}"
        elif health:
            why = f"health check not passed yet: {health[-1]['message']}"
        else:
            continue
        render.err_console.print(f"replica {task_id}: {escape(why.strip())}", highlight=False)


@service_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Service name (its route: /svc/NAME/).")],
    command: Annotated[list[str] | None, typer.Argument(help="-- COMMAND ARGS...")] = None,
    image: ImageOpt = None,
    replicas: ReplicasOpt = 1,
    port: PortOpt = None,
    cpu: CpuOpt = None,
    memory: MemOpt = None,
    env: EnvOpt = None,
    health_http: HttpOpt = None,
    health_tcp: TcpOpt = False,
    health_cmd: CmdOpt = None,
    health_interval: IntervalOpt = None,
    health_timeout: TimeoutOpt = None,
    health_retries: RetriesOpt = None,
    health_start_period: StartOpt = None,
    update_parallel: ParallelOpt = None,
    update_order: OrderOpt = None,
    update_deadline: DeadlineOpt = None,
    auto_revert: RevertOpt = None,
    constraint: ConstraintOpt = None,
    gpus: Annotated[int, typer.Option(help="Whole GPUs per replica.")] = 0,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="Mount your secret NAME at /run/secrets/NAME: NAME[:TARGET[:MODE]] (repeatable).",
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", help="Mount your config NAME at /NAME: NAME[:TARGET[:MODE]] (repeatable)."
        ),
    ] = None,
    hold: HoldOpt = False,
    detach: DetachOpt = False,
    wait: WaitOpt = 120.0,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a service and wait until its replicas are ready (unless --detach)."""
    if not image:
        fail("--image is required")
    args = command_args(command)
    body: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": args,
        "env": parse_env(env),
        "cpu": cpu,
        "memory": memory,
        "replicas": replicas,
        "ports": list(port or []),
        "health": _health(
            None,
            health_http,
            health_tcp,
            health_cmd,
            health_interval,
            health_timeout,
            health_retries,
            health_start_period,
        ),
        "update": _update_cfg(None, update_parallel, update_order, update_deadline, auto_revert),
        "constraints": list(constraint or []),
        "gpus": gpus,
        "secrets": [_file_ref(s) for s in secret or ()],
        "configs": [_file_ref(c) for c in config or ()],
        "hold": hold,
    }
    with client(url, token) as api:
        svc = call(api.create_service, body)
        if not detach:
            svc = follow_rollout(api, name, wait)
    render.emit(svc, json_out, _print_service)
    if not detach and svc["rollout"].get("status") == "failed":
        fail(f"service {name} did not become ready: {svc['rollout'].get('message', '')}")


@service_app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="Service name.", autocompletion=complete_service)],
    image: ImageOpt = None,
    replicas: ReplicasOpt = None,
    port: PortOpt = None,
    cpu: CpuOpt = None,
    memory: MemOpt = None,
    env: EnvOpt = None,
    health_http: HttpOpt = None,
    health_tcp: TcpOpt = False,
    health_cmd: CmdOpt = None,
    health_interval: IntervalOpt = None,
    health_timeout: TimeoutOpt = None,
    health_retries: RetriesOpt = None,
    health_start_period: StartOpt = None,
    no_health: Annotated[bool, typer.Option("--no-health", help="Remove the check.")] = False,
    update_parallel: ParallelOpt = None,
    update_order: OrderOpt = None,
    update_deadline: DeadlineOpt = None,
    auto_revert: RevertOpt = None,
    hold: HoldOpt = False,
    detach: DetachOpt = False,
    wait: WaitOpt = 300.0,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change a service: a rolling update (health-gated, auto-revert) shown as it goes."""
    with client(url, token) as api:
        body = dict(call(api.service, name)["spec"])
        changes: dict[str, Any] = {
            "image": image,
            "replicas": replicas,
            "cpu": cpu,
            "memory": memory,
            "env": None if env is None else parse_env(env),
            "ports": list(port) if port else None,
        }
        body.update({k: v for k, v in changes.items() if v is not None})
        body["health"] = (
            None
            if no_health
            else _health(
                body.get("health"),
                health_http,
                health_tcp,
                health_cmd,
                health_interval,
                health_timeout,
                health_retries,
                health_start_period,
            )
        )
        body["update"] = _update_cfg(
            body.get("update"), update_parallel, update_order, update_deadline, auto_revert
        )
        body["hold"] = hold
        svc = call(api.update_service, name, body)
        change = svc["change"]
        if not detach and change != "unchanged":
            svc = follow_rollout(api, name, wait)
    render.emit(svc, json_out, _print_update)


def _print_update(svc: dict[str, Any]) -> None:
    """The service; exit 1 if the update was reverted or failed."""
    _print_service(svc)
    if svc["rollout"].get("status") in ("reverted", "failed", "reverting"):
        fail(f"update did not go live: {svc['rollout'].get('message', '')}")


@service_app.command("scale")
def scale(
    name: Annotated[str, typer.Argument(help="Service name.", autocompletion=complete_service)],
    replicas: Annotated[int, typer.Argument(help="Replicas to keep running.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Set the number of replicas."""
    with client(url, token) as api:
        svc = call(api.scale_service, name, replicas)
    render.emit(svc, json_out, lambda s: f"{s['name']} scaled to {s['replicas']} replicas")


@service_app.command("ls")
def ls(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """List services: name, owner, version, ready/replicas, rollout, image, URL."""
    with client(url, token) as api:
        services = call(api.services)
    render.emit(services, json_out, _service_table)


def _service_table(services: list[Any]) -> None:
    render.table(
        ["NAME", "OWNER", "VERSION", "READY", "ROLLOUT", "IMAGE", "URL"],
        [
            [
                escape(s["name"]),
                escape(s["owner"]),
                str(s["version"]),
                f"{s['ready']}/{s['replicas']}",
                s["rollout"].get("status", "stable"),
                escape(s["image"]),
                s["url"],
            ]
            for s in services
        ],
    )


@service_app.command("inspect")
def inspect(
    name: Annotated[
        str, typer.Argument(help="Service name or id.", autocompletion=complete_service)
    ],
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """A service, its rollout and its replicas with their endpoints."""
    with client(url, token) as api:
        svc = call(api.service, name)
    render.emit(svc, json_out, _print_service)


@service_app.command("logs")
def service_logs(
    name: Annotated[
        str, typer.Argument(help="Service name or id.", autocompletion=complete_service)
    ],
    tail: Annotated[int | None, typer.Option(help="Only each replica's last N lines.")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t", help="Show times.")] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The logs of every replica of a service, in time order, each line prefixed with
    NAME.TASK (like ``docker service logs``); stderr lines go to stderr."""
    with client(url, token) as api:
        svc = call(api.service, name)
        lines: list[dict[str, Any]] = []
        for replica in svc["replicas_detail"]:
            task_id = str(replica["task_id"])
            after = 0
            while True:
                page = call(api.logs, task_id, after=after, tail=tail)
                lines += [{**item, "task_id": task_id} for item in page["lines"]]
                if tail is not None or not page["lines"]:
                    break
                after = page["next"]
    for item in sorted(lines, key=lambda i: str(i["ts"])):
        if json_out:  # one object a line, as logs --json
            print(json.dumps(item, sort_keys=True), flush=True)
            continue
        prefix = f"{svc['name']}.{item['task_id']} | "
        text = f"{prefix}{item['ts']} {item['line']}" if timestamps else prefix + item["line"]
        print(text, file=sys.stderr if item["stream"] == "stderr" else sys.stdout, flush=True)


@service_app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Service name.", autocompletion=complete_service)],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Remove a service: its replicas are stopped."""
    with client(url, token) as api:
        svc = call(api.remove_service, name)
    render.emit(svc, json_out, lambda s: f"{s['name']} removed")


# -- templates and instances --------------------------------------------------
@template_app.command("create")
def template_create(
    name: Annotated[str, typer.Argument(help="Template name (instances: NAME-xxxxxx).")],
    command: Annotated[list[str] | None, typer.Argument(help="-- COMMAND ARGS...")] = None,
    image: ImageOpt = None,
    port: PortOpt = None,
    cpu: CpuOpt = None,
    memory: MemOpt = None,
    env: EnvOpt = None,
    health_http: HttpOpt = None,
    health_tcp: TcpOpt = False,
    health_cmd: CmdOpt = None,
    lifetime: Annotated[float, typer.Option(help="Instance lifetime, seconds.")] = 3600.0,
    max_per_user: Annotated[int, typer.Option(help="Instances one user may have.")] = 1,
    description: Annotated[str, typer.Option(help="Shown in template ls.")] = "",
    egress: Annotated[
        bool,
        typer.Option(
            "--egress",
            help="Instances may reach out and the host's services (default: only their own).",
        ),
    ] = False,
    components: Annotated[
        Path | None,
        typer.Option(
            "--components",
            help="YAML/JSON file {KEY: service body}: more services each instance runs "
            "with this one (e.g. a db), reachable inside it as KEY.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Register a template (admin): a one-replica service users launch on demand."""
    if not image:
        fail("--image is required")
    parts: Any = {}
    if components is not None:
        try:
            docs = load_documents(components)
        except SpecFileError as exc:
            fail(str(exc))
        parts = docs[0] if len(docs) == 1 else None
        if not isinstance(parts, dict):
            fail(f"{components}: expected one mapping of KEY: service body")
    args = command_args(command)
    service = {
        "image": image,
        "command": args,
        "env": parse_env(env),
        "cpu": cpu,
        "memory": memory,
        "ports": list(port or []),
        "health": _health(None, health_http, health_tcp, health_cmd, None, None, None, None),
    }
    body = {
        "name": name,
        "service": service,
        "lifetime_s": lifetime,
        "max_per_user": max_per_user,
        "description": description,
        "components": parts,
        "network": {"egress": egress},
    }
    with client(url, token) as api:
        out = call(api.create_template, body)
    render.emit(out, json_out, lambda t: f"template {t['name']} registered")


@template_app.command("ls")
def template_ls(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Templates you can launch."""
    with client(url, token) as api:
        out = call(api.templates)
    render.emit(out, json_out, _template_table)


def _template_table(out: list[Any]) -> None:
    render.table(
        ["NAME", "IMAGE", "PORTS", "LIFETIME", "PER USER", "DESCRIPTION"],
        [
            [
                escape(t["name"]),
                escape(t["image"]),
                ",".join(str(p) for p in t["ports"]),
                render.age(t["lifetime_s"]),
                str(t["max_per_user"]),
                escape(t["description"]),
            ]
            for t in out
        ],
    )


@template_app.command("rm")
def template_rm(
    name: Annotated[str, typer.Argument(help="Template name.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Remove a template (admin); running instances live out their lifetime."""
    with client(url, token) as api:
        call(api.remove_template, name)
    print(f"template {name} removed")


@app.command()
def launch(
    template: Annotated[str, typer.Argument(help="Template name (see template ls).")],
    wait: WaitOpt = 120.0,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Start your instance of a template; prints its URL once it is healthy."""
    with client(url, token) as api:
        svc = call(api.launch, template)
        deadline = time.monotonic() + wait
        while svc["ready"] < 1:
            if time.monotonic() > deadline:
                fail(f"instance {svc['name']} not ready after {wait:g}s (it keeps starting)")
            time.sleep(0.25)
            svc = call(api.service, svc["name"])
    render.emit(svc, json_out, lambda s: str(s["url"]))


@app.command()
def instances(
    output: OutputOpt = None, json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Your template instances: name, template, status, uptime, expiry, URL."""
    with client(url, token) as api:
        out = call(api.instances)
    render.emit(out, json_out, _instance_table)


def _instance_table(out: list[Any]) -> None:
    now = time.time()
    render.table(
        ["NAME", "TEMPLATE", "ID", "READY", "UPTIME", "EXPIRES IN", "URL"],
        [
            [
                escape(s["name"]),
                escape(s["template"]),
                s["id"],
                f"{s['ready']}/{s['replicas']}",
                render.age(now - s["created_at"]),
                render.age((s["expires_at"] or now) - now),
                s["url"],
            ]
            for s in out
        ],
    )


def kill_instance(api: Client, ref: str) -> dict[str, Any] | None:
    """Remove the caller's template instance named (or with id) ``ref``; None if none."""
    try:
        found = [s for s in api.instances() if ref in (s["name"], s["id"])]
    except ClientError:
        return None
    if not found:
        return None
    return dict(call(api.remove_service, found[0]["name"]))
