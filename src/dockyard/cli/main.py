"""``dockyard`` commands."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from dockyard import __version__, config
from dockyard.cli import render
from dockyard.client import Client, ClientError, save_token

app = typer.Typer(
    name="dockyard",
    help="A cluster manager for containers: batch jobs and services on Docker.",
    no_args_is_help=True,
    add_completion=False,
)
user_app = typer.Typer(help="Manage users (admin).", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (documented schema).")]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="DOCKYARD_URL", help="API URL.")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="DOCKYARD_TOKEN", help="Bearer token.")
]


def fail(message: str, code: int = 1) -> NoReturn:
    render.err_console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def client(url: str | None, token: str | None) -> Client:
    return Client(url=url, token=token)


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        detail = f"{exc} (field: {exc.field})" if exc.field else str(exc)
        fail(detail)


def command_args(command: list[str] | None) -> list[str]:
    """The COMMAND arguments after an optional leading ``--``."""
    args = list(command or [])
    return args[1:] if args[:1] == ["--"] else args


def parse_env(items: list[str] | None) -> dict[str, str]:
    """``--env KEY=VALUE`` options as a map; exits with a message on a malformed one."""
    environment: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--env {item!r} must be KEY=VALUE")
        environment[key] = value
    return environment


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- daemons ---------------------------------------------------------------
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (default: $DOCKYARD_CONFIG or config.toml in the user config dir).",
        show_default=False,
    ),
]


def _load_config(cls: type[Any], section: str, path: Path | None, **flags: Any) -> Any:
    """Defaults < config file < DOCKYARD_<SECTION>_* env < flags given on the command line."""
    from dockyard.settings import ConfigError, config_path, load

    try:
        return load(cls, section, config_path(path), overrides=flags)
    except ConfigError as exc:
        fail(str(exc), code=2)


@app.command()
def server(
    config_file: ConfigOpt = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: SQLite in data dir).")
    ] = None,
    store: Annotated[str | None, typer.Option(help="Store backend: sqlite or postgresql.")] = None,
    host: Annotated[str | None, typer.Option(help="API address [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help=f"API port [{config.DEFAULT_API_PORT}].")] = None,
    gateway: Annotated[str | None, typer.Option(help="ZeroMQ endpoint agents connect to.")] = None,
    heartbeat: Annotated[float | None, typer.Option(help="Agents' heartbeat interval, s.")] = None,
    node_grace: Annotated[
        float | None, typer.Option(help="Seconds without heartbeat before down [3].")
    ] = None,
    max_runtime_cap: Annotated[
        float | None, typer.Option(help="Cluster-wide cap on any task's run time, seconds.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level [warning].")] = None,
    watch_dir: Annotated[
        Path | None,
        typer.Option(help="Drop folder: build and queue archives dropped here."),
    ] = None,
    insecure_open_join: Annotated[
        bool | None,
        typer.Option(
            "--insecure-open-join",
            help="Development only: agents join without a token, plaintext gateway.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve the API over TLS: certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    ingress_port: Annotated[
        int | None,
        typer.Option(help="Also serve only the service router (/NAME/...) on this port [0: off]."),
    ] = None,
) -> None:
    """Run the control plane: API, agent gateway, scheduler, node monitor, router."""

    from dockyard.server.main import Server, ServerConfig

    cfg: ServerConfig = _load_config(
        ServerConfig,
        "server",
        config_file,
        data_dir=data_dir,
        db_url=db,
        store=store,
        host=host,
        port=port,
        gateway=gateway,
        heartbeat_interval=heartbeat,
        node_grace=node_grace,
        max_runtime_cap_s=max_runtime_cap,
        log_level=log_level,
        watch_dir=watch_dir,
        insecure_open_join=insecure_open_join,
        tls_certfile=tls_cert,
        tls_keyfile=tls_key,
        ingress_port=ingress_port,
    )

    _setup_logging(log_level or "info")
    srv = Server(cfg)
    srv.start_background()
    srv.serve_forever()


def _agent_config(config_file: Path | None, **flags: Any) -> Any:
    from dockyard.agent.main import AgentConfig

    return _load_config(AgentConfig, "agent", config_file, **flags)


@app.command()
def agent(
    config_file: ConfigOpt = None,
    server: Annotated[str | None, typer.Option(help="Server gateway endpoint.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Agent state directory.")] = None,
    name: Annotated[str | None, typer.Option(help="Node name (default: hostname).")] = None,
    driver: Annotated[str | None, typer.Option(help="Runtime driver: docker or sim.")] = None,
    heartbeat: Annotated[float | None, typer.Option(help="Heartbeat interval, s [1].")] = None,
    sample_interval: Annotated[
        float | None, typer.Option(help="Seconds between resource samples of running tasks [1].")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="Node label KEY=VALUE.")] = None,
    gpus: Annotated[
        str | None,
        typer.Option(help="GPUs: a count (4), indices (0,2) or UUIDs (GPU-...); default: NVML."),
    ] = None,
    join_token: Annotated[
        str | None, typer.Option(help="Join token (dockyard node token create).")
    ] = None,
    server_key: Annotated[
        str | None, typer.Option(help="Server CURVE public key, if not from a join token.")
    ] = None,
    nodes: Annotated[int, typer.Option(help="Hollow nodes to run (--driver sim).")] = 1,
    cpu: Annotated[str | None, typer.Option(help="Hollow node CPU cores (sim).")] = None,
    memory: Annotated[str | None, typer.Option(help="Hollow node memory, e.g. 8g (sim).")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: any port)."),
    ] = None,
    log_level: str = "info",
) -> None:
    """Run a node agent that executes tasks on this machine's Docker Engine
    (or, with ``--driver sim --nodes N``, N hollow nodes in this process)."""
    import signal

    from dockyard.agent.gpus import declared
    from dockyard.agent.main import Agent
    from dockyard.core.errors import ValidationError
    from dockyard.core.resources import parse_cpu, parse_memory
    from dockyard.drivers.errors import DriverError
    from dockyard.scheduler.constraints import parse_label

    _setup_logging(log_level)
    try:
        labels = dict(parse_label(item, "--label") for item in label or [])
        gpu_list = declared(gpus)
        cpu_millis = parse_cpu(cpu, "--cpu") if cpu else 4000
        memory_bytes = parse_memory(memory, "--memory") if memory else 8 * 1024**3
    except (ValidationError, ValueError) as exc:
        fail(str(exc))
    extra: dict[str, Any] = {}
    if labels:
        extra["labels"] = labels
    if gpu_list is not None:
        extra["gpus"] = gpu_list
    if metrics_port is not None:
        extra["metrics_port"] = metrics_port
    cfg = _agent_config(
        config_file,
        server=server,
        data_dir=data_dir,
        name=name,
        driver=driver,
        heartbeat_interval=heartbeat,
        sample_interval=sample_interval,
        join_token=join_token,
        server_key=server_key,
        **extra,
    )
    if nodes > 1:
        if cfg.driver != "sim":
            fail("--nodes needs --driver sim")
        from dockyard.agent.hollow import hollow_agents

        fleet = hollow_agents(cfg, nodes, cpu_millis, memory_bytes)
    elif cfg.driver == "sim":
        from dockyard.drivers.sim import SimDriver

        fleet = [Agent(cfg, driver=SimDriver(cpu_millis=cpu_millis, memory_bytes=memory_bytes))]
    else:
        try:
            fleet = [Agent(cfg)]
        except DriverError as exc:
            fail(str(exc))

    def stop(*_: Any) -> None:
        for node in fleet:
            node.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for node in fleet:
        node.start()
    for node in fleet:
        node.wait()


@app.command()
def up(
    config_file: ConfigOpt = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
    port: Annotated[int | None, typer.Option(help=f"API port [{config.DEFAULT_API_PORT}].")] = None,
    gateway_port: int = config.DEFAULT_GATEWAY_PORT,
    driver: Annotated[str | None, typer.Option(help="Runtime driver: docker or sim.")] = None,
    log_level: str = "warning",
) -> None:
    """Start a server and a local agent in one process (SQLite, API/UI on 127.0.0.1)."""
    from dockyard.agent.main import Agent
    from dockyard.drivers.errors import DriverError
    from dockyard.server.main import Server, ServerConfig

    _setup_logging(log_level)
    endpoint = f"tcp://127.0.0.1:{gateway_port}"
    cfg: ServerConfig = _load_config(
        ServerConfig, "server", config_file, data_dir=data_dir, port=port, gateway=endpoint
    )
    agent_cfg = _agent_config(
        config_file, server=endpoint, data_dir=cfg.data_dir / "agent", driver=driver
    )
    srv = Server(cfg)
    if not cfg.insecure_open_join and not agent_cfg.join_token:
        agent_cfg.join_token = srv.create_join_token("dockyard up local agent", ttl_s=600)
    try:
        node = Agent(agent_cfg)
    except DriverError as exc:
        fail(str(exc))
    srv.start_background()
    node.start()
    render.console.print(
        f"dockyard {__version__} up: API and UI on http://127.0.0.1:{cfg.port}  "
        f"(admin token in {cfg.data_dir / 'admin.token'})"
    )
    try:
        srv.serve_forever()
    finally:
        node.stop()


@app.command("config")
def show_config(
    config_file: ConfigOpt = None,
    section: Annotated[str, typer.Option(help="server, agent or all.")] = "all",
) -> None:
    """Print the effective configuration (defaults < file < env) as JSON."""
    from dockyard.agent.main import AgentConfig
    from dockyard.server.main import ServerConfig
    from dockyard.settings import effective

    if section not in ("server", "agent", "all"):
        fail("--section must be server, agent or all", code=2)
    out: dict[str, Any] = {}
    if section in ("server", "all"):
        out["server"] = effective(_load_config(ServerConfig, "server", config_file))
    if section in ("agent", "all"):
        out["agent"] = effective(_load_config(AgentConfig, "agent", config_file))
    render.print_json(out)


# -- jobs ------------------------------------------------------------------
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
    build: Annotated[
        Path | None,
        typer.Option("--build", help="Build IMAGE (as <you>/IMAGE) from this context first."),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a batch job: run IMAGE [-- COMMAND...] once."""

    args = command_args(command)
    environment = parse_env(env)
    job_name = name or image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] or "job"
    with client(url, token) as api:
        if build is not None:
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
        )
    if json_out:
        render.print_json(task)
    else:
        print(task["id"])


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
    if json_out:
        render.print_json(tasks)
        return
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
    from dockyard.cli.services import kill_instance

    with client(url, token) as api:
        removed = kill_instance(api, ref)
        if removed is not None:
            if json_out:
                render.print_json(removed)
            else:
                print(f"instance {removed['name']} removed")
            return
        task = call(api.kill, ref)
    if json_out:
        render.print_json(task)
    else:
        print(f"{task['id']} {task['state']} (stop requested)")


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
    if json_out:
        render.print_json(task)
        return
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


@app.command()
def nodes(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List nodes: state, capacity, allocation, usage, heartbeat age."""
    with client(url, token) as api:
        items = call(api.nodes)
    if json_out:
        render.print_json(items)
        return
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
            if json_out:
                render.print_json(items)
            else:
                render.table(EVENT_COLUMNS, _event_rows(items))
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
    if json_out:
        render.print_json(result)
    else:
        print(f"{result['name']} draining ({result['tasks']} tasks left)")


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
    if json_out:
        render.print_json(result)
    else:
        print(f"{result['name']} {result['state']}")


# -- identity --------------------------------------------------------------
@app.command()
def login(
    token_value: Annotated[str, typer.Option("--token", prompt=True, hide_input=True)],
    url: UrlOpt = None,
) -> None:
    """Check a token against the server and store it (0600) for later commands."""
    with Client(url=url, token=token_value) as api:
        who = call(api.whoami)
    path = save_token(token_value)
    print(f"logged in as {who['name']}; token saved to {path}")


@app.command()
def whoami(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Show who the current token belongs to."""
    with client(url, token) as api:
        who = call(api.whoami)
    if json_out:
        render.print_json(who)
    else:
        print(f"{who['name']}{' (admin)' if who['admin'] else ''}")


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
    if json_out:
        render.print_json(result)
    else:
        print(result["token"])


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
    if json_out:
        render.print_json(result)
    else:
        print(
            f"{result['name']}: home {result['home']}, policy {json.dumps(result['policy'])}, "
            f"quota {json.dumps(result['quota'])}"
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
def user_ls(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List users."""
    with client(url, token) as api:
        users = call(api.users)
    if json_out:
        render.print_json(users)
        return
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
    if json_out:
        render.print_json(result)
    else:
        print(result["token"])


def _since(value: str | None) -> float | None:
    """``3600`` (seconds ago), ``2d``/``12h``/``30m`` ago, or an ISO date."""
    import datetime
    import time

    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
            return time.time() - float(value[:-1]) * units[value[-1]]
        if value.replace(".", "", 1).isdigit():
            return time.time() - float(value)
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        fail(f"--since {value!r}: use seconds, 12h, 2d or an ISO date")


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
    start = _since(since)
    with client(url, token) as api:
        if format in ("csv", "sge"):
            sys.stdout.write(call(api.export_accounting, format, user, start))
            return
        records = call(api.accounting, user, start)
    if format == "json":
        render.print_json(records)
        return
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
def users(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Per-user statistics: running, queued, finished, usage, quota."""
    with client(url, token) as api:
        stats = call(api.user_stats)
    if json_out:
        render.print_json(stats)
        return
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


admin_app = typer.Typer(help="Cluster maintenance (admin).", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


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
    if json_out:
        render.print_json(result)
    else:
        print(", ".join(f"{k}: {v}" for k, v in result.items()))


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
        sys.stdout.write(call(api.export_accounting, format, None, _since(since)))


@app.command()
def status(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """The control plane: server instances, who leads, the term and the lease age."""
    with client(url, token) as api:
        data = call(api.status)
    if json_out:
        render.print_json(data)
        return
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


from dockyard.cli import scheduling as _scheduling  # noqa: E402  (registers queue, plan)

_ = _scheduling

from dockyard.cli import build as _build  # noqa: E402, F401  (registers build)
from dockyard.cli import deploy as _deploy  # noqa: E402, F401  (registers deploy, apply)
from dockyard.cli import exec as _exec  # noqa: E402, F401  (registers exec)
from dockyard.cli import nodes_join as _nodes_join  # noqa: E402, F401  (registers node token)
from dockyard.cli import services as _services  # noqa: E402, F401  (service, template, launch)


def main() -> None:
    app()
