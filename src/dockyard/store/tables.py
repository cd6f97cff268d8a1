"""SQLAlchemy table definitions. Times are wall-clock epoch seconds (floats)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    #: The user's home directory: the default root their bind mounts must stay under.
    home: Mapped[str] = mapped_column(String(1024), default="")
    #: Per-user container policy overrides an admin set (see core/security.py).
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Admin-set quotas (see core/quota.py); empty: unlimited.
    quota: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Fair-share weight an admin gave the user (scheduler/fairshare.py); default 1.
    share: Mapped[float] = mapped_column(Float, default=1.0)
    #: An admin disabled the user (``dockyard user disable``): every token is refused.
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(255), default="127.0.0.1")
    driver: Mapped[str] = mapped_column(String(32), default="docker")
    state: Mapped[str] = mapped_column(String(16), index=True)
    cpu_millis: Mapped[int] = mapped_column(Integer)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    used_cpu_percent: Mapped[float] = mapped_column(Float, default=0.0)
    used_memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    registered_at: Mapped[float] = mapped_column(Float)
    last_heartbeat_at: Mapped[float] = mapped_column(Float)
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    drain_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: GPU device indices the agent reported, comma-separated ("0,1,2,3"); "" for none.
    gpus: Mapped[str] = mapped_column(String(512), default="")
    #: The UUIDs of those GPUs the agent knows, by index as a string ({"0": "GPU-..."}).
    gpu_uuids: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    #: Images the node reported having (``name:tag``), for image-locality placement.
    images: Mapped[list[str]] = mapped_column(JSON, default=list)


class Workload(Base):
    __tablename__ = "workloads"
    __table_args__ = (Index("ix_workloads_kind_name", "kind", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="job")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    # Services (kind "service"): the spec's version (tasks carry theirs), the spec
    # it replaced (for revert), the rollout's state (core/rollout.py), when it was
    # removed, and for template instances the template and expiry.
    version: Mapped[int] = mapped_column(Integer, default=1)
    previous_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    template: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_state", "state"),
        Index("ix_tasks_node_state", "node_id", "state"),
        Index("ix_tasks_owner_name", "owner_id", "name"),
        Index("ix_tasks_state_priority", "state", "priority", "created_at"),
        Index("ix_tasks_name_created", "name", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    image: Mapped[str] = mapped_column(String(255))
    cpu_millis: Mapped[int] = mapped_column(Integer)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    desired_state: Mapped[str] = mapped_column(String(16), default="run")
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), nullable=True)
    reason: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    container_id: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[float] = mapped_column(Float)
    assigned_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Lines the agent shipped in all, known once the task ends (lets followers finish).
    log_lines_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Why the server asked the task to stop: killed, max_runtime_exceeded, node_drained.
    stop_reason: Mapped[str] = mapped_column(String(64), default="")
    #: The grace a stop request gave (``stop --time``), instead of the job's kill grace.
    stop_grace_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Earliest time the scheduler may place it (restart back-off).
    not_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The task this one replaces (restart or reschedule), if any.
    previous_task_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    max_runtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Usage from the node's samples (cgroup, via Docker stats): totals so far.
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    max_memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_gib_s: Mapped[float] = mapped_column(Float, default=0.0)
    last_sample_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Scheduling (scheduler/): queue priority, placement constraints ("zone=a"), host
    # ports ("80,443"), whole GPUs asked for and the device indices given, algorithm.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    constraints: Mapped[list[str]] = mapped_column(JSON, default=list)
    ports: Mapped[str] = mapped_column(String(512), default="")
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_indices: Mapped[str] = mapped_column(String(256), default="")
    algorithm: Mapped[str] = mapped_column(String(16), default="binpack")
    #: Why it is pending, machine-readable: {"total": n, "fit": 0, "reasons": {...}}.
    pending_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Service replicas: the spec version it runs, its health (core/services.Health)
    # and when that was last reported, and its published ports as
    # [[container_port, host_port], ...] (host ports allocated at placement).
    version: Mapped[int] = mapped_column(Integer, default=1)
    health: Mapped[str] = mapped_column(String(16), default="")
    health_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    port_map: Mapped[list[list[int]]] = mapped_column(JSON, default=list)
    # Batch (issue 22): the element of a job array this task runs; held back until
    # the job's dependencies are met (never placed while held); gang jobs: members
    # in all (placed all at once or none) and whether each needs a node of its own.
    array_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    gang_size: Mapped[int] = mapped_column(Integer, default=0)
    gang_nodes: Mapped[bool] = mapped_column(Boolean, default=False)


class JobArray(Base):
    """A job array, stored compactly: its elements become tasks as they may run."""

    __tablename__ = "job_arrays"

    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id"), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(32), index=True)
    #: The normalised index expression (``1-100000:1``, ``1,3,5``), without the throttle.
    indices: Mapped[str] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer)
    #: Elements turned into tasks so far (in index order).
    released: Mapped[int] = mapped_column(Integer, default=0)
    #: At most this many elements live (pending or placed) at once; None: no limit.
    throttle: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: waiting (dependencies), releasing, released, cancelled, failed (column ``state``;
    #: not a task state: the task gate, server/state/tasks.py, owns those).
    phase: Mapped[str] = mapped_column("state", String(16), index=True)
    reason: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class JobDependency(Base):
    """``workload_id`` may start only after ``on_workload_id`` ended (kind ok, any, notok)."""

    __tablename__ = "job_dependencies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    on_workload_id: Mapped[str] = mapped_column(String(32), index=True)


class Template(Base):
    """A service an admin registered for users to launch instances of (CTF-style)."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    lifetime_s: Mapped[float] = mapped_column(Float)
    max_per_user: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)


class SchedulerSetting(Base):
    """Cluster-wide scheduler switches an admin sets, e.g. ``queue_locked``."""

    __tablename__ = "scheduler_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(64), default="")


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    task_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    owner_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (UniqueConstraint("task_id", "stream", "seq", name="uq_log_lines_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    stream: Mapped[str] = mapped_column(String(8))
    seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[str] = mapped_column(String(40), default="")
    line: Mapped[str] = mapped_column(Text)


class Accounting(Base):
    """One record per finished task (unique), charged once even if reported twice."""

    __tablename__ = "accounting"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(32), unique=True)
    workload_id: Mapped[str] = mapped_column(String(32))
    job_name: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(32), index=True)
    owner: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(255))
    image: Mapped[str] = mapped_column(String(255))
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float] = mapped_column(Float, index=True)
    wall_s: Mapped[float] = mapped_column(Float)
    cpu_s: Mapped[float] = mapped_column(Float)
    max_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    memory_gib_s: Mapped[float] = mapped_column(Float)
    gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_limit: Mapped[float] = mapped_column(Float)
    memory_limit_bytes: Mapped[int] = mapped_column(BigInteger)
    quota: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The job array element the task ran (SGE's task_number), if any.
    array_index: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JoinToken(Base):
    """A node join token an admin created; only its SHA-256 is stored."""

    __tablename__ = "join_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    uses: Mapped[int] = mapped_column(Integer, default=0)


class SecretValue(Base):
    """A user's secret or config (``kind``): its value only as a Fernet token under
    the server's key (``server/state/keyring.py``), never in plain text."""

    __tablename__ = "secret_values"
    __table_args__ = (
        UniqueConstraint("owner_id", "kind", "name", name="uq_secret_values_owner_name"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(32), ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class NodeKey(Base):
    """The CURVE public key an admitted node joined with; its messages must come from it."""

    __tablename__ = "node_keys"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    join_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    joined_at: Mapped[float] = mapped_column(Float)


class LeaderLease(Base):
    """The control-plane lease: one row (id 1). ``term`` only ever grows.

    The instance holding it with an unexpired lease is the leader; every
    leader-only write checks ``(holder, term)`` in its own transaction (fencing).
    """

    __tablename__ = "leader_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    term: Mapped[int] = mapped_column(BigInteger)
    #: Database clock (epoch seconds) of the last renewal.
    renewed_at: Mapped[float] = mapped_column(Float)
    lease_s: Mapped[float] = mapped_column(Float)


class ServerInstance(Base):
    """A running server instance, for ``dockyard status``."""

    __tablename__ = "server_instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_url: Mapped[str] = mapped_column(String(255), default="")
    gateway: Mapped[str] = mapped_column(String(255), default="")
    started_at: Mapped[float] = mapped_column(Float)
    #: Database clock of its last lease attempt.
    seen_at: Mapped[float] = mapped_column(Float)
    term: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class UsageHistory(Base):
    """Downsampled CPU and memory of a task or a node (``server/state/usage_history.py``).

    One row per subject, resolution (10 s or 60 s) and bucket start (epoch seconds):
    the seconds the bucket's samples cover, the CPU and memory used over them
    (CPU core-seconds for a task; for a node, the host's busy fraction times
    seconds), and the largest memory seen. Means are ``cpu_s / seconds`` and
    ``memory_gib_s / seconds``.
    """

    __tablename__ = "usage_history"
    __table_args__ = (Index("ix_usage_history_res_bucket", "res", "bucket"),)

    subject: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    res: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seconds: Mapped[float] = mapped_column(Float)
    cpu_s: Mapped[float] = mapped_column(Float)
    memory_gib_s: Mapped[float] = mapped_column(Float)
    max_memory_bytes: Mapped[int] = mapped_column(BigInteger)
