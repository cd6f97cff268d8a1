"""Reconciler holes: a broken log stream, a container removed behind the agent's
back, and a generation that went down after a store restore."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from dockyard.agent.logship import LogShipper
from dockyard.agent.reconciler import Reconciler
from dockyard.drivers.base import ContainerSpec, LogLine
from dockyard.drivers.errors import DriverError
from dockyard.drivers.sim import SimDriver
from dockyard.protocol.messages import Desired, DesiredEntry, TaskStatus, TaskTemplate
from dockyard.protocol.messages import LogLine as ShippedLine
from dockyard.testing.wait import wait_for


def _desired(generation: int, desired: str = "run", task_id: str = "t1") -> Desired:
    template = TaskTemplate(command=("sleep", "300"), kill_grace_s=5.0)
    entry = DesiredEntry(
        task_id, "busybox", 100, 16 << 20, template, workload_id="w1", owner="alice",
        desired=desired,
    )  # fmt: skip
    return Desired("n1", generation, (entry,))


class Harness:
    def __init__(self, driver: SimDriver) -> None:
        self.driver = driver
        self.lock = threading.Lock()
        self.reports: list[TaskStatus] = []
        self.lines: list[ShippedLine] = []
        self.shipper = LogShipper(self._ship)
        self.reconciler = Reconciler(driver, "n1", self._report, self.shipper)

    def _report(self, update: TaskStatus) -> None:
        with self.lock:
            self.reports.append(update)

    def _ship(self, batch: tuple[ShippedLine, ...]) -> None:
        with self.lock:
            self.lines.extend(batch)

    def states(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r.state, r.reason) for r in self.reports]

    def __enter__(self) -> Harness:
        self.shipper.start()
        self.reconciler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.reconciler.stop()
        self.shipper.stop()


class BreaksLogStream(SimDriver):
    """Each container writes five lines; its first stdout stream breaks after two."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0

    def start(self, container_id: str) -> None:
        super().start(container_id)
        with self._lock:
            lines = self._containers[container_id].lines
            lines.extend(LogLine("stdout", "2024-01-01T00:00:00Z", f"line {i}") for i in range(4))

    def logs(self, container_id: str, stream: str, follow: bool) -> Iterator[LogLine]:
        if stream != "stdout":
            yield from super().logs(container_id, stream, follow)
            return
        self.opened += 1
        if self.opened == 1:
            with self._lock:
                lines = [ln for ln in self._containers[container_id].lines if ln.stream == stream]
            yield from lines[:2]
            raise DriverError("stream reset by the daemon")
        yield from super().logs(container_id, stream, follow)


def test_a_broken_log_stream_resumes_after_the_last_shipped_line() -> None:
    driver = BreaksLogStream()
    with Harness(driver) as h:
        h.reconciler.set_desired(_desired(1))
        wait_for(lambda: driver.opened >= 2, timeout=10, message="log stream re-opened")
        h.reconciler.set_desired(_desired(2, "stop"))
        wait_for(lambda: ("killed", "killed") in h.states(), timeout=15, message="killed")
    with h.lock:
        stdout = [(ln.seq, ln.text) for ln in h.lines if ln.stream == "stdout"]
        final = h.reports[-1]
    assert [seq for seq, _ in stdout] == [1, 2, 3, 4, 5]  # each once, none lost
    assert stdout[-1][1] == "line 3"
    assert final.log_lines_total == 5


class CountsCreates(SimDriver):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []

    def create(self, spec: ContainerSpec) -> str:
        container_id = super().create(spec)
        self.created.append(container_id)
        return container_id


def test_a_vanished_container_is_reported_not_recreated() -> None:
    driver = CountsCreates()
    with Harness(driver) as h:
        h.reconciler.set_desired(_desired(1))
        wait_for(lambda: ("running", "started") in h.states(), timeout=10, message="running")
        (container_id,) = driver.created
        driver.remove(container_id)  # docker rm -f, by someone else
        wait_for(
            lambda: ("failed", "container_vanished") in h.states(),
            timeout=10,
            message="container_vanished reported",
        )
        passes = h.reconciler.passes
        # The server has not answered yet: the task is still desired, for several passes.
        wait_for(lambda: h.reconciler.passes >= passes + 3, timeout=10, message="passes")
        h.reconciler.set_desired(_desired(2))  # a re-sent set still listing it
        time.sleep(1.5)
    assert driver.created == [container_id]  # never a second container for t1
    assert [s for s, _ in h.states()].count("failed") == 1


def test_after_a_welcome_a_lower_generation_is_accepted() -> None:
    reconciler = Reconciler(SimDriver(), "n1", lambda _: None, LogShipper(lambda _: None))
    reconciler.set_desired(_desired(7, task_id="old"))
    reconciler.set_desired(_desired(3, task_id="new"))  # stale: ignored
    assert reconciler.generation == 7
    reconciler.welcomed()  # hello/welcome after the server's store was restored
    reconciler.set_desired(_desired(3, task_id="new"))
    assert reconciler.generation == 3
    assert set(reconciler._desired) == {"new"}
    reconciler.set_desired(_desired(2, task_id="older"))  # only the first one after it
    assert reconciler.generation == 3
