"""A hypothesis state machine over the scheduler shell and a real SQLite store.

Jobs are submitted, scheduling passes run, agents report (stale, out of order,
from the wrong node), nodes go down and come back, tasks are killed; after every
step the store is read and the invariants of the task lifecycle are checked.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select

from dockyard.core.policy import Attempt, decide
from dockyard.core.specs import build_job_spec
from dockyard.core.states import PLACED_STATES, TaskState
from dockyard.protocol.messages import Hello, TaskStatus
from dockyard.server.control.loops import SchedulerLoop
from dockyard.server.errors import Conflict
from dockyard.server.state import nodes as node_ops
from dockyard.server.state import tasks as task_ops
from dockyard.server.state.auth import Principal, create_user
from dockyard.server.state.jobs import submit_job
from dockyard.server.state.reports import apply_statuses
from dockyard.server.state.workload_specs import workload_specs
from dockyard.store.db import Database
from dockyard.store.tables import Node, Task

GIB = 1024**3
#: Capacity per node id (a node comes back with the capacity it had).
NODES = {"n1": (2000, 2 * GIB), "n2": (1000, 4 * GIB), "n3": (4000, 1 * GIB)}
REPORTED = ["pulling", "starting", "running", "succeeded", "failed", "killed", "bogus"]
REASONS = {"succeeded": "exit_zero", "failed": "exit_nonzero", "killed": "killed"}


def _hello(node_id: str) -> Hello:
    cpu, memory = NODES[node_id]
    return Hello(node_id, node_id, "127.0.0.1", "sim", "test", cpu, memory)


def _attempt(task: Task) -> Attempt:
    started = task.started_at
    return Attempt(
        state=TaskState(task.state),
        reason=task.reason,
        ran_for_s=(task.finished_at or 0.0) - started if started else 0.0,
        stop_reason=task.stop_reason,
        ended_at=task.finished_at or 0.0,
    )


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.db = Database(f"sqlite:///{Path(self._dir.name) / 'store.db'}")
        self.db.migrate()
        with self.db.write() as session:
            user = create_user(session, "alice")
            self.owner = Principal(user.id, user.name, user.is_admin)
        self.scheduler = SchedulerLoop(self.db, push=lambda _nodes: None)
        self.task_ids: list[str] = []
        self.seen: dict[str, TaskState] = {}
        #: Where each task was first seen placed (checked against node readiness then).
        self.placed_on: dict[str, str] = {}
        self.registered: set[str] = set()
        #: Workload ids in submission order.
        self.jobs: list[str] = []

    def teardown(self) -> None:
        self.db.dispose()
        self._dir.cleanup()

    # -- rules -------------------------------------------------------------
    @initialize()
    def first_node(self) -> None:
        self.register("n1")

    @rule(node=st.sampled_from(sorted(NODES)))
    def register(self, node: str) -> None:
        with self.db.write() as session:
            node_ops.register(session, _hello(node))
        self.registered.add(node)

    @rule(
        cpu_millis=st.sampled_from([100, 250, 500, 1000, 1500]),
        memory_mib=st.sampled_from([64, 256, 512, 1024, 2048]),
        restart=st.one_of(
            st.just("never"),
            st.integers(0, 3).map(
                lambda n: {
                    "mode": "on-failure",
                    "max_attempts": n,
                    "initial_delay_s": 0.001,
                    "max_delay_s": 0.001,
                }
            ),
        ),
    )
    def submit(self, cpu_millis: int, memory_mib: int, restart: Any) -> None:
        spec = build_job_spec(
            name="job",
            image="busybox:1.36",
            cpu=f"{cpu_millis}m",
            memory=memory_mib * 1024 * 1024,
            restart=restart,
        )
        with self.db.write() as session:
            task = submit_job(session, self.owner, spec)
            self.task_ids.append(task.id)
            self.jobs.append(task.workload_id)

    @rule()
    def schedule(self) -> None:
        with self.db.read() as session:
            ready = set(session.scalars(select(Node.id).where(Node.state == "ready")))
        self.scheduler.step()
        with self.db.read() as session:
            for task in session.scalars(select(Task).where(Task.node_id.is_not(None))):
                if task.id not in self.placed_on:
                    assert task.node_id is not None
                    assert task.node_id in ready, (
                        f"{task.id} placed on {task.node_id}, not ready ({ready})"
                    )
                    self.placed_on[task.id] = task.node_id
                    event("a task was placed")

    @precondition(lambda self: self.task_ids)
    @rule(
        data=st.data(),
        state=st.sampled_from(REPORTED),
        wrong_node=st.integers(0, 4).map(lambda n: n == 0),
        exit_code=st.sampled_from([None, 0, 1, 137]),
        with_reason=st.booleans(),
    )
    def report(
        self,
        data: st.DataObject,
        state: str,
        wrong_node: bool,
        exit_code: int | None,
        with_reason: bool,
    ) -> None:
        task_id = data.draw(st.sampled_from(self.placed_task_ids() or self.all_task_ids()))
        with self.db.read() as session:
            task = session.get(Task, task_id)
            assert task is not None
            node = task.node_id
        if wrong_node or node is None:
            node = data.draw(st.sampled_from(sorted(NODES)))
        reason = REASONS.get(state, "") if with_reason else ""
        status = TaskStatus(task_id, state, reason, exit_code=exit_code)
        with self.db.write() as session:
            apply_statuses(session, [(node, status)])

    @precondition(lambda self: self.task_ids)
    @rule(data=st.data(), states=st.lists(st.sampled_from(REPORTED), min_size=2, max_size=4))
    def report_batch(self, data: st.DataObject, states: list[str]) -> None:
        """Several reports for one task in one batch, in any order (a merged message)."""
        task_id = data.draw(st.sampled_from(self.placed_task_ids() or self.all_task_ids()))
        with self.db.read() as session:
            task = session.get(Task, task_id)
            assert task is not None
            node = task.node_id or "n1"
        reports = [(node, TaskStatus(task_id, s, REASONS.get(s, ""))) for s in states]
        with self.db.write() as session:
            apply_statuses(session, reports)

    @precondition(lambda self: self.registered)
    @rule(data=st.data())
    def mark_down(self, data: st.DataObject) -> None:
        node_id = data.draw(st.sampled_from(sorted(self.registered)))
        with self.db.write() as session:
            node = session.get(Node, node_id)
            assert node is not None
            if node.state in ("ready", "suspect"):  # as the node monitor decides
                node_ops.mark_down(session, node, 30.0)

    @precondition(lambda self: self.task_ids)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self.all_task_ids()))
        try:
            with self.db.write() as session:
                task_ops.kill(session, self.owner, task_id)
        except Conflict:
            with self.db.read() as session:
                task = session.get(Task, task_id)
                assert task is not None and TaskState(task.state).terminal

    def placed_task_ids(self) -> list[str]:
        return self._ordered(Task.state.in_([s.value for s in PLACED_STATES]))

    def all_task_ids(self) -> list[str]:
        return self._ordered(Task.id.is_not(None))

    def _ordered(self, where: Any) -> list[str]:
        """Task ids in a deterministic order (ids are random: sorting them is not),
        so that hypothesis draws the same task for the same choice on a replay."""
        with self.db.read() as session:
            rows = session.execute(select(Task.id, Task.workload_id, Task.attempt).where(where))
            keyed = sorted((self.jobs.index(w), a, i) for i, w, a in rows)
        return [i for _, _, i in keyed]

    # -- invariants --------------------------------------------------------
    def _tasks(self) -> list[Task]:
        with self.db.read() as session:
            tasks = list(session.scalars(select(Task)))
            session.expunge_all()
            return tasks

    @invariant()
    def check_store(self) -> None:
        tasks = self._tasks()
        with self.db.read() as session:
            nodes = {n.id: (n.cpu_millis, n.memory_bytes) for n in session.scalars(select(Node))}
            specs = workload_specs(session, {t.workload_id for t in tasks})
        by_job: dict[str, list[Task]] = {}
        for task in tasks:
            by_job.setdefault(task.workload_id, []).append(task)
            state = TaskState(task.state)
            # a task's state never moves backwards, and never leaves a terminal state
            before = self.seen.get(task.id)
            if before is not None:
                assert state.rank >= before.rank, f"{task.id}: {before} -> {state}"
                if before.terminal:
                    assert state == before, f"{task.id}: {before} -> {state}"
            self.seen[task.id] = state
            # every terminal task says why
            if state.terminal:
                event(f"a task ended {state}")
                assert task.reason, f"{task.id} ended {state} without a reason"
            if state in PLACED_STATES:
                assert task.node_id is not None
        # no node over-committed
        used: dict[str, list[int]] = {}
        for task in tasks:
            if TaskState(task.state) in PLACED_STATES:
                assert task.node_id is not None
                cpu_mem = used.setdefault(task.node_id, [0, 0])
                cpu_mem[0] += task.cpu_millis
                cpu_mem[1] += task.memory_bytes
        for node_id, (cpu, memory) in used.items():
            cap_cpu, cap_mem = nodes[node_id]
            assert cpu <= cap_cpu and memory <= cap_mem, f"{node_id}: {cpu}/{memory} placed"
        for job_id, attempts in by_job.items():
            live = [t for t in attempts if not TaskState(t.state).terminal]
            # at most one live task per job (and so per (job, attempt))
            assert len(live) <= 1, f"job {job_id}: {[(t.id, t.attempt, t.state) for t in live]}"
            numbers = [t.attempt for t in attempts]
            assert len(numbers) == len(set(numbers)), f"job {job_id}: attempts {numbers}"
            # a lost task whose policy allows another attempt has exactly one follow-up
            ordered = sorted(attempts, key=lambda t: t.attempt)
            spec = specs[job_id].spec
            for index, task in enumerate(ordered):
                if task.state != TaskState.LOST:
                    continue
                history = [_attempt(t) for t in ordered[: index + 1]]
                follow = [t for t in attempts if t.previous_task_id == task.id]
                if decide(spec.restart, history).replace:
                    event("a lost task was replaced")
                    assert len(follow) == 1, f"lost {task.id}: follow-ups {follow}"
                    assert follow[0].attempt == task.attempt + 1
                else:
                    assert not follow, f"lost {task.id} replaced against its policy"


#: 40 runs of up to 40 steps in CI (100 x 50 took 76 s of the suite);
#: DOCKYARD_STATE_MACHINE_EXAMPLES=500 for a deeper local run.
StoreMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DOCKYARD_STATE_MACHINE_EXAMPLES", "40")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreStateMachine = StoreMachine.TestCase
