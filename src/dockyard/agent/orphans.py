"""Containers labelled with a node id no live agent uses any more.

An agent that lost its data dir comes back under a new node id; its old
containers keep their old node label, so no reconciler owns them and they
would run for ever. Several agents may share one Docker Engine (two agents on
one host), so an agent never judges another node id by itself: every
``interval`` it lists the dockyard containers of other node ids on its Engine
and asks the server (``foreign``), which answers with the ones no live agent
uses (``orphans``: registered in its store and down for longer than its orphan
grace; a node id it never had may be another cluster's on the same Engine).
Only those node ids' containers are stopped (SIGTERM, SIGKILL after
``grace``) and removed, then reported (``reaped``, recorded as an event).

The same thread runs the agent's other cleanup pass: checkpoints of jobs that are
over (``agent/checkpoints.py``), every ``checkpoint_interval``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from dockyard.agent.checkpoints import CheckpointSweeper
from dockyard.drivers.base import ContainerStatus, Driver
from dockyard.drivers.errors import ContainerNotFound, DriverError
from dockyard.protocol.messages import AgentMessage, CheckpointsOver, Foreign, Orphans, Reaped

log = logging.getLogger(__name__)

#: How often the agent looks for other node ids' containers on its Engine.
CHECK_EVERY_S = 5.0
#: SIGTERM, then SIGKILL after this long (their specs, and so their graces, are unknown).
REAP_GRACE_S = 10.0
#: At most this many node ids per question.
MAX_ASKED = 100


class OrphanReaper:
    """Asks about the other node ids on this Engine and removes the orphans' containers."""

    def __init__(
        self,
        driver: Driver,
        node_id: str,
        send_reliable: Callable[[AgentMessage], str],
        pending: Callable[[str], bool],
        interval: float = CHECK_EVERY_S,
        grace: float = REAP_GRACE_S,
        checkpoints: CheckpointSweeper | None = None,
        checkpoint_interval: float = 0.0,
    ) -> None:
        self._driver = driver
        self._node_id = node_id
        self._send = send_reliable
        self._pending = pending
        self._interval = interval
        self._grace = grace
        self._asked = ""  # id of the last question, while unanswered it is not asked again
        #: Answers to act on, on this thread (None: stop).
        self._answers: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.checkpoints = checkpoints
        self._checkpoint_interval = checkpoint_interval if checkpoints is not None else 0.0
        self._stop = threading.Event()
        self.reaped = 0  # containers removed (agent metrics, tests)
        self._thread = threading.Thread(target=self._run, name="orphans", daemon=True)

    @property
    def active(self) -> bool:
        """Whether either pass is on (else the thread need not start)."""
        return self._interval > 0 or self._checkpoint_interval > 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._answers.put(None)
        if self._thread.is_alive():
            self._thread.join(5)

    def on_orphans(self, msg: Orphans) -> None:
        """The server's answer (connection thread): reaped on the reaper's thread."""
        node_ids = msg.node_ids
        self._answers.put(lambda: node_ids and self.reap(node_ids))

    def on_checkpoints_over(self, msg: CheckpointsOver) -> None:
        """The server's answer about checkpoints: removed on this thread."""
        sweeper = self.checkpoints
        if sweeper is not None:
            self._answers.put(lambda: sweeper.remove(msg))

    def _run(self) -> None:
        never = float("inf")
        now = time.monotonic()
        next_check = now + self._interval if self._interval > 0 else never
        next_sweep = now + self._checkpoint_interval if self._checkpoint_interval > 0 else never
        while not self._stop.is_set():
            wait = min(next_check, next_sweep, time.monotonic() + 60.0) - time.monotonic()
            try:
                answer = self._answers.get(timeout=max(0.0, wait))
            except queue.Empty:
                answer = None
            if self._stop.is_set():
                return
            if answer is not None:
                self._guarded(answer, "acting on the server's answer")
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self._interval
                self._guarded(self.ask, "looking for orphaned containers")
            if time.monotonic() >= next_sweep and self.checkpoints is not None:
                next_sweep = time.monotonic() + self._checkpoint_interval
                self._guarded(self.checkpoints.ask, "looking for checkpoints to remove")

    @staticmethod
    def _guarded(step: Callable[[], object], what: str) -> None:
        try:
            step()
        except DriverError as exc:
            log.warning("%s failed: %s", what, exc)
        except Exception:
            log.exception("%s failed", what)

    def ask(self) -> tuple[str, ...]:
        """Ask the server about the other node ids labelling containers here (once at
        a time: not again while a question is unacknowledged). Returns them."""
        if self._asked and self._pending(self._asked):
            return ()
        foreign = sorted({c.node_id for c in self._driver.list_foreign(self._node_id)})
        node_ids = tuple(foreign[:MAX_ASKED])
        if node_ids:
            self._asked = self._send(Foreign(self._node_id, node_ids))
        return node_ids

    def reap(self, orphans: tuple[str, ...]) -> list[str]:
        """Stop and remove every container of these node ids (never this node's own);
        report each node id's removed task ids. Returns them all."""
        targets = set(orphans) - {self._node_id}
        if not targets:
            return []
        found = [c for c in self._driver.list_foreign(self._node_id) if c.node_id in targets]
        removed = self._stop_and_remove(found)
        for orphan in sorted(targets):
            task_ids = tuple(c.task_id for c in found if c.node_id == orphan and c in removed)
            if task_ids:
                log.warning(
                    "removed %d container(s) of node id %s, which no live agent uses",
                    len(task_ids),
                    orphan,
                )
                self._send(Reaped(self._node_id, orphan, task_ids))
        self.reaped += len(removed)
        return [c.task_id for c in removed]

    def _stop_and_remove(self, containers: list[ContainerStatus]) -> list[ContainerStatus]:
        """SIGTERM to all, SIGKILL to those still running after the grace, then remove."""
        live = [c for c in containers if c.running]
        for c in live:
            self._quietly(self._driver.signal, c.container_id, "SIGTERM")
        deadline = time.monotonic() + self._grace
        for c in live:
            try:
                if not self._driver.wait(c.container_id, max(0.0, deadline - time.monotonic())):
                    self._driver.signal(c.container_id, "SIGKILL")
                    self._driver.wait(c.container_id, 30)
            except DriverError:
                pass  # gone already, or removed below
        removed = []
        for c in containers:
            try:
                self._driver.remove(c.container_id)
                removed.append(c)
            except ContainerNotFound:
                pass  # another agent on this Engine removed it first
            except DriverError as exc:
                log.warning("removing orphaned container %s failed: %s", c.container_id, exc)
        return removed

    @staticmethod
    def _quietly(call: Callable[[str, str], None], container_id: str, arg: str) -> None:
        try:
            call(container_id, arg)
        except DriverError:
            pass
