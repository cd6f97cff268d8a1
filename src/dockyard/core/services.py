"""Service specifications: replicas of one container template, health checks, updates.

A service is a long-running workload: ``replicas`` copies of a container (a
:class:`JobSpec` with restart ``always``), each publishing its container ``ports``
on a host port the scheduler allocates, checked by an optional
:class:`HealthCheck` and replaced version by version under an
:class:`UpdateConfig` (see ``core/rollout.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dockyard.core.errors import ValidationError
from dockyard.core.networks import NetworkRef, parse_networks
from dockyard.core.policy import RestartMode, RestartPolicy
from dockyard.core.secrets import FileKind, FileRef, check_refs, parse_file_refs
from dockyard.core.specs import JobSpec

MAX_REPLICAS = 1000
MAX_SERVICE_PORTS = 16
DEFAULT_LIFETIME_S = 3600.0


class HealthKind(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    CMD = "cmd"


class Health(StrEnum):
    """A replica's health as its agent last reported it."""

    NONE = ""  # no health check: running means routable
    STARTING = "starting"  # within the start period, or no result yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # failed ``retries`` checks in a row: it is restarted


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How an agent checks a replica (like Docker's HEALTHCHECK and Nomad's checks).

    ``http``: GET ``path`` on the replica's first port, healthy on 2xx/3xx.
    ``tcp``: a TCP connect to the first port. ``cmd``: the command's exit code in
    the container (0 healthy). ``retries`` failures in a row make it unhealthy;
    failures within ``start_period_s`` of the start do not count.
    """

    kind: HealthKind
    path: str = "/"
    command: tuple[str, ...] = ()
    interval_s: float = 2.0
    timeout_s: float = 1.0
    retries: int = 3
    start_period_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "path": self.path,
            "command": list(self.command),
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "start_period_s": self.start_period_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> HealthCheck | None:
        """Validate and build; ``None`` (or an empty map) means no health check."""
        if not data:
            return None
        try:
            kind = HealthKind(str(data.get("kind", "")))
        except ValueError:
            raise ValidationError("health.kind", "must be one of http, tcp, cmd") from None
        path = str(data.get("path") or "/")
        if not path.startswith("/") or any(c in path for c in "\r\n \x00"):
            raise ValidationError("health.path", "must be a URL path starting with /")
        command = data.get("command") or ()
        if isinstance(command, str):
            command = ("sh", "-c", command)
        if not isinstance(command, list | tuple) or not all(isinstance(a, str) for a in command):
            raise ValidationError("health.command", "must be a list of strings")
        if kind == HealthKind.CMD and not command:
            raise ValidationError("health.command", "a cmd check needs a command")
        check = cls(
            kind=kind,
            path=path,
            command=tuple(command),
            interval_s=_number(data, "interval_s", 2.0, 0.1, 3600),
            timeout_s=_number(data, "timeout_s", 1.0, 0.05, 600),
            retries=int(_number(data, "retries", 3, 1, 100)),
            start_period_s=_number(data, "start_period_s", 0.0, 0, 3600),
        )
        return check


class UpdateOrder(StrEnum):
    START_FIRST = "start-first"
    STOP_FIRST = "stop-first"


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    """How a new version replaces the old one (like Swarm's ``update_config``).

    At most ``max_parallel`` new replicas are in progress (started, not yet
    healthy) at once. ``start-first`` starts a new replica before stopping an old
    one; ``stop-first`` the reverse. A new replica that fails, or is not healthy
    ``deadline_s`` after the update began progressing, reverts the service to
    the previous version (``auto_revert``).
    """

    max_parallel: int = 1
    order: UpdateOrder = UpdateOrder.START_FIRST
    deadline_s: float = 60.0
    auto_revert: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_parallel": self.max_parallel,
            "order": self.order.value,
            "deadline_s": self.deadline_s,
            "auto_revert": self.auto_revert,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> UpdateConfig:
        data = data or {}
        try:
            order = UpdateOrder(str(data.get("order", UpdateOrder.START_FIRST)))
        except ValueError:
            raise ValidationError("update.order", "must be start-first or stop-first") from None
        return cls(
            max_parallel=int(_number(data, "max_parallel", 1, 1, MAX_REPLICAS, "update.")),
            order=order,
            deadline_s=_number(data, "deadline_s", 60.0, 1, 86400, "update."),
            auto_revert=bool(data.get("auto_revert", True)),
        )


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A long-running service: ``replicas`` copies of ``task``."""

    task: JobSpec
    replicas: int = 1
    #: Container ports, each published on a host port the scheduler allocates.
    ports: tuple[int, ...] = ()
    health: HealthCheck | None = None
    update: UpdateConfig = field(default_factory=UpdateConfig)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The networks it joins (``core/networks.py``; none given: its scope's default).
    networks: tuple[NetworkRef, ...] = ()
    #: Those of ``ports`` also published and forwarded over UDP.
    udp_ports: tuple[int, ...] = ()
    #: Run once (Compose's one-shot steps, ``service_completed_successfully``): a
    #: replica that ends on its own, with exit 0 or not, is not replaced.
    run_once: bool = False
    #: Secrets and configs mounted as files (``core/secrets.py``; values never here).
    files: tuple[FileRef, ...] = ()

    @property
    def name(self) -> str:
        return self.task.name

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.task.to_dict(),
            "replicas": self.replicas,
            "service_ports": list(self.ports),
            "health": None if self.health is None else self.health.to_dict(),
            "update": self.update.to_dict(),
            "labels": dict(self.labels),
            "networks": [n.to_dict() for n in self.networks],
            "service_udp_ports": list(self.udp_ports),
            **({"run_once": True} if self.run_once else {}),
            **({"files": [f.to_dict() for f in self.files]} if self.files else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceSpec:
        return cls(
            task=JobSpec.from_dict(data),
            replicas=int(data.get("replicas", 1)),
            ports=tuple(int(p) for p in data.get("service_ports") or ()),
            health=HealthCheck.from_dict(data.get("health")),
            update=UpdateConfig.from_dict(data.get("update")),
            labels=dict(data.get("labels") or {}),
            networks=parse_networks(data.get("networks")),
            udp_ports=tuple(int(p) for p in data.get("service_udp_ports") or ()),
            run_once=bool(data.get("run_once")),
            files=tuple(FileRef.from_dict(f) for f in data.get("files") or ()),
        )

    def container_equal(self, other: ServiceSpec) -> bool:
        """True when both run the same containers (only replicas/update differ):
        changing only those scales the service instead of rolling it."""
        mine = {**self.to_dict(), "replicas": 0, "update": None}
        theirs = {**other.to_dict(), "replicas": 0, "update": None}
        return mine == theirs


def build_service_spec(
    task: JobSpec,
    *,
    replicas: int = 1,
    ports: list[int] | tuple[int, ...] = (),
    health: Mapping[str, Any] | None = None,
    update: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    networks: Any = None,
    udp_ports: list[int] | tuple[int, ...] = (),
    run_once: bool = False,
    secrets: Any = None,
    configs: Any = None,
) -> ServiceSpec:
    """Validate the service-level fields around an already validated container spec."""
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ValidationError("replicas", "must be a whole number")
    if not 0 <= replicas <= MAX_REPLICAS:
        raise ValidationError("replicas", f"must be between 0 and {MAX_REPLICAS}")
    if len(ports) > MAX_SERVICE_PORTS:
        raise ValidationError("ports", f"at most {MAX_SERVICE_PORTS} ports")
    for index, port in enumerate(ports):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValidationError(f"ports[{index}]", "must be a port number from 1 to 65535")
    if len(set(ports)) != len(ports):
        raise ValidationError("ports", "lists a port twice")
    for index, port in enumerate(udp_ports):
        if port not in ports:
            raise ValidationError(f"udp_ports[{index}]", "must be one of ports")
    check = HealthCheck.from_dict(health)
    if check is not None and check.kind != HealthKind.CMD and not ports:
        raise ValidationError("health", f"a {check.kind} check needs a port to check")
    if task.ports:
        raise ValidationError("host_ports", "services publish on allocated host ports")
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ValidationError("labels", "must map non-empty strings to strings")
    files = check_refs(
        parse_file_refs(FileKind.SECRET, secrets) + parse_file_refs(FileKind.CONFIG, configs)
    )
    # Replicas always restart; the service controller replaces them (core/rollout.py).
    always = replace(task, restart=RestartPolicy(mode=RestartMode.ALWAYS), max_runtime_s=None)
    return ServiceSpec(
        task=always,
        replicas=replicas,
        ports=tuple(ports),
        health=check,
        update=UpdateConfig.from_dict(update),
        labels=dict(labels or {}),
        networks=parse_networks(networks),
        udp_ports=tuple(dict.fromkeys(udp_ports)),
        run_once=bool(run_once),
        files=files,
    )


def _number(
    data: Mapping[str, Any], key: str, default: float, low: float, high: float, prefix: str = ""
) -> float:
    prefix = prefix or "health."
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{prefix}{key}", "must be a number")
    if not low <= value <= high:
        raise ValidationError(f"{prefix}{key}", f"must be between {low:g} and {high:g}")
    return float(value)
