from __future__ import annotations

import os
import shutil

import pytest

#: Test folders whose tests run one after another on a single xdist worker.
SERIAL_DIRS = ("e2e", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Real-Docker tests must run in CI; elsewhere they skip with a reason if Docker is absent.

    Under pytest-xdist (``-n 2 --dist loadgroup``, as scripts/test runs the suite) the
    real-Docker and browser tests form one group, run in order on one worker, while
    the other worker takes the in-process unit and integration tests: Docker tests
    share one Engine (names, bridges, the orphan reaper's view), and a bridge made
    while Chromium loads a page aborts the load (net::ERR_NETWORK_CHANGED)."""
    for item in items:
        folder = item.path.parent.name
        if "docker" in item.keywords or folder in SERIAL_DIRS:
            item.add_marker(pytest.mark.xdist_group("serial"))
    if os.environ.get("CI"):
        return
    if shutil.which("dockerd") and os.path.exists("/var/run/docker.sock"):
        return
    skip = pytest.mark.skip(reason="no Docker Engine here (scripts/setup.sh starts one)")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)
