"""``dockyard exec`` on the node: commands run in a task's container, relayed to the server.

The server sends ``exec_start`` (exec id, task id, command, tty, stdin, size),
then ``exec_input`` / ``exec_resize`` / ``exec_close``. Output goes back as
reliable ``exec_output`` messages numbered per exec (the server orders and
de-duplicates them), then one reliable ``exec_exit``. Only containers this
agent runs for the named task are reachable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dockyard.drivers.base import Driver, ExecHandle
from dockyard.drivers.errors import DriverError
from dockyard.protocol.messages import (
    AgentMessage,
    ExecClose,
    ExecExit,
    ExecInput,
    ExecOutput,
    ExecResize,
    ExecStart,
)

log = logging.getLogger(__name__)

MAX_CHUNK = 64 * 1024

#: What the server sends about an exec once it is started.
ExecControl = ExecInput | ExecResize | ExecClose


class ExecManager:
    def __init__(
        self,
        driver: Driver,
        node_id: str,
        containers: Callable[[], dict[str, str]],
        send: Callable[[AgentMessage], str],
    ) -> None:
        self._driver = driver
        self._node_id = node_id
        self._containers = containers
        self._send = send
        self._lock = threading.Lock()
        self._handles: dict[str, ExecHandle] = {}
        self._started: set[str] = set()
        self._early: dict[str, list[ExecControl]] = {}

    def handle(self, msg: ExecStart | ExecControl) -> None:
        exec_id = msg.exec_id
        if not exec_id:
            return
        if isinstance(msg, ExecStart):
            with self._lock:
                if exec_id in self._started:
                    return
                self._started.add(exec_id)
                self._early[exec_id] = []
            threading.Thread(
                target=self._run, args=(msg,), name=f"exec-{exec_id}", daemon=True
            ).start()
            return
        with self._lock:  # held while applying, so input keeps its order
            handle = self._handles.get(exec_id)
            if handle is None:
                if exec_id in self._early:  # input before the exec is up: replayed then
                    self._early[exec_id].append(msg)
                return
            self._apply(handle, msg)

    def _apply(self, handle: ExecHandle, msg: ExecControl) -> None:
        try:
            if isinstance(msg, ExecInput):
                handle.write(msg.data)
            elif isinstance(msg, ExecResize):
                handle.resize(msg.cols or 80, msg.rows or 24)
            else:
                handle.close()
        except DriverError as exc:
            log.info("exec %s: %s", msg.exec_id, exc)

    def _exit(self, exec_id: str, code: int | None, error: str, chunks: int | None = None) -> None:
        self._send(ExecExit(self._node_id, exec_id, code, error, chunks))

    def _run(self, start: ExecStart) -> None:
        exec_id = start.exec_id
        container_id = self._containers().get(start.task_id)
        if container_id is None or not start.command:
            with self._lock:
                self._early.pop(exec_id, None)
            self._exit(exec_id, None, "task is not running here")
            return
        try:
            handle = self._driver.exec(
                container_id,
                list(start.command),
                tty=start.tty,
                stdin=start.stdin,
                cols=start.cols or 80,
                rows=start.rows or 24,
            )
        except DriverError as exc:
            self._exit(exec_id, None, str(exc))
            return
        with self._lock:
            self._handles[exec_id] = handle
            for early in self._early.pop(exec_id, []):
                self._apply(handle, early)
        seq = 0
        error = ""
        try:
            for stream, data in handle.output():
                for offset in range(0, len(data), MAX_CHUNK):
                    chunk = data[offset : offset + MAX_CHUNK]
                    self._send(ExecOutput(self._node_id, exec_id, seq, stream, chunk))
                    seq += 1
            code = handle.exit_code()
        except DriverError as exc:
            code, error = None, str(exc)
        except Exception as exc:  # never leave the client waiting for an exit
            log.exception("exec %s failed", exec_id)
            code, error = None, f"exec failed on the node: {exc}"
        finally:
            handle.close()
            with self._lock:
                self._handles.pop(exec_id, None)
        self._exit(exec_id, code, error, seq)
