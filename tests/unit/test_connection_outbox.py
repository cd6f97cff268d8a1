"""The agent's outbox at the Connection level (no server: a fake socket records frames).

A status update merged into a message that was already sent once could be lost:
the server may have applied (or deduplicated) that message id and acked it, and
the ack then removed the merged update from the outbox with it.
"""

from __future__ import annotations

from typing import Any

from dockyard.agent.connection import UNSENT, Connection
from dockyard.protocol.messages import Heartbeat, Hello, Status, TaskStatus, decode


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.frames.append(frame)


def _connection() -> Connection:
    return Connection(
        "tcp://127.0.0.1:1",
        "n1",
        on_message=lambda _: None,
        hello=lambda: Hello("n1", "n1", "", "sim", "0", 1000, 1 << 30),
        heartbeat=lambda: Heartbeat("n1", 0.0, 0, 0.0, 0, 0, 0),
        heartbeat_interval=1.0,
    )


def _status(*task_ids: str) -> Status:
    return Status("n1", tuple(TaskStatus(t, "running", "started") for t in task_ids))


def _sent(sock: FakeSocket) -> list[tuple[str, list[str]]]:
    out = []
    for frame in sock.frames:
        msg: Any
        msg, msg_id = decode(frame)
        out.append((msg_id, [u.task_id for u in msg.updates]))
    return out


def test_no_merge_into_a_message_sent_once() -> None:
    conn = _connection()
    sock = FakeSocket()
    try:
        first = conn.send_reliable(_status("t1"), merge=True)
        # A reconnect marks everything unacked for sending again (what _on_monitor
        # does); the unsent flush sends it while it is still queued in _outgoing.
        conn._outbox[first] = (conn._outbox[first][0], UNSENT)
        conn._has_unsent = True
        conn._flush_unsent(sock)  # type: ignore[arg-type]
        assert _sent(sock) == [(first, ["t1"])]
        second = conn.send_reliable(_status("t2"), merge=True)
        assert second != first, "merged into a message the server may have applied"
        # The server applied the first frame (t1 only) and acks its id.
        conn._outbox.pop(first)
        conn._sent_ids.discard(first)
        conn._drain_outgoing(sock)  # type: ignore[arg-type]
        unacked = [[u.task_id for u in m.updates] for m, _ in conn._outbox.values()]  # type: ignore[attr-defined]
        assert unacked == [["t2"]]  # still queued until its own ack
        assert (second, ["t2"]) in _sent(sock)
    finally:
        conn._wake_r.close()
        conn._wake_w.close()


def test_unsent_updates_still_merge() -> None:
    conn = _connection()
    try:
        first = conn.send_reliable(_status("t1"), merge=True)
        assert conn.send_reliable(_status("t2"), merge=True) == first
        ((msg, _),) = conn._outbox.values()
        assert [u.task_id for u in msg.updates] == ["t1", "t2"]  # type: ignore[attr-defined]
    finally:
        conn._wake_r.close()
        conn._wake_w.close()


def test_welcome_calls_on_welcome() -> None:
    from dockyard.protocol.messages import Welcome, encode

    conn = _connection()
    calls: list[int] = []
    conn.on_welcome = lambda: calls.append(1)

    class Incoming:
        def __init__(self) -> None:
            self.frames = [encode(Welcome(1.0))]

        def recv(self, flags: int = 0) -> bytes:
            import zmq

            if not self.frames:
                raise zmq.Again()
            return self.frames.pop(0)

    try:
        conn._receive(Incoming())  # type: ignore[arg-type]
        assert calls == [1] and conn.welcomed.is_set()
    finally:
        conn._wake_r.close()
        conn._wake_w.close()


class FullSocket:
    """A DEALER whose send queue is at its high-water mark: with NOBLOCK, ZeroMQ
    raises ``Again`` instead of queueing (``room`` frames fit, then none)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.frames: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        import zmq

        if self.room <= 0:
            raise zmq.Again()
        self.room -= 1
        self.frames.append(frame)


def test_reliable_messages_at_the_high_water_mark_wait_and_go_in_order_once() -> None:
    conn = _connection()
    sock = FullSocket(room=7)
    try:
        ids = [conn.send_reliable(_status(f"t{i}")) for i in range(40)]
        conn._drain_outgoing(sock)  # type: ignore[arg-type]
        # Seven fit; the other 33 stay in the outbox, marked unsent (not dropped).
        assert [decode(f)[1] for f in sock.frames] == ids[:7]
        assert [i for i, (_, sent) in conn._outbox.items() if sent == UNSENT] == ids[7:]
        # New messages queue behind them (a final status never overtakes older ones).
        late = conn.send_reliable(_status("late"))
        conn._drain_outgoing(sock)  # type: ignore[arg-type]
        assert len(sock.frames) == 7
        # The queue drains: everything goes, in order, each exactly once.
        sock.room = 1000
        conn._drain_outgoing(sock)  # type: ignore[arg-type]
        sent_ids = [decode(f)[1] for f in sock.frames]
        assert sent_ids == [*ids, late]
        assert not [i for i, (_, sent) in conn._outbox.items() if sent == UNSENT]
        assert len(conn._outbox) == 41  # all kept until acked
    finally:
        conn._wake_r.close()
        conn._wake_w.close()
