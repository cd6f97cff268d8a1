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
from typing import Any

from dockyard.drivers.base import Driver, ExecHandle
from dockyard.drivers.errors import DriverError
from dockyard.protocol.messages import MsgType

log = logging.getLogger(__name__)

MAX_CHUNK = 64 * 1024


class ExecManager:
    def __init__(
        self,
        driver: Driver,
        containers: Callable[[], dict[str, str]],
        send: Callable[[MsgType, dict[str, Any]], str],
    ) -> None:
        self._driver = driver
        self._containers = containers
        self._send = send
        self._lock = threading.Lock()
        self._handles: dict[str, ExecHandle] = {}
        self._started: set[str] = set()
        self._early: dict[str, list[tuple[MsgType, dict[str, Any]]]] = {}

    def handle(self, msg_type: MsgType, body: dict[str, Any]) -> None:
        exec_id = str(body.get("exec_id") or "")
        if not exec_id:
            return
        if msg_type == MsgType.EXEC_START:
            with self._lock:
                if exec_id in self._started:
                    return
                self._started.add(exec_id)
                self._early[exec_id] = []
            threading.Thread(
                target=self._run, args=(exec_id, body), name=f"exec-{exec_id}", daemon=True
            ).start()
            return
        with self._lock:  # held while applying, so input keeps its order
            handle = self._handles.get(exec_id)
            if handle is None:
                if exec_id in self._early:  # input before the exec is up: replayed then
                    self._early[exec_id].append((msg_type, body))
                return
            self._apply(exec_id, handle, msg_type, body)

    def _apply(
        self, exec_id: str, handle: ExecHandle, msg_type: MsgType, body: dict[str, Any]
    ) -> None:
        try:
            if msg_type == MsgType.EXEC_INPUT:
                data = body.get("data")
                if isinstance(data, bytes):
                    handle.write(data)
            elif msg_type == MsgType.EXEC_RESIZE:
                handle.resize(int(body.get("cols") or 80), int(body.get("rows") or 24))
            elif msg_type == MsgType.EXEC_CLOSE:
                handle.close()
        except DriverError as exc:
            log.info("exec %s: %s", exec_id, exc)

    def _run(self, exec_id: str, body: dict[str, Any]) -> None:
        task_id = str(body.get("task_id") or "")
        command = [str(arg) for arg in body.get("command") or []]
        container_id = self._containers().get(task_id)
        if container_id is None or not command:
            with self._lock:
                self._early.pop(exec_id, None)
            self._send(
                MsgType.EXEC_EXIT,
                {"exec_id": exec_id, "exit_code": None, "error": "task is not running here"},
            )
            return
        try:
            handle = self._driver.exec(
                container_id,
                command,
                tty=bool(body.get("tty")),
                stdin=bool(body.get("stdin")),
                cols=int(body.get("cols") or 80),
                rows=int(body.get("rows") or 24),
            )
        except DriverError as exc:
            self._send(
                MsgType.EXEC_EXIT, {"exec_id": exec_id, "exit_code": None, "error": str(exc)}
            )
            return
        with self._lock:
            self._handles[exec_id] = handle
            for msg_type, early_body in self._early.pop(exec_id, []):
                self._apply(exec_id, handle, msg_type, early_body)
        seq = 0
        error = ""
        try:
            for stream, data in handle.output():
                for start in range(0, len(data), MAX_CHUNK):
                    chunk = data[start : start + MAX_CHUNK]
                    self._send(
                        MsgType.EXEC_OUTPUT,
                        {"exec_id": exec_id, "seq": seq, "stream": stream, "data": chunk},
                    )
                    seq += 1
            code = handle.exit_code()
        except DriverError as exc:
            code, error = None, str(exc)
        finally:
            handle.close()
            with self._lock:
                self._handles.pop(exec_id, None)
        self._send(
            MsgType.EXEC_EXIT,
            {"exec_id": exec_id, "exit_code": code, "error": error, "chunks": seq},
        )
