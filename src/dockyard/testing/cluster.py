"""Clusters for tests and benchmarks.

:class:`ProcessCluster` runs ``dockyard server`` and ``dockyard agent`` as real
processes (so tests can SIGKILL, SIGSTOP and restart them). :class:`LocalCluster`
runs a server and agents in this process (fast; the sim driver for scale).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from dockyard.agent.main import Agent, AgentConfig
from dockyard.client import Client
from dockyard.drivers.base import Driver
from dockyard.server.config import ServerConfig
from dockyard.server.main import Server
from dockyard.testing.wait import WaitTimeout, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class ProcessCluster:
    """A server process and agent processes on this machine, in a temp directory."""

    def __init__(
        self,
        root: Path | None = None,
        heartbeat: float = 1.0,
        node_grace: float = 3.0,
        driver: str = "docker",
        server_args: list[str] | None = None,
        api_host: str = "127.0.0.1",
        gateway_host: str = "127.0.0.1",
        server_prefix: list[str] | None = None,
        agent_args: list[str] | None = None,
    ) -> None:
        """``server_prefix`` runs the server under a wrapper (``ip netns exec NS``)."""
        self.server_args = list(server_args or [])
        self.agent_args = list(agent_args or [])
        self.api_host = api_host
        self.server_prefix = list(server_prefix or [])
        self.root = root or Path(tempfile.mkdtemp(prefix="dockyard-test-"))
        self.port = free_port()
        self.gateway_port = free_port()
        self.url = f"http://{api_host}:{self.port}"
        self.gateway = f"tcp://{gateway_host}:{self.gateway_port}"
        self.gateway_bind = f"tcp://{'0.0.0.0' if self.server_prefix else gateway_host}:" + str(
            self.gateway_port
        )
        self.heartbeat = heartbeat
        self.node_grace = node_grace
        self.driver = driver
        self.server_proc: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        #: Created through the API once the server is up (unless open join) and
        #: given to every agent started with ``join=True``.
        self.join_token: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "server"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def _spawn(
        self, args: list[str], log_name: str, prefix: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.root / log_name, "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", "dockyard", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def start_server(self) -> None:
        self.server_proc = self._spawn(
            [
                "server",
                "--data-dir",
                str(self.data_dir),
                "--host",
                self.api_host,
                "--port",
                str(self.port),
                "--gateway",
                self.gateway_bind,
                "--heartbeat",
                str(self.heartbeat),
                "--node-grace",
                str(self.node_grace),
                *self.server_args,
            ],
            "server.log",
            self.server_prefix,
        )
        wait_for(lambda: _healthy(self.url), timeout=30, message="server health")
        if self.join_token is None and "--insecure-open-join" not in self.server_args:
            with self.client() as api:
                self.join_token = str(api.create_join_token("test cluster")["token"])

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        if self.server_proc is not None:
            self.server_proc.send_signal(sig)
            self.server_proc.wait(30)
            self.server_proc = None

    def start_agent(
        self,
        name: str = "node-1",
        prefix: list[str] | None = None,
        server: str | None = None,
        join: bool = True,
        extra_args: list[str] | None = None,
    ) -> None:
        """Start an agent; ``prefix`` wraps it (``ip netns exec NS``), ``server`` overrides
        the gateway endpoint it connects to; ``join`` passes the cluster's join token."""
        token = ["--join-token", self.join_token] if join and self.join_token else []
        self.agents[name] = self._spawn(
            [
                "agent",
                "--server",
                server or self.gateway,
                "--data-dir",
                str(self.root / f"agent-{name}"),
                "--name",
                name,
                "--driver",
                self.driver,
                "--heartbeat",
                str(self.heartbeat),
                *token,
                *self.agent_args,
                *(extra_args or []),
            ],
            f"agent-{name}.log",
            prefix,
        )

    def stop_agent(self, name: str = "node-1", sig: int = signal.SIGTERM) -> None:
        """Signal the agent and wait for it (30 s); one that does not stop is killed
        (not left running) and the timeout raised: a stop that hangs is a bug."""
        proc = self.agents.pop(name)
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise

    def signal_agent(self, name: str, sig: int) -> None:
        """Send a signal without waiting (SIGSTOP / SIGCONT to simulate a hang)."""
        self.agents[name].send_signal(sig)

    def node_id(self, name: str = "node-1") -> str:
        return (self.root / f"agent-{name}" / "node_id").read_text().strip()

    def client(self, token: str | None = None) -> Client:
        return Client(url=self.url, token=token or self.admin_token)

    def wait_ready_nodes(self, count: int = 1, timeout: float = 30) -> list[Any]:
        """The ready nodes once there are ``count``; on a timeout the error says which
        agents exited and ends with each agent's last log lines."""
        with self.client() as api:
            try:
                return wait_for(
                    lambda: (
                        [n for n in api.nodes() if n["state"] == "ready"]
                        if len([n for n in api.nodes() if n["state"] == "ready"]) >= count
                        else None
                    ),
                    timeout=timeout,
                    message=f"{count} ready nodes",
                )
            except WaitTimeout as exc:
                raise WaitTimeout(f"{exc}\n{self.agent_report()}") from None

    def agent_report(self, lines: int = 15) -> str:
        """Each agent's exit code (or "running") and the last lines of its log."""
        out = []
        for name, proc in self.agents.items():
            code = proc.poll()
            log = self.root / f"agent-{name}.log"
            tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            state = "running" if code is None else f"exited {code}"
            out.append(f"agent {name}: {state}\n" + "\n".join(f"  {t}" for t in tail))
        return "\n".join(out)

    def start(self, agents: int = 1) -> ProcessCluster:
        self.start_server()
        for index in range(agents):
            self.start_agent(f"node-{index + 1}")
        if agents:
            self.wait_ready_nodes(agents)
        return self

    def close(self) -> None:
        """Stop every agent, then the server, even if one of them would not stop (its
        error is raised after)."""
        try:
            for name in list(self.agents):
                try:
                    self.stop_agent(name)
                except subprocess.TimeoutExpired:
                    for rest in list(self.agents):
                        self.stop_agent(rest)
                    raise
        finally:
            self.stop_server()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-5000:]}"
            for path in sorted(self.root.glob("*.log"))
        )


class LocalCluster:
    """A server (HTTP on a thread) and agents in this process."""

    def __init__(
        self, root: Path | None = None, node_grace: float = 3.0, **server_options: Any
    ) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="dockyard-local-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gateway = f"tcp://127.0.0.1:{free_port()}"
        # In-process clusters default to open join (tests build Agents themselves);
        # pass insecure_open_join=False to use join tokens and CURVE.
        server_options.setdefault("insecure_open_join", True)
        self.server = Server(
            ServerConfig(
                data_dir=self.root / "server",
                port=self.port,
                gateway=self.gateway,
                node_grace=node_grace,
                **server_options,
            )
        )
        self.agents: list[Agent] = []

    @property
    def admin_token(self) -> str:
        return (self.root / "server" / "admin.token").read_text().strip()

    def start(self) -> LocalCluster:
        self.server.start_background()
        self.server.start_http_thread()
        wait_for(lambda: _healthy(self.url), timeout=30, message="server health")
        return self

    def add_agent(self, name: str, driver: Driver, join_token: str | None = None) -> Agent:
        """Start an in-process agent; on a secure cluster it joins with a new token
        unless ``join_token`` is given ("" for none)."""
        if join_token is None and not self.server.cfg.insecure_open_join:
            join_token = self.server.create_join_token(f"local agent {name}")
        agent = Agent(
            AgentConfig(
                server=self.gateway,
                data_dir=self.root / f"agent-{name}",
                name=name,
                join_token=join_token or None,
            ),
            driver=driver,
        )
        agent.start()
        self.agents.append(agent)
        return agent

    def client(self, token: str | None = None) -> Client:
        return Client(url=self.url, token=token or self.admin_token)

    def close(self) -> None:
        """Stop the agents and the server; then remove what the Docker agents' nodes
        left on the Engine (containers, service networks: ``testing/dockerclean.py``)."""
        from dockyard.drivers.docker import DockerDriver  # Docker tests only

        for agent in self.agents:
            agent.stop()
        self.server.stop()
        docker_nodes = [a.node_id for a in self.agents if isinstance(a.driver, DockerDriver)]
        if docker_nodes:
            from dockyard.testing.dockerclean import remove_node_resources

            remove_node_resources(docker_nodes)


def task_count(http: httpx.Client, **params: str) -> int:
    """How many tasks match a list query (``state="succeeded"``, ``active="true"``):
    one row fetched, the total read from ``X-Total-Count``."""
    response = http.get("/api/v1/tasks", params={**params, "limit": 1})
    response.raise_for_status()
    return int(response.headers["X-Total-Count"])
