"""Exec sessions: a command in a running task's container, relayed server <-> agent.

``ExecService.start`` sends ``exec_start`` to the task's node; the agent's
``exec_output`` chunks (numbered; re-sends are dropped, gaps wait for the
missing chunk) and its ``exec_exit`` land in the session's queue, which the
HTTP route (collecting) or the WebSocket (relaying) drains. Input, resize and
hang-up go back through ``Gateway.send``. Every exec is an audit event.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockyard.core.ids import new_id
from dockyard.protocol.messages import (
    ExecClose,
    ExecExit,
    ExecInput,
    ExecOutput,
    ExecResize,
    ExecStart,
    ServerMessage,
)

#: An exec that produced nothing (not even its exit) for this long is abandoned.
IDLE_LIMIT_S = 3600.0


@dataclass
class ExecSession:
    id: str
    task_id: str
    node_id: str
    owner_id: str
    command: list[str]
    events: queue.Queue[tuple[str, Any, Any]] = field(default_factory=queue.Queue)
    next_seq: int = 0
    pending: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    finished: bool = False
    created: float = field(default_factory=time.monotonic)
    #: Called (from the gateway's thread) after each event is queued: an async
    #: consumer sets it to wake its event loop instead of blocking a thread on get().
    waker: Callable[[], None] | None = None

    def put(self, item: tuple[str, Any, Any]) -> None:
        self.events.put(item)
        waker = self.waker
        if waker is not None:
            waker()


class ExecService:
    def __init__(self, send: Callable[[str, ServerMessage], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._sessions: dict[str, ExecSession] = {}

    def start(
        self,
        task_id: str,
        node_id: str,
        owner_id: str,
        command: list[str],
        tty: bool = False,
        stdin: bool = False,
        cols: int = 80,
        rows: int = 24,
    ) -> ExecSession:
        session = ExecSession(new_id(), task_id, node_id, owner_id, list(command))
        with self._lock:
            self._expire()
            self._sessions[session.id] = session
        start = ExecStart(session.id, task_id, tuple(command), tty, stdin, cols, rows)
        self._send(node_id, start)
        return session

    def write(self, session: ExecSession, data: bytes) -> None:
        self._send(session.node_id, ExecInput(session.id, data))

    def resize(self, session: ExecSession, cols: int, rows: int) -> None:
        self._send(session.node_id, ExecResize(session.id, cols, rows))

    def hangup(self, session: ExecSession) -> None:
        """Close the command's stdin/terminal; its exit still arrives."""
        if not session.finished:
            self._send(session.node_id, ExecClose(session.id))

    def close(self, session: ExecSession) -> None:
        """The client is gone: hang up on the node and forget the session."""
        if not session.finished:
            self._send(session.node_id, ExecClose(session.id))
        with self._lock:
            self._sessions.pop(session.id, None)

    # -- gateway thread -----------------------------------------------------
    def on_output(self, node_id: str, msg: ExecOutput) -> None:
        session = self._get(node_id, msg.exec_id)
        if session is None:
            return
        seq = msg.seq
        with self._lock:
            if seq < session.next_seq or session.finished:
                return  # a re-sent chunk
            session.pending[seq] = (msg.stream or "stdout", msg.data)
            while session.next_seq in session.pending:
                stream, chunk = session.pending.pop(session.next_seq)
                session.put(("output", stream, chunk))
                session.next_seq += 1

    def on_exit(self, node_id: str, msg: ExecExit) -> None:
        session = self._get(node_id, msg.exec_id)
        if session is None:
            return
        with self._lock:
            if session.finished:
                return
            session.finished = True
            code = msg.exit_code
            # Chunks still missing arrive by re-send before the exit would; flush what we have.
            for seq in sorted(session.pending):
                stream, chunk = session.pending.pop(seq)
                session.put(("output", stream, chunk))
            session.put(("exit", code, msg.error))

    def _get(self, node_id: str, exec_id: str) -> ExecSession | None:
        with self._lock:
            session = self._sessions.get(exec_id)
        return session if session is not None and session.node_id == node_id else None

    def _expire(self) -> None:
        now = time.monotonic()
        for exec_id, session in list(self._sessions.items()):
            if now - session.created > IDLE_LIMIT_S:
                del self._sessions[exec_id]
