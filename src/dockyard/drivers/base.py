"""The runtime interface every driver implements, and the values it exchanges."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dockyard.core.resources import Resources
from dockyard.core.security import Mount, SecurityOptions

#: Docker labels that mark and identify dockyard's containers.
LABEL_MANAGED = "io.dockyard.managed"
LABEL_TASK = "io.dockyard.task"
LABEL_NODE = "io.dockyard.node"
LABEL_WORKLOAD = "io.dockyard.workload"
LABEL_OWNER = "io.dockyard.owner"
#: On networks made for service networks: the cluster-wide network id.
LABEL_NETWORK = "io.dockyard.network"
#: On a checkpointing job's volume: its checkpoint name (``ckpt-<job>[-<index>]``).
LABEL_CHECKPOINT = "io.dockyard.checkpoint"

DEFAULT_PIDS_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything a driver needs to create one task's container."""

    task_id: str
    node_id: str
    workload_id: str
    owner: str
    image: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    pids_limit: int = DEFAULT_PIDS_LIMIT
    mounts: tuple[Mount, ...] = ()
    security: SecurityOptions = field(default_factory=SecurityOptions)
    #: GPU device indices given to the task (exclusive), and host ports it publishes.
    gpus: tuple[int, ...] = ()
    #: The node's UUIDs of those GPUs, in the same order ("" where unknown).
    gpu_uuids: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    #: Service ports: (container port, host port) pairs, host ports allocated at placement.
    port_map: tuple[tuple[int, int], ...] = ()
    #: The host address every published port binds to (the node's advertised address).
    bind_address: str = "127.0.0.1"
    #: Container ports of ``port_map`` also published over UDP (same host port).
    udp_ports: tuple[int, ...] = ()
    #: Docker networks to attach to (the first at create), and /etc/hosts entries.
    networks: tuple[str, ...] = ()
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    #: The source of the named volume in ``mounts`` that is the job's checkpoint: the
    #: driver creates it first, labelled (``checkpoint_labels``), so it can be found.
    checkpoint_volume: str = ""

    def checkpoint_labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "1",
            LABEL_CHECKPOINT: self.checkpoint_volume,
            LABEL_OWNER: self.owner,
            LABEL_WORKLOAD: self.workload_id,
            LABEL_NODE: self.node_id,
        }

    def published(self) -> dict[str, tuple[str, int]]:
        """Docker's ``ports`` argument: job ports as themselves, service ports as mapped,
        all bound on ``bind_address`` only (never on every interface by default).

        A replica's allocated host ports are also in ``ports`` (the node's port
        accounting); they are published once, as mapped."""
        mapped = {h for _, h in self.port_map}
        out = {f"{p}/tcp": (self.bind_address, p) for p in self.ports if p not in mapped}
        out.update({f"{c}/tcp": (self.bind_address, h) for c, h in self.port_map})
        udp = set(self.udp_ports)
        out.update({f"{c}/udp": (self.bind_address, h) for c, h in self.port_map if c in udp})
        return out

    def gpu_device_ids(self) -> list[str]:
        """The runtime's names of the task's GPUs: their UUIDs when the node knows every
        one (stable across renumbering), else their host indices."""
        return list(self.gpu_uuids) if self._uuids_known() else [str(g) for g in self.gpus]

    def _uuids_known(self) -> bool:
        return len(self.gpu_uuids) == len(self.gpus) and all(self.gpu_uuids)

    def gpu_env(self) -> dict[str, str]:
        """NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES for the task's GPUs; they override
        the task's own environment.

        NVIDIA's runtime reads NVIDIA_VISIBLE_DEVICES on the host side, so it names the
        devices as the host does. Inside the container only those devices are visible,
        numbered from 0, so CUDA_VISIBLE_DEVICES takes their UUIDs or those numbers,
        never host indices. A task without GPUs gets ``void``: an image or spec saying
        ``all`` must not reach the node's GPUs where NVIDIA's runtime is the default."""
        if not self.gpus:
            return {"NVIDIA_VISIBLE_DEVICES": "void"}
        ids = self.gpu_device_ids()
        cuda = ids if self._uuids_known() else [str(i) for i in range(len(self.gpus))]
        return {"NVIDIA_VISIBLE_DEVICES": ",".join(ids), "CUDA_VISIBLE_DEVICES": ",".join(cuda)}

    @property
    def container_name(self) -> str:
        """Docker enforces unique names, so a task can never get two containers."""
        return f"dockyard-{self.task_id}"

    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "1",
            LABEL_TASK: self.task_id,
            LABEL_NODE: self.node_id,
            LABEL_WORKLOAD: self.workload_id,
            LABEL_OWNER: self.owner,
        }


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """A node-local network a driver made for a service network (docs/networking.md):
    its runtime name, the host's bridge interface, the subnet, the part of it the
    runtime gives containers (``containers``) and the part left for the node proxy's
    service addresses (``services``), both CIDRs. ``containers`` counts attached ones."""

    name: str
    bridge: str
    subnet: str
    gateway: str
    containers_range: str
    services_range: str
    internal: bool = False
    containers: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """What the runtime says about one container."""

    container_id: str
    task_id: str
    status: str  # created, running, exited, dead, ...
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    error: str = ""
    #: The node id it is labelled with (filled in by ``list_foreign``).
    node_id: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    @property
    def exited(self) -> bool:
        return self.status in ("exited", "dead")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a container wrote, with the runtime's timestamp."""

    stream: str  # "stdout" or "stderr"
    timestamp: str
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """A resource sample of one container."""

    cpu_seconds: float
    memory_bytes: int
    max_memory_bytes: int = 0


class ExecHandle(Protocol):
    """A command running in a container (``docker exec``)."""

    def output(self) -> Iterator[tuple[str, bytes]]:
        """(stream, bytes) chunks until the command's output ends; ``stdout`` only with a tty."""
        ...

    def write(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    def close(self) -> None:
        """Hang up (close stdin and the stream)."""
        ...

    def exit_code(self) -> int | None: ...


class Driver(Protocol):
    """A container runtime. Implementations: Docker (real) and sim (hollow nodes)."""

    name: str

    def capacity(self) -> Resources:
        """Total CPU and memory this node offers."""
        ...

    def has_image(self, image: str) -> bool:
        """True when ``image`` is present locally (no pull needed)."""
        ...

    def ensure_image(self, image: str, progress: Callable[[str], None] | None = None) -> None:
        """Make ``image`` available locally; raise ImageNotFound/ImagePullFailed.

        ``progress`` gets human-readable pull progress and retry notices."""
        ...

    def build(
        self,
        context: bytes,
        tag: str,
        on_line: Callable[[str], None],
        dockerfile: str = "Dockerfile",
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Build ``tag`` from a tar of the context, calling ``on_line`` with each output
        line; return the image id. BuildFailed on a build error."""
        ...

    def exec(
        self,
        container_id: str,
        command: list[str],
        tty: bool = False,
        stdin: bool = False,
        cols: int = 80,
        rows: int = 24,
    ) -> ExecHandle:
        """Start ``command`` in the running container; ContainerNotFound if it is gone."""
        ...

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) the container; return its id. ContainerExists if present."""
        ...

    def start(self, container_id: str) -> None: ...

    def list_foreign(self, node_id: str) -> list[ContainerStatus]:
        """Every dockyard container on this runtime labelled with *another* node id,
        each with its ``node_id`` (several agents may share one Docker Engine)."""
        ...

    def list(self, node_id: str) -> list[ContainerStatus]:
        """All containers (running or exited) this node's agent manages."""
        ...

    def inspect(self, container_id: str) -> ContainerStatus: ...

    def wait(self, container_id: str, timeout: float | None = None) -> bool:
        """Block until the container exits (True) or ``timeout`` passes (False)."""
        ...

    def signal(self, container_id: str, signal: str) -> None:
        """Send a signal (``SIGTERM``, ``SIGKILL``) to the container's main process."""
        ...

    def remove(self, container_id: str) -> None: ...

    def ensure_network(
        self, name: str, labels: Mapping[str, str], internal: bool
    ) -> NetworkInfo | None:
        """The node-local network ``name``, created if missing (a bridge, ``internal``:
        no route out); None where the runtime has no networks (the simulated driver)."""
        ...

    def service_networks(self, node_id: str) -> Sequence[NetworkInfo]:
        """The networks ``ensure_network`` made for this node, with container counts."""
        ...

    def remove_network(self, name: str) -> None:
        """Remove a network no container uses any more (a missing one is fine)."""
        ...

    def refresh_hosts(self, network: str, entries: Mapping[str, str]) -> None:
        """Write ``entries`` (name -> address) into the ``/etc/hosts`` of every container
        on ``network``, replacing what an earlier call wrote there for it."""
        ...

    def checkpoint_volumes(self) -> Sequence[tuple[str, str]]:
        """Every checkpoint volume on this runtime (any node's: a volume outlives the
        agent that made it), as ``(owner, checkpoint name)``."""
        ...

    def remove_volume(self, owner: str, name: str) -> bool:
        """Remove the owner's named volume: True once it is gone (or was), False while
        a container (running or not) still uses it."""
        ...

    def images(self) -> tuple[str, ...]:
        """The images present on this node, as ``name:tag`` (reported for image locality)."""
        ...

    def prune(self, node_id: str) -> int:
        """Remove dead dockyard containers this node's reconciler does not own: exited
        or dead task containers labelled with another (earlier) node id. Returns how many."""
        ...

    def logs(self, container_id: str, stream: str, follow: bool) -> Iterator[LogLine]:
        """Lines of one stream from the container's start; with ``follow`` until exit."""
        ...

    def usage(self, container_id: str) -> Usage | None: ...
