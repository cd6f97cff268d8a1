"""Several ``dockyard server`` processes on one PostgreSQL database, for HA tests and
benchmarks, and a way to freeze the leader *inside* a transaction.

:class:`HACluster` runs real server processes (so they can be SIGKILLed, SIGSTOPped
and restarted) sharing one CURVE key pair, and one hollow-node agent process
(``dockyard agent --driver sim --nodes N``) that knows every gateway.

:func:`freeze_leader_in_transaction` stops the leader with ``SIGSTOP`` at a point
proven from PostgreSQL itself: its backend is in a transaction that holds the lease
row's lock (the fence's ``FOR SHARE``) and has written a placement (of a job the
caller just submitted, or any). No hook in the server: the node rows are locked from a test
connection, so the scheduler's placement transaction of that job blocks on them
(``pg_stat_activity``: waiting on a lock); the leader is stopped there, then the node
locks are released, so its backend finishes the statement and sits ``idle in
transaction`` for as long as the process is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dockyard.client import Client, ClientError
from dockyard.protocol import curve
from dockyard.testing.cluster import free_port
from dockyard.testing.wait import wait_for


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class HACluster:
    """``count`` server processes on ``db_url`` and (after :meth:`start_agent`) one agent
    process with ``nodes`` hollow nodes; every process runs in its own session."""

    def __init__(
        self,
        db_url: str,
        root: Path,
        count: int = 3,
        heartbeat: float = 0.5,
        node_grace: float = 3.0,
    ) -> None:
        self.db_url = db_url
        self.root = root
        self.heartbeat = heartbeat
        self.node_grace = node_grace
        self.names = [f"s{i}" for i in range(count)]
        self.ports = {n: free_port() for n in self.names}
        self.gateways = {n: f"tcp://127.0.0.1:{free_port()}" for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.agent: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_server(self, name: str, timeout: float = 60) -> None:
        data = self.root / name
        data.mkdir(exist_ok=True)
        first = self.root / self.names[0]
        if name != self.names[0]:  # every instance serves with the same CURVE key pair
            for key in (curve.SECRET_FILE, curve.PUBLIC_FILE):
                shutil.copy2(first / key, data / key)
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dockyard",
                    "server",
                    "--db",
                    self.db_url,
                    "--data-dir",
                    str(data),
                    "--port",
                    str(self.ports[name]),
                    "--gateway",
                    self.gateways[name],
                    "--heartbeat",
                    str(self.heartbeat),
                    "--node-grace",
                    str(self.node_grace),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        wait_for(lambda: _healthy(self.url(name)), timeout=timeout, message=f"{name} health")

    @property
    def token(self) -> str:
        return (self.root / self.names[0] / "admin.token").read_text().strip()

    def client(self, name: str, timeout: float = 30) -> Client:
        return Client(url=self.url(name), token=self.token, timeout=timeout)

    def live(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def status(self, name: str, timeout: float = 30) -> dict[str, Any] | None:
        try:
            with self.client(name, timeout=timeout) as api:
                return api.status()
        except (ClientError, httpx.HTTPError):
            return None

    def leader(
        self, among: list[str] | None = None, above_term: int = 0, timeout: float = 30
    ) -> tuple[str, int]:
        """Wait for a leader (an instance name) with a term above ``above_term``."""
        ids: dict[str, str] = {}

        def find() -> tuple[str, int] | None:
            for name in among or self.live():
                st = self.status(name, timeout=2)
                if st is None:
                    continue
                ids[st["instance"]] = name
                if st["leader"] in ids and (st["term"] or 0) > above_term:
                    return ids[st["leader"]], int(st["term"])
            return None

        return wait_for(find, timeout=timeout, interval=0.05, message="a leader")

    def start_all(self, nodes: int = 3, timeout: float = 60) -> str:
        """Start every server, then one agent with ``nodes`` hollow nodes joined through
        the leader; returns once they are all ready, with the leader's name."""
        for name in self.names:
            self.start_server(name)
        leader, _ = self.leader()
        with self.client(leader) as api:
            token = str(api.create_join_token("HA cluster agent")["token"])
        self.start_agent(token, nodes=nodes)
        with self.client(leader) as api:
            wait_for(
                lambda: len([n for n in api.nodes() if n["state"] == "ready"]) >= nodes,
                timeout=timeout,
                message=f"{nodes} hollow nodes ready",
            )
        return leader

    def start_agent(self, token: str, nodes: int = 3) -> None:
        with open(self.root / "agent.log", "ab") as log:
            self.agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dockyard",
                    "agent",
                    "--driver",
                    "sim",
                    "--nodes",
                    str(nodes),
                    "--name",
                    "hollow",
                    "--heartbeat",
                    str(self.heartbeat),
                    "--data-dir",
                    str(self.root / "agent"),
                    "--server",
                    ",".join(self.gateways.values()),
                    "--join-token",
                    token,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def close(self) -> None:
        for proc in [*self.procs.values(), *([self.agent] if self.agent else [])]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait(30)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.root.glob("*.log"))
        )


# -- freezing the leader inside a transaction ----------------------------------------

#: The leader's backends in a transaction that holds the lease row's lock and has
#: written something (an xid), blocked by the ``:locker`` session's locks.
_BLOCKED_LEASE_HOLDERS = text(
    "SELECT a.pid, a.backend_xid::text AS xid"
    " FROM pg_stat_activity a"
    " WHERE a.datname = current_database() AND a.client_port = ANY(:ports)"
    " AND a.backend_xid IS NOT NULL AND a.wait_event_type = 'Lock'"
    " AND CAST(:locker AS integer) = ANY(pg_blocking_pids(a.pid))"
    " AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted"
    " AND l.relation = 'leader_lease'::regclass)"
)


@dataclass
class FrozenLeader:
    """Where :func:`freeze_leader_in_transaction` stopped the leader."""

    name: str
    pid: int
    #: Its PostgreSQL backend, in the transaction, and that transaction's id.
    backend_pid: int
    xid: str
    #: The job whose placement that transaction had written (uncommitted), if the
    #: caller submitted one; and the task rows it had written.
    job_id: str | None
    task_ids: list[str]
    #: ``time.monotonic()`` and ``time.time()`` just before the SIGSTOP.
    stopped_mono: float
    stopped_wall: float
    #: The backend's state once the node locks were released: ``idle in transaction``
    #: (or ``gone`` if the server cut it off before it was seen).
    state_after: str


def pg_client_ports(pid: int, db_url: str) -> list[int]:
    """The local TCP ports of ``pid``'s connections to the database server."""
    port = make_url(db_url).port or 5432
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return [c.laddr.port for c in conns if c.raddr and c.raddr.port == port]


def freeze_leader_in_transaction(
    cluster: HACluster,
    leader: str,
    submit: Callable[[], str] | None = None,
    timeout: float = 10.0,
) -> FrozenLeader:
    """SIGSTOP ``leader`` while its backend is inside the scheduler's fenced transaction:
    the lease row share-locked, placements written (uncommitted).

    With ``submit`` (submits one job through any instance's API, returns its id) the
    placement must be that job's; without, any placement (under steady submissions).
    The node rows are locked from here meanwhile, so the placement transaction blocks
    on them (the FK check of ``tasks.node_id``); each poll reads ``pg_stat_activity``,
    ``pg_locks`` and ``pg_blocking_pids``, and the task rows' ``xmax`` (the id of the
    transaction updating them). The leader is stopped while blocked there, then the
    locks are released. Raises ``AssertionError`` if that is not seen in time."""
    proc = cluster.procs[leader]
    engine = create_engine(cluster.db_url, pool_size=1)
    monitor = create_engine(cluster.db_url, isolation_level="AUTOCOMMIT", pool_size=1)
    stopped = False
    try:
        with engine.connect() as locker, monitor.connect() as mon:
            locker_pid = int(locker.execute(text("SELECT pg_backend_pid()")).scalar_one())
            # Every node row, locked until rollback: the placement's FK check (and the
            # generation bump after it) waits here, inside the fenced transaction.
            locked = locker.execute(text("SELECT id FROM nodes FOR UPDATE")).all()
            assert locked, "no nodes to place on"
            job_id = submit() if submit is not None else None

            def written(xid: str) -> list[str]:
                # Pending as committed, being updated by it: being placed (a status
                # report, say, updates tasks already placed).
                sql = "SELECT id FROM tasks WHERE xmax::text = :x AND state = 'pending'"
                if job_id is not None:
                    sql += " AND workload_id = :job"
                return list(mon.execute(text(sql), {"job": job_id, "x": xid}).scalars())

            def blocked_placement() -> tuple[int, str, list[str]] | None:
                ports = pg_client_ports(proc.pid, cluster.db_url)
                rows = mon.execute(_BLOCKED_LEASE_HOLDERS, {"ports": ports, "locker": locker_pid})
                for row in rows.all():
                    if tasks := written(str(row.xid)):
                        return int(row.pid), str(row.xid), tasks
                return None

            backend_pid, xid, task_ids = wait_for(
                blocked_placement,
                timeout=timeout,
                interval=0.005,
                message=f"{leader}'s placement of {job_id or 'a task'} blocked in its fenced write",
            )
            stopped_mono, stopped_wall = time.monotonic(), time.time()
            os.killpg(proc.pid, signal.SIGSTOP)
            stopped = True
            wait_for(
                lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED,
                timeout=5,
                interval=0.002,
                message=f"{leader} stopped",
            )
            locker.rollback()  # the backend finishes its statement; its client is stopped

            def settled() -> str | None:
                row = mon.execute(
                    text("SELECT state, backend_xid::text FROM pg_stat_activity WHERE pid = :p"),
                    {"p": backend_pid},
                ).one_or_none()
                if row is None:
                    return "gone"
                if row.state == "idle in transaction" and row[1] == xid:
                    return str(row.state)
                assert row.state != "idle in transaction (aborted)", "its statement failed"
                return None

            state_after = wait_for(settled, timeout=5, interval=0.005, message="backend idle")
        return FrozenLeader(
            name=leader,
            pid=proc.pid,
            backend_pid=backend_pid,
            xid=xid,
            job_id=job_id,
            task_ids=task_ids,
            stopped_mono=stopped_mono,
            stopped_wall=stopped_wall,
            state_after=state_after,
        )
    except BaseException:
        if stopped:
            os.killpg(proc.pid, signal.SIGCONT)
        raise
    finally:
        engine.dispose()
        monitor.dispose()
