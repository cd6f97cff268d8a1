"""``dockyard server``, ``agent`` and ``up`` (the daemons) and ``config`` (their settings)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from dockyard import __version__, config
from dockyard.cli import render
from dockyard.cli.app import app, fail


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
    orphan_grace: Annotated[
        float | None,
        typer.Option(help="Remove containers of a node id down this long, s [60]."),
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

    from dockyard.cli import local

    server_config, server_class = _server_modules()
    cfg = _load_config(
        server_config,
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
        orphan_grace=orphan_grace,
        max_runtime_cap_s=max_runtime_cap,
        log_level=log_level,
        watch_dir=watch_dir,
        insecure_open_join=insecure_open_join,
        tls_certfile=tls_cert,
        tls_keyfile=tls_key,
        ingress_port=ingress_port,
    )

    _setup_logging(log_level or "info")
    local.exit_cleanly_on_signals()
    srv = server_class(cfg)
    srv.start_background()
    # Type=notify units (deploy/systemd): READY=1 once the API listens.
    local.notify_ready_when(
        lambda: local.port_open(cfg.host, cfg.port), f"API on {cfg.host}:{cfg.port}"
    )
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
    link_timeout: Annotated[
        float | None,
        typer.Option(help="Drop a server connection silent this long after a ping, s [1]."),
    ] = None,
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
    from dockyard.cli import local
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
        link_timeout=link_timeout,
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
    # Type=notify units (deploy/systemd): READY=1 once the server has welcomed every node.
    local.notify_ready_when(
        lambda: all(n.connection.welcomed.is_set() for n in fleet),
        f"{len(fleet)} node(s) joined {cfg.server}",
    )
    for node in fleet:
        node.wait()


def _server_modules() -> tuple[Any, Any]:
    """``(ServerConfig, Server)``, or a message naming the extra when the server's
    packages (FastAPI, uvicorn, SQLAlchemy, ...) are not installed."""
    try:
        from dockyard.server.config import ServerConfig
        from dockyard.server.main import Server
    except ModuleNotFoundError as exc:
        fail(
            f"the server's packages are not installed ({exc.name} is missing): "
            "pip install 'dockyard[server]'",
            code=2,
        )
    return ServerConfig, Server


@app.command()
def up(
    config_file: ConfigOpt = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
    port: Annotated[
        int | None,
        typer.Option(help=f"API port [{config.DEFAULT_API_PORT}, or the next free one]."),
    ] = None,
    gateway_port: Annotated[
        int | None,
        typer.Option(help=f"Agent gateway port [{config.DEFAULT_GATEWAY_PORT}, or the next free]."),
    ] = None,
    driver: Annotated[str | None, typer.Option(help="Runtime driver: docker or sim.")] = None,
    demo_image: Annotated[
        bool,
        typer.Option(
            "--demo-image/--no-demo-image", help="Build dockyard/busybox:latest if missing."
        ),
    ] = True,
    log_level: str = "warning",
) -> None:
    """Start a server and a local agent in one process (SQLite, API/UI on 127.0.0.1).

    Ports taken by something else are replaced by free ones (said on start); the
    dashboard's URL and the admin token's file are printed once it serves."""
    from dockyard.cli import local
    from dockyard.errors import DockyardError

    server_config, server_class = _server_modules()
    from dockyard.agent.main import Agent
    from dockyard.drivers.errors import DriverError

    _setup_logging(log_level)
    local.exit_cleanly_on_signals()
    cfg = _load_config(server_config, "server", config_file, data_dir=data_dir, port=port)
    agent_cfg = _agent_config(config_file, data_dir=cfg.data_dir / "agent", driver=driver)
    with local.hold_data_dir(cfg.data_dir) as held:
        if isinstance(held, local.Running):
            where = f" (pid {held.pid}, API on {held.url})" if held.pid else ""
            fail(f"dockyard up is already running with {cfg.data_dir}{where}")
        host = cfg.host
        chosen = _up_ports(host, cfg.port, port, gateway_port)
        cfg.port, gw_port = chosen
        cfg.gateway = agent_cfg.server = f"tcp://127.0.0.1:{gw_port}"
        if agent_cfg.driver == "docker":
            _demo_image(demo_image)
        try:
            srv = server_class(cfg)
        except (DockyardError, OSError) as exc:
            fail(f"cannot start the server with {cfg.data_dir}: {exc}")
        if not cfg.insecure_open_join and not agent_cfg.join_token:
            agent_cfg.join_token = srv.create_join_token("dockyard up local agent", ttl_s=600)
        try:
            node = Agent(agent_cfg)
        except DriverError as exc:
            srv.stop()
            fail(f"{exc} (is dockerd running? or try: dockyard up --driver sim)")
        scheme = "https" if cfg.tls_certfile else "http"
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        url = f"{scheme}://{shown}:{cfg.port}"

        def announce() -> None:
            held(url)
            token_file = cfg.data_dir / "admin.token"
            render.console.print(
                f"dockyard {__version__} up\n"
                f"  dashboard:   {url}/  (sign in with the admin token)\n"
                f"  API:         {url}/api/v1  (reference: {url}/docs)\n"
                f"  admin token: {token_file}  (0600)\n"
                f"  node:        {agent_cfg.name} ({agent_cfg.driver} driver)\n"
                f"  data:        {cfg.data_dir}\n"
                "Ctrl-C stops it.",
                highlight=False,
                soft_wrap=True,
            )
            if cfg.port != config.DEFAULT_API_PORT:
                render.console.print(
                    "The CLI on this machine finds it by itself (up.json in the data "
                    f"dir); elsewhere: export DOCKYARD_URL={url}",
                    highlight=False,
                    soft_wrap=True,
                )

        srv.start_background()
        node.start()
        local.notify_ready_when(
            lambda: local.port_open(host, cfg.port) and node.connection.welcomed.is_set(),
            f"API on {url}",
            then=announce,
        )
        try:
            srv.serve_forever()
        finally:
            node.stop()


def _up_ports(
    host: str, api_port: int, api_flag: int | None, gw_flag: int | None
) -> tuple[int, int]:
    """The API and gateway ports of ``dockyard up``: a port given as a flag must be free;
    a default one (or the config file's) that is taken gives way to a free one."""
    from dockyard.cli import local

    if api_flag is not None and not local.port_free(host, api_flag):
        fail(
            f"--port {api_flag}: {host}:{api_flag} is in use; give another --port, "
            "or leave --port out to take the next free one",
            code=2,
        )
    if gw_flag is not None and not local.port_free("127.0.0.1", gw_flag):
        fail(
            f"--gateway-port {gw_flag}: 127.0.0.1:{gw_flag} is in use; give another "
            "--gateway-port, or leave it out to take the next free one",
            code=2,
        )
    api = api_port if api_flag is not None else local.pick_port(host, api_port)
    if api != api_port:
        render.console.print(f"port {api_port} is in use: the API listens on {api}")
    wanted_gw = gw_flag if gw_flag is not None else config.DEFAULT_GATEWAY_PORT
    gateway = wanted_gw
    if gw_flag is None:
        gateway = local.pick_port("127.0.0.1", wanted_gw, avoid=(api,))
        if gateway != wanted_gw:
            render.console.print(f"port {wanted_gw} is in use: the agent gateway is on {gateway}")
    if gateway == api:
        fail("--port and --gateway-port must differ", code=2)
    return api, gateway


def _demo_image(build: bool) -> None:
    """Check Docker answers (else exit with a message) and build the demo image."""
    from dockyard.drivers import demo
    from dockyard.drivers.errors import DriverError, RuntimeUnavailable

    try:
        client = demo.docker_client()
    except RuntimeUnavailable as exc:
        fail(
            f"{exc}\nStart Docker (e.g. `sudo systemctl start docker`, or `sudo dockerd &`), "
            "or try dockyard without it: dockyard up --driver sim"
        )
    try:
        if demo.has_image(client):
            return
        if not build:
            render.console.print(f"demo image {demo.BUSYBOX_IMAGE} not built (--no-demo-image)")
            return
        render.console.print(f"building the demo image {demo.BUSYBOX_IMAGE} ...")
        demo.ensure_busybox_image(client)
    except DriverError as exc:
        render.console.print(
            f"[yellow]demo image {demo.BUSYBOX_IMAGE} not built:[/] {exc}. "
            "dockyard runs any image Docker has locally (docker images).",
            highlight=False,
        )
    finally:
        client.close()


@app.command("config")
def show_config(
    config_file: ConfigOpt = None,
    section: Annotated[str, typer.Option(help="server, agent or all.")] = "all",
) -> None:
    """Print the effective configuration (defaults < file < env) as JSON."""
    from dockyard.agent.main import AgentConfig
    from dockyard.settings import effective

    if section not in ("server", "agent", "all"):
        fail("--section must be server, agent or all", code=2)
    out: dict[str, Any] = {}
    if section in ("server", "all"):
        server_config, _ = _server_modules()
        out["server"] = effective(_load_config(server_config, "server", config_file))
    if section in ("agent", "all"):
        out["agent"] = effective(_load_config(AgentConfig, "agent", config_file))
    render.print_json(out)
