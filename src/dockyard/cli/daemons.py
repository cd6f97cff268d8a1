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

    from dockyard.server.config import ServerConfig
    from dockyard.server.main import Server

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
    from dockyard.server.config import ServerConfig
    from dockyard.server.main import Server

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
    from dockyard.server.config import ServerConfig
    from dockyard.settings import effective

    if section not in ("server", "agent", "all"):
        fail("--section must be server, agent or all", code=2)
    out: dict[str, Any] = {}
    if section in ("server", "all"):
        out["server"] = effective(_load_config(ServerConfig, "server", config_file))
    if section in ("agent", "all"):
        out["agent"] = effective(_load_config(AgentConfig, "agent", config_file))
    render.print_json(out)
