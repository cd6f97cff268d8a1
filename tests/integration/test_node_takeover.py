"""No node takeover without a join token (red-team finding): a peer that connects
with a joined node's id as its ZeroMQ identity, a fresh CURVE key and the
server's public key must neither take the node's route nor learn its desired
set; the node stays up and its tasks keep running."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from dockyard.drivers.sim import SimDriver
from dockyard.protocol import curve
from dockyard.protocol.messages import Heartbeat, Hello, encode
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GRACE_S = 3.0


@pytest.fixture(scope="module")
def secure() -> Iterator[LocalCluster]:
    cluster = LocalCluster(insecure_open_join=False, node_grace=GRACE_S).start()
    yield cluster
    cluster.close()


def test_an_unjoined_peer_cannot_take_a_nodes_route(secure: LocalCluster) -> None:
    victim = secure.add_agent("victim", SimDriver(cpu_millis=4000, memory_bytes=4 << 30))
    node_id = victim.node_id
    with secure.client() as api:
        wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
        task = api.run_job("secret-job", "busybox", ["run-forever"], env={"TOKEN": "s3cret"})
        wait_for(lambda: api.task(task["id"])["state"] == "running", timeout=20)

    server_key = (secure.root / "server" / curve.PUBLIC_FILE).read_text().strip().encode()
    public, secret = zmq.curve_keypair()
    ctx = zmq.Context()
    thief = ctx.socket(zmq.DEALER)
    thief.setsockopt(zmq.IDENTITY, node_id.encode())  # the id the real agent's socket had
    thief.setsockopt(zmq.LINGER, 0)
    thief.curve_serverkey, thief.curve_publickey, thief.curve_secretkey = server_key, public, secret
    thief.connect(secure.gateway)
    received: list[str] = []
    states: list[str] = []
    hello = encode(Hello(node_id, "victim", "127.0.0.1", "sim", "0", 1000, 1 << 30))
    try:
        with secure.client() as api:
            deadline = time.monotonic() + 3 * GRACE_S  # bounded: three node graces
            while time.monotonic() < deadline:
                beat = Heartbeat(node_id, time.time(), 0, 0.0, 0, 0, 0)
                thief.send(hello, zmq.NOBLOCK)
                thief.send(encode(beat), zmq.NOBLOCK)
                while thief.poll(200):
                    received.append(str(msgpack.unpackb(thief.recv())["t"]))
                states.append(next(n["state"] for n in api.nodes() if n["id"] == node_id))
            assert api.task(task["id"])["state"] == "running"
            reasons = [e["reason"] for e in api.events()]
    finally:
        thief.close(0)
        ctx.term()
    assert "desired" not in received and "welcome" not in received, received
    assert set(received) <= {"refused"}, received
    assert set(states) == {"ready"}, f"the victim left ready: {states}"
    assert "node_refused" in reasons
    assert victim.connection.welcomed.is_set()
