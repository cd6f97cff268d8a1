"""Health checks on the node: the pure state machine, the probes, the monitor on the sim driver."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.agent.health import HealthMonitor, HealthState, probe_host, probe_http, probe_tcp
from dockyard.agent.reconciler import DesiredTask
from dockyard.core.resources import Resources
from dockyard.core.services import Health, HealthCheck, HealthKind
from dockyard.drivers.base import ContainerSpec
from dockyard.drivers.sim import SimDriver
from dockyard.protocol.messages import DesiredEntry, HealthReport, TaskTemplate
from dockyard.testing.wait import wait_for


def check(**kw: Any) -> HealthCheck:
    return HealthCheck(kind=HealthKind(kw.pop("kind", "tcp")), **kw)


def health_of(state: HealthState) -> Health:
    return state.health  # read through a call: mypy would keep an earlier narrowing


# -- state machine ---------------------------------------------------------
def test_starting_until_first_success() -> None:
    state = HealthState(check(retries=3), started_at=0.0)
    assert health_of(state) == Health.STARTING
    assert state.observe(False, 1.0) is False
    assert health_of(state) == Health.STARTING
    assert state.observe(True, 2.0) is True
    assert health_of(state) == Health.HEALTHY
    assert state.observe(True, 3.0) is False


def test_retries_failures_in_a_row_make_it_unhealthy_from_starting() -> None:
    state = HealthState(check(retries=3), started_at=0.0)
    assert [state.observe(False, t) for t in (1.0, 2.0, 3.0)] == [False, False, True]
    assert health_of(state) == Health.UNHEALTHY
    assert state.observe(False, 4.0) is False  # no transition: not reported again


def test_failures_within_the_start_period_do_not_count() -> None:
    state = HealthState(check(retries=2, start_period_s=10.0), started_at=100.0)
    for t in (101.0, 105.0, 109.9):
        assert state.observe(False, t) is False
    assert health_of(state) == Health.STARTING and state.failures == 0
    assert state.observe(False, 110.0) is False
    assert state.observe(False, 111.0) is True
    assert health_of(state) == Health.UNHEALTHY


def test_healthy_replica_becomes_unhealthy_and_recovers() -> None:
    state = HealthState(check(retries=3), started_at=0.0)
    state.observe(True, 1.0)
    # A success in between resets the count: only failures in a row matter.
    for t, ok in ((2.0, False), (3.0, False), (4.0, True), (5.0, False), (6.0, False)):
        assert state.observe(ok, t) is False
    assert health_of(state) == Health.HEALTHY
    assert state.observe(False, 7.0) is True
    assert health_of(state) == Health.UNHEALTHY
    assert state.observe(True, 8.0) is True
    assert health_of(state) == Health.HEALTHY and state.failures == 0


# -- probes (loopback only) -------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = {"/ok": 200, "/moved": 302}.get(self.path, 404)
        self.send_response(code)
        if code == 302:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_probe_http(http_port: int) -> None:
    assert probe_http("127.0.0.1", http_port, "/ok", 1.0).ok
    assert probe_http("127.0.0.1", http_port, "/moved", 1.0).ok  # 3xx counts, not followed
    missing = probe_http("127.0.0.1", http_port, "/missing", 1.0)
    assert not missing.ok and "404" in missing.message
    assert not probe_http("127.0.0.1", _closed_port(), "/", 1.0).ok


def test_probe_tcp(http_port: int) -> None:
    assert probe_tcp("127.0.0.1", http_port, 1.0).ok
    refused = probe_tcp("127.0.0.1", _closed_port(), 1.0)
    assert not refused.ok


def test_probe_tcp_fails_when_the_peer_hangs_up_at_once() -> None:
    """What Docker's userland proxy does when nothing listens in the container."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        result = probe_tcp("127.0.0.1", port, 1.0)
    finally:
        thread.join(5)
        listener.close()
    assert not result.ok, result


def test_probe_host() -> None:
    assert probe_host("0.0.0.0") == "127.0.0.1"
    assert probe_host("10.1.2.3") == "10.1.2.3"


# -- the monitor on the sim driver ------------------------------------------
def _running_sim(driver: SimDriver, task_id: str) -> str:
    spec = ContainerSpec(task_id=task_id, node_id="n", workload_id="w", owner="u", image="img")
    container_id = driver.create(spec)
    driver.start(container_id)
    return container_id


def test_monitor_on_sim_reports_healthy_at_once_and_only_transitions() -> None:
    driver = SimDriver()
    reports: list[HealthReport] = []
    monitor = HealthMonitor(driver, "n1", reports.append)
    try:
        container_id = _running_sim(driver, "t1")
        monitor.watch("t1", container_id, check(kind="http", interval_s=0.1), ((80, 30080),))
        wait_for(lambda: reports, timeout=5, message="a health report")
        assert (reports[0].node_id, reports[0].task_id) == ("n1", "t1")
        assert reports[0].health == "healthy"
        # Several more checks pass: still one report (transitions only).
        wait_for(lambda: monitor.health("t1") == Health.HEALTHY, timeout=5)
        before = len(reports)
        monitor.watch("t1", container_id, check(kind="http", interval_s=0.1))  # idempotent
        assert len(reports) == before == 1
    finally:
        monitor.stop()


def test_monitor_cmd_failure_makes_it_unhealthy_and_unwatch_stops_checking() -> None:
    driver = SimDriver()
    reports: list[HealthReport] = []
    monitor = HealthMonitor(driver, "n1", reports.append)
    try:
        container_id = _running_sim(driver, "t2")
        failing = check(kind="cmd", command=("exit", "1"), interval_s=0.05, retries=2)
        monitor.watch("t2", container_id, failing)
        wait_for(lambda: [r for r in reports if r.health == "unhealthy"], timeout=5)
        assert [r.health for r in reports] == ["unhealthy"]
        assert "exited 1" in reports[0].message
        monitor.unwatch("t2")
        assert monitor.health("t2") is None and monitor.watched() == 0
    finally:
        monitor.stop()


def test_monitor_cmd_timeout_counts_as_failure() -> None:
    """``cat`` in the sim never ends on its own: the deadline closes it."""
    driver = SimDriver()
    reports: list[HealthReport] = []
    monitor = HealthMonitor(driver, "n1", reports.append)
    try:
        container_id = _running_sim(driver, "t3")
        hanging = check(kind="cmd", command=("cat",), interval_s=0.1, timeout_s=0.2, retries=1)
        monitor.watch("t3", container_id, hanging)
        wait_for(lambda: reports, timeout=5)
        assert reports[0].health == "unhealthy"
        assert "timed out" in reports[0].message
    finally:
        monitor.stop()


# -- wire and container spec -------------------------------------------------
def test_desired_task_carries_port_map_and_health() -> None:
    def entry(
        health: dict[str, Any] | None, port_map: tuple[tuple[int, int], ...] = ()
    ) -> DesiredEntry:
        template = TaskTemplate(health=health)
        return DesiredEntry("t", "i", 100, 1 << 20, template=template, port_map=port_map)

    hc = check(kind="http", path="/h").to_dict()
    task = DesiredTask.from_entry(entry(hc, ((8080, 30001),)))
    assert task.port_map == ((8080, 30001),)
    assert task.health is not None and task.health.kind == HealthKind.HTTP
    assert task.health.path == "/h"
    plain = DesiredTask.from_entry(entry(None))
    assert plain.port_map == () and plain.health is None
    bad = DesiredTask.from_entry(entry({"kind": "nope"}))
    assert bad.health is None  # dropped, not failing the desired set


def test_container_spec_publishes_on_the_bind_address_only() -> None:
    spec = ContainerSpec(
        task_id="t",
        node_id="n",
        workload_id="w",
        owner="u",
        image="i",
        resources=Resources(100, 1 << 20),
        ports=(9000,),
        port_map=((8080, 30001), (53, 30002)),
        bind_address="10.0.0.5",
    )
    assert spec.published() == {
        "9000/tcp": ("10.0.0.5", 9000),
        "8080/tcp": ("10.0.0.5", 30001),
        "53/tcp": ("10.0.0.5", 30002),
    }
    # A replica's host ports are also in ``ports`` (the scheduler's accounting): bound once.
    replica = ContainerSpec(
        task_id="t",
        node_id="n",
        workload_id="w",
        owner="u",
        image="i",
        ports=(30001,),
        port_map=((8080, 30001),),
    )
    assert replica.published() == {"8080/tcp": ("127.0.0.1", 30001)}
    default = ContainerSpec(task_id="t", node_id="n", workload_id="w", owner="u", image="i")
    assert default.bind_address == "127.0.0.1" and default.published() == {}
