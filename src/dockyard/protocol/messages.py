"""Wire format between agent (ZeroMQ DEALER) and server (ROUTER).

Every frame is a msgpack map ``{"v": VERSION, "t": type, "id": msg_id, "b": body}``.
Messages that change state (``status``, ``logs``) carry an ``id`` and are
re-sent by the agent until the server ``ack``s that id; the server applies them
idempotently, so a resend never duplicates anything.

Agent -> server: ``hello``, ``heartbeat``, ``status``, ``logs``, ``usage``, ``health``.
Server -> agent: ``welcome``, ``desired``, ``ack``, ``rehello``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from dockyard.errors import DockyardError

VERSION = 1


class ProtocolError(DockyardError):
    """A frame that cannot be decoded or has the wrong version."""


class MsgType(StrEnum):
    HELLO = "hello"
    HEARTBEAT = "heartbeat"
    STATUS = "status"
    LOGS = "logs"
    USAGE = "usage"
    WELCOME = "welcome"
    DESIRED = "desired"
    ACK = "ack"
    REHELLO = "rehello"
    PRUNE = "prune"  # server -> agent: remove dead containers (admin gc)
    PRUNED = "pruned"  # agent -> server: how many it removed
    BUILD = "build"  # server -> agent: build an image from a context tar
    BUILD_OUTPUT = "build_output"  # agent -> server: build output lines (reliable)
    BUILD_DONE = "build_done"  # agent -> server: build result (reliable)
    REFUSED = "refused"  # server -> agent: not admitted (no valid join token)
    EXEC_START = "exec_start"  # server -> agent: run a command in a task's container
    EXEC_INPUT = "exec_input"  # server -> agent: stdin bytes (interactive)
    EXEC_RESIZE = "exec_resize"  # server -> agent: terminal size
    EXEC_CLOSE = "exec_close"  # server -> agent: the client went away
    EXEC_OUTPUT = "exec_output"  # agent -> server: output chunk (reliable, seq)
    EXEC_EXIT = "exec_exit"  # agent -> server: exit code (reliable)
    HEALTH = "health"  # agent -> server: a replica's health changed (reliable)


#: Wire name -> type: a dict lookup per frame (the Enum call costs several times more).
_TYPES: dict[str, MsgType] = {m.value: m for m in MsgType}


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    body: dict[str, Any]
    msg_id: str = ""


def encode(msg: Message) -> bytes:
    return bytes(msgpack.packb({"v": VERSION, "t": str(msg.type), "id": msg.msg_id, "b": msg.body}))


def decode(frame: bytes) -> Message:
    try:
        data = msgpack.unpackb(frame, raw=False)
    except Exception as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("frame is not a map")
    if data.get("v") != VERSION:
        raise ProtocolError(f"protocol version {data.get('v')!r} is not {VERSION}")
    name = data.get("t")
    msg_type = _TYPES.get(name) if isinstance(name, str) else None
    if msg_type is None:
        raise ProtocolError(f"unknown message type {data.get('t')!r}")
    body = data.get("b")
    if not isinstance(body, dict):
        raise ProtocolError("message body is not a map")
    return Message(msg_type, body, str(data.get("id") or ""))
