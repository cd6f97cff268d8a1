"""One contract, two drivers: the same tests against SimDriver and DockerDriver.

What the agent's reconciler relies on from any runtime: unique containers per
task, the lifecycle created -> running -> exited with the right exit code,
signals, waiting with a timeout, listing by node, logs, removal, image checks,
and pruning of other nodes' dead containers. The Docker half runs on the real
Engine with the locally built busybox image.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockyard.core.ids import new_id
from dockyard.core.resources import Resources
from dockyard.drivers.base import ContainerSpec, Driver
from dockyard.drivers.errors import ContainerExists, ContainerNotFound, DriverError
from dockyard.drivers.sim import SimDriver
from dockyard.testing.images import ensure_busybox_image
from dockyard.testing.wait import wait_for

#: The same behaviour asked of each runtime (the simulator reads its commands).
COMMANDS = {
    "sim": {"sleep": ["sleep", "60"], "exit3": ["exit", "3"]},
    "docker": {"sleep": ["sleep", "60"], "exit3": ["sh", "-c", "echo hello; exit 3"]},
}


@pytest.fixture(params=["sim", pytest.param("docker", marks=pytest.mark.docker)], scope="module")
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def driver(kind: str) -> Iterator[Driver]:
    if kind == "sim":
        yield SimDriver()
        return
    from dockyard.drivers.docker import DockerDriver

    yield DockerDriver()


@pytest.fixture
def node_id() -> Iterator[str]:
    yield "n-contract-" + new_id()


@pytest.fixture
def made(driver: Driver, node_id: str) -> Iterator[list[str]]:
    """Container ids a test created; removed afterwards."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        try:
            driver.signal(cid, "SIGKILL")
        except DriverError:
            pass
        try:
            driver.remove(cid)
        except DriverError:
            pass


def spec(kind: str, node_id: str, what: str, image: str = "") -> ContainerSpec:
    return ContainerSpec(
        task_id="t-" + new_id(),
        node_id=node_id,
        workload_id="w-" + new_id(),
        owner="u-contract",
        image=image or (ensure_busybox_image() if kind == "docker" else "busybox:latest"),
        command=tuple(COMMANDS[kind][what]),
        resources=Resources(100, 64 << 20),
    )


def create(driver: Driver, made: list[str], s: ContainerSpec) -> str:
    cid = driver.create(s)
    made.append(cid)
    return cid


def test_one_container_per_task_and_listing_by_node(
    driver: Driver, kind: str, node_id: str, made: list[str]
) -> None:
    s = spec(kind, node_id, "sleep")
    cid = create(driver, made, s)
    with pytest.raises(ContainerExists):
        create(driver, made, s)
    listed = {c.task_id: c for c in driver.list(node_id)}
    assert set(listed) == {s.task_id}
    assert listed[s.task_id].container_id == cid and listed[s.task_id].status == "created"
    assert driver.list("n-someone-else-" + new_id()) == []


def test_start_wait_signal(driver: Driver, kind: str, node_id: str, made: list[str]) -> None:
    cid = create(driver, made, spec(kind, node_id, "sleep"))
    driver.start(cid)
    assert driver.inspect(cid).running
    assert driver.wait(cid, timeout=0.3) is False  # still running: the timeout answers
    driver.signal(cid, "SIGTERM")
    assert driver.wait(cid, timeout=30) is True
    status = driver.inspect(cid)
    assert status.exited and status.exit_code == 143 and not status.oom_killed


def test_exit_code_and_logs(driver: Driver, kind: str, node_id: str, made: list[str]) -> None:
    cid = create(driver, made, spec(kind, node_id, "exit3"))
    driver.start(cid)
    assert driver.wait(cid, timeout=30) is True
    assert driver.inspect(cid).exit_code == 3
    lines = list(driver.logs(cid, "stdout", follow=False))
    assert lines and all(line.stream == "stdout" for line in lines)


def test_remove_then_gone(driver: Driver, kind: str, node_id: str, made: list[str]) -> None:
    s = spec(kind, node_id, "exit3")
    cid = create(driver, made, s)
    driver.start(cid)
    driver.wait(cid, timeout=30)
    driver.remove(cid)
    with pytest.raises(ContainerNotFound):
        driver.inspect(cid)
    assert all(c.task_id != s.task_id for c in driver.list(node_id))


def test_images(driver: Driver, kind: str) -> None:
    image = ensure_busybox_image() if kind == "docker" else "busybox:latest"
    assert driver.has_image(image)
    assert not driver.has_image("dockyard/missing-image:nope")
    with pytest.raises(DriverError) as err:
        driver.ensure_image("dockyard/missing-image:nope")
    assert err.value.reason in {"image_not_found", "image_pull_failed"}


def test_prune_removes_only_other_nodes_dead_containers(
    driver: Driver, kind: str, node_id: str, made: list[str]
) -> None:
    other = "n-contract-gone-" + new_id()
    mine = create(driver, made, spec(kind, node_id, "exit3"))
    theirs = create(driver, made, spec(kind, other, "exit3"))
    for cid in (mine, theirs):
        driver.start(cid)
        driver.wait(cid, timeout=30)

    def gone(cid: str) -> bool:
        try:
            driver.inspect(cid)
        except ContainerNotFound:
            return True
        return False

    assert driver.prune(node_id) >= 1
    wait_for(lambda: gone(theirs), timeout=10, message="the other node's container pruned")
    assert not gone(mine)  # its own: the reconciler removes those with their tasks
