"""A bind source swapped for a symlink after the policy check is never mounted
(table row 15: CVE-2021-25741, CVE-2021-30465). Real Docker Engine.

The agent checks the resolved path under the owner's roots, then the Docker
driver pins it (opens it without following symlinks and bind-mounts that
inode into a private folder) before Docker sees it. Docker sets mounts up at
container *start*, so without the pin a swap between create and start, or
between the check and create, mounts whatever the path names by then.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.core.ids import new_id
from dockyard.core.resources import Resources
from dockyard.core.security import Mount
from dockyard.drivers.base import ContainerSpec
from dockyard.drivers.docker import DockerDriver
from dockyard.drivers.errors import DriverError
from dockyard.drivers.pins import MountPins, MountRace
from dockyard.testing.images import ensure_busybox_image
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[DockerDriver]:
    if os.geteuid() != 0:
        pytest.skip("pinning bind sources needs root (CAP_SYS_ADMIN), as the agent has")
    pins = MountPins(tmp_path / "pins")
    yield DockerDriver(pins=pins)
    for key in pins.keys():
        pins.release(key)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """bob's home with ``data/`` (his) and, outside it, a secret he must not reach."""
    home = tmp_path / "home" / "bob"
    (home / "data").mkdir(parents=True)
    (home / "data" / "marker").write_text("bob's data\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "marker").write_text("SECRET\n")
    return home


def swap_to_symlink(path: Path, target: Path) -> None:
    """Replace directory ``path`` by a symlink to ``target`` (the attacker's move)."""
    path.rename(path.with_name(path.name + ".orig"))
    path.symlink_to(target)


def container(source: str) -> ContainerSpec:
    return ContainerSpec(
        task_id="t-" + new_id(),
        node_id="n-pins-" + new_id(),
        workload_id="w-" + new_id(),
        owner="u-bob",
        image=ensure_busybox_image(),
        command=("cat", "/m/marker"),
        resources=Resources(100, 64 << 20),
        mounts=(Mount(source, "/m", read_only=True),),
    )


def run_to_end(driver: DockerDriver, container_id: str) -> str:
    driver.start(container_id)
    assert driver.wait(container_id, timeout=30)
    return "".join(line.text for line in driver.logs(container_id, "stdout", follow=False))


def test_a_swap_before_create_is_refused(driver: DockerDriver, home: Path) -> None:
    checked = os.path.realpath(home / "data")  # what the policy check saw
    swap_to_symlink(home / "data", home.parent.parent / "secret")
    with pytest.raises(MountRace):
        driver.create(container(checked))
    assert driver.pins.keys() == []


def test_a_swap_after_create_mounts_what_was_checked(driver: DockerDriver, home: Path) -> None:
    checked = os.path.realpath(home / "data")
    cid = driver.create(container(checked))
    try:
        swap_to_symlink(home / "data", home.parent.parent / "secret")
        out = run_to_end(driver, cid)
        assert "SECRET" not in out
        assert out.strip() == "bob's data"
    finally:
        driver.remove(cid)
    assert driver.pins.keys() == [], "removing the container released its pin"


def test_a_racer_never_gets_the_secret_mounted(driver: DockerDriver, home: Path) -> None:
    """A thread flips ``data`` between bob's folder and a symlink to the secret as fast
    as it can while containers are created and run: each either mounts bob's data or
    is refused, never the secret."""
    checked = os.path.realpath(home / "data")
    real = home / "data.real"
    (home / "data").rename(real)
    link = home / "data.link"
    link.symlink_to(home.parent.parent / "secret")
    stop = threading.Event()

    def race() -> None:
        data = home / "data"
        while not stop.is_set():
            for a, b in ((real, data), (data, real), (link, data), (data, link)):
                try:
                    os.rename(a, b)  # data is bob's folder, then gone, then the symlink
                except OSError:
                    pass  # Docker made an empty folder there, say: the next round fixes it

    outcomes: list[str] = []
    racer = threading.Thread(target=race, daemon=True)
    racer.start()
    deadline = time.monotonic() + 60
    try:
        for _ in range(20):
            assert time.monotonic() < deadline
            try:
                cid = driver.create(container(checked))
            except MountRace:
                outcomes.append("refused")
                continue
            try:
                outcomes.append(run_to_end(driver, cid).strip() or "missing")
            except DriverError as exc:
                outcomes.append(f"error: {exc}")
            finally:
                driver.remove(cid)
    finally:
        stop.set()
        racer.join(10)
    assert outcomes and not [o for o in outcomes if "SECRET" in o], outcomes
    wait_for(lambda: driver.pins.keys() == [], timeout=10, message="pins released")
