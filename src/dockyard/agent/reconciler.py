"""Level-triggered reconciliation of desired tasks against actual containers.

The server owns the desired task set (with a generation); the agent owns the
actual containers, found by their Docker labels. Each pass compares the two and
acts: start what is missing, adopt what runs but is not watched, stop what is
asked to stop, remove containers the server no longer wants (fencing). A lost
message only delays convergence; the next pass fixes it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.agent.health import HealthMonitor
from dockyard.agent.logship import LogShipper
from dockyard.agent.networks import NetworkManager
from dockyard.agent.secretfiles import SecretFiles
from dockyard.agent.watchers import Watchers
from dockyard.core.checkpoints import checkpoint_name
from dockyard.core.errors import ValidationError
from dockyard.core.resources import Resources
from dockyard.core.security import ContainerPolicy, Mount, PolicyViolation, SecurityOptions, check
from dockyard.core.services import HealthCheck
from dockyard.core.specs import CHECKPOINT_DIR
from dockyard.core.states import DesiredState, Reason, TaskState, outcome
from dockyard.drivers.base import ContainerSpec, ContainerStatus, Driver
from dockyard.drivers.errors import ContainerExists, ContainerNotFound, DriverError
from dockyard.protocol.messages import Desired, DesiredEntry, TaskStatus, TaskUsage

log = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 1.0
#: Grace for containers the server no longer wants (their spec is unknown).
STALE_GRACE_S = 10.0
WAIT_SLICE_S = 2.0
LOG_JOIN_S = 30.0
#: A task's final status waits at most this long for its log lines to be handed on.
LOG_DRAIN_S = 10.0
#: A log stream that broke while its container runs is opened again after this
#: pause, doubled each time up to LOG_REOPEN_MAX_S.
LOG_REOPEN_S = 0.2
LOG_REOPEN_MAX_S = 5.0
#: A container's init (Docker's tini) drops signals that reach it before it has set
#: up its handlers: right after start, and longer under a small CPU quota (seen:
#: SIGTERM 20-30 ms after start with ``--cpus 0.1`` lost about once in 30). A stop
#: that comes this soon after the start sends SIGTERM again once this has passed.
INIT_SETTLE_S = 1.0
#: A stop re-reads its deadline this often (``stop -t 0`` during a long grace).
STOP_POLL_S = 1.0
#: An owner id as a path component (ids are hex; nothing with a slash or dots only).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)


@dataclass(frozen=True, slots=True)
class DesiredTask:
    task_id: str
    workload_id: str
    owner: str
    image: str
    command: tuple[str, ...]
    env: dict[str, str]
    resources: Resources
    kill_grace_s: float
    desired: str
    log_offsets: dict[str, int] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    security: SecurityOptions = field(default_factory=SecurityOptions)
    policy: ContainerPolicy | None = None
    gpus: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    #: Service replicas: (container port, host port) pairs and the health check.
    port_map: tuple[tuple[int, int], ...] = ()
    health: HealthCheck | None = None
    #: The container the server heard the task ran in ("" before it ran).
    container_id: str = ""
    #: A service's networks (``core.networks.NetworkRef`` maps) and its UDP ports.
    networks: tuple[dict[str, Any], ...] = ()
    udp_ports: tuple[int, ...] = ()
    #: The first signal of a stop ("": SIGTERM); a checkpointing job's signal before
    #: a preemption or drain stop.
    stop_signal: str = ""
    #: Secret and config files (values!) of a start entry (``agent/secretfiles.py``).
    files: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @classmethod
    def from_entry(cls, entry: DesiredEntry) -> DesiredTask:
        """Parse a desired entry: its mounts, security options and policy, as maps on
        the wire, become their :mod:`dockyard.core` types."""
        spec = entry.template
        return cls(
            task_id=entry.task_id,
            workload_id=entry.workload_id,
            owner=entry.owner,
            image=entry.image,
            command=spec.command,
            env=dict(spec.env),
            resources=Resources(entry.cpu_millis, entry.memory_bytes),
            kill_grace_s=float(spec.kill_grace_s),
            desired=entry.desired,
            log_offsets=dict(entry.log_offsets),
            mounts=tuple(Mount.from_dict(m) for m in spec.mounts),
            security=SecurityOptions.from_dict(spec.security),
            policy=None if spec.policy is None else ContainerPolicy.from_dict(spec.policy),
            gpus=entry.gpus,
            ports=entry.ports,
            port_map=entry.port_map,
            health=_health_check(entry),
            container_id=entry.container_id,
            networks=spec.networks,
            udp_ports=spec.udp_ports,
            stop_signal=entry.stop_signal,
            files=entry.files,
        )


def _health_check(entry: DesiredEntry) -> HealthCheck | None:
    """The task's health check; one the server should not have accepted is dropped
    (logged) rather than failing the whole desired set."""
    try:
        return HealthCheck.from_dict(entry.template.health)
    except ValidationError as exc:
        log.warning("task %s: ignoring its health check: %s", entry.task_id, exc)
        return None


def _checkpoint_volume(task: DesiredTask, mounts: tuple[Mount, ...]) -> str:
    """The name of the task's checkpoint volume among ``mounts`` ("" if none): the
    job's own ``ckpt-<job>[-<index>]`` at CHECKPOINT_DIR (the driver labels it, so the
    agent's cleanup finds it once the job is over, ``agent/checkpoints.py``)."""
    own = checkpoint_name(task.workload_id, None)
    for m in mounts:
        if (
            m.kind == "volume"
            and m.target == CHECKPOINT_DIR
            and (m.source == own or m.source.startswith(f"{own}-"))
        ):
            return m.source
    return ""


class Reconciler:
    def __init__(
        self,
        driver: Driver,
        node_id: str,
        report: Callable[[TaskStatus], None],
        shipper: LogShipper,
        workers: int = 64,
        bind_address: str = "127.0.0.1",
        gpu_uuids: dict[int, str] | None = None,
    ) -> None:
        self._driver = driver
        self._bind_address = bind_address
        #: Runs the health checks of service replicas (set by the agent).
        self.health: HealthMonitor | None = None
        #: Service networks and their names (``agent/networks.py``).
        self.networks = NetworkManager(driver, node_id)
        self.networks.wanted = self.desired_networks
        #: Where replicas' secret and config files are written (the agent sets its data dir).
        self.files = SecretFiles(Path(tempfile.gettempdir()) / f"dockyard-secrets-{node_id}")
        #: A directory every node shares for checkpoints (AgentConfig.checkpoint_root).
        self.checkpoint_root: Path | None = None
        self._node_id = node_id
        self._report = report
        self._shipper = shipper
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._desired: dict[str, DesiredTask] = {}
        self._received = False
        self.generation = 0
        #: The server welcomed us again: its next desired set counts whatever its
        #: generation (a restored store may have set the node's generation back).
        self._reset_generation = False
        self.passes = 0  # reconcile passes done (agent metrics)
        self._busy: set[str] = set()  # a start or stop worker is acting on the task
        #: Stops in progress: when SIGKILL follows (monotonic; a later request may
        #: bring it nearer).
        self._stop_by: dict[str, float] = {}
        self._deferred: set[str] = set()  # busy when a pass looked: look again after
        self._watched: set[str] = set()  # a watcher waits for the container's exit
        self._finished: set[str] = set()  # terminal state reported by this process
        self._stopping: set[str] = set()  # we asked it to stop
        self._forced: set[str] = set()  # it needed SIGKILL
        self._log_counts: dict[str, dict[str, int]] = {}
        self._containers: dict[str, str] = {}  # watched task id -> container id
        self._started: dict[str, float] = {}  # task id -> when this process started it
        #: This node's GPU UUIDs by index, where known: what the runtime is given.
        self.gpu_uuids: dict[int, str] = dict(gpu_uuids or {})
        #: Returns and forgets a finished task's usage totals (set by the agent).
        self.final_usage: Callable[[str], TaskUsage | None] = lambda _: None
        #: Stops and removals; starts run on the task's watcher thread, at most
        #: ``workers`` at once (``_starts``), and go on to watch the container.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self._starts = threading.BoundedSemaphore(workers)
        self._watchers = Watchers()  # a container's watcher and log followers
        #: The last desired entries received and what they were parsed into, by task id
        #: (a set is re-sent whole whenever it changes; most entries have not).
        self._wire: dict[str, tuple[DesiredEntry, DesiredTask]] = {}
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    # -- control ----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self.networks.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self.networks.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._watchers.shutdown()

    def set_desired(self, desired: Desired) -> None:
        generation = desired.generation
        wire: dict[str, tuple[DesiredEntry, DesiredTask]] = {}
        for entry in desired.tasks:
            known = self._wire.get(entry.task_id)
            task = (
                known[1]
                if known is not None and known[0] == entry
                else DesiredTask.from_entry(entry)
            )
            wire[task.task_id] = (entry, task)
        tasks = {task_id: task for task_id, (_, task) in wire.items()}
        with self._lock:
            if generation < self.generation and not self._reset_generation:
                return
            self._reset_generation = False
            self._wire = wire
            self.generation = generation
            self._desired = tasks
            self._received = True
        self._wake.set()

    def welcomed(self) -> None:
        """The server answered a hello: accept the generation of its next desired set
        even if lower than ours (after a store restore it went down; rejecting every
        lower one would hold this node's set forever)."""
        with self._lock:
            self._reset_generation = True

    def running_count(self) -> int:
        with self._lock:
            return len(self._watched)

    def desired_networks(self) -> set[str]:
        """The ids of the service networks the desired tasks are on."""
        with self._lock:
            tasks = list(self._desired.values())
        return {str(n.get("id")) for t in tasks for n in t.networks if n.get("id")}

    def running_containers(self) -> dict[str, str]:
        with self._lock:
            return dict(self._containers)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RECONCILE_INTERVAL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile_once()
            except DriverError as exc:
                log.warning("reconcile failed: %s", exc)
            except Exception:
                log.exception("reconcile failed")

    # -- one pass ---------------------------------------------------------
    def reconcile_once(self) -> None:
        with self._lock:
            if not self._received:
                return
            desired = dict(self._desired)
        self.passes += 1
        actual = {c.task_id: c for c in self._driver.list(self._node_id)}
        for task_id, task in desired.items():
            self._converge(task, actual.get(task_id))
        for task_id, container in actual.items():
            if task_id not in desired:
                self._remove_stale(container)
        with self._lock:
            keep = set(desired) - self._finished
        self.files.prune(keep)  # secret files of tasks ended or no longer here

    def _converge(self, task: DesiredTask, container: ContainerStatus | None) -> None:
        tid = task.task_id
        with self._lock:
            if tid in self._busy:
                if task.desired == DesiredState.STOP and tid in self._stop_by:
                    # A stop request with a shorter grace (stop -t 0) hurries this one.
                    soon = time.monotonic() + task.kill_grace_s
                    self._stop_by[tid] = min(self._stop_by[tid], soon)
                self._deferred.add(tid)
                return
            finished = tid in self._finished
            watched = tid in self._watched
            if container is None and (finished or watched):
                return  # ended, or vanished (its watcher reports that): never re-created
            # It ran (the server has its container) and nothing here watched it go:
            # removed while this agent was away. Never created again under this id.
            vanished = container is None and bool(task.container_id)
            if task.desired == DesiredState.STOP:
                self._stopping.add(tid)
            self._busy.add(tid)
        if vanished and task.desired != DesiredState.STOP:
            self._release(tid)
            self._finish(
                TaskStatus(
                    tid,
                    TaskState.FAILED,
                    Reason.CONTAINER_VANISHED,
                    "the container was removed outside dockyard while the agent was away",
                    container_id=task.container_id,
                )
            )
            return
        if container is None:
            if task.desired == DesiredState.STOP:
                self._release(tid)
                self._finish(
                    TaskStatus(tid, TaskState.KILLED, Reason.KILLED, "stopped before it started")
                )
                return
            self._watchers.submit(self._start_task, task)
            return
        if container.status == "created" and not finished:
            self._watchers.submit(self._start_existing, task, container.container_id)
            return
        if not watched and not finished:
            self._begin_watch(
                task, container.container_id, adopted=container.running, running=container.running
            )
        if container.running and task.desired == DesiredState.STOP:
            self._pool.submit(
                self._stop_container,
                tid,
                container.container_id,
                task.kill_grace_s,
                False,
                task.stop_signal or "SIGTERM",
            )
            return
        self._release(tid)

    def _release(self, tid: str) -> None:
        """The task's worker is done; a pass that skipped it meanwhile runs again."""
        with self._lock:
            self._busy.discard(tid)
            again = tid in self._deferred
            self._deferred.discard(tid)
        if again:
            self._wake.set()

    def _finish(self, status: TaskStatus) -> None:
        """Report a task's end, once."""
        with self._lock:
            if status.task_id in self._finished:
                return
            self._finished.add(status.task_id)
        self._report(status)

    def _remove_stale(self, container: ContainerStatus) -> None:
        tid = container.task_id
        with self._lock:
            if tid in self._busy:
                self._deferred.add(tid)
                return
            self._busy.add(tid)
        self._pool.submit(self._stop_container, tid, container.container_id, STALE_GRACE_S, True)

    # -- workers ----------------------------------------------------------
    def _spec(self, task: DesiredTask) -> ContainerSpec:
        """The container spec; bind mounts are resolved and checked again here, on the node,
        right before create (a path may differ here from what the server saw)."""
        mounts = task.mounts
        if task.policy is not None:
            mounts = tuple(check(task.security, task.mounts, task.policy, os.path.realpath))
        else:
            mounts = tuple(
                Mount(os.path.realpath(m.source), m.target, m.read_only, m.kind)
                if m.kind == "bind"
                else m
                for m in task.mounts
            )
        if task.files:  # the agent's own read-only binds, after the owner's were checked
            mounts = (*mounts, *self.files.write(task.task_id, task.files))
        if self.checkpoint_root is not None:
            mounts = tuple(self._shared_checkpoint(task.owner, m) for m in mounts)
        networks: tuple[str, ...] = ()
        hosts: dict[str, str] = {}
        if task.networks and not task.security.network_mode:
            networks, hosts = self.networks.prepare(task.networks)
        return ContainerSpec(
            task_id=task.task_id,
            node_id=self._node_id,
            workload_id=task.workload_id,
            owner=task.owner,
            image=task.image,
            command=task.command,
            env=task.env,
            resources=task.resources,
            mounts=mounts,
            security=task.security,
            gpus=task.gpus,
            gpu_uuids=tuple(self.gpu_uuids.get(g, "") for g in task.gpus),
            ports=task.ports,
            port_map=task.port_map,
            bind_address=self._bind_address,
            udp_ports=task.udp_ports,
            networks=networks,
            extra_hosts=hosts,
            checkpoint_volume=_checkpoint_volume(task, mounts),
        )

    def _shared_checkpoint(self, owner: str, mount: Mount) -> Mount:
        """With a shared ``checkpoint_root``, a checkpoint volume (``ckpt-...`` at
        CHECKPOINT_DIR) is the directory ``<root>/<owner>/<name>`` there instead, so
        it follows the job's attempts to any node; on an error, the volume."""
        root = self.checkpoint_root
        if (
            root is None
            or mount.kind != "volume"
            or mount.target != CHECKPOINT_DIR
            or not mount.source.startswith("ckpt-")
            or not _SAFE_NAME.fullmatch(owner)
        ):
            return mount
        path = root / owner / mount.source
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("checkpoint dir %s: %s; using a volume of this node", path, exc)
            return mount
        return Mount(str(path), mount.target, False, "bind")

    def _start_task(self, task: DesiredTask) -> None:
        """Pull, create and start the task's container, then watch it on this same
        thread for the container's life (one thread per task, not one per step)."""
        tid = task.task_id
        container_id = None
        try:
            with self._starts:
                container_id = self._create_and_start(task)
        finally:
            self._release(tid)
        if container_id is not None:
            self._watch(task, container_id)

    def _create_and_start(self, task: DesiredTask) -> str | None:
        """Pull, create and start; the container's id once it is started and watched
        (its watch is registered before the caller releases the task), None when a
        step failed (reported) or the container exists already (the next pass adopts)."""
        tid = task.task_id
        try:
            if not self._driver.has_image(task.image):
                self._report(TaskStatus(tid, TaskState.PULLING, "pulling", f"pulling {task.image}"))
                self._driver.ensure_image(task.image, self._pull_progress(tid))
        except DriverError as exc:
            self._finish(TaskStatus(tid, TaskState.FAILED, exc.reason, str(exc)))
            return None
        self._report(TaskStatus(tid, TaskState.STARTING, "creating"))
        try:
            container_id = self._driver.create(self._spec(task))
        except PolicyViolation as exc:
            self._finish(
                TaskStatus(tid, TaskState.FAILED, "policy_violation", f"{exc.rule}: {exc.message}")
            )
            return None
        except ContainerExists:
            self._wake.set()  # the next pass adopts it
            return None
        except DriverError as exc:
            self._finish(TaskStatus(tid, TaskState.FAILED, exc.reason, str(exc)))
            return None
        return container_id if self._start_container(task, container_id) else None

    def _pull_progress(self, tid: str) -> Callable[[str], None]:
        """Report pull progress and retries as ``pulling`` status messages."""

        def report(text: str) -> None:
            self._report(TaskStatus(tid, TaskState.PULLING, "pulling", text))

        return report

    def _start_existing(self, task: DesiredTask, container_id: str) -> None:
        """Start a container that was created but not started, then watch it here."""
        try:
            with self._starts:
                started = self._start_container(task, container_id)
        finally:
            self._release(task.task_id)
        if started:
            self._watch(task, container_id)

    def _start_container(self, task: DesiredTask, container_id: str) -> bool:
        """Start it and register its watch; False if the start failed (reported) or
        something watches it already."""
        tid = task.task_id
        try:
            self._driver.start(container_id)
        except DriverError as exc:
            self._finish(
                TaskStatus(
                    tid, TaskState.FAILED, Reason.START_FAILED, str(exc), container_id=container_id
                )
            )
            return False
        with self._lock:
            self._started[tid] = time.monotonic()
        self._report(TaskStatus(tid, TaskState.RUNNING, "started", container_id=container_id))
        return self._track(task, container_id, adopted=False)

    def _stop_container(
        self, tid: str, container_id: str, grace: float, remove: bool, first: str = "SIGTERM"
    ) -> None:
        """``first`` (SIGTERM, or a checkpointing job's signal), the grace, SIGKILL."""
        self._unwatch_health(tid)  # a stopping replica is not failing its checks
        try:
            deadline = time.monotonic() + grace
            with self._lock:
                self._stopping.add(tid)
                self._stop_by[tid] = deadline
            self._driver.signal(container_id, first)
            with self._lock:
                started = self._started.get(tid)
            settled = None if started is None else started + INIT_SETTLE_S
            if (
                settled is not None
                and time.monotonic() < settled < deadline
                and not self._driver.wait(container_id, timeout=settled - time.monotonic())
            ):
                self._driver.signal(container_id, first)  # the first may have been lost
            if not self._wait_stopped(tid, container_id):
                with self._lock:
                    self._forced.add(tid)
                self._driver.signal(container_id, "SIGKILL")
                self._driver.wait(container_id, timeout=30)
            if remove:
                self._driver.remove(container_id)
                with self._lock:
                    for tracked in (self._finished, self._stopping, self._forced):
                        tracked.discard(tid)
                    self._log_counts.pop(tid, None)
                    self._started.pop(tid, None)
        except ContainerNotFound:
            pass
        except DriverError as exc:
            log.warning("stopping %s failed: %s", tid, exc)
        finally:
            with self._lock:
                self._stop_by.pop(tid, None)
            self._release(tid)

    def _wait_stopped(self, tid: str, container_id: str) -> bool:
        """Whether the container exited before its stop deadline (re-read every
        STOP_POLL_S: a later stop request may bring it nearer)."""
        while True:
            with self._lock:
                left = self._stop_by.get(tid, 0.0) - time.monotonic()
            if left <= 0:
                return False
            if self._driver.wait(container_id, timeout=min(left, STOP_POLL_S)):
                return True

    def _begin_watch(
        self, task: DesiredTask, container_id: str, adopted: bool, running: bool = True
    ) -> None:
        """Track a container found running (or exited) and watch it on a watcher thread."""
        if self._track(task, container_id, adopted, running):
            self._watchers.submit(self._watch, task, container_id)

    def _track(
        self, task: DesiredTask, container_id: str, adopted: bool, running: bool = True
    ) -> bool:
        """Register the container as watched; False if something watches it already."""
        with self._lock:
            if task.task_id in self._watched:
                return False
            self._watched.add(task.task_id)
            self._containers[task.task_id] = container_id
            self._log_counts[task.task_id] = {"stdout": 0, "stderr": 0}
        if running and task.health is not None and self.health is not None:
            self.health.watch(
                task.task_id, container_id, task.health, task.port_map, announce=not adopted
            )
        if adopted:
            self._report(
                TaskStatus(
                    task.task_id, TaskState.RUNNING, Reason.ADOPTED, container_id=container_id
                )
            )
        return True

    def _unwatch_health(self, tid: str) -> None:
        if self.health is not None:
            self.health.unwatch(tid)

    def _follow_logs(self, tid: str, container_id: str, stream: str, offset: int) -> None:
        """Ship the stream's lines after ``offset``. A stream that breaks (or ends)
        while the container still runs is opened again; lines it read already are
        skipped (a stream starts at the container's first line)."""
        seq = 0
        pause = LOG_REOPEN_S
        try:
            while True:
                read, broken = 0, False
                try:
                    for line in self._driver.logs(container_id, stream, follow=True):
                        read += 1
                        if read <= seq:
                            continue  # shipped before the stream broke
                        seq = read
                        if seq > offset:
                            self._shipper.add(tid, stream, seq, line.timestamp, line.text)
                except DriverError as exc:
                    broken = True
                    if pause == LOG_REOPEN_S:  # once, not at every re-open
                        log.warning("log stream of %s ended early: %s", tid, exc)
                if self._stop.is_set():
                    return
                try:
                    running = self._driver.inspect(container_id).running
                except DriverError:
                    return  # gone: nothing more to read
                if not running and not broken:
                    return  # read to the end
                if self._stop.wait(pause):
                    return
                pause = min(pause * 2, LOG_REOPEN_MAX_S)
        finally:
            with self._lock:
                counts = self._log_counts.setdefault(tid, {})
                counts[stream] = seq

    def _watch(self, task: DesiredTask, container_id: str) -> None:
        """Follow stdout here and stderr on a second thread until the container exits;
        then report its end (after its last log lines)."""
        tid = task.task_id
        stderr = self._watchers.submit(
            self._follow_logs, tid, container_id, "stderr", task.log_offsets.get("stderr", 0)
        )
        self._follow_logs(tid, container_id, "stdout", task.log_offsets.get("stdout", 0))
        try:
            while not self._driver.wait(container_id, timeout=WAIT_SLICE_S):
                if self._stop.is_set():
                    return
            self._unwatch_health(tid)
            wait([stderr], timeout=LOG_JOIN_S)
            status = self._driver.inspect(container_id)
        except DriverError as exc:
            self._unwatch_health(tid)
            with self._lock:
                stopping = tid in self._stopping
            if isinstance(exc, ContainerNotFound) and not stopping:
                # Removed behind our back (docker rm -f): this attempt is over. The
                # server decides about another (a new task), never a second container
                # under this task's id.
                self._shipper.drain(LOG_DRAIN_S)
                self._finish(
                    TaskStatus(
                        tid,
                        TaskState.FAILED,
                        Reason.CONTAINER_VANISHED,
                        "the container was removed outside dockyard",
                        container_id=container_id,
                    )
                )
            with self._lock:
                self._watched.discard(tid)
                self._containers.pop(tid, None)
            log.warning("watching %s failed: %s", tid, exc)
            return
        with self._lock:
            stopping = tid in self._stopping
            forced = tid in self._forced
            counts = dict(self._log_counts.get(tid, {}))
        state, reason = outcome(status.exit_code, status.oom_killed, stopping)
        with self._lock:
            self._containers.pop(tid, None)
            self._started.pop(tid, None)
        usage = self.final_usage(tid)
        self._shipper.drain(LOG_DRAIN_S)  # its lines before its end
        self._finish(
            TaskStatus(
                tid,
                state,
                reason,
                status.error,
                exit_code=status.exit_code,
                container_id=container_id,
                started_at=status.started_at,
                finished_at=status.finished_at,
                forced=forced,
                log_lines_total=sum(counts.values()),
                usage=usage,
            )
        )
        with self._lock:
            self._watched.discard(tid)
