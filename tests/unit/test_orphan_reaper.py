"""The agent's side of row 5's second half (agent/orphans.py), on one shared sim
runtime holding containers of several node ids."""

from __future__ import annotations

from dockyard.agent.orphans import OrphanReaper
from dockyard.drivers.base import ContainerSpec
from dockyard.drivers.sim import SimDriver
from dockyard.protocol.messages import AgentMessage, Foreign, Reaped


def _run(driver: SimDriver, node_id: str, task_id: str, command: tuple[str, ...]) -> str:
    cid = driver.create(ContainerSpec(task_id, node_id, "w", "alice", "busybox", command))
    driver.start(cid)
    return cid


def test_asks_about_other_node_ids_and_reaps_only_those_named() -> None:
    driver = SimDriver()
    sent: list[AgentMessage] = []
    unacked: set[str] = set()

    def send(msg: AgentMessage) -> str:
        sent.append(msg)
        unacked.add(str(len(sent)))
        return str(len(sent))

    reaper = OrphanReaper(driver, "n-me", send, unacked.__contains__, grace=0.2)
    mine = _run(driver, "n-me", "t-mine", ("sleep", "600"))
    other = _run(driver, "n-other", "t-other", ("sleep", "600"))
    _run(driver, "n-old", "t-old-1", ("sleep", "600"))
    _run(driver, "n-old", "t-old-2", ("ignore-sigterm",))  # needs the SIGKILL

    assert reaper.ask() == ("n-old", "n-other")
    assert sent == [Foreign("n-me", ("n-old", "n-other"))]
    assert reaper.ask() == ()  # not again while the question is unacknowledged
    unacked.clear()
    assert reaper.ask() == ("n-old", "n-other")

    # The server named n-old (and, wrongly, this node itself): only n-old's go.
    removed = reaper.reap(("n-old", "n-me"))
    assert sorted(removed) == ["t-old-1", "t-old-2"]
    assert isinstance(sent[-1], Reaped) and sent[-1].orphan == "n-old"
    assert sorted(sent[-1].task_ids) == ["t-old-1", "t-old-2"]
    left = {c.task_id for c in driver.list_foreign("n-me")}
    assert left == {"t-other"}
    assert driver.inspect(other).running and driver.inspect(mine).running
    assert reaper.reap(("n-gone",)) == [] and len(sent) == 3  # nothing there: no report
