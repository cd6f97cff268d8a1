"""The reconciler's stop path against a runtime whose init drops an early signal.

Docker's init (tini) ignores signals that reach it before it has set up its
handlers; with a small CPU quota a SIGTERM sent tens of milliseconds after the
start was lost about once in 30 tries. A stop soon after the start must still
end the container with SIGTERM (143, no forced kill), not wait out the grace.
"""

from __future__ import annotations

import threading

from dockyard.agent.logship import LogShipper
from dockyard.agent.reconciler import INIT_SETTLE_S, Reconciler
from dockyard.drivers.sim import SimDriver
from dockyard.protocol.messages import Desired, DesiredEntry, TaskStatus, TaskTemplate
from dockyard.testing.wait import wait_for


class LosesFirstSigterm(SimDriver):
    """A sim runtime whose containers drop the first SIGTERM (an init not ready yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[str] = []
        self._dropped: set[str] = set()

    def signal(self, container_id: str, signal: str) -> None:
        self.signals.append(signal)
        if signal == "SIGTERM" and container_id not in self._dropped:
            self._dropped.add(container_id)
            return
        super().signal(container_id, signal)


def _desired(generation: int, desired: str) -> Desired:
    template = TaskTemplate(command=("sleep", "300"), kill_grace_s=30.0)
    entry = DesiredEntry(
        "t1", "busybox", 100, 16 << 20, template, workload_id="w1", owner="alice", desired=desired
    )
    return Desired("n1", generation, (entry,))


def test_stop_right_after_start_resends_a_lost_sigterm() -> None:
    driver = LosesFirstSigterm()
    reports: list[TaskStatus] = []
    lock = threading.Lock()

    def report(update: TaskStatus) -> None:
        with lock:
            reports.append(update)

    def states() -> list[str]:
        with lock:
            return [r.state for r in reports]

    shipper = LogShipper(lambda _: None)
    reconciler = Reconciler(driver, "n1", report, shipper)
    reconciler.start()
    try:
        reconciler.set_desired(_desired(1, "run"))
        wait_for(lambda: "running" in states(), timeout=10, message="task running")
        reconciler.set_desired(_desired(2, "stop"))
        # Within the settle time plus slack, far inside the 30 s grace.
        wait_for(lambda: "killed" in states(), timeout=INIT_SETTLE_S + 5, message="killed")
    finally:
        reconciler.stop()
    final = next(r for r in reports if r.state == "killed")
    assert (final.exit_code, final.forced) == (143, False)
    assert driver.signals == ["SIGTERM", "SIGTERM"]
