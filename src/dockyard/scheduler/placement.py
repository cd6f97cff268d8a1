"""Placement: a pure function from a snapshot of nodes and queued tasks to a plan.

The scheduler loop reads a snapshot from the store, orders the queue
(:mod:`dockyard.scheduler.queue`), calls :func:`place`, and writes the plan
back. Nothing here touches a database, a socket or a clock (``now`` is passed in).

Feasibility, per node: state ``ready``; every constraint holds on its labels;
none of the task's host ports in use; enough free whole GPUs; enough free CPU
and memory. Scoring: ``binpack`` (fullest node that fits) or ``spread`` (emptiest).

Scale: nodes are not all scanned for every task. Tasks with the same *shape*
(resources, GPUs, ports, constraints, algorithm) share a candidate list, built
once per pass from the nodes whose state and labels qualify, ordered fullest
first (binpack) or emptiest first (spread). Each task takes the best of the
first ``limit`` candidates that fit (Nomad's limited iterator: 2 for binpack,
``log2(n)`` for spread); a candidate found too small is dropped from that
shape's list for the rest of the pass. Free resources only shrink during a
pass, so a dropped node can never fit that shape again in the pass: when the
list runs dry the task really fits nowhere, and a task that fits somewhere is
always placed. Cost is O(nodes) per distinct shape plus O(limit) per task.

Backfill: when the first task in queue order that could ever run (the *head*)
does not fit now, it gets a reservation on the node where it could start
earliest, judged from the declared max runtimes of what runs there (see
:func:`reserve`). Later tasks may use that node only if they end before the
reserved start (by their own declared max runtime) or leave room for the head
even while still running, so backfill never delays the head. A gang that does
not fit now gets the reservation as a whole (:func:`_reserve_gang`): a node for
each member (or several members on one), all protected until the gang's common
start, so a stream of smaller work cannot starve it.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from dockyard.core.resources import Resources
from dockyard.scheduler.constraints import Constraint, first_violated

BINPACK = "binpack"
#: At most this many nodes that have a task's image are looked at (image locality).
IMAGE_LOOKAHEAD = 64
SPREAD = "spread"
#: The host port range services' published ports are allocated from (like Nomad's
#: dynamic port range; below Linux's default ephemeral range, 32768-60999).
DYNAMIC_PORTS = (20000, 32000)
ALGORITHMS = (BINPACK, SPREAD)
INF = math.inf


@dataclass(frozen=True, slots=True)
class NodeView:
    """What placement needs to know about one node."""

    node_id: str
    name: str
    state: str  # "ready", "draining", "suspect", "down"
    capacity: Resources
    allocated: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Device indices of the node's GPUs, and those held by placed tasks.
    gpus: tuple[int, ...] = ()
    gpus_used: frozenset[int] = frozenset()
    ports_used: frozenset[int] = frozenset()
    #: Images the node already has (it reports them): placement prefers these nodes.
    images: frozenset[str] = frozenset()

    @property
    def free(self) -> Resources:
        return self.capacity - self.allocated


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A queued task asking for resources, in queue order."""

    task_id: str
    resources: Resources
    gpus: int = 0
    ports: tuple[int, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    algorithm: str = BINPACK
    #: Declared max runtime: lets backfill know when it will end.
    max_runtime_s: float | None = None
    #: The task's image: among fitting nodes, those that have it are preferred.
    image: str = ""
    #: Host ports to allocate on the chosen node (a service replica's published ports).
    dynamic_ports: int = 0
    #: Gang jobs: the members of ``gang`` (a job id) are placed all at once or none;
    #: ``gang_size`` members in all; ``gang_nodes``: each on a node of its own.
    gang: str = ""
    gang_size: int = 0
    gang_nodes: bool = False


@dataclass(frozen=True, slots=True)
class Running:
    """A placed task, for backfill: what it holds and when it ends at the latest."""

    node_id: str
    resources: Resources
    gpus: int = 0
    ports: tuple[int, ...] = ()
    ends_at: float | None = None  # None: no declared max runtime


@dataclass(frozen=True, slots=True)
class Reservation:
    """The head task may start on ``node_id`` at ``start`` (``inf``: when unbounded work ends)."""

    task_id: str
    node_id: str
    start: float


@dataclass(slots=True)
class Plan:
    """Assignments (task id -> node id, GPU indices) and, for each task left pending, why."""

    assignments: dict[str, str] = field(default_factory=dict)
    gpus: dict[str, tuple[int, ...]] = field(default_factory=dict)
    pending_reasons: dict[str, str] = field(default_factory=dict)
    #: Machine-readable: per pending task, ``{"total": n, "fit": 0, "reasons": {why: count}}``.
    pending_detail: dict[str, dict[str, object]] = field(default_factory=dict)
    reservation: Reservation | None = None
    #: Every node the reservation protects (a gang's: one per node it would use).
    reservations: list[Reservation] = field(default_factory=list)
    #: Host ports allocated to tasks that asked for ``dynamic_ports``, in order.
    host_ports: dict[str, tuple[int, ...]] = field(default_factory=dict)


def explain(misfits: Mapping[str, int], total: int) -> str:
    """``0/12 nodes fit: 8 insufficient memory, 3 draining, 1 constraint zone=a``."""
    if total == 0:
        return "no nodes registered"
    ordered = sorted(misfits.items(), key=lambda kv: (-kv[1], kv[0]))
    detail = ", ".join(f"{count} {why}" for why, count in ordered)
    return f"0/{total} nodes fit: {detail}"


class _Node:
    """A node's mutable free resources during one pass."""

    __slots__ = (
        "cap_cpu",
        "cap_mem",
        "free_cpu",
        "free_gpus",
        "free_mem",
        "index",
        "ports",
        "view",
    )

    def __init__(self, index: int, view: NodeView) -> None:
        self.index = index
        self.view = view
        self.cap_cpu = max(view.capacity.cpu_millis, 1)
        self.cap_mem = max(view.capacity.memory_bytes, 1)
        self.free_cpu = view.capacity.cpu_millis - view.allocated.cpu_millis
        self.free_mem = view.capacity.memory_bytes - view.allocated.memory_bytes
        self.free_gpus = sorted(set(view.gpus) - view.gpus_used)
        self.ports = set(view.ports_used)

    def fullness(self) -> float:
        return -(self.free_cpu / self.cap_cpu + self.free_mem / self.cap_mem)


def _state_reason(state: str) -> str:
    return "draining" if state == "draining" else f"node {state}"


def _fits(node: _Node, task: TaskRequest) -> bool:
    return (
        task.resources.cpu_millis <= node.free_cpu
        and task.resources.memory_bytes <= node.free_mem
        and task.gpus <= len(node.free_gpus)
        and not (task.ports and node.ports.intersection(task.ports))
    )


def _misfit(node: _Node, task: TaskRequest) -> str | None:
    """Why ``task`` cannot go on ``node`` now (the first failing check), or None."""
    if node.view.state != "ready":
        return _state_reason(node.view.state)
    violated = first_violated(task.constraints, node.view.labels)
    if violated is not None:
        return f"constraint {violated}"
    if task.ports and node.ports.intersection(task.ports):
        return "port in use"
    if task.gpus > len(node.free_gpus):
        return "insufficient gpus"
    if task.resources.cpu_millis > node.free_cpu:
        return "insufficient cpu"
    if task.resources.memory_bytes > node.free_mem:
        return "insufficient memory"
    return None


def _score(node: _Node, task: TaskRequest) -> float:
    """Lower is better. binpack: least left over; spread: most left over."""
    left = (node.free_cpu - task.resources.cpu_millis) / node.cap_cpu + (
        node.free_mem - task.resources.memory_bytes
    ) / node.cap_mem
    if task.algorithm == SPREAD:
        return -left
    # Keep GPU nodes for GPU work when a plain node will do.
    return left + (1.0 if task.gpus == 0 and node.free_gpus else 0.0)


@dataclass(slots=True)
class _Shape:
    candidates: list[int]
    cursor: int = 0
    reason: tuple[str, dict[str, object]] | None = None


@dataclass(slots=True)
class _Backfill:
    """The reservation being protected during the rest of a pass."""

    node: _Node
    start: float
    head: TaskRequest
    #: What may still run on the node at ``start`` on top of the head's needs.
    room_cpu: int
    room_mem: int
    room_gpus: int
    head_ports: frozenset[int]

    def allows(self, task: TaskRequest, now: float) -> bool:
        if (
            self.start != INF
            and task.max_runtime_s is not None
            and now + task.max_runtime_s <= self.start
        ):
            return True  # it ends before the head starts
        return (
            task.resources.cpu_millis <= self.room_cpu
            and task.resources.memory_bytes <= self.room_mem
            and task.gpus <= self.room_gpus
            and not self.head_ports.intersection(task.ports)
        )

    def take(self, task: TaskRequest, now: float) -> None:
        if (
            self.start != INF
            and task.max_runtime_s is not None
            and now + task.max_runtime_s <= self.start
        ):
            return
        self.room_cpu -= task.resources.cpu_millis
        self.room_mem -= task.resources.memory_bytes
        self.room_gpus -= task.gpus


def place(
    tasks: Sequence[TaskRequest],
    nodes: Sequence[NodeView],
    *,
    running: Sequence[Running] | None = None,
    now: float = 0.0,
    limit: int | None = None,
) -> Plan:
    """Place ``tasks`` in queue order on ``nodes``; tasks that fit nowhere keep a reason.

    ``running`` (placed tasks with their declared ends) turns on backfill: see the
    module docstring. ``limit`` overrides the number of fitting candidates compared.
    """
    state = [_Node(i, view) for i, view in enumerate(nodes)]
    total = len(state)
    binpack_limit = limit or 2
    spread_limit = limit or max(2, math.ceil(math.log2(max(total, 2))))
    eligible: dict[tuple[tuple[Constraint, ...], str, bool], list[int]] = {}
    shapes: dict[tuple[object, ...], _Shape] = {}
    plan = Plan()
    by_image: dict[str, list[_Node]] = {}
    for n in state:
        for image in n.view.images:
            by_image.setdefault(image, []).append(n)
    #: The reservation of this pass, by node index (one node; a gang's: several).
    holds: dict[int, _Backfill] = {}
    placed: list[tuple[TaskRequest, _Node]] = []
    gangs: dict[str, list[TaskRequest]] = {}
    for task in tasks:
        if task.gang and task.gang_size > 1:
            gangs.setdefault(task.gang, []).append(task)
    gangs_done: set[str] = set()

    def candidates(task: TaskRequest) -> list[int]:
        key = (task.constraints, task.algorithm, task.gpus == 0)
        order = eligible.get(key)
        if order is None:
            ready = [
                n
                for n in state
                if n.view.state == "ready"
                and first_violated(task.constraints, n.view.labels) is None
            ]
            if task.algorithm == SPREAD:
                ready.sort(key=lambda n: (bool(n.free_gpus) and task.gpus == 0, n.fullness()))
            else:
                ready.sort(key=lambda n: (bool(n.free_gpus) and task.gpus == 0, -n.fullness()))
            order = eligible[key] = [n.index for n in ready]
        return list(order)

    def pending(task: TaskRequest, shape: _Shape) -> None:
        if shape.reason is None:
            misfits: Counter[str] = Counter()
            for node in state:
                why = _misfit(node, task)
                if why is None:  # fits in raw terms: held back by the reservation
                    why = "reserved for a queued task"
                misfits[why] += 1
            shape.reason = (
                explain(misfits, total),
                {"total": total, "fit": 0, "reasons": dict(misfits)},
            )
        plan.pending_reasons[task.task_id] = shape.reason[0]
        plan.pending_detail[task.task_id] = shape.reason[1]

    def shape_of(task: TaskRequest) -> _Shape:
        key = (
            task.resources,
            task.gpus,
            task.ports,
            task.constraints,
            task.algorithm,
        )
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = _Shape(candidates(task))
        return shape

    def take(task: TaskRequest, chosen: _Node) -> tuple[int, ...]:
        chosen.free_cpu -= task.resources.cpu_millis
        chosen.free_mem -= task.resources.memory_bytes
        taken = tuple(chosen.free_gpus[: task.gpus])
        del chosen.free_gpus[: task.gpus]
        chosen.ports.update(task.ports)
        return taken

    def gang_pending(members: list[TaskRequest], why: str) -> None:
        for member in members:
            plan.pending_reasons[member.task_id] = why
            plan.pending_detail[member.task_id] = {
                "total": total,
                "fit": 0,
                "reasons": {why: len(members)},
            }

    def place_gang(members: list[TaskRequest]) -> None:
        """All members or none: a tentative placement is undone when one fails."""
        size = members[0].gang_size
        if len(members) < size:
            gang_pending(members, f"gang: {len(members)} of {size} members queued")
            return
        saved = {id(sh): list(sh.candidates) for sh in shapes.values()}
        done: list[tuple[TaskRequest, _Node, tuple[int, ...]]] = []
        used: set[int] = set()
        for member in members:
            shape = shape_of(member)
            saved.setdefault(id(shape), list(shape.candidates))
            chosen = _choose(
                member,
                shape,
                state,
                holds,
                now,
                binpack_limit,
                spread_limit,
                by_image,
                exclude=used if member.gang_nodes else None,
            )
            if chosen is None:
                for task, node, taken in done:  # undo: no partial allocation is held
                    node.free_cpu += task.resources.cpu_millis
                    node.free_mem += task.resources.memory_bytes
                    node.free_gpus = sorted([*node.free_gpus, *taken])
                    node.ports.difference_update(task.ports)
                for sh in shapes.values():
                    if id(sh) in saved:
                        sh.candidates[:] = saved[id(sh)]
                where = "nodes" if member.gang_nodes else "tasks"
                gang_pending(members, f"gang: {len(done)} of {size} {where} fit now")
                if not holds and running is not None:
                    for gang_hold in _reserve_gang(members, state, running, placed, now) or ():
                        holds[gang_hold.node.index] = gang_hold
                        plan.reservations.append(
                            Reservation(
                                gang_hold.head.task_id, gang_hold.node.view.node_id, gang_hold.start
                            )
                        )
                    plan.reservation = plan.reservations[0] if plan.reservations else None
                return
            used.add(chosen.index)
            done.append((member, chosen, take(member, chosen)))
        for task, node, taken in done:
            hold = holds.get(node.index)
            if hold is not None:
                hold.take(task, now)
            plan.assignments[task.task_id] = node.view.node_id
            if taken:
                plan.gpus[task.task_id] = taken
            placed.append((task, node))

    for task in tasks:
        if task.gang in gangs:
            if task.gang not in gangs_done:
                gangs_done.add(task.gang)
                place_gang(gangs[task.gang])
            continue
        shape = shape_of(task)
        chosen = _choose(task, shape, state, holds, now, binpack_limit, spread_limit, by_image)
        if chosen is None:
            if not holds and running is not None:
                backfill = _reserve(task, state, running, placed, now)
                if backfill is not None:
                    holds[backfill.node.index] = backfill
                    plan.reservation = Reservation(
                        task.task_id, backfill.node.view.node_id, backfill.start
                    )
                    plan.reservations.append(plan.reservation)
            pending(task, shape)
            continue
        hold = holds.get(chosen.index)
        if hold is not None:
            hold.take(task, now)
        taken = take(task, chosen)
        if task.dynamic_ports:
            allocated = allocate_ports(chosen.ports, task.dynamic_ports, task.task_id)
            chosen.ports.update(allocated)
            plan.host_ports[task.task_id] = allocated
        plan.assignments[task.task_id] = chosen.view.node_id
        if taken:
            plan.gpus[task.task_id] = taken
        placed.append((task, chosen))
    return plan


def allocate_ports(used: set[int], count: int, seed: str) -> tuple[int, ...]:
    """``count`` free host ports of :data:`DYNAMIC_PORTS` on a node using ``used``.

    The search starts at a point derived from ``seed`` (the task id) rather than
    at the lowest port, so a replacement after a port clash with a process
    outside dockyard most likely gets another port.
    """
    low, high = DYNAMIC_PORTS
    span = high - low + 1
    start = zlib.crc32(seed.encode()) % span
    found: list[int] = []
    for offset in range(span):
        port = low + (start + offset) % span
        if port not in used:
            found.append(port)
            if len(found) == count:
                return tuple(found)
    raise ValueError(f"no {count} free host ports in {low}-{high}")


def _choose(
    task: TaskRequest,
    shape: _Shape,
    state: list[_Node],
    holds: Mapping[int, _Backfill],
    now: float,
    binpack_limit: int,
    spread_limit: int,
    by_image: Mapping[str, list[_Node]],
    exclude: set[int] | None = None,
) -> _Node | None:
    cands = shape.candidates
    spread = task.algorithm == SPREAD
    want = spread_limit if spread else binpack_limit
    found: list[_Node] = []
    # binpack always restarts at the fullest node; spread rotates through the list.
    i = shape.cursor if spread else 0
    examined = 0
    while cands and len(found) < want and examined < len(cands):
        if i >= len(cands):
            i = 0
        node = state[cands[i]]
        if not _fits(node, task):
            del cands[i]  # never fits this shape again in this pass
            continue
        examined += 1
        i += 1
        hold = holds.get(node.index)
        if hold is not None and not hold.allows(task, now):
            continue
        if exclude and node.index in exclude:
            continue  # a gang member wants a node of its own
        found.append(node)
    if task.image and found and not any(task.image in n.view.images for n in found):
        # Image locality: the nodes that have the image are indexed; take the best
        # of (at most IMAGE_LOOKAHEAD) fitting ones.
        local = [
            n
            for n in by_image.get(task.image, ())[:IMAGE_LOOKAHEAD]
            if n.view.state == "ready"
            and first_violated(task.constraints, n.view.labels) is None
            and _fits(n, task)
            and (n.index not in holds or holds[n.index].allows(task, now))
            and not (exclude and n.index in exclude)
        ]
        if local:
            found.append(min(local, key=lambda n: _score(n, task)))
    shape.cursor = i
    if not found:
        return None
    return min(
        found, key=lambda n: (bool(task.image) and task.image not in n.view.images, _score(n, task))
    )


def _reserve(
    head: TaskRequest,
    state: list[_Node],
    running: Sequence[Running],
    placed: list[tuple[TaskRequest, _Node]],
    now: float,
) -> _Backfill | None:
    """The earliest start for ``head`` on a node where it could ever run (:func:`reserve`)."""
    possible = _possible(head, state)
    if not possible:
        return None
    holding = _holding(possible, running, placed, now)
    best: tuple[float, float, _Node, tuple[int, int, int]] | None = None
    for node in possible:
        start, room = reserve(head, node.view, holding.get(node.view.node_id, []), now)
        if room is None:
            continue
        key = (start, node.fullness())
        if best is None or key < best[:2]:
            best = (start, key[1], node, room)
    if best is None:
        return None
    start, _, node, room = best
    return _Backfill(node, start, head, room[0], room[1], room[2], frozenset(head.ports))


def _reserve_gang(
    members: Sequence[TaskRequest],
    state: list[_Node],
    running: Sequence[Running],
    placed: list[tuple[TaskRequest, _Node]],
    now: float,
) -> list[_Backfill] | None:
    """A reservation for a whole gang: each member in turn goes to the node where it
    (with the members already given that node) could start earliest; the gang starts
    when its last node is free, and each node it uses is held until then. None when
    the gang could never run on these nodes."""
    possible = _possible(members[0], state)
    holding = _holding(possible, running, placed, now)
    given: dict[int, list[TaskRequest]] = {}
    found: dict[int, tuple[float, tuple[int, int, int], TaskRequest]] = {}
    for member in members:
        best: tuple[float, float, _Node, tuple[int, int, int], TaskRequest] | None = None
        for node in possible:
            if member.gang_nodes and node.index in given:
                continue
            group = [*given.get(node.index, ()), member]
            head = replace(
                member,
                resources=Resources(
                    sum(m.resources.cpu_millis for m in group),
                    sum(m.resources.memory_bytes for m in group),
                ),
                gpus=sum(m.gpus for m in group),
                ports=tuple(p for m in group for p in m.ports),
            )
            start, room = reserve(head, node.view, holding.get(node.view.node_id, []), now)
            if room is None:
                continue
            key = (start, node.fullness())
            if best is None or key < best[:2]:
                best = (start, key[1], node, room, head)
        if best is None:
            return None
        start, _, node, room, head = best
        given.setdefault(node.index, []).append(member)
        found[node.index] = (start, room, head)
    common = max(start for start, _, _ in found.values())
    return [
        _Backfill(state[i], common, head, room[0], room[1], room[2], frozenset(head.ports))
        for i, (_, room, head) in found.items()
    ]


def _possible(head: TaskRequest, state: list[_Node]) -> list[_Node]:
    """The nodes where ``head`` could ever run (ready, its constraints, big enough)."""
    return [
        n
        for n in state
        if n.view.state == "ready"
        and first_violated(head.constraints, n.view.labels) is None
        and head.resources.fits_in(n.view.capacity)
        and head.gpus <= len(n.view.gpus)
    ]


def _holding(
    possible: list[_Node],
    running: Sequence[Running],
    placed: list[tuple[TaskRequest, _Node]],
    now: float,
) -> dict[str, list[Running]]:
    """What holds each of these nodes, with its declared end: ``running``, what the
    snapshot allocates beyond it (never ends), and what this pass placed."""
    ids = {n.view.node_id: n for n in possible}
    holding: dict[str, list[Running]] = {}
    for item in running:
        if item.node_id in ids:
            holding.setdefault(item.node_id, []).append(item)
    for node_id, node in ids.items():
        # What the snapshot holds that ``running`` does not explain never ends.
        known = holding.get(node_id, [])
        rest = node.view.allocated - Resources(
            sum(r.resources.cpu_millis for r in known), sum(r.resources.memory_bytes for r in known)
        )
        rest_gpus = len(node.view.gpus_used) - sum(r.gpus for r in known)
        rest_ports = tuple(node.view.ports_used - {p for r in known for p in r.ports})
        if rest.cpu_millis > 0 or rest.memory_bytes > 0 or rest_gpus > 0 or rest_ports:
            extra = Resources(max(rest.cpu_millis, 0), max(rest.memory_bytes, 0))
            holding.setdefault(node_id, []).append(
                Running(node_id, extra, max(rest_gpus, 0), rest_ports, None)
            )
    for task, node in placed:
        if node.view.node_id in ids:
            ends = None if task.max_runtime_s is None else now + task.max_runtime_s
            holding.setdefault(node.view.node_id, []).append(
                Running(node.view.node_id, task.resources, task.gpus, task.ports, ends)
            )
    return holding


def reserve(
    head: TaskRequest, node: NodeView, holding: Sequence[Running], now: float
) -> tuple[float, tuple[int, int, int] | None]:
    """When ``head`` could start on ``node`` if what it holds ends at its declared end.

    Returns the start (``now`` or later; ``inf`` when only work without a declared
    end stands in the way) and the room (CPU, memory, GPUs) left beside the head at
    that start, or ``(inf, None)`` when even an empty node could not take it.
    """
    cap = node.capacity
    if not head.resources.fits_in(cap) or head.gpus > len(node.gpus):
        return INF, None
    ordered = sorted(holding, key=lambda r: INF if r.ends_at is None else r.ends_at)
    cpu = sum(r.resources.cpu_millis for r in ordered)
    mem = sum(r.resources.memory_bytes for r in ordered)
    gpus = sum(r.gpus for r in ordered)
    ports: Counter[int] = Counter(p for r in ordered for p in r.ports)

    def room() -> tuple[int, int, int] | None:
        left = (
            cap.cpu_millis - cpu - head.resources.cpu_millis,
            cap.memory_bytes - mem - head.resources.memory_bytes,
            len(node.gpus) - gpus - head.gpus,
        )
        if min(left) < 0 or any(ports[p] > 0 for p in head.ports):
            return None
        return left

    start = now
    fit = room()
    for item in ordered:
        if fit is not None:
            break
        start = INF if item.ends_at is None else max(now, item.ends_at)
        cpu -= item.resources.cpu_millis
        mem -= item.resources.memory_bytes
        gpus -= item.gpus
        ports.subtract(item.ports)
        fit = room()
    if fit is None:
        return INF, None
    return start, fit
