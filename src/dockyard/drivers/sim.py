"""Simulated driver: hollow containers kept in memory, for scale tests and benchmarks.

A simulated container understands a tiny command language so tests can make it
behave: ``sleep SECONDS`` runs that long then exits 0, ``exit CODE`` exits at once
with CODE, ``oom`` exits as if the kernel killed it for memory; anything else runs
until signalled. The task's environment can say the same for any command:
``DOCKYARD_SIM_RUN_FOR=2s`` (or ``500ms``, ``0``) and ``DOCKYARD_SIM_EXIT_CODE=1``;
``DOCKYARD_SIM_LOG_LINES=N`` writes N more numbered lines when it starts.
Images whose name contains ``missing`` do not exist.

For tests that run the agent as a process: when the agent's environment sets
``DOCKYARD_SIM_JOURNAL`` to a file, every create, start, signal and remove is
appended to it as ``op task_id container_id [signal]`` (one line each), so a test
can count how often each command was applied.
"""

from __future__ import annotations

import io
import os
import queue
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dockyard.core.ids import new_id
from dockyard.core.image_ref import tagged
from dockyard.core.resources import Resources
from dockyard.drivers.base import ContainerSpec, ContainerStatus, LogLine, NetworkInfo, Usage
from dockyard.drivers.errors import (
    BuildFailed,
    ContainerExists,
    ContainerNotFound,
    ImageNotFound,
)

_SIGNAL_EXIT = {"SIGTERM": 143, "SIGKILL": 137, "SIGINT": 130}


@dataclass
class _SimContainer:
    spec: ContainerSpec
    container_id: str
    status: str = "created"
    exit_code: int | None = None
    oom_killed: bool = False
    started: float = 0.0
    ignores_sigterm: bool = False
    run_for: float | None = None
    lines: list[LogLine] = field(default_factory=list)
    #: Notified when this container starts, is signalled or removed (shares the
    #: driver's lock): a change wakes only its own waiters, not every thread of the node.
    changed: threading.Condition = field(default_factory=threading.Condition)


def _duration(text: str) -> float:
    """``2s``, ``500ms``, ``1m`` or plain seconds."""
    text = text.strip().lower()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return max(0.0, float(text[: -len(suffix)]) * factor)
    return max(0.0, float(text))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


class SimDriver:
    """An in-memory runtime for hollow nodes."""

    name = "sim"

    def __init__(self, cpu_millis: int = 4000, memory_bytes: int = 8 * 1024**3) -> None:
        self._capacity = Resources(cpu_millis, memory_bytes)
        self._containers: dict[str, _SimContainer] = {}
        self._names: dict[str, str] = {}
        #: Checkpoint volumes made by ``create``: (owner, name) -> their labels.
        self.volumes: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.RLock()
        #: Images this hollow node reports having besides those its containers used.
        self.extra_images: set[str] = set()
        self._journal = os.environ.get("DOCKYARD_SIM_JOURNAL", "")

    def _record(self, op: str, container: _SimContainer, extra: str = "") -> None:
        """Append one applied operation to the journal file, if one is set."""
        if self._journal:
            with open(self._journal, "a", encoding="utf-8") as out:
                line = f"{op} {container.spec.task_id} {container.container_id} {extra}"
                out.write(line.rstrip() + "\n")

    def capacity(self) -> Resources:
        return self._capacity

    def has_image(self, image: str) -> bool:
        return "missing" not in image

    def ensure_image(self, image: str, progress: Callable[[str], None] | None = None) -> None:
        if "missing" in image:
            raise ImageNotFound(f"image {image} not found")

    def build(
        self,
        context: bytes,
        tag: str,
        on_line: Callable[[str], None],
        dockerfile: str = "Dockerfile",
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Echo each Dockerfile instruction as a step; ``RUN false`` fails the build."""
        try:
            with tarfile.open(fileobj=io.BytesIO(context)) as tar:
                member = tar.extractfile(dockerfile)
                text = member.read().decode() if member is not None else ""
        except (tarfile.TarError, KeyError) as exc:
            raise BuildFailed(f"cannot read {dockerfile}: {exc}") from exc
        steps = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        for number, step in enumerate(steps, 1):
            on_line(f"Step {number}/{len(steps)} : {step}")
            if step.upper().startswith("RUN") and step.split()[1:2] == ["false"]:
                raise BuildFailed(f"The command '{step[4:]}' returned a non-zero code: 1")
        on_line(f"Successfully tagged {tag}")
        with self._lock:  # the hollow node now has the image (listed in images())
            self.extra_images.add(tagged(tag))
        return "sha256:" + new_id()

    def exec(
        self,
        container_id: str,
        command: list[str],
        tty: bool = False,
        stdin: bool = False,
        cols: int = 80,
        rows: int = 24,
    ) -> SimExec:
        with self._lock:
            container = self._get(container_id)
            if container.status != "running":
                raise ContainerNotFound(f"container {container_id} is not running")
        return SimExec(list(command))

    def create(self, spec: ContainerSpec) -> str:
        with self._lock:
            if spec.container_name in self._names:
                raise ContainerExists(spec.container_name)
            container = _SimContainer(
                spec=spec, container_id=new_id() * 2, changed=threading.Condition(self._lock)
            )
            cmd = list(spec.command)
            if cmd[:1] == ["sleep"] and len(cmd) > 1:
                container.run_for = float(cmd[1])
            elif cmd[:1] == ["exit"] and len(cmd) > 1:
                container.run_for = 0.0
                container.exit_code = int(cmd[1])
            elif cmd[:1] == ["oom"]:
                container.run_for = 0.0
                container.oom_killed = True
                container.exit_code = 137
            elif cmd[:1] == ["ignore-sigterm"]:
                container.ignores_sigterm = True
            run_for = spec.env.get("DOCKYARD_SIM_RUN_FOR")
            if run_for is not None:
                container.run_for = _duration(run_for)
            exit_code = spec.env.get("DOCKYARD_SIM_EXIT_CODE")
            if exit_code is not None:
                container.exit_code = int(exit_code)
                if container.run_for is None:
                    container.run_for = 0.0
            if spec.checkpoint_volume:  # as Docker: made once, kept across attempts
                key = (spec.owner, spec.checkpoint_volume)
                self.volumes.setdefault(key, spec.checkpoint_labels())
            self._containers[container.container_id] = container
            self._names[spec.container_name] = container.container_id
            self._record("create", container)
            return container.container_id

    def start(self, container_id: str) -> None:
        with self._lock:
            container = self._get(container_id)
            container.status = "running"
            container.started = time.monotonic()
            container.lines.append(
                LogLine("stdout", _now(), f"sim: {' '.join(container.spec.command)}")
            )
            extra = int(container.spec.env.get("DOCKYARD_SIM_LOG_LINES", "0") or 0)
            container.lines.extend(
                LogLine("stdout", _now(), f"line {n}") for n in range(1, extra + 1)
            )
            self._record("start", container)
            self._notify(container)

    def _tick(self, container: _SimContainer) -> None:
        if container.status != "running" or container.run_for is None:
            return
        if time.monotonic() - container.started >= container.run_for:
            container.status = "exited"
            if container.exit_code is None:
                container.exit_code = 0

    def _snapshot(self, container: _SimContainer) -> ContainerStatus:
        self._tick(container)
        return ContainerStatus(
            container_id=container.container_id,
            task_id=container.spec.task_id,
            status=container.status,
            exit_code=container.exit_code if container.status == "exited" else None,
            oom_killed=container.oom_killed,
        )

    def list_foreign(self, node_id: str) -> list[ContainerStatus]:
        with self._lock:
            return [
                replace(self._snapshot(c), node_id=c.spec.node_id)
                for c in self._containers.values()
                if c.spec.node_id != node_id
            ]

    def list(self, node_id: str) -> list[ContainerStatus]:
        with self._lock:
            return [
                self._snapshot(c) for c in self._containers.values() if c.spec.node_id == node_id
            ]

    def inspect(self, container_id: str) -> ContainerStatus:
        with self._lock:
            return self._snapshot(self._get(container_id))

    def wait(self, container_id: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                container = self._get(container_id)
                self._tick(container)
                if container.status == "exited":
                    return True
                now = time.monotonic()
                remaining = None if deadline is None else deadline - now
                if remaining is not None and remaining <= 0:
                    return False
                # Sleep until the deadline or the container's own end, whichever is first;
                # signals and removals notify. (Polling here made thousands of hollow-node
                # threads wake 20 times a second.)
                until_exit = (
                    None
                    if container.run_for is None or container.status != "running"
                    else max(0.0, container.started + container.run_for - now) + 0.001
                )
                waits = [w for w in (remaining, until_exit) if w is not None]
                container.changed.wait(min(waits) if waits else None)

    def signal(self, container_id: str, signal: str) -> None:
        with self._lock:
            container = self._get(container_id)
            if container.status != "running":
                return
            self._record("signal", container, signal)
            if signal == "SIGTERM" and container.ignores_sigterm:
                return
            container.status = "exited"
            container.exit_code = _SIGNAL_EXIT.get(signal, 137)
            self._notify(container)

    def checkpoint_volumes(self) -> Sequence[tuple[str, str]]:
        with self._lock:
            return list(self.volumes)

    def remove_volume(self, owner: str, name: str) -> bool:
        """As Docker: refused while any container (running or exited) mounts it."""
        with self._lock:
            for c in self._containers.values():
                if c.spec.owner == owner and any(
                    m.kind == "volume" and m.source == name for m in c.spec.mounts
                ):
                    return False
            self.volumes.pop((owner, name), None)
            return True

    def images(self) -> tuple[str, ...]:
        """A hollow node "has" the images its containers used (and any it was given)."""
        with self._lock:
            used = {tagged(c.spec.image) for c in self._containers.values()}
            return tuple(sorted(self.extra_images | used))

    def prune(self, node_id: str) -> int:
        with self._lock:
            dead = [
                cid
                for cid, c in self._containers.items()
                if c.spec.node_id != node_id and self._snapshot(c).exited
            ]
            for cid in dead:
                del self._containers[cid]
        return len(dead)

    def remove(self, container_id: str) -> None:
        with self._lock:
            container = self._containers.pop(container_id, None)
            if container is not None:
                self._record("remove", container)
                self._names.pop(container.spec.container_name, None)
                self._notify(container)

    # Hollow nodes have no networks: service discovery is a Docker-driver feature.
    def ensure_network(
        self, name: str, labels: Mapping[str, str], internal: bool
    ) -> NetworkInfo | None:
        return None

    def service_networks(self, node_id: str) -> Sequence[NetworkInfo]:
        return []

    def remove_network(self, name: str) -> None:
        return None

    def refresh_hosts(self, network: str, entries: Mapping[str, str]) -> None:
        return None

    def logs(self, container_id: str, stream: str, follow: bool) -> Iterator[LogLine]:
        with self._lock:
            lines = [line for line in self._get(container_id).lines if line.stream == stream]
        yield from lines
        if follow:
            self.wait(container_id)

    def usage(self, container_id: str) -> Usage | None:
        with self._lock:
            container = self._containers.get(container_id)
            if container is None:
                return None
            return Usage(cpu_seconds=0.0, memory_bytes=container.spec.resources.memory_bytes // 4)

    @staticmethod
    def _notify(container: _SimContainer) -> None:
        container.changed.notify_all()

    def _get(self, container_id: str) -> _SimContainer:
        try:
            return self._containers[container_id]
        except KeyError:
            raise ContainerNotFound(container_id) from None


class SimExec:
    """A simulated exec: ``echo ARGS`` prints them, ``exit N`` exits N (also as
    ``sh -c 'exit N'``), ``cat`` echoes its input until hung up; anything else prints
    what it would run and exits 0."""

    def __init__(self, command: list[str]) -> None:
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._code: int | None = None
        self._echo = command[:1] == ["cat"]
        if command[:2] == ["sh", "-c"] and command[2:3] and command[2].startswith("exit "):
            command = command[2].split()  # --health-cmd 'exit N'
        head = command[:1]
        if head == ["echo"]:
            self._finish(" ".join(command[1:]).encode() + b"\n", 0)
        elif head == ["exit"] and len(command) == 2 and command[1].isdigit():
            self._finish(b"", int(command[1]))
        elif not self._echo:
            self._finish(f"sim exec: {' '.join(command)}\n".encode(), 0)

    def _finish(self, data: bytes, code: int) -> None:
        if data:
            self._chunks.put(data)
        self._code = code
        self._chunks.put(None)

    def output(self) -> Iterator[tuple[str, bytes]]:
        while (chunk := self._chunks.get()) is not None:
            yield "stdout", chunk

    def write(self, data: bytes) -> None:
        if self._echo and self._code is None:
            self._chunks.put(data)

    def resize(self, cols: int, rows: int) -> None:
        return None

    def close(self) -> None:
        if self._code is None:
            self._finish(b"", 0)

    def exit_code(self) -> int | None:
        return self._code
