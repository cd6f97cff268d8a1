"""The gateway on the wire: malformed frames are dropped and counted, the threads live on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from dockyard.protocol.messages import (
    Ack,
    Desired,
    Hello,
    Message,
    Status,
    TaskStatus,
    Welcome,
    decode,
    encode,
)
from dockyard.server.gateway.gateway import Gateway
from dockyard.server.metrics import ServerMetrics
from dockyard.store.db import Database
from dockyard.testing.wait import wait_for


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Gateway, ServerMetrics]]:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    db.migrate()
    metrics = ServerMetrics()
    gw = Gateway(db, "tcp://127.0.0.1:*", 1.0, on_change=lambda: None, metrics=metrics)
    gw.start()
    try:
        yield gw, metrics
    finally:
        gw.stop()
        db.dispose()


def _frame(name: str, body: object, msg_id: object = "") -> bytes:
    return bytes(msgpack.packb({"v": 1, "t": name, "id": msg_id, "b": body}))


def test_malformed_frames_are_dropped_and_counted(gateway: tuple[Gateway, ServerMetrics]) -> None:
    gw, metrics = gateway
    hello = Hello("n-1", "node-1", "127.0.0.1", "sim", "test", 1000, 1 << 30)
    bad = [
        b"\xc1",  # not msgpack
        bytes(msgpack.packb([1, 2])),  # not a map
        _frame("nope", {"node_id": "n-1"}),  # unknown type
        _frame("heartbeat", {"node_id": "n-1", "sent_at": 1.0}),  # missing fields
        _frame("hello", {**hello.encode(), "capacity": {"cpu_millis": "4"}}),  # wrong type
        _frame("status", {"node_id": "n-1", "updates": [{"state": "running"}]}),
        _frame("logs", {"node_id": "n-1", "lines": [["t", "stdout", 1, "ts"]]}),
        _frame("hello", hello.encode(), msg_id=5),  # id not a string
        encode(Welcome(1.0)),  # a server's message
    ]
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, b"n-1")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(gw.bound_endpoint)
    received: list[Message] = []

    def receive() -> list[Message]:
        while sock.poll(50):
            received.append(decode(sock.recv())[0])
        return received

    try:
        for frame in bad:
            sock.send(frame)
        wait_for(
            lambda: (
                metrics.registry.get_sample_value("dockyard_gateway_malformed_frames_total")
                == len(bad)
            ),
            timeout=10,
            message="malformed frames counted",
        )
        # Both threads still serve: a hello is welcomed, a status report applied and acked.
        sock.send(encode(hello))
        wait_for(
            lambda: any(isinstance(m, Desired) for m in receive()), timeout=10, message="desired"
        )
        assert any(isinstance(m, Welcome) and m.heartbeat_interval == 1.0 for m in received)
        unknown = TaskStatus("t-unknown", "running", "started")
        sock.send(encode(Status("n-1", (unknown,)), "m-1"))
        wait_for(lambda: Ack(("m-1",)) in receive(), timeout=10, message="ack")
        assert gw.last_seen().keys() == {"n-1"}
    finally:
        sock.close(0)
