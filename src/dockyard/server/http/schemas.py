"""Request and response bodies of the REST API (the documented JSON schema)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from dockyard.core import image_ref
from dockyard.core.errors import ValidationError
from dockyard.core.policy import RestartMode
from dockyard.core.resources import MAX_CPU_MILLIS, MAX_MEMORY, MIN_MEMORY
from dockyard.core.services import MAX_REPLICAS, ServiceSpec, build_service_spec
from dockyard.core.specs import (
    ENV_KEY_PATTERN,
    MAX_GPUS,
    MAX_KILL_GRACE_S,
    MAX_PRIORITY,
    MAX_RUNTIME_LIMIT_S,
    NAME_PATTERN,
    SCHEDULING_ALGORITHMS,
    JobSpec,
    build_job_spec,
)

if TYPE_CHECKING:
    from sqlalchemy import Row

    from dockyard.store.tables import Event, Node, Task, User

#: The largest integer the store holds (BIGINT): every integer the API takes is at most
#: this, so a larger one is a 422 naming the field rather than an overflow (a 500).
INT64_MAX = 2**63 - 1
#: A TCP port number.
Port = Annotated[int, Field(ge=1, le=65535)]
#: Retention periods: at most a century.
MAX_RETENTION_S = 100 * 365 * 86400.0

# What the core accepts, stated in the document (the core checks it, with its own
# messages): clients and schemathesis generate valid bodies from these.
#: An image reference (core/image_ref.py's grammar, named groups dropped for JSON Schema).
IMAGE_PATTERN = "^" + re.sub(r"\(\?P<\w+>", "(?:", image_ref._REFERENCE.pattern) + "$"
CPU_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CPU_MILLIS / 1000},
        {"type": "string", "pattern": r"^ *[0-9]{1,7}(\.[0-9]{1,3})? *m? *$"},
        {"type": "null"},
    ],
    "description": "cores: 0.5, 2 or 500m",
}
MEMORY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": MIN_MEMORY, "maximum": MAX_MEMORY},
        {
            "type": "string",
            "pattern": r"^ *[0-9]{1,16}(\.[0-9]{1,3})? *([kKmMgGtT][iI]?[bB]?|[bB])? *$",
        },
        {"type": "null"},
    ],
    "description": "bytes or 64m, 1g",
}


def _replace(schema: dict[str, Any]) -> Any:
    """``json_schema_extra`` that states a field's whole schema."""

    def extra(field_schema: dict[str, Any]) -> None:
        field_schema.clear()
        field_schema.update(schema)

    return extra


class ErrorOut(BaseModel):
    error: str = Field(description="machine-readable error code")
    message: str
    field: str | None = Field(default=None, description="the offending input field, if any")
    rule: str | None = Field(default=None, description="the policy rule that refused it")


#: What each error status of the API means (the body is always an ErrorOut).
ERROR_MEANINGS = {
    400: "The body is not JSON (not UTF-8, nested too deep)",
    401: "No valid bearer token",
    403: "Not allowed: admins only, or refused by the container policy (rule names it)",
    404: "No such object, or one the caller may not see",
    409: "Conflicts with the current state (name taken, not running, disabled, ...)",
    413: "Request body larger than the limit",
    422: "Invalid input (field names it)",
    429: "Too many open streams for this user",
    503: "This server instance is not the leader",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: the error statuses it may answer, with ErrorOut bodies."""
    return {code: {"model": ErrorOut, "description": ERROR_MEANINGS[code]} for code in codes}


def has_nul(value: Any) -> bool:
    """Whether a string anywhere in ``value`` (keys too) holds a NUL character. Iterative:
    a body nested as deep as the JSON parser allows cannot exhaust the stack here."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


class RequestBody(BaseModel):
    """A JSON request body: unknown fields are refused, and so is a NUL character in any
    string of it (PostgreSQL cannot store one; no name, path or command has one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if has_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


class JobCreate(RequestBody):
    name: str = Field(max_length=63, json_schema_extra={"pattern": NAME_PATTERN})
    image: str = Field(max_length=255, json_schema_extra={"pattern": IMAGE_PATTERN})
    command: list[str] = Field(default_factory=list, max_length=4096)
    env: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": ENV_KEY_PATTERN}}
    )
    cpu: float | str | None = Field(default=None, json_schema_extra=_replace(CPU_SCHEMA))
    memory: int | str | None = Field(default=None, json_schema_extra=_replace(MEMORY_SCHEMA))
    kill_grace_s: float | None = Field(
        default=None, ge=0, le=MAX_KILL_GRACE_S, description="SIGTERM to SIGKILL delay"
    )
    restart: str | dict[str, Any] | None = Field(
        default=None,
        json_schema_extra=_replace(
            {
                "anyOf": [
                    {"type": "string", "enum": [m.value for m in RestartMode]},
                    {"type": "object"},
                    {"type": "null"},
                ],
                "description": "never | on-failure | always, or a policy object "
                "(see docs/failures.md)",
            }
        ),
    )
    max_runtime_s: float | None = Field(
        default=None, gt=0, le=MAX_RUNTIME_LIMIT_S, description="kill after this many seconds"
    )
    mounts: list[str | dict[str, Any]] = Field(
        default_factory=list,
        max_length=64,
        description="SOURCE:TARGET[:ro] (absolute SOURCE: bind mount; a name: volume)",
    )
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=list, max_length=64)
    network_mode: str = Field(default="", max_length=64)
    pid_mode: str = Field(default="", max_length=64)
    ipc_mode: str = Field(default="", max_length=64)
    uts_mode: str = Field(default="", max_length=64)
    userns_mode: str = Field(default="", max_length=64)
    devices: list[str] = Field(default_factory=list, max_length=64)
    security_opt: list[str] = Field(default_factory=list, max_length=64)
    sysctls: dict[str, str] = Field(default_factory=dict)
    user: str = Field(default="", max_length=64, description="user[:group] inside the container")
    priority: int = Field(
        default=0,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
        description="queue priority (higher first), -1000..1000",
    )
    constraints: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="node label constraints: zone=a, k!=v, k in a,b",
    )
    ports: list[Port] = Field(
        default_factory=list, max_length=64, description="host ports it needs"
    )
    gpus: int = Field(default=0, ge=0, le=MAX_GPUS, description="whole GPUs, exclusive")
    algorithm: str = Field(
        default="binpack",
        description="binpack or spread",
        json_schema_extra={"enum": list(SCHEDULING_ALGORITHMS)},
    )
    # Batch (docs/batch.md): jobs only; a service ignores them.
    array: str | None = Field(
        default=None,
        max_length=4096,
        description="job array index expression, Slurm syntax: 1-100%10, 1-9:2, 1,3,5 "
        "(POST /api/v1/arrays)",
    )
    after: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="dependencies: ok:ID, any:ID, notok:ID (ID: a job or task id)",
    )
    gang_size: int = Field(
        default=0, ge=0, le=1024, description="gang job: this many tasks, placed all or none"
    )
    gang_nodes: bool = Field(default=False, description="gang members each on a node of its own")
    hold: bool = Field(
        default=False,
        description="queue it even when no registered node could fit it (else a 422 "
        "naming cpu, memory or gpus)",
    )
    min_runtime_s: float | None = Field(
        default=None, ge=0, le=MAX_RUNTIME_LIMIT_S, description="never preempted before this"
    )
    checkpoint_signal: str | None = Field(
        default=None,
        max_length=16,
        description="cooperative checkpoint: this signal (e.g. SIGUSR1) instead of SIGTERM "
        "before a preemption or drain stop, and a checkpoint volume at "
        "$DOCKYARD_CHECKPOINT_DIR; the requeued attempt gets DOCKYARD_RESUME=1",
    )

    def to_spec(self) -> JobSpec:
        """The validated job spec (raises ValidationError naming the field)."""
        return build_job_spec(
            array=self.array,
            after=self.after,
            gang_size=self.gang_size,
            gang_nodes=self.gang_nodes,
            min_runtime_s=self.min_runtime_s,
            checkpoint_signal=self.checkpoint_signal,
            name=self.name,
            image=self.image,
            command=self.command,
            env=self.env,
            cpu=self.cpu,
            memory=self.memory,
            kill_grace_s=self.kill_grace_s,
            restart=self.restart,
            max_runtime_s=self.max_runtime_s,
            mounts=self.mounts,
            security=self.security(),
            **self.scheduling(),
        )

    def scheduling(self) -> dict[str, Any]:
        return self.model_dump(include={"priority", "constraints", "ports", "gpus", "algorithm"})

    def security(self) -> dict[str, Any]:
        return self.model_dump(
            include={
                "privileged",
                "cap_add",
                "network_mode",
                "pid_mode",
                "ipc_mode",
                "uts_mode",
                "userns_mode",
                "devices",
                "security_opt",
                "sysctls",
                "user",
            }
        )


class ArrayOut(BaseModel):
    id: str = Field(description="the array's job id (use it in after: ok:ID)")
    name: str
    indices: str = Field(description="normalised index expression")
    throttle: int | None = Field(description="at most this many elements live at once")
    total: int
    released: int = Field(description="elements turned into tasks so far")
    state: str = Field(description="waiting, releasing, released, cancelled or failed")
    reason: str
    message: str
    created_at: float
    counts: dict[str, int] = Field(description="its tasks by state, and unreleased elements")


class JobBatch(RequestBody):
    jobs: list[JobCreate] = Field(min_length=1, max_length=1000)


class JobBatchOut(BaseModel):
    ids: list[str] = Field(description="task ids, in the order of the jobs")
    count: int


class ServiceCreate(JobCreate):
    """A service: ``replicas`` copies of the container below (restart always).

    ``ports`` here are container ports, each published on a host port the
    scheduler allocates; ``restart``, ``max_runtime_s`` and ``algorithm`` do not
    apply (replicas always restart and are spread)."""

    replicas: int = Field(
        default=1, ge=0, le=MAX_REPLICAS, description="copies to keep running, 0..1000"
    )
    ports: list[Port] = Field(
        default_factory=list, max_length=16, description="container ports to publish"
    )
    health: dict[str, Any] | None = Field(
        default=None,
        description="{kind: http|tcp|cmd, path, command, interval_s, timeout_s, retries, "
        "start_period_s}",
    )
    update: dict[str, Any] | None = Field(
        default=None,
        description="{max_parallel, order: start-first|stop-first, deadline_s, auto_revert}",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    networks: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=8,
        description="networks to join: [{name, internal, aliases}] (docs/networking.md)",
    )
    udp_ports: list[Port] = Field(
        default_factory=list, max_length=16, description="those of ports also published over UDP"
    )
    run_once: bool = Field(
        default=False,
        description="a one-shot step: a replica that ends (exit 0 or not) is not replaced",
    )
    secrets: list[str | dict[str, Any]] = Field(
        default_factory=list,
        max_length=32,
        description="your secrets mounted as files: NAME or {source, target, mode, uid, gid}; "
        "target defaults to /run/secrets/NAME (docs/security.md)",
    )
    configs: list[str | dict[str, Any]] = Field(
        default_factory=list,
        max_length=32,
        description="your configs mounted as files: NAME or {source, target, mode, uid, gid}; "
        "target defaults to /NAME",
    )

    def to_service_spec(self) -> ServiceSpec:
        """The validated service spec (raises ValidationError naming the field)."""
        for name in ("restart", "max_runtime_s"):
            if getattr(self, name) is not None:
                raise ValidationError(name, "does not apply to services")
        # The container template is a job body whose ports are not host ports.
        task = self.model_copy(
            update={"ports": [], "algorithm": "spread", "array": None, "after": []}
            | {"gang_size": 0, "gang_nodes": False}
        ).to_spec()
        return build_service_spec(
            task,
            replicas=self.replicas,
            ports=self.ports,
            health=self.health,
            update=self.update,
            labels=self.labels,
            networks=self.networks,
            udp_ports=self.udp_ports,
            run_once=self.run_once,
            secrets=self.secrets,
            configs=self.configs,
        )


class DrainRequest(RequestBody):
    deadline_s: float = Field(
        default=60.0, ge=0, le=86400, description="then running jobs are stopped and moved"
    )


class EndpointOut(BaseModel):
    container: int = Field(description="the port inside the container")
    host: int = Field(description="the host port it is published on")
    address: str = Field(description="the node's address the host port is bound to")


class TaskOut(BaseModel):
    id: str
    name: str
    workload_id: str
    owner: str
    attempt: int
    state: str
    desired_state: str
    node_id: str | None
    node: str | None
    image: str
    cpu: float = Field(description="cores")
    memory_bytes: int
    exit_code: int | None
    reason: str
    message: str
    container_id: str
    created_at: float
    assigned_at: float | None
    started_at: float | None
    finished_at: float | None
    uptime_s: float | None
    not_before: float | None = Field(description="earliest start (restart back-off)")
    stop_reason: str = Field(description="why a stop was requested: killed, ...")
    previous_task_id: str | None = Field(description="the attempt this one replaces")
    max_runtime_s: float | None
    cpu_seconds: float = Field(description="CPU time used so far (cgroup samples)")
    max_memory_bytes: int = Field(description="peak memory so far")
    priority: int = 0
    gpus: int = Field(default=0, description="whole GPUs asked for")
    gpu_indices: list[int] = Field(
        default_factory=list, description="GPU devices given on its node"
    )
    constraints: list[str] = Field(default_factory=list)
    ports: list[int] = Field(default_factory=list)
    algorithm: str = "binpack"
    pending_detail: dict[str, Any] | None = Field(
        default=None, description='why pending: {"total": n, "fit": 0, "reasons": {why: count}}'
    )
    health: str = Field(
        default="", description='service replicas: "", starting, healthy or unhealthy'
    )
    health_at: float | None = Field(
        default=None, description="when the node saw the last health change (node's clock)"
    )
    endpoints: list[EndpointOut] = Field(
        default_factory=list, description="published service ports (address:host -> container)"
    )

    @classmethod
    def build(
        cls, task: Task | Row[Any], owner: str, node: str | None, address: str = ""
    ) -> TaskOut:
        """``address``: the node's address, for ``endpoints`` (looked up if not given)."""
        return cls(**cls.fields(task, owner, node, address))

    @staticmethod
    def fields(
        task: Task | Row[Any], owner: str, node: str | None, address: str = ""
    ) -> dict[str, Any]:
        """The response's fields as plain values, from an ORM task or a row of the
        tasks table's columns (a long list is validated once, by the response model)."""
        uptime = None
        if task.started_at is not None:
            end = task.finished_at if task.finished_at is not None else time.time()
            uptime = max(0.0, end - task.started_at)
        return dict(
            id=task.id,
            name=task.name,
            workload_id=task.workload_id,
            owner=owner,
            attempt=task.attempt,
            state=task.state,
            desired_state=task.desired_state,
            node_id=task.node_id,
            node=node,
            image=task.image,
            cpu=task.cpu_millis / 1000,
            memory_bytes=task.memory_bytes,
            exit_code=task.exit_code,
            reason=task.reason,
            message=task.message,
            container_id=task.container_id,
            created_at=task.created_at,
            assigned_at=task.assigned_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            uptime_s=uptime,
            not_before=task.not_before,
            stop_reason=task.stop_reason,
            previous_task_id=task.previous_task_id,
            max_runtime_s=task.max_runtime_s,
            cpu_seconds=task.cpu_seconds,
            max_memory_bytes=task.max_memory_bytes,
            priority=task.priority or 0,
            gpus=task.gpus or 0,
            gpu_indices=[int(i) for i in task.gpu_indices.split(",") if i]
            if task.gpu_indices
            else [],
            constraints=list(task.constraints or []),
            ports=[int(p) for p in task.ports.split(",") if p] if task.ports else [],
            algorithm=task.algorithm or "binpack",
            pending_detail=task.pending_detail if task.state == "pending" else None,
            health=task.health or "",
            health_at=task.health_at,
            endpoints=_endpoints(task, address),
        )


def task_list_json(items: list[dict[str, Any]]) -> bytes:
    """A JSON array of :meth:`TaskOut.fields` dicts as the ``list[TaskOut]`` response
    model serialises it (same keys, order and types), without validating each item
    again: ``fields`` already gives every value its model type, and validating 10,000
    of them cost as much as reading them (``tests/unit/test_api_fast_paths.py`` holds
    the two serialisations equal)."""
    return _ANY.dump_json(items)


#: Serialises plain JSON values as they are (no schema): ``task_list_json``.
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def _endpoints(task: Task | Row[Any], address: str) -> list[dict[str, Any]]:
    """Published ports, once placed (host port 0: not allocated yet)."""
    if not task.port_map or not all(int(h) for _, h in task.port_map):
        return []
    return [{"container": int(c), "host": int(h), "address": address} for c, h in task.port_map]


class EventOut(BaseModel):
    id: int
    at: float
    kind: str
    reason: str
    message: str
    task_id: str | None
    node_id: str | None
    task_name: str | None = Field(default=None, description="name of the task it concerns")
    task_state: str | None = Field(default=None, description="that task's state now")
    node_name: str | None = Field(default=None, description="name of the node it concerns")

    @classmethod
    def build(cls, event: Event | Row[Any]) -> EventOut:
        return cls(
            id=event.id,
            at=event.at,
            kind=event.kind,
            reason=event.reason,
            message=event.message,
            task_id=event.task_id,
            node_id=event.node_id,
        )


class TaskDetailOut(TaskOut):
    command: list[str]
    env: dict[str, str]
    kill_grace_s: float
    restart: dict[str, Any]
    events: list[EventOut]


class NodeOut(BaseModel):
    id: str
    name: str
    address: str
    driver: str
    state: str = Field(description="ready, suspect, draining or down")
    draining: bool
    cpu: float = Field(description="capacity in cores")
    memory_bytes: int
    allocated_cpu: float = Field(description="cores held by placed tasks")
    allocated_memory_bytes: int
    used_cpu_percent: float
    used_memory_bytes: int
    tasks: int
    last_heartbeat_at: float
    heartbeat_age_s: float
    labels: dict[str, str]
    gpus: list[int] = Field(default_factory=list, description="GPU device indices")
    gpus_allocated: list[int] = Field(
        default_factory=list, description="GPU device indices held by placed tasks"
    )
    gpu_uuids: dict[str, str] = Field(
        default_factory=dict, description="UUIDs of the node's GPUs, by index (where known)"
    )
    images: list[str] = Field(
        default_factory=list, description="images the node reported having (name:tag)"
    )

    @classmethod
    def build(
        cls,
        node: Node,
        allocated: tuple[int, int],
        tasks: int,
        gpus_allocated: list[int] | None = None,
    ) -> NodeOut:
        return cls(
            id=node.id,
            name=node.name,
            address=node.address,
            driver=node.driver,
            state="draining" if node.draining and node.state == "ready" else node.state,
            draining=node.draining,
            cpu=node.cpu_millis / 1000,
            memory_bytes=node.memory_bytes,
            allocated_cpu=allocated[0] / 1000,
            allocated_memory_bytes=allocated[1],
            used_cpu_percent=node.used_cpu_percent,
            used_memory_bytes=node.used_memory_bytes,
            tasks=tasks,
            last_heartbeat_at=node.last_heartbeat_at,
            heartbeat_age_s=max(0.0, time.time() - node.last_heartbeat_at),
            labels={str(k): str(v) for k, v in (node.labels or {}).items()},
            gpus=[int(i) for i in (node.gpus or "").split(",") if i],
            gpus_allocated=sorted(gpus_allocated or []),
            gpu_uuids={str(k): str(v) for k, v in (node.gpu_uuids or {}).items()},
            images=[str(i) for i in (node.images or [])],
        )


class LogLineOut(BaseModel):
    id: int = Field(description="cursor: pass as `after` to continue")
    stream: str
    seq: int
    ts: str
    line: str


class LogsOut(BaseModel):
    lines: list[LogLineOut]
    next: int = Field(description="cursor for the next call")
    done: bool = Field(description="the task ended and every line it wrote is here")


class UserCreate(RequestBody):
    name: str = Field(max_length=63, json_schema_extra={"pattern": NAME_PATTERN})
    admin: bool = False
    home: str = Field(default="", max_length=1024, description="default: /home/NAME")


class UserUpdate(RequestBody):
    home: str | None = Field(default=None, max_length=1024)
    policy: dict[str, Any] | None = Field(
        default=None, description="container policy overrides (docs/security.md)"
    )
    quota: dict[str, Any] | None = Field(
        default=None, description="max_cpu, max_memory, max_tasks, cpu_hours, period_s"
    )
    share: float | None = Field(
        default=None, ge=0, le=1_000_000, description="fair-share weight (default 1)"
    )


class UserOut(BaseModel):
    id: str
    name: str
    admin: bool
    created_at: float
    home: str
    policy: dict[str, Any]
    quota: dict[str, Any]

    share: float = 1.0
    disabled: bool = False

    @classmethod
    def build(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            name=user.name,
            admin=user.is_admin,
            created_at=user.created_at,
            home=user.home or f"/home/{user.name}",
            policy=dict(user.policy or {}),
            quota=dict(user.quota or {}),
            share=user.share if user.share is not None else 1.0,
            disabled=bool(user.disabled),
        )


class TokenCreate(RequestBody):
    user: str | None = Field(default=None, description="whose token (admins only); default: you")
    description: str = Field(default="", max_length=200)


class TokenOut(BaseModel):
    user: str
    token: str = Field(description="shown once; only its hash is stored")


class TokenInfoOut(BaseModel):
    """A token as listed: never the token itself (only its hash is stored)."""

    id: str
    user: str
    description: str
    created_at: float
    revoked: bool


class UserWithTokenOut(BaseModel):
    user: UserOut
    token: str


class WhoAmIOut(BaseModel):
    id: str
    name: str
    admin: bool


class UserStatsOut(BaseModel):
    name: str
    running: int
    queued: int
    finished: int
    cpu_seconds: float = Field(description="charged in the quota period (default 30 days)")
    memory_gib_s: float
    quota: dict[str, Any]
    quota_cpu_hours_used: float
    share: float = Field(default=1.0, description="fair-share weight an admin set")
    usage: float = Field(default=0.0, description="decayed billed usage (docs/scheduler.md)")
    factor: float = Field(default=1.0, description="fair-share factor 2^(-U/S), 0..1")


class GcRequest(RequestBody):
    retention_s: float = Field(
        default=7 * 86400, ge=0, le=MAX_RETENTION_S, description="keep finished work this long"
    )
    accounting_retention_s: float | None = Field(
        default=None,
        ge=0,
        le=MAX_RETENTION_S,
        description="also drop accounting records older than this",
    )


class GcOut(BaseModel):
    #: Connected nodes asked to remove dead containers (each reports a
    #: ``containers_pruned`` event with the count).
    nodes_pruned: int = 0
    tasks: int
    workloads: int
    events: int
    log_lines: int
    accounting: int
