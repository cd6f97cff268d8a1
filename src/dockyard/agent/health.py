"""Health checks of service replicas on the node (http, tcp, cmd).

:class:`HealthState` is the pure state machine of one replica's health;
:class:`HealthMonitor` runs the checks: one scheduler thread keeps a heap of
due checks and hands them to a small pool (a check never runs twice at once
for the same replica), so a node with many replicas does not need a thread per
container. Only transitions are reported (``starting``, ``healthy``,
``unhealthy``), as reliable ``health`` messages.

On a simulated node (``sim`` driver) http and tcp checks succeed at once
without any network; cmd checks run through the sim driver's exec, so
``exit 1`` fails.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from dockyard.core.services import Health, HealthCheck, HealthKind
from dockyard.drivers.base import Driver, ExecHandle
from dockyard.drivers.errors import DriverError
from dockyard.protocol.messages import HealthReport

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
#: After a TCP connect through the published port, how long to see whether the
#: other side closes at once (Docker's userland proxy accepts, then hangs up when
#: nothing listens in the container).
TCP_SETTLE_S = 0.2
MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    message: str


class HealthState:
    """One replica's health from its check results (pure: times are passed in).

    ``starting`` until the first success (``healthy``); ``retries`` failures in a
    row make it ``unhealthy``, from ``starting`` or ``healthy``; a success makes
    it ``healthy`` again. Failures within ``start_period_s`` of the container's
    start do not count.
    """

    def __init__(self, check: HealthCheck, started_at: float) -> None:
        self.check = check
        self.started_at = started_at
        self.health = Health.STARTING
        self.failures = 0  # counted failures in a row

    def observe(self, ok: bool, now: float) -> bool:
        """Apply one result; True when the health changed."""
        before = self.health
        if ok:
            self.failures = 0
            self.health = Health.HEALTHY
        elif now - self.started_at >= self.check.start_period_s:
            self.failures += 1
            if self.failures >= self.check.retries:
                self.health = Health.UNHEALTHY
        return self.health != before


@dataclass
class _Target:
    task_id: str
    container_id: str
    check: HealthCheck
    host_port: int | None
    state: HealthState
    token: int
    in_flight: bool = False
    last_failure: str = ""


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    task_id: str = field(compare=False)
    token: int = field(compare=False)


class HealthMonitor:
    """Runs every watched replica's check each ``interval_s``; reports transitions.

    ``report`` gets each as a ``health`` message of node ``node_id`` (its ``at``:
    this node's clock, so the server can order a replica's reports).
    """

    def __init__(
        self,
        driver: Driver,
        node_id: str,
        report: Callable[[HealthReport], object],
        bind_address: str = "127.0.0.1",
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self._driver = driver
        self._node_id = node_id
        self._report = report
        self._host = probe_host(bind_address)
        self._sim = driver.name == "sim"
        self._workers = workers
        self._cond = threading.Condition()
        self._targets: dict[str, _Target] = {}
        self._heap: list[_Due] = []
        self._execs: dict[int, tuple[float, ExecHandle]] = {}  # token -> (deadline, handle)
        self._tokens = itertools.count(1)
        self._seq = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- control ----------------------------------------------------------
    def watch(
        self,
        task_id: str,
        container_id: str,
        check: HealthCheck,
        port_map: tuple[tuple[int, int], ...] = (),
        announce: bool = True,
    ) -> None:
        """Start checking a running replica (idempotent for the same container).

        ``announce`` reports ``starting`` first (a new container); an adopted one
        keeps what the server has until its first result differs."""
        now = time.monotonic()
        with self._cond:
            if self._stopped:
                return
            current = self._targets.get(task_id)
            if current is not None and current.container_id == container_id:
                return
            target = _Target(
                task_id=task_id,
                container_id=container_id,
                check=check,
                host_port=port_map[0][1] if port_map else None,
                state=HealthState(check, now),
                token=next(self._tokens),
            )
            self._targets[task_id] = target
            # The sim driver answers at once; real replicas get one interval to come up.
            self._schedule(target, now if self._sim else now + check.interval_s)
            self._ensure_thread()
        if announce and not self._sim:
            self._send(task_id, Health.STARTING, f"{check.kind} check every {check.interval_s:g}s")

    def unwatch(self, task_id: str) -> None:
        """Stop checking (the container stopped or is being stopped)."""
        with self._cond:
            target = self._targets.pop(task_id, None)
            if target is not None:
                expired = self._execs.pop(target.token, None)
                if expired is not None:
                    _close(expired[1])
            self._cond.notify()

    def health(self, task_id: str) -> Health | None:
        """The current health of a watched replica (None: not watched)."""
        with self._cond:
            target = self._targets.get(task_id)
            return None if target is None else target.state.health

    def watched(self) -> int:
        with self._cond:
            return len(self._targets)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._targets.clear()
            for _, handle in self._execs.values():
                _close(handle)
            self._execs.clear()
            self._cond.notify()
            thread, pool = self._thread, self._pool
        if thread is not None:
            thread.join(5)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- scheduling (under the lock) --------------------------------------
    def _schedule(self, target: _Target, at: float) -> None:
        heapq.heappush(self._heap, _Due(at, next(self._seq), target.task_id, target.token))
        self._cond.notify()

    def _ensure_thread(self) -> None:
        """The scheduler thread and pool start with the first replica to check, so
        hollow nodes without health checks cost nothing."""
        if self._thread is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="health")
            self._thread = threading.Thread(target=self._run, name="health", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            due: list[_Target] = []
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                self._expire_execs(now)
                while self._heap and self._heap[0].at <= now:
                    item = heapq.heappop(self._heap)
                    target = self._targets.get(item.task_id)
                    if target is None or target.token != item.token or target.in_flight:
                        continue
                    target.in_flight = True
                    due.append(target)
                if not due:
                    wake = [d.at for d in self._heap[:1]] + [d for d, _ in self._execs.values()]
                    self._cond.wait(max(0.0, min(wake) - now) if wake else None)
                    continue
            for target in due:
                if self._sim and target.check.kind != HealthKind.CMD:
                    self._check(target)  # no I/O: inline
                else:
                    assert self._pool is not None
                    try:
                        self._pool.submit(self._check, target)
                    except RuntimeError:  # shut down
                        return

    def _expire_execs(self, now: float) -> None:
        for token, (deadline, handle) in list(self._execs.items()):
            if deadline <= now:
                del self._execs[token]
                _close(handle)  # ends the worker's read of the output

    # -- one check (pool thread) ------------------------------------------
    def _check(self, target: _Target) -> None:
        began = time.monotonic()
        try:
            result = self.probe(target)
        except Exception as exc:  # a check must never kill the pool
            log.exception("health check of %s failed", target.task_id)
            result = CheckResult(False, f"check error: {exc}")
        now = time.monotonic()
        with self._cond:
            if self._targets.get(target.task_id) is not target:
                return  # unwatched (or replaced) meanwhile
            target.in_flight = False
            if not result.ok:
                target.last_failure = result.message
            changed = target.state.observe(result.ok, now)
            failures = target.state.failures
            health = target.state.health
            self._schedule(target, max(now, began + target.check.interval_s))
        if changed:
            message = result.message
            if health == Health.UNHEALTHY:
                message = f"{failures} checks failed in a row; last: {result.message}"
            self._send(target.task_id, health, message)

    def probe(self, target: _Target) -> CheckResult:
        check = target.check
        if check.kind == HealthKind.CMD:
            return self._probe_cmd(target)
        if self._sim:
            return CheckResult(True, f"{check.kind} check (simulated)")
        if target.host_port is None:
            return CheckResult(False, "no published port to check")
        if check.kind == HealthKind.HTTP:
            return probe_http(self._host, target.host_port, check.path, check.timeout_s)
        return probe_tcp(self._host, target.host_port, check.timeout_s)

    def _probe_cmd(self, target: _Target) -> CheckResult:
        check = target.check
        command = " ".join(check.command)
        try:
            handle = self._driver.exec(target.container_id, list(check.command))
        except DriverError as exc:
            return CheckResult(False, f"exec {command!r} failed: {exc}")
        deadline = time.monotonic() + check.timeout_s
        with self._cond:
            self._execs[target.token] = (deadline, handle)
            self._cond.notify()
        tail = b""
        error: Exception | None = None
        try:
            for _, chunk in handle.output():
                tail = (tail + chunk)[-MAX_MESSAGE:]
        except Exception as exc:  # includes reads of a stream closed at the deadline
            error = exc
        finally:
            with self._cond:
                self._execs.pop(target.token, None)
        if time.monotonic() >= deadline:
            _close(handle)
            return CheckResult(False, f"{command!r} timed out after {check.timeout_s:g}s")
        if error is not None:
            _close(handle)
            return CheckResult(False, f"exec {command!r} failed: {error}")
        try:
            code = handle.exit_code()
        except DriverError as exc:
            return CheckResult(False, f"exec {command!r} failed: {exc}")
        finally:
            _close(handle)
        output = tail.decode("utf-8", errors="replace").strip()
        detail = f"{command!r} exited {code}" + (f": {output}" if output else "")
        return CheckResult(code == 0, detail[:MAX_MESSAGE])

    def _send(self, task_id: str, health: Health, message: str) -> None:
        report = HealthReport(self._node_id, task_id, health.value, message, time.time())
        try:
            self._report(report)
        except Exception:
            log.exception("reporting the health of %s failed", task_id)


def probe_host(bind_address: str) -> str:
    """Where checks connect: the address ports are published on (loopback for a wildcard)."""
    if bind_address in ("", "0.0.0.0", "::", "[::]"):
        return "127.0.0.1"
    return bind_address


def probe_http(host: str, port: int, path: str, timeout_s: float) -> CheckResult:
    """GET; healthy on 2xx and 3xx (redirects are not followed)."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"http://{netloc}{path}"
    try:
        response = httpx.get(url, timeout=timeout_s, follow_redirects=False, trust_env=False)
    except httpx.TimeoutException:
        return CheckResult(False, f"GET {url}: timed out after {timeout_s:g}s")
    except httpx.HTTPError as exc:
        return CheckResult(False, f"GET {url}: {type(exc).__name__}: {exc}"[:MAX_MESSAGE])
    ok = 200 <= response.status_code < 400
    return CheckResult(ok, f"GET {url} -> {response.status_code}")


def probe_tcp(host: str, port: int, timeout_s: float) -> CheckResult:
    """A TCP connect that the other side does not close at once.

    Docker's userland proxy accepts on the published port even when nothing
    listens in the container, then hangs up; a listener keeps the connection
    open (or greets), so an immediate end counts as a failure."""
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.settimeout(min(TCP_SETTLE_S, timeout_s))
            try:
                data = conn.recv(1)
            except TimeoutError:
                return CheckResult(True, f"tcp {where}: connected")
            except OSError as exc:  # reset by the proxy
                return CheckResult(False, f"tcp {where}: connection reset ({exc})")
            if not data:
                return CheckResult(False, f"tcp {where}: closed at once (nothing listening?)")
            return CheckResult(True, f"tcp {where}: connected")
    except TimeoutError:
        return CheckResult(False, f"tcp {where}: connect timed out after {timeout_s:g}s")
    except OSError as exc:
        return CheckResult(False, f"tcp {where}: {exc}")


def _close(handle: ExecHandle) -> None:
    try:
        handle.close()
    except Exception:  # closing is best effort
        log.debug("closing an exec handle failed", exc_info=True)
