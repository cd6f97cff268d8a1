"""Wire format between agent (ZeroMQ DEALER) and server (ROUTER).

Every frame is a msgpack map ``{"v": VERSION, "t": type, "id": msg_id, "b": body}``.
Messages that change state (``status``, ``logs``, ...) carry an ``id`` and are
re-sent by the agent until the server ``ack``s that id; the server applies them
idempotently, so a resend never duplicates anything.

Agent -> server: ``hello``, ``heartbeat``, ``status``, ``logs``, ``usage``, ``health``,
``pruned``, ``build_output``, ``build_done``, ``exec_output``, ``exec_exit``,
``foreign``, ``reaped``; each body names the sending node (``node_id``).
Server -> agent: ``welcome``, ``refused``, ``desired``, ``ack``, ``rehello``, ``prune``,
``build``, ``exec_start``, ``exec_input``, ``exec_resize``, ``exec_close``, ``orphans``.

Each type is a frozen dataclass below: ``encode()`` gives its body (the msgpack
map, keyed as on the wire) and the ``decode(body)`` classmethod checks a received
body and builds the message, raising :class:`ProtocolError` for a missing field
or a value of the wrong type (never ``KeyError`` or ``TypeError``). A key its
sender always writes is required; a key written by some reports only (a status
update's ``exit_code``, a heartbeat's ``images``) is optional: written only when
set, read as its default when absent. :func:`encode` and :func:`decode` make and
read whole frames.

Values are checked by exact type (msgpack yields plain ``str``, ``int``, ...; a
``bool`` is not an ``int`` here); a float field takes an integer too. Frames are
unpacked with arrays as tuples, so sequence fields are tuples at no extra cost;
the array-shaped items of the busiest lists (log lines, usage samples) are named
tuples, which msgpack packs as they are. What a field means beyond its type (a
task state's name, a health check's options) is for its reader to judge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, Self, TypeAlias, TypeGuard, TypeVar, cast

import msgpack

from dockyard.errors import DockyardError

VERSION = 1


class ProtocolError(DockyardError):
    """A frame that cannot be decoded, has the wrong version or a malformed body."""


class MsgType(StrEnum):
    HELLO = "hello"
    HEARTBEAT = "heartbeat"
    STATUS = "status"
    LOGS = "logs"
    USAGE = "usage"
    WELCOME = "welcome"
    DESIRED = "desired"
    ENDPOINTS = "endpoints"  # server -> agent: service discovery tables of its networks
    ACK = "ack"
    REHELLO = "rehello"
    PRUNE = "prune"  # server -> agent: remove dead containers (admin gc)
    PRUNED = "pruned"  # agent -> server: how many it removed
    BUILD = "build"  # server -> agent: build an image from a context tar
    BUILD_OUTPUT = "build_output"  # agent -> server: build output lines (reliable)
    BUILD_DONE = "build_done"  # agent -> server: build result (reliable)
    REFUSED = "refused"  # server -> agent: not admitted (no valid join token)
    EXEC_START = "exec_start"  # server -> agent: run a command in a task's container
    EXEC_INPUT = "exec_input"  # server -> agent: stdin bytes (interactive)
    EXEC_RESIZE = "exec_resize"  # server -> agent: terminal size
    EXEC_CLOSE = "exec_close"  # server -> agent: the client went away
    EXEC_OUTPUT = "exec_output"  # agent -> server: output chunk (reliable, seq)
    EXEC_EXIT = "exec_exit"  # agent -> server: exit code (reliable)
    HEALTH = "health"  # agent -> server: a replica's health changed (reliable)
    FOREIGN = "foreign"  # agent -> server: other node ids on this Engine (reliable)
    ORPHANS = "orphans"  # server -> agent: which of them no live agent uses
    REAPED = "reaped"  # agent -> server: containers of an orphaned node id removed (reliable)
    CHECKPOINTS = "checkpoints"  # agent -> server: checkpoints held here (reliable)
    CHECKPOINTS_OVER = "checkpoints_over"  # server -> agent: which of them no attempt needs


Body: TypeAlias = Mapping[str, Any]
_T = TypeVar("_T")

# -- checking fields ------------------------------------------------------------
#: Stands for a key that is not in the body.
_ABSENT: Any = object()
_NUMBER = (float, int)
_SEQUENCE = (tuple, list)


def _wrong(key: str, value: object, want: str) -> ProtocolError:
    if value is _ABSENT:
        return ProtocolError(f"missing field {key!r}")
    return ProtocolError(f"field {key!r} is {type(value).__name__}, not {want}")


def _str(body: Body, key: str, default: str | None = None) -> str:
    value = body.get(key, _ABSENT)
    if type(value) is str:
        return value
    if value is _ABSENT and default is not None:
        return default
    raise _wrong(key, value, "a string")


def _int(body: Body, key: str) -> int:
    value = body.get(key, _ABSENT)
    if type(value) is int:
        return value
    raise _wrong(key, value, "an integer")


def _opt_int(body: Body, key: str) -> int | None:
    """An integer, or None when absent or nil."""
    value = body.get(key)
    if value is None or type(value) is int:
        return value
    raise _wrong(key, value, "an integer or nil")


def _float(body: Body, key: str) -> float:
    value = body.get(key, _ABSENT)
    if type(value) is float or type(value) is int:
        return value
    raise _wrong(key, value, "a number")


def _bool(body: Body, key: str) -> bool:
    value = body.get(key, _ABSENT)
    if type(value) is bool:
        return value
    raise _wrong(key, value, "a boolean")


def _bytes(body: Body, key: str) -> bytes:
    value = body.get(key, _ABSENT)
    if type(value) is bytes:
        return value
    raise _wrong(key, value, "binary")


def _seq(body: Body, key: str) -> tuple[Any, ...]:
    value = body.get(key, _ABSENT)
    if type(value) is tuple:
        return value
    if type(value) is list:  # a body built in Python rather than unpacked from a frame
        return tuple(value)
    raise _wrong(key, value, "an array")


def _strs(body: Body, key: str) -> tuple[str, ...]:
    items = _seq(body, key)
    for item in items:
        if type(item) is not str:
            raise _wrong(f"{key}[]", item, "a string")
    return items


def _ints(body: Body, key: str) -> tuple[int, ...]:
    items = _seq(body, key)
    for item in items:
        if type(item) is not int:
            raise _wrong(f"{key}[]", item, "an integer")
    return items


def _is_map(value: object) -> TypeGuard[dict[str, Any]]:
    """A map (its keys and values are its reader's to check: msgpack gives string or
    binary keys)."""
    return type(value) is dict


def _map(body: Body, key: str) -> dict[str, Any]:
    value = body.get(key, _ABSENT)
    if type(value) is dict:
        return value
    raise _wrong(key, value, "a map")


def _opt_map(body: Body, key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None or type(value) is dict:
        return value
    raise _wrong(key, value, "a map or nil")


def _maps(body: Body, key: str) -> tuple[dict[str, Any], ...]:
    items = _seq(body, key)
    for item in items:
        if not _is_map(item):
            raise _wrong(f"{key}[]", item, "a map")
    return items


def _typed_map(body: Body, key: str, kind: type, want: str) -> dict[str, Any]:
    """A map of string keys to values of type ``kind``."""
    value = _map(body, key)
    for name, item in value.items():
        if type(name) is not str:
            raise _wrong(f"{key}{{}}", name, "a string key")
        if type(item) is not kind:
            raise _wrong(f"{key}{{}}", item, want)
    return value


def _builder(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor of the frozen slotted dataclass ``cls`` that fills its
    slots directly, for decoders of the busiest messages (their values are checked
    already). The frozen ``__init__`` sets each field through ``object.__setattr__``,
    which was half the cost of decoding a heartbeat or a desired entry."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    namespace.update({f"set_{name}": getattr(cls, name).__set__ for name in names})
    source = "\n".join(
        [
            f"def build({', '.join(names)}):",
            "    obj = new(cls)",
            *(f"    set_{name}(obj, {name})" for name in names),
            "    return obj",
        ]
    )
    exec(source, namespace)
    return cast(Callable[..., _T], namespace["build"])


def _item(value: object, what: str) -> Body:
    if type(value) is not dict:
        raise ProtocolError(f"{what} is {type(value).__name__}, not a map")
    return value


# -- agent -> server ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello:
    """An agent introduces its node (sent until welcomed, and after ``rehello``)."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    node_id: str
    name: str
    address: str
    driver: str
    version: str
    cpu_millis: int
    memory_bytes: int
    labels: dict[str, str] = field(default_factory=dict)
    #: The images the node has (image-locality placement).
    images: tuple[str, ...] = ()
    gpus: tuple[int, ...] = ()
    #: GPU UUIDs by index (as a string), where known.
    gpu_uuids: dict[str, str] = field(default_factory=dict)
    join_token: str = ""

    def encode(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "join_token": self.join_token,
            "name": self.name,
            "address": self.address,
            "driver": self.driver,
            "version": self.version,
            "labels": self.labels,
            "images": self.images,
            "capacity": {
                "cpu_millis": self.cpu_millis,
                "memory_bytes": self.memory_bytes,
                "gpus": self.gpus,
                "gpu_uuids": self.gpu_uuids,
            },
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        capacity = _map(body, "capacity")
        return cls(
            node_id=_str(body, "node_id"),
            name=_str(body, "name"),
            address=_str(body, "address"),
            driver=_str(body, "driver"),
            version=_str(body, "version"),
            cpu_millis=_int(capacity, "cpu_millis"),
            memory_bytes=_int(capacity, "memory_bytes"),
            labels=_typed_map(body, "labels", str, "a string"),
            images=_strs(body, "images"),
            gpus=_ints(capacity, "gpus"),
            gpu_uuids=_typed_map(capacity, "gpu_uuids", str, "a string"),
            join_token=_str(body, "join_token"),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent is alive; the server answers only when the node's generation moved."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    node_id: str
    #: The agent's clock when sent (the server measures heartbeat lag with it).
    sent_at: float
    #: The generation of the desired set the agent holds.
    generation: int
    cpu_percent: float
    memory_bytes: int
    running: int
    unacked: int
    #: The node's images, sent when they changed (None: unchanged).
    images: tuple[str, ...] | None = None

    def encode(self) -> dict[str, Any]:
        body = {
            "node_id": self.node_id,
            "sent_at": self.sent_at,
            "generation": self.generation,
            "usage": {"cpu_percent": self.cpu_percent, "memory_bytes": self.memory_bytes},
            "running": self.running,
            "unacked": self.unacked,
        }
        if self.images is not None:
            body["images"] = self.images
        return body

    @classmethod
    def decode(cls, body: Body) -> Heartbeat:
        # The hottest message (tens of thousands a second): checked inline.
        node_id = body.get("node_id", _ABSENT)
        sent_at = body.get("sent_at", _ABSENT)
        generation = body.get("generation", _ABSENT)
        usage = body.get("usage", _ABSENT)
        running = body.get("running", _ABSENT)
        unacked = body.get("unacked", _ABSENT)
        images = body.get("images")
        if type(node_id) is not str:
            raise _wrong("node_id", node_id, "a string")
        if type(sent_at) not in _NUMBER:
            raise _wrong("sent_at", sent_at, "a number")
        if type(generation) is not int:
            raise _wrong("generation", generation, "an integer")
        if type(usage) is not dict:
            raise _wrong("usage", usage, "a map")
        cpu_percent = usage.get("cpu_percent", _ABSENT)
        memory_bytes = usage.get("memory_bytes", _ABSENT)
        if type(cpu_percent) not in _NUMBER:
            raise _wrong("usage.cpu_percent", cpu_percent, "a number")
        if type(memory_bytes) is not int:
            raise _wrong("usage.memory_bytes", memory_bytes, "an integer")
        if type(running) is not int:
            raise _wrong("running", running, "an integer")
        if type(unacked) is not int:
            raise _wrong("unacked", unacked, "an integer")
        if images is not None:
            images = _strs(body, "images")
        return _build_heartbeat(
            node_id, sent_at, generation, cpu_percent, memory_bytes, running, unacked, images
        )


_build_heartbeat = _builder(Heartbeat)


@dataclass(frozen=True, slots=True)
class TaskUsage:
    """A task's resource use totals (a usage sample, or the final one of a status)."""

    cpu_s: float
    max_memory_bytes: int
    memory_gib_s: float

    def encode(self) -> dict[str, Any]:
        return {
            "cpu_s": self.cpu_s,
            "max_memory_bytes": self.max_memory_bytes,
            "memory_gib_s": self.memory_gib_s,
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _float(body, "cpu_s"), _int(body, "max_memory_bytes"), _float(body, "memory_gib_s")
        )


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """One task's state as its node sees it (an item of a ``status`` message).

    The optional fields are set by some reports only: ``container_id`` once there
    is a container, the rest by the report of a task's end."""

    task_id: str
    state: str
    reason: str
    message: str = ""
    exit_code: int | None = None
    container_id: str = ""
    #: The runtime's own start and end times (the server keeps its receive times).
    started_at: str | None = None
    finished_at: str | None = None
    #: The task needed SIGKILL after its grace period.
    forced: bool = False
    log_lines_total: int | None = None
    usage: TaskUsage | None = None

    def encode(self) -> dict[str, Any]:
        item: dict[str, Any] = {"task_id": self.task_id, "state": self.state, "reason": self.reason}
        if self.exit_code is not None:
            item["exit_code"] = self.exit_code
        if self.container_id:
            item["container_id"] = self.container_id
        if self.started_at is not None:
            item["started_at"] = self.started_at
        if self.finished_at is not None:
            item["finished_at"] = self.finished_at
        if self.forced:
            item["forced"] = True
        if self.log_lines_total is not None:
            item["log_lines_total"] = self.log_lines_total
        if self.message:
            item["message"] = self.message
        if self.usage is not None:
            item["usage"] = self.usage.encode()
        return item

    @classmethod
    def decode(cls, item: object) -> TaskStatus:
        # Three or more per task: checked inline (most optional keys are absent).
        body = _item(item, "a status update")
        get = body.get
        task_id, state, reason = (
            get("task_id", _ABSENT),
            get("state", _ABSENT),
            get("reason", _ABSENT),
        )
        message, container_id = get("message", ""), get("container_id", "")
        exit_code, log_lines_total = get("exit_code"), get("log_lines_total")
        started_at, finished_at = get("started_at"), get("finished_at")
        forced, usage = get("forced", False), get("usage")
        if type(task_id) is not str:
            raise _wrong("task_id", task_id, "a string")
        if type(state) is not str:
            raise _wrong("state", state, "a string")
        if type(reason) is not str:
            raise _wrong("reason", reason, "a string")
        if type(message) is not str:
            raise _wrong("message", message, "a string")
        if type(container_id) is not str:
            raise _wrong("container_id", container_id, "a string")
        if exit_code is not None and type(exit_code) is not int:
            raise _wrong("exit_code", exit_code, "an integer or nil")
        if log_lines_total is not None and type(log_lines_total) is not int:
            raise _wrong("log_lines_total", log_lines_total, "an integer or nil")
        if started_at is not None and type(started_at) is not str:
            raise _wrong("started_at", started_at, "a string or nil")
        if finished_at is not None and type(finished_at) is not str:
            raise _wrong("finished_at", finished_at, "a string or nil")
        if type(forced) is not bool:
            raise _wrong("forced", forced, "a boolean")
        if usage is not None:
            usage = TaskUsage.decode(_item(usage, "usage"))
        return _build_status(
            task_id,
            state,
            reason,
            message,
            exit_code,
            container_id,
            started_at,
            finished_at,
            forced,
            log_lines_total,
            usage,
        )


_build_status = _builder(TaskStatus)


@dataclass(frozen=True, slots=True)
class Status:
    """Task state changes on a node, in the order they happened (reliable)."""

    TYPE: ClassVar[MsgType] = MsgType.STATUS
    node_id: str
    updates: tuple[TaskStatus, ...]

    def merged(self, later: Status) -> Status:
        """One message for both (a burst of reports, one ack)."""
        return Status(self.node_id, self.updates + later.updates)

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "updates": [u.encode() for u in self.updates]}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _str(body, "node_id"), tuple(TaskStatus.decode(u) for u in _seq(body, "updates"))
        )


class LogLine(NamedTuple):
    """One line a task's container wrote; on the wire ``[task_id, stream, seq, ts, text]``.

    ``seq`` counts the stream's lines from the container's start (1, 2, ...)."""

    task_id: str
    stream: str
    seq: int
    ts: str
    text: str


@dataclass(frozen=True, slots=True)
class Logs:
    """A batch of log lines (reliable; the server drops lines it stored already)."""

    TYPE: ClassVar[MsgType] = MsgType.LOGS
    node_id: str
    lines: tuple[LogLine, ...]

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "lines": self.lines}

    @classmethod
    def decode(cls, body: Body) -> Self:
        lines = []
        for line in _seq(body, "lines"):
            if type(line) not in _SEQUENCE or len(line) != 5:
                raise _wrong("lines[]", line, "an array of 5")
            task_id, stream, seq, ts, text = line
            if (
                type(task_id) is not str
                or type(stream) is not str
                or type(seq) is not int
                or type(ts) is not str
                or type(text) is not str
            ):
                raise ProtocolError(f"log line {line!r:.200} is not [str, str, int, str, str]")
            lines.append(LogLine(task_id, stream, seq, ts, text))
        return cls(_str(body, "node_id"), tuple(lines))


class UsageSample(NamedTuple):
    """A running task's totals so far; on the wire
    ``[task_id, cpu_s, max_memory_bytes, memory_gib_s]``."""

    task_id: str
    cpu_s: float
    max_memory_bytes: int
    memory_gib_s: float


@dataclass(frozen=True, slots=True)
class Usage:
    """Resource use of a node's running tasks (reliable)."""

    TYPE: ClassVar[MsgType] = MsgType.USAGE
    node_id: str
    samples: tuple[UsageSample, ...]

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "samples": self.samples}

    @classmethod
    def decode(cls, body: Body) -> Self:
        samples = []
        for sample in _seq(body, "samples"):
            if type(sample) not in _SEQUENCE or len(sample) != 4:
                raise _wrong("samples[]", sample, "an array of 4")
            task_id, cpu_s, max_memory_bytes, memory_gib_s = sample
            if (
                type(task_id) is not str
                or type(cpu_s) not in _NUMBER
                or type(max_memory_bytes) is not int
                or type(memory_gib_s) not in _NUMBER
            ):
                raise ProtocolError(f"usage sample {sample!r:.200} is not [str, num, int, num]")
            samples.append(UsageSample(task_id, cpu_s, max_memory_bytes, memory_gib_s))
        return cls(_str(body, "node_id"), tuple(samples))


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A service replica's health changed (reliable)."""

    TYPE: ClassVar[MsgType] = MsgType.HEALTH
    node_id: str
    task_id: str
    #: starting, healthy or unhealthy (:class:`dockyard.core.services.Health`).
    health: str
    message: str
    #: The node's clock at the change (orders a replica's reports).
    at: float

    def encode(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "task_id": self.task_id,
            "health": self.health,
            "message": self.message,
            "at": self.at,
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _str(body, "node_id"),
            _str(body, "task_id"),
            _str(body, "health"),
            _str(body, "message"),
            _float(body, "at"),
        )


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many dead containers a ``prune`` removed (reliable)."""

    TYPE: ClassVar[MsgType] = MsgType.PRUNED
    node_id: str
    removed: int

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "removed": self.removed}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "node_id"), _int(body, "removed"))


@dataclass(frozen=True, slots=True)
class Foreign:
    """The other node ids that label dockyard containers on this node's Engine
    (reliable; several agents may share one Engine). The server answers ``orphans``."""

    TYPE: ClassVar[MsgType] = MsgType.FOREIGN
    node_id: str
    node_ids: tuple[str, ...]

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "node_ids": self.node_ids}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "node_id"), _strs(body, "node_ids"))


@dataclass(frozen=True, slots=True)
class Reaped:
    """This agent stopped and removed the containers of ``orphan``, a node id the server
    named in ``orphans`` (reliable): their task ids."""

    TYPE: ClassVar[MsgType] = MsgType.REAPED
    node_id: str
    orphan: str
    task_ids: tuple[str, ...]

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "orphan": self.orphan, "task_ids": self.task_ids}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "node_id"), _str(body, "orphan"), _strs(body, "task_ids"))


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """Checkpoints this agent holds (Docker volumes on its Engine, directories under its
    ``checkpoint_root``), as keys ``<owner>/ckpt-<job>[-<index>]`` (reliable; at most
    100). The server answers ``checkpoints_over``."""

    TYPE: ClassVar[MsgType] = MsgType.CHECKPOINTS
    node_id: str
    keys: tuple[str, ...]

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "keys": self.keys}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "node_id"), _strs(body, "keys"))


@dataclass(frozen=True, slots=True)
class BuildOutput:
    """Output lines of a build, numbered from ``seq`` (reliable). The first, with
    ``seq`` -1 and no lines, says the build began."""

    TYPE: ClassVar[MsgType] = MsgType.BUILD_OUTPUT
    node_id: str
    build_id: str
    seq: int
    lines: tuple[str, ...]

    def encode(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "build_id": self.build_id,
            "seq": self.seq,
            "lines": self.lines,
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _str(body, "node_id"), _str(body, "build_id"), _int(body, "seq"), _strs(body, "lines")
        )


@dataclass(frozen=True, slots=True)
class BuildDone:
    """A build's result on one node (reliable): ``image_id`` if it succeeded, else
    ``error``; ``lines``: how many output lines were sent."""

    TYPE: ClassVar[MsgType] = MsgType.BUILD_DONE
    node_id: str
    build_id: str
    tag: str
    ok: bool
    lines: int
    image_id: str = ""
    error: str = ""

    def encode(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "node_id": self.node_id,
            "build_id": self.build_id,
            "tag": self.tag,
            "ok": self.ok,
        }
        if self.image_id:
            body["image_id"] = self.image_id
        if self.error:
            body["error"] = self.error
        body["lines"] = self.lines
        return body

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            node_id=_str(body, "node_id"),
            build_id=_str(body, "build_id"),
            tag=_str(body, "tag"),
            ok=_bool(body, "ok"),
            lines=_int(body, "lines"),
            image_id=_str(body, "image_id", ""),
            error=_str(body, "error", ""),
        )


@dataclass(frozen=True, slots=True)
class ExecOutput:
    """A chunk of an exec's output, numbered per exec from 0 (reliable)."""

    TYPE: ClassVar[MsgType] = MsgType.EXEC_OUTPUT
    node_id: str
    exec_id: str
    seq: int
    stream: str
    data: bytes

    def encode(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "exec_id": self.exec_id,
            "seq": self.seq,
            "stream": self.stream,
            "data": self.data,
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _str(body, "node_id"),
            _str(body, "exec_id"),
            _int(body, "seq"),
            _str(body, "stream"),
            _bytes(body, "data"),
        )


@dataclass(frozen=True, slots=True)
class ExecExit:
    """An exec ended (reliable): its exit code (None if it never ran or the code is
    unknown), an error, and how many output chunks it sent (None if it never ran)."""

    TYPE: ClassVar[MsgType] = MsgType.EXEC_EXIT
    node_id: str
    exec_id: str
    exit_code: int | None
    error: str
    chunks: int | None = None

    def encode(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "node_id": self.node_id,
            "exec_id": self.exec_id,
            "exit_code": self.exit_code,
            "error": self.error,
        }
        if self.chunks is not None:
            body["chunks"] = self.chunks
        return body

    @classmethod
    def decode(cls, body: Body) -> Self:
        if "exit_code" not in body:  # always sent, nil when unknown
            raise ProtocolError("missing field 'exit_code'")
        return cls(
            _str(body, "node_id"),
            _str(body, "exec_id"),
            _opt_int(body, "exit_code"),
            _str(body, "error"),
            _opt_int(body, "chunks"),
        )


# -- server -> agent ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Welcome:
    """The server registered the node (answers ``hello``)."""

    TYPE: ClassVar[MsgType] = MsgType.WELCOME
    heartbeat_interval: float

    def encode(self) -> dict[str, Any]:
        return {"heartbeat_interval": self.heartbeat_interval}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_float(body, "heartbeat_interval"))


@dataclass(frozen=True, slots=True)
class Refused:
    """The server does not admit this agent (no valid join token)."""

    TYPE: ClassVar[MsgType] = MsgType.REFUSED
    reason: str

    def encode(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "reason"))


@dataclass(frozen=True, slots=True)
class TaskTemplate:
    """What a desired entry takes from its workload's spec (the same for every task
    of the workload; the server keeps one per workload). Mounts, security options,
    policy and health check are the maps of their ``to_dict()`` in
    :mod:`dockyard.core`; the agent parses them with their ``from_dict()``."""

    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    kill_grace_s: float = 10.0
    mounts: tuple[dict[str, Any], ...] = ()
    security: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    #: A service's networks: ``core.networks.NetworkRef.to_dict()`` maps (with ids).
    networks: tuple[dict[str, Any], ...] = ()
    #: Container ports of ``port_map`` also published over UDP.
    udp_ports: tuple[int, ...] = ()

    @classmethod
    def decode(cls, body: Body) -> TaskTemplate:
        # Once per desired entry, and a node's whole set comes again at each change.
        kill_grace_s = body.get("kill_grace_s", _ABSENT)
        security = body.get("security", _ABSENT)
        policy = body.get("policy")
        health = body.get("health")
        if type(kill_grace_s) not in _NUMBER:
            raise _wrong("kill_grace_s", kill_grace_s, "a number")
        if type(security) is not dict:
            raise _wrong("security", security, "a map")
        if policy is not None and type(policy) is not dict:
            raise _wrong("policy", policy, "a map or nil")
        if health is not None and type(health) is not dict:
            raise _wrong("health", health, "a map or nil")
        return _build_template(
            _strs(body, "command"),
            _typed_map(body, "env", str, "a string"),
            kill_grace_s,
            _maps(body, "mounts"),
            security,
            policy,
            health,
            _maps(body, "networks") if "networks" in body else (),
            _ints(body, "udp_ports") if "udp_ports" in body else (),
        )


_build_template = _builder(TaskTemplate)
_NO_TEMPLATE = TaskTemplate()


@dataclass(frozen=True, slots=True)
class DesiredEntry:
    """One task a node should hold (an item of a ``desired`` message)."""

    task_id: str
    image: str
    cpu_millis: int
    memory_bytes: int
    template: TaskTemplate = _NO_TEMPLATE
    workload_id: str = ""
    owner: str = ""
    gpus: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    #: Service replicas: (container port, host port) pairs.
    port_map: tuple[tuple[int, int], ...] = ()
    #: run or stop (:class:`dockyard.core.states.DesiredState`).
    desired: str = "run"
    #: Lines the server has of each stream (shipping resumes after them).
    log_offsets: dict[str, int] = field(default_factory=dict)
    #: The container an agent reported running for the task ("" before it ran). One
    #: missing on the node has vanished: never created again under this task id.
    container_id: str = ""
    #: The first signal of a stop ("": SIGTERM); a checkpointing job's before a
    #: preemption or drain stop (docs/scheduler.md, Checkpoints).
    stop_signal: str = ""
    #: Secrets and configs to mount, only in a replica's start entry (no container
    #: yet): ``{target, mode, uid, gid, data}`` maps, or one ``{error}``. Never logged.
    files: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def encode(self) -> dict[str, Any]:
        t = self.template
        body = {
            "command": t.command,
            "env": t.env,
            "kill_grace_s": t.kill_grace_s,
            "mounts": t.mounts,
            "security": t.security,
            "policy": t.policy,
            "health": t.health,
            **({"networks": t.networks, "udp_ports": t.udp_ports} if t.networks else {}),
            "task_id": self.task_id,
            "workload_id": self.workload_id,
            "owner": self.owner,
            "image": self.image,
            "cpu_millis": self.cpu_millis,
            "memory_bytes": self.memory_bytes,
            "gpus": self.gpus,
            "ports": self.ports,
            "port_map": self.port_map,
            "desired": self.desired,
            "log_offsets": self.log_offsets,
        }
        if self.container_id:
            body["container_id"] = self.container_id
        if self.stop_signal:
            body["stop_signal"] = self.stop_signal
        if self.files:
            body["files"] = self.files
        return body

    @classmethod
    def decode(cls, item: object) -> DesiredEntry:
        body = _item(item, "a desired task")
        get = body.get
        task_id, image = get("task_id", _ABSENT), get("image", _ABSENT)
        workload_id, owner = get("workload_id", _ABSENT), get("owner", _ABSENT)
        desired = get("desired", _ABSENT)
        cpu_millis, memory_bytes = get("cpu_millis", _ABSENT), get("memory_bytes", _ABSENT)
        if type(task_id) is not str:
            raise _wrong("task_id", task_id, "a string")
        if type(image) is not str:
            raise _wrong("image", image, "a string")
        if type(workload_id) is not str:
            raise _wrong("workload_id", workload_id, "a string")
        if type(owner) is not str:
            raise _wrong("owner", owner, "a string")
        if type(desired) is not str:
            raise _wrong("desired", desired, "a string")
        if type(cpu_millis) is not int:
            raise _wrong("cpu_millis", cpu_millis, "an integer")
        if type(memory_bytes) is not int:
            raise _wrong("memory_bytes", memory_bytes, "an integer")
        container_id = get("container_id", "")
        if type(container_id) is not str:
            raise _wrong("container_id", container_id, "a string")
        stop_signal = get("stop_signal", "")
        if type(stop_signal) is not str:
            raise _wrong("stop_signal", stop_signal, "a string")
        port_map = _seq(body, "port_map")
        if port_map:
            for pair in port_map:
                if not (
                    type(pair) in _SEQUENCE
                    and len(pair) == 2
                    and type(pair[0]) is int
                    and type(pair[1]) is int
                ):
                    raise _wrong("port_map[]", pair, "a pair of integers")
            port_map = tuple(tuple(pair) for pair in port_map)
        return _build_entry(
            task_id,
            image,
            cpu_millis,
            memory_bytes,
            TaskTemplate.decode(body),
            workload_id,
            owner,
            _ints(body, "gpus"),
            _ints(body, "ports"),
            port_map,
            desired,
            _typed_map(body, "log_offsets", int, "an integer"),
            container_id,
            stop_signal,
            _files(body) if "files" in body else (),
        )


def _files(body: Body) -> tuple[dict[str, Any], ...]:
    """A start entry's files, checked without quoting a value in the error."""
    items = _seq(body, "files")
    for item in items:
        if not _is_map(item):
            raise ProtocolError("files[]: not a map")
        if "error" in item:
            if type(item["error"]) is not str:
                raise ProtocolError("files[].error: not a string")
            continue
        if type(item.get("target")) is not str or type(item.get("mode")) is not int:
            raise ProtocolError("files[]: target must be a string and mode an integer")
        if type(item.get("data")) is not bytes:
            raise ProtocolError("files[].data: not bytes")
        for key in ("uid", "gid"):
            if item.get(key) is not None and type(item[key]) is not int:
                raise ProtocolError(f"files[].{key}: not an integer or nil")
    return tuple(items)


_build_entry = _builder(DesiredEntry)


@dataclass(frozen=True, slots=True)
class Desired:
    """Every task the node should hold now, at this generation of its set."""

    TYPE: ClassVar[MsgType] = MsgType.DESIRED
    node_id: str
    generation: int
    tasks: tuple[DesiredEntry, ...]

    def encode(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "generation": self.generation,
            "tasks": [t.encode() for t in self.tasks],
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _str(body, "node_id"),
            _int(body, "generation"),
            tuple(DesiredEntry.decode(t) for t in _seq(body, "tasks")),
        )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Service discovery for a node: for every network one of its tasks is on, each name
    on it and, per protocol and container port, the published endpoints (node address,
    host port) of the healthy replicas anywhere in the cluster. Sent whenever the
    node's tables change and again every few seconds (a lost one costs that delay).

    ``networks``: network id -> ``{"internal": bool, "names": {name: {proto: {port:
    [[address, host port], ...]}}}}`` (``core.networks.NetworkTable.to_wire``; ports
    are string keys). The agent checks the values as it applies them."""

    TYPE: ClassVar[MsgType] = MsgType.ENDPOINTS
    node_id: str
    networks: dict[str, Any]

    def encode(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "networks": self.networks}

    @classmethod
    def decode(cls, body: Body) -> Self:
        networks = _map(body, "networks")
        for net_id, table in networks.items():
            if type(net_id) is not str or not _is_map(table) or not _is_map(table.get("names")):
                raise _wrong("networks[]", table, "a network table")
        return cls(_str(body, "node_id"), networks)


@dataclass(frozen=True, slots=True)
class Ack:
    """The server applied these reliable messages (by id)."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    ids: tuple[str, ...]

    def encode(self) -> dict[str, Any]:
        return {"ids": self.ids}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_strs(body, "ids"))


@dataclass(frozen=True, slots=True)
class Rehello:
    """The server does not know the node (its store lost it): say hello again."""

    TYPE: ClassVar[MsgType] = MsgType.REHELLO

    def encode(self) -> dict[str, Any]:
        return {}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class Orphans:
    """Answers ``foreign``: the node ids no live agent uses (unknown to the store, or
    down for longer than the server's orphan grace). The agent stops and removes
    their containers; a node id not listed is left alone."""

    TYPE: ClassVar[MsgType] = MsgType.ORPHANS
    node_ids: tuple[str, ...]

    def encode(self) -> dict[str, Any]:
        return {"node_ids": self.node_ids}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_strs(body, "node_ids"))


@dataclass(frozen=True, slots=True)
class CheckpointsOver:
    """Answers ``checkpoints``: the keys whose job (element, rank) is over for good
    (no attempt left, or removed). The agent removes those; others are kept."""

    TYPE: ClassVar[MsgType] = MsgType.CHECKPOINTS_OVER
    keys: tuple[str, ...]

    def encode(self) -> dict[str, Any]:
        return {"keys": self.keys}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_strs(body, "keys"))


@dataclass(frozen=True, slots=True)
class Prune:
    """Remove this node's dead containers (admin gc); answered with ``pruned``."""

    TYPE: ClassVar[MsgType] = MsgType.PRUNE

    def encode(self) -> dict[str, Any]:
        return {}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class Build:
    """Build an image from a context tar and tag it (re-sent until its output starts)."""

    TYPE: ClassVar[MsgType] = MsgType.BUILD
    build_id: str
    tag: str
    owner: str
    dockerfile: str
    context: bytes

    def encode(self) -> dict[str, Any]:
        return {
            "build_id": self.build_id,
            "tag": self.tag,
            "owner": self.owner,
            "dockerfile": self.dockerfile,
            "context": self.context,
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _str(body, "build_id"),
            _str(body, "tag"),
            _str(body, "owner"),
            _str(body, "dockerfile"),
            _bytes(body, "context"),
        )


@dataclass(frozen=True, slots=True)
class ExecStart:
    """Run a command in a task's container (``tty``: a terminal of cols x rows)."""

    TYPE: ClassVar[MsgType] = MsgType.EXEC_START
    exec_id: str
    task_id: str
    command: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    cols: int = 80
    rows: int = 24

    def encode(self) -> dict[str, Any]:
        return {
            "exec_id": self.exec_id,
            "task_id": self.task_id,
            "command": self.command,
            "tty": self.tty,
            "stdin": self.stdin,
            "cols": self.cols,
            "rows": self.rows,
        }

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(
            _str(body, "exec_id"),
            _str(body, "task_id"),
            _strs(body, "command"),
            _bool(body, "tty"),
            _bool(body, "stdin"),
            _int(body, "cols"),
            _int(body, "rows"),
        )


@dataclass(frozen=True, slots=True)
class ExecInput:
    """Bytes for an exec's stdin."""

    TYPE: ClassVar[MsgType] = MsgType.EXEC_INPUT
    exec_id: str
    data: bytes

    def encode(self) -> dict[str, Any]:
        return {"exec_id": self.exec_id, "data": self.data}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "exec_id"), _bytes(body, "data"))


@dataclass(frozen=True, slots=True)
class ExecResize:
    """An exec's terminal changed size."""

    TYPE: ClassVar[MsgType] = MsgType.EXEC_RESIZE
    exec_id: str
    cols: int
    rows: int

    def encode(self) -> dict[str, Any]:
        return {"exec_id": self.exec_id, "cols": self.cols, "rows": self.rows}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "exec_id"), _int(body, "cols"), _int(body, "rows"))


@dataclass(frozen=True, slots=True)
class ExecClose:
    """The exec's client went away: close its stdin and terminal."""

    TYPE: ClassVar[MsgType] = MsgType.EXEC_CLOSE
    exec_id: str

    def encode(self) -> dict[str, Any]:
        return {"exec_id": self.exec_id}

    @classmethod
    def decode(cls, body: Body) -> Self:
        return cls(_str(body, "exec_id"))


# -- frames ----------------------------------------------------------------------
AgentMessage: TypeAlias = (
    Hello
    | Heartbeat
    | Status
    | Logs
    | Usage
    | HealthReport
    | Pruned
    | BuildOutput
    | BuildDone
    | ExecOutput
    | ExecExit
    | Foreign
    | Reaped
    | Checkpoints
)
ServerMessage: TypeAlias = (
    Welcome
    | Refused
    | Desired
    | Endpoints
    | Ack
    | Rehello
    | Prune
    | Build
    | ExecStart
    | ExecInput
    | ExecResize
    | ExecClose
    | Orphans
    | CheckpointsOver
)
Message: TypeAlias = AgentMessage | ServerMessage

#: For isinstance checks: what an agent sends, what a server sends.
FROM_AGENT = (
    Hello,
    Heartbeat,
    Status,
    Logs,
    Usage,
    HealthReport,
    Pruned,
    BuildOutput,
    BuildDone,
    ExecOutput,
    ExecExit,
    Foreign,
    Reaped,
    Checkpoints,
)
FROM_SERVER = (
    Welcome,
    Refused,
    Desired,
    Endpoints,
    Ack,
    Rehello,
    Prune,
    Build,
    ExecStart,
    ExecInput,
    ExecResize,
    ExecClose,
    Orphans,
    CheckpointsOver,
)

#: Wire name -> body decoder: one dict lookup per frame.
_DECODERS: dict[str, Callable[[Body], Message]] = {
    cls.TYPE.value: cls.decode for cls in (*FROM_AGENT, *FROM_SERVER)
}


def encode(msg: Message, msg_id: str = "") -> bytes:
    """The frame of ``msg``; ``msg_id``: the id a reliable message is acked by."""
    frame = {"v": VERSION, "t": msg.TYPE.value, "id": msg_id, "b": msg.encode()}
    return bytes(msgpack.packb(frame))


def decode(frame: bytes) -> tuple[Message, str]:
    """The message in a frame and its id (empty unless reliable); ProtocolError if the
    frame is not one, or its body is malformed."""
    try:
        data = msgpack.unpackb(frame, raw=False, use_list=False)
    except Exception as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    if type(data) is not dict:
        raise ProtocolError("frame is not a map")
    if data.get("v") != VERSION:
        raise ProtocolError(f"protocol version {data.get('v')!r:.40} is not {VERSION}")
    name = data.get("t")
    decoder = _DECODERS.get(name) if type(name) is str else None
    if decoder is None:
        raise ProtocolError(f"unknown message type {name!r:.40}")
    body = data.get("b")
    if type(body) is not dict:
        raise ProtocolError(f"{name}: body is not a map")
    msg_id = data.get("id", "")
    if type(msg_id) is not str:
        raise ProtocolError(f"{name}: message id is not a string")
    try:
        return decoder(body), msg_id
    except ProtocolError as exc:
        raise ProtocolError(f"{name}: {exc}") from None
