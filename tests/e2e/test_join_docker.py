"""Node joining between real processes: tokens, and agent traffic that is not plaintext."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.testing.cluster import ProcessCluster, free_port
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}


class Recorder:
    """A loopback TCP relay that keeps every byte it forwards (a packet capture)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bytes(self) -> bytes:
        with self._lock:
            return bytes(self.captured)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def secure_cluster(image: str, tmp_path: Path) -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(root=tmp_path, heartbeat=0.5)
    try:
        cluster.start_server()
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


def test_agent_without_token_is_refused_and_traffic_is_encrypted(
    secure_cluster: ProcessCluster, image: str
) -> None:
    cluster = secure_cluster
    assert cluster.join_token and cluster.join_token.startswith("dyj.")
    # Without a token (plaintext to a CURVE gateway) and with a forged token: refused.
    cluster.start_agent("intruder", join=False)
    server_key = cluster.join_token.rsplit(".", 1)[1]
    cluster.start_agent("forger", join=False, extra_args=["--server-key", server_key])
    recorder = Recorder(cluster.gateway_port)
    try:
        cluster.start_agent("node-1", server=f"tcp://127.0.0.1:{recorder.port}")
        ready = cluster.wait_ready_nodes(1)
        assert [n["name"] for n in ready] == ["node-1"]
        marker = "very-secret-log-line-4711"
        with cluster.client() as api:
            task = api.run_job("secret", image, ["sh", "-c", f"echo {marker}"])
            done = wait_for(
                lambda: t if (t := api.task(task["id"]))["state"] in TERMINAL else None,
                timeout=60,
            )
            assert done["state"] == "succeeded"
            assert [line["line"] for line in api.logs(task["id"])["lines"]] == [marker]
            refused = wait_for(
                lambda: [e for e in api.events() if e["reason"] == "node_refused"] or None,
                timeout=20,
                message="refusal event for the forger",
            )
            assert any("forger" in e["message"] for e in refused)
            names = {n["name"] for n in api.nodes()}
            assert "intruder" not in names and "forger" not in names
        captured = recorder.bytes()
        assert len(captured) > 1000
        assert b"CURVE" in captured[:128]  # the ZMTP greeting names the mechanism
        for plaintext in (marker.encode(), b"node-1", b"heartbeat", b"desired", b"secret"):
            assert plaintext not in captured, plaintext
    finally:
        recorder.close()
    forger_log = (cluster.root / "agent-forger.log").read_text()
    assert "refused" in forger_log


def test_open_join_is_explicit(image: str, tmp_path: Path) -> None:
    cluster = ProcessCluster(root=tmp_path, server_args=["--insecure-open-join"])
    try:
        cluster.start_server()
        assert cluster.join_token is None
        cluster.start_agent("dev")
        cluster.wait_ready_nodes(1)
        assert "insecure_open_join" in (tmp_path / "server.log").read_text()
    finally:
        cluster.close()
