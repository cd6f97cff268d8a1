"""Workload specifications and their validation."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockyard.core.arrays import parse_array
from dockyard.core.dependencies import parse_after
from dockyard.core.errors import ValidationError
from dockyard.core.image_ref import validate_image
from dockyard.core.policy import RestartMode, RestartPolicy
from dockyard.core.resources import Resources, parse_cpu, parse_memory
from dockyard.core.security import Mount, SecurityOptions, parse_mount, validate_mount

#: Matched with ``fullmatch``: a ``$`` would also match before a trailing newline.
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", re.ASCII)
#: Environment names: Docker takes dots and dashes too (Elasticsearch's discovery.type).
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*", re.ASCII)
#: The same grammars as JSON Schema patterns (anchored), for the API's document.
NAME_PATTERN = f"^{_NAME_RE.pattern}$"
ENV_KEY_PATTERN = f"^{_ENV_KEY_RE.pattern}$"

DEFAULT_CPU = "0.1"
DEFAULT_MEMORY = "128m"
DEFAULT_KILL_GRACE_S = 10.0
MAX_KILL_GRACE_S = 3600.0
MAX_COMMAND_ARGS = 4096
MAX_RUNTIME_LIMIT_S = 365 * 86400.0
MAX_PRIORITY = 1000
MAX_GPUS = 64
MAX_GANG = 1024
SCHEDULING_ALGORITHMS = ("binpack", "spread")
#: Signals a job may ask for before a preemption or drain stop (docs/scheduler.md,
#: Checkpoints); the default of ``--checkpoint``.
CHECKPOINT_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGWINCH")
DEFAULT_CHECKPOINT_SIGNAL = "SIGUSR1"
#: Where a checkpointing job's per-job volume is mounted ($DOCKYARD_CHECKPOINT_DIR).
CHECKPOINT_DIR = "/dockyard/checkpoint"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A batch job: run one container to completion."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    kill_grace_s: float = DEFAULT_KILL_GRACE_S
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    max_runtime_s: float | None = None
    mounts: tuple[Mount, ...] = ()
    security: SecurityOptions = field(default_factory=SecurityOptions)
    # Scheduling: queue priority, label constraints (checked by scheduler.constraints),
    # host ports, whole GPUs, placement algorithm (binpack or spread).
    priority: int = 0
    constraints: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    gpus: int = 0
    algorithm: str = "binpack"
    # Batch (docs/batch.md): a job array's index expression (``1-100%10``); the
    # jobs it waits for (``ok:ID``, ``any:ID``, ``notok:ID``); gang jobs: members
    # placed all at once or none (``gang_nodes``: each on a node of its own).
    array: str = ""
    after: tuple[str, ...] = ()
    gang_size: int = 0
    gang_nodes: bool = False
    #: Preemption guard: never preempted before it ran this long.
    min_runtime_s: float = 0.0
    #: Cooperative checkpoint: this signal (not SIGTERM) before a preemption or
    #: drain stop, a per-job volume at CHECKPOINT_DIR; "" when off.
    checkpoint_signal: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "command": list(self.command),
            "env": dict(self.env),
            "cpu_millis": self.resources.cpu_millis,
            "memory_bytes": self.resources.memory_bytes,
            "kill_grace_s": self.kill_grace_s,
            "restart": self.restart.to_dict(),
            "max_runtime_s": self.max_runtime_s,
            "mounts": [m.to_dict() for m in self.mounts],
            "security": self.security.to_dict(),
            "priority": self.priority,
            "constraints": list(self.constraints),
            "ports": list(self.ports),
            "gpus": self.gpus,
            "algorithm": self.algorithm,
            "array": self.array,
            "after": list(self.after),
            "gang_size": self.gang_size,
            "gang_nodes": self.gang_nodes,
            "min_runtime_s": self.min_runtime_s,
            "checkpoint_signal": self.checkpoint_signal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """Rebuild a spec that was stored with :meth:`to_dict`."""
        return cls(
            name=data["name"],
            image=data["image"],
            command=tuple(data.get("command") or ()),
            env=dict(data.get("env") or {}),
            resources=Resources(int(data["cpu_millis"]), int(data["memory_bytes"])),
            kill_grace_s=float(data.get("kill_grace_s", DEFAULT_KILL_GRACE_S)),
            restart=RestartPolicy.from_dict(data.get("restart")),
            max_runtime_s=(
                None if data.get("max_runtime_s") is None else float(data["max_runtime_s"])
            ),
            mounts=tuple(Mount.from_dict(m) for m in data.get("mounts") or ()),
            security=SecurityOptions.from_dict(data.get("security")),
            priority=int(data.get("priority") or 0),
            constraints=tuple(str(c) for c in data.get("constraints") or ()),
            ports=tuple(int(p) for p in data.get("ports") or ()),
            gpus=int(data.get("gpus") or 0),
            algorithm=str(data.get("algorithm") or "binpack"),
            array=str(data.get("array") or ""),
            after=tuple(str(a) for a in data.get("after") or ()),
            gang_size=int(data.get("gang_size") or 0),
            gang_nodes=bool(data.get("gang_nodes")),
            min_runtime_s=float(data.get("min_runtime_s") or 0.0),
            checkpoint_signal=str(data.get("checkpoint_signal") or ""),
        )


def validate_name(name: str, field_name: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            field_name,
            "must be 1-63 characters of letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    return name


def build_job_spec(
    *,
    name: str,
    image: str,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cpu: str | float | int | None = None,
    memory: str | int | None = None,
    kill_grace_s: float | None = None,
    restart: str | Mapping[str, Any] | None = None,
    max_runtime_s: float | None = None,
    mounts: Sequence[str | Mapping[str, Any]] | None = None,
    security: Mapping[str, Any] | None = None,
    priority: int | None = None,
    constraints: Sequence[str] | None = None,
    ports: Sequence[int] | None = None,
    gpus: int | None = None,
    algorithm: str | None = None,
    array: str | None = None,
    after: Sequence[str] | None = None,
    gang_size: int | None = None,
    gang_nodes: bool = False,
    min_runtime_s: float | None = None,
    checkpoint_signal: str | None = None,
) -> JobSpec:
    """Validate raw user input and build a :class:`JobSpec`.

    Raises :class:`ValidationError` naming the first invalid field.
    """
    validate_name(name)
    validate_image(image)
    args = list(command or [])
    if len(args) > MAX_COMMAND_ARGS:
        raise ValidationError("command", f"has more than {MAX_COMMAND_ARGS} arguments")
    for index, arg in enumerate(args):
        if not isinstance(arg, str):
            raise ValidationError(f"command[{index}]", "must be a string")
        if "\x00" in arg:
            raise ValidationError(f"command[{index}]", "must not contain NUL bytes")
    environment = dict(env or {})
    for key, value in environment.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.fullmatch(key):
            raise ValidationError("env", f"invalid variable name {key!r}")
        if not isinstance(value, str) or "\x00" in value:
            raise ValidationError(f"env.{key}", "must be a string without NUL bytes")
    cpu_millis = parse_cpu(DEFAULT_CPU if cpu is None else cpu)
    memory_bytes = parse_memory(DEFAULT_MEMORY if memory is None else memory)
    grace = DEFAULT_KILL_GRACE_S if kill_grace_s is None else _float(kill_grace_s, "kill_grace_s")
    if not 0 <= grace <= MAX_KILL_GRACE_S:
        raise ValidationError("kill_grace_s", f"must be between 0 and {MAX_KILL_GRACE_S:g}")
    if isinstance(restart, str):
        if restart not in {m.value for m in RestartMode}:
            raise ValidationError(
                "restart", f"must be one of {', '.join(m.value for m in RestartMode)}"
            )
        policy = RestartPolicy(mode=RestartMode(restart))
    else:
        policy = RestartPolicy.from_dict(restart)
    runtime = None if max_runtime_s is None else _float(max_runtime_s, "max_runtime_s")
    if runtime is not None and not 0 < runtime <= MAX_RUNTIME_LIMIT_S:
        raise ValidationError("max_runtime_s", "must be more than 0 and at most a year")
    prio = 0 if priority is None else priority
    if isinstance(prio, bool) or not isinstance(prio, int) or abs(prio) > MAX_PRIORITY:
        raise ValidationError(
            "priority", f"must be an integer from -{MAX_PRIORITY} to {MAX_PRIORITY}"
        )
    gpu_count = 0 if gpus is None else gpus
    if isinstance(gpu_count, bool) or not isinstance(gpu_count, int):
        raise ValidationError("gpus", "must be a whole number of GPUs")
    if not 0 <= gpu_count <= MAX_GPUS:
        raise ValidationError("gpus", f"must be between 0 and {MAX_GPUS}")
    host_ports = list(ports or ())
    for index, port in enumerate(host_ports):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValidationError(f"ports[{index}]", "must be a port number from 1 to 65535")
    if len(set(host_ports)) != len(host_ports):
        raise ValidationError("ports", "lists a port twice")
    algo = algorithm or "binpack"
    if algo not in SCHEDULING_ALGORITHMS:
        raise ValidationError("algorithm", f"must be one of {', '.join(SCHEDULING_ALGORITHMS)}")
    wanted = list(constraints or ())
    for index, text in enumerate(wanted):
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"constraints[{index}]", "must be a constraint such as zone=a")
    array_text = parse_array(array).text() if array else ""
    dependencies = tuple(d.text() for d in parse_after(after or ()))
    gang = 0 if gang_size is None else gang_size
    if isinstance(gang, bool) or not isinstance(gang, int) or not 0 <= gang <= MAX_GANG:
        raise ValidationError("gang_size", f"must be a whole number from 0 to {MAX_GANG}")
    if gang_nodes and gang < 1:
        raise ValidationError("gang_nodes", "needs gang_size (the number of nodes)")
    if gang and array_text:
        raise ValidationError("gang_size", "a gang job cannot also be an array")
    guard = 0.0 if min_runtime_s is None else _float(min_runtime_s, "min_runtime_s")
    if not 0 <= guard <= MAX_RUNTIME_LIMIT_S:
        raise ValidationError("min_runtime_s", "must be from 0 to a year")
    signal = _checkpoint_signal(checkpoint_signal)
    job_mounts = tuple(
        parse_mount(m) if isinstance(m, str) else validate_mount(_mount_from(m))
        for m in mounts or ()
    )
    if signal and any(m.target.rstrip("/") == CHECKPOINT_DIR for m in job_mounts):
        raise ValidationError("mounts", f"{CHECKPOINT_DIR} is the checkpoint volume's")
    return JobSpec(
        name=name,
        image=image,
        command=tuple(args),
        env=environment,
        resources=Resources(cpu_millis, memory_bytes),
        kill_grace_s=grace,
        restart=policy,
        max_runtime_s=runtime,
        mounts=job_mounts,
        security=SecurityOptions.from_dict(security),
        priority=prio,
        constraints=tuple(c.strip() for c in wanted),
        ports=tuple(host_ports),
        gpus=gpu_count,
        algorithm=algo,
        array=array_text,
        after=dependencies,
        gang_size=gang,
        gang_nodes=bool(gang_nodes),
        min_runtime_s=guard,
        checkpoint_signal=signal,
    )


def _checkpoint_signal(value: str | None) -> str:
    """``SIGUSR1``, ``USR1`` or ``usr1`` as ``SIGUSR1``; "" or None: no checkpoint."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ValidationError("checkpoint_signal", "must be a signal name such as SIGUSR1")
    name = value.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in CHECKPOINT_SIGNALS:
        raise ValidationError(
            "checkpoint_signal", f"must be one of {', '.join(CHECKPOINT_SIGNALS)}"
        )
    return name


def _float(value: Any, field_name: str) -> float:
    """A number (NaN and infinities fail the range checks after), never a TypeError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(field_name, "must be a number")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise ValidationError(field_name, "must be a number") from None


def _mount_from(data: Mapping[str, Any]) -> Mount:
    try:
        return Mount.from_dict(data)
    except (KeyError, TypeError, ValueError):
        raise ValidationError("mounts", "each mount needs source and target") from None
