"""Row 14 of the test matrix: 30% loss and 500 ms delay on an agent's link.

Topology, all made by this test (traffic only to addresses it assigned):

    root ns (test, server: API on 127.0.0.1, gateway on 10.200.N.1)
        --veth 10.200.N.1/30 <-> 10.200.N.2/30-- ns NODE (agent, sim driver)

``tc netem loss 30% delay 500ms`` sits on both ends of the veth, so each
direction loses 30% of its packets and the round trip takes a second. Where the
kernel has no netem (``sch_netem`` not built, as in some VMs), the same link is
made from what is there: iptables ``statistic`` drops 30% of the packets each way
on the namespace's end of the veth, and the agent reaches the gateway through a
relay on the host end of the veth that holds every chunk 500 ms in each direction. Through
it, every command (desired sets starting tasks, kills) must be applied exactly
once (the sim driver's journal counts what the agent did), every status and log
line must reach the store exactly once, and the node must stay ready (the grace
is sized for the delay) the whole time.

TCP retransmits lost packets, so a ZeroMQ message is lost only with a connection
that drops; with the agent's link timeout above the round trip that is rare, and
the outbox's re-send path is seldom taken here. What this test shows failing is
the default 1 s link timeout on this link (connections dropped, redials through
the loss slower than the grace: the node went down and its tasks were lost).

So a second test puts a lossy ZeroMQ proxy on loopback between the agent and the
gateway (no root needed): it drops whole messages, delivers some twice and delays
each by a random amount (so they arrive out of order), both ways. The same
exactly-once checks hold, the agent's re-send path is taken (the proxy sees
message ids sent again), and every reliable message the agent sent is acked in
the end: none silently lost.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import os
import random
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from dockyard.client import Client
from dockyard.protocol.messages import Ack, Heartbeat, ProtocolError, decode
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.timeout(420)

HEARTBEAT = 1.0
#: Node-down grace for a link with a 1 s round trip and 30% loss each way.
GRACE = 20.0
#: The agent's ZMTP link timeout: above the 1 s round trip (the 1 s default drops
#: every connection of this link within seconds, and redialling through 30% loss
#: can take longer than the grace).
LINK_TIMEOUT = "5"
LONG, SHORT = 12, 12
LOG_LINES = 30


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def _usable() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs {tool} (iproute2)"
    return ""


class LossyLink:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = f"dyloss{tag}"
        self.host_if, self.node_if = f"dylh{tag}", f"dyln{tag}"
        subnet = secrets.randbelow(250) + 2
        self.host_ip, self.node_ip = f"10.200.{subnet}.1", f"10.200.{subnet}.2"

    def up(self) -> None:
        sh("ip", "netns", "add", self.ns)
        self.in_ns("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if)
        sh("ip", "link", "set", self.node_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        self.in_ns("ip", "addr", "add", f"{self.node_ip}/30", "dev", self.node_if)
        self.in_ns("ip", "link", "set", self.node_if, "up")

    def impair(self) -> bool:
        """netem on both ends; False when this kernel has no netem (nothing changed)."""
        netem = ["netem", "loss", "30%", "delay", "500ms"]
        try:
            sh("tc", "qdisc", "add", "dev", self.host_if, "root", *netem)
        except subprocess.CalledProcessError as exc:
            if b"unknown" in exc.stderr.lower():
                return False
            raise
        self.in_ns("tc", "qdisc", "add", "dev", self.node_if, "root", *netem)
        return True

    def drop_30_percent(self) -> None:
        """30% loss each way on the namespace's end (iptables ``statistic``)."""
        rule = ["-m", "statistic", "--mode", "random", "--probability", "0.3", "-j", "DROP"]
        self.in_ns("iptables", "-A", "INPUT", "-i", self.node_if, *rule)
        self.in_ns("iptables", "-A", "OUTPUT", "-o", self.node_if, *rule)

    def in_ns(self, *args: str) -> None:
        sh("ip", "netns", "exec", self.ns, *args)

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


class DelayRelay:
    """TCP relay that delivers every chunk ``delay`` seconds after it arrived, in order,
    in both directions (the delay half of netem, for kernels without it)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.server = socket.create_server(listen)
        self.server.settimeout(0.5)
        self.closed = threading.Event()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                self._pipe(src, dst)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        due: list[tuple[float, int, bytes]] = []
        ready = threading.Condition()
        count = [0]

        def read() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                with ready:
                    count[0] += 1
                    heapq.heappush(due, (time.monotonic() + self.delay, count[0], data))
                    ready.notify()
                if not data:
                    return

        def write() -> None:
            while True:
                with ready:
                    while not due or due[0][0] > time.monotonic():
                        ready.wait(None if not due else due[0][0] - time.monotonic())
                    _, _, data = heapq.heappop(due)
                try:
                    if not data:
                        raise OSError("closed")
                    dst.sendall(data)
                except OSError:
                    for sock in (src, dst):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        self.server.close()
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture()
def lossy(tmp_path: Path) -> Iterator[tuple[ProcessCluster, Path]]:
    why = _usable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    link = LossyLink()
    link.up()
    journal = tmp_path / "journal"
    os.environ["DOCKYARD_SIM_JOURNAL"] = str(journal)  # the agent process inherits it
    cluster = ProcessCluster(
        root=tmp_path / "cluster",
        heartbeat=HEARTBEAT,
        node_grace=GRACE,
        driver="sim",
        gateway_host=link.host_ip,
    )
    relay: DelayRelay | None = None
    try:
        cluster.root.mkdir()
        cluster.start_server()
        server = cluster.gateway
        if not link.impair():
            port = int(cluster.gateway.rsplit(":", 1)[1])
            relay = DelayRelay((link.host_ip, 0), (link.host_ip, port), delay=0.5)
            server = f"tcp://{link.host_ip}:{relay.server.getsockname()[1]}"
            link.drop_30_percent()
        cluster.start_agent(
            "lossy",
            prefix=["ip", "netns", "exec", link.ns],
            server=server,
            extra_args=["--link-timeout", LINK_TIMEOUT],
        )
        cluster.wait_ready_nodes(1, timeout=90)
        yield cluster, journal
    except BaseException:
        dump(cluster)
        raise
    finally:
        os.environ.pop("DOCKYARD_SIM_JOURNAL", None)
        cluster.close()
        if relay is not None:
            relay.close()
        link.down()


def dump(cluster: ProcessCluster) -> None:
    with contextlib.suppress(Exception), cluster.client() as api:
        print({t["name"]: (t["state"], t["reason"]) for t in api.tasks()})
        print(api.nodes())
    print(cluster.logs())


class NodeWatch(threading.Thread):
    """Polls the node's state over loopback (not through the lossy link)."""

    def __init__(self, api: Client) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.states: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for node in self.api.nodes():
                self.states[str(node["state"])] += 1


def journal_ops(journal: Path) -> dict[str, collections.Counter[str]]:
    ops: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in journal.read_text().splitlines():
        op, task_id, *rest = line.split()
        ops[task_id][op if op != "signal" else f"signal {rest[-1]}"] += 1
    return ops


def all_logs(api: Client, task_id: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.logs(task_id, after=after)
        lines.extend(page["lines"])
        if not page["lines"]:
            return lines
        after = page["next"]


def test_lossy_link_applies_and_delivers_everything_exactly_once(
    lossy: tuple[ProcessCluster, Path],
) -> None:
    """Commands applied once, reports stored once, the node ready throughout."""
    cluster, journal = lossy
    try:
        exercise(cluster, journal)
    except BaseException:
        dump(cluster)
        raise


def exercise(cluster: ProcessCluster, journal: Path) -> None:
    env = {"DOCKYARD_SIM_LOG_LINES": str(LOG_LINES)}
    with cluster.client() as api, cluster.client() as watch_api:
        watch = NodeWatch(watch_api)
        watch.start()
        jobs = [
            {"name": f"long{i}", "image": "sim/x", "command": ["run"], "env": env}
            for i in range(LONG)
        ] + [
            {"name": f"short{i}", "image": "sim/x", "command": ["sleep", "3"], "env": env}
            for i in range(SHORT)
        ]
        for job in jobs:
            job.update(cpu=0.05, memory="16m", kill_grace_s=30)
        ids = api.run_jobs(jobs)
        long_ids, short_ids = ids[:LONG], ids[LONG:]
        wait_for(
            lambda: (
                all(api.task(t)["state"] == "running" for t in long_ids)
                and all(api.task(t)["state"] == "succeeded" for t in short_ids)
            ),
            timeout=150,
            message="long tasks running and short ones succeeded through the lossy link",
        )
        containers = {t: api.task(t)["container_id"] for t in long_ids}
        for task_id in long_ids:
            api.kill(task_id)
        wait_for(
            lambda: all(api.task(t)["state"] == "killed" for t in long_ids),
            timeout=150,
            message="kills applied through the lossy link",
        )
        wanted = LOG_LINES + 1  # "sim: <command>" and the numbered lines
        wait_for(
            lambda: all(len(all_logs(api, t)) >= wanted for t in ids),
            timeout=150,
            message="every log line stored",
        )
        time.sleep(3 * 2.0)  # let re-sends still in flight land (a duplicate would show)
        watch.stop.set()
        watch.join(10)

        for task_id in ids:
            lines = all_logs(api, task_id)
            texts = [line["line"] for line in lines]
            assert len(lines) == wanted, (task_id, texts)
            assert sorted(line["seq"] for line in lines) == list(range(1, wanted + 1))
            assert texts[1:] == [f"line {n}" for n in range(1, LOG_LINES + 1)]
            task = api.task(task_id)
            assert task["reason"], task
        for task_id in long_ids:
            assert api.task(task_id)["container_id"] == containers[task_id]
        ops = journal_ops(journal)
        assert set(ops) == set(ids), "the agent ran something it was not asked to"
        for task_id in ids:
            assert ops[task_id]["create"] == 1, (task_id, ops[task_id])
            assert ops[task_id]["start"] == 1, (task_id, ops[task_id])
        for task_id in long_ids:
            assert ops[task_id]["signal SIGTERM"] == 1, (task_id, ops[task_id])
            assert ops[task_id]["signal SIGKILL"] == 0, (task_id, ops[task_id])
        for task_id in short_ids:
            assert not [op for op in ops[task_id] if op.startswith("signal")], ops[task_id]

        events = api.events()
        per_task = collections.Counter(
            (e.get("task_id"), e.get("reason")) for e in events if e.get("task_id") in set(ids)
        )
        dupes = {k: n for k, n in per_task.items() if n > 1}
        assert not dupes, f"status applied more than once: {dupes}"
        assert "node_down" not in [e.get("reason") for e in events]
        assert set(watch.states) == {"ready"}, f"node flapped: {dict(watch.states)}"
        assert sum(watch.states.values()) > 20
        node = api.nodes()[0]
        assert node["state"] == "ready"


class LossyZmqProxy:
    """A ZeroMQ proxy (ROUTER for the agent, DEALER to the gateway) that drops each
    message with ``drop``, delivers it twice with ``dup``, and holds every delivered
    copy for a random time up to ``max_delay`` (messages overtake each other), both
    ways. Counts what it did, the reliable message ids the agent sent (how often)
    and the ids the gateway's acks that reached the agent named."""

    def __init__(
        self, upstream: str, seed: int, drop: float = 0.15, dup: float = 0.1, max_delay: float = 0.3
    ) -> None:
        self.rng = random.Random(seed)
        self.drop, self.dup, self.max_delay = drop, dup, max_delay
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.front: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        port = self.front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.back: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.back.setsockopt(zmq.LINGER, 0)
        self.back.connect(upstream)
        self.stats: collections.Counter[str] = collections.Counter()
        self.sent_ids: collections.Counter[str] = collections.Counter()
        self.acked: set[str] = set()
        self.unacked: int | None = None  # as the agent's last delivered heartbeat said
        self.peer = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        due: list[tuple[float, int, str, bytes]] = []
        count = 0
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        try:
            while not self.stop.is_set():
                wait = 0.1 if not due else max(0.0, min(0.1, due[0][0] - time.monotonic()))
                events = dict(poller.poll(int(wait * 1000) + 1))
                arrived: list[tuple[str, bytes]] = []
                if self.front in events:
                    while True:
                        try:
                            identity, payload = self.front.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.peer = identity
                        arrived.append(("up", payload))
                if self.back in events:
                    while True:
                        try:
                            arrived.append(("down", self.back.recv(zmq.NOBLOCK)))
                        except zmq.Again:
                            break
                now = time.monotonic()
                for way, payload in arrived:
                    reliable = self._look(way, payload, delivered=False)
                    kind = f"{way} {'reliable' if reliable else 'other'}"
                    roll = self.rng.random()
                    if roll < self.drop:
                        self.stats[f"{kind} dropped"] += 1
                        continue
                    copies = 2 if roll < self.drop + self.dup else 1
                    if copies == 2:
                        self.stats[f"{kind} duplicated"] += 1
                    for _ in range(copies):
                        count += 1
                        at = now + self.rng.uniform(0.0, self.max_delay)
                        heapq.heappush(due, (at, count, way, payload))
                while due and due[0][0] <= time.monotonic():
                    _, seq, way, payload = heapq.heappop(due)
                    if due and seq < due[0][1]:
                        self.stats["overtaken"] += 1  # a later message goes after it
                    if way == "up":
                        self.back.send(payload)
                    else:
                        self._look(way, payload, delivered=True)
                        self.front.send_multipart([self.peer, payload])
        finally:
            self.front.close(0)
            self.back.close(0)

    def _look(self, way: str, payload: bytes, delivered: bool) -> bool:
        """Note ids and acks; True for a reliable agent message."""
        try:
            msg, msg_id = decode(payload)
        except ProtocolError:
            return False
        if way == "up":
            if msg_id:
                self.sent_ids[msg_id] += 1
            if isinstance(msg, Heartbeat):
                self.unacked = msg.unacked
            return bool(msg_id)
        if delivered and isinstance(msg, Ack):
            self.acked.update(msg.ids)
        return False

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_dropped_duplicated_and_reordered_messages_are_applied_exactly_once(
    tmp_path: Path,
) -> None:
    """Commands applied once and reports stored once through a proxy that drops,
    duplicates and reorders whole ZeroMQ messages; the outbox re-sends, and every
    reliable message is acked in the end (nothing silently dropped)."""
    seed = secrets.randbits(32)
    print(f"proxy seed {seed}")
    journal = tmp_path / "journal"
    os.environ["DOCKYARD_SIM_JOURNAL"] = str(journal)  # the agent process inherits it
    cluster = ProcessCluster(
        root=tmp_path / "cluster",
        heartbeat=0.5,
        node_grace=10.0,
        driver="sim",
        server_args=["--insecure-open-join"],  # plaintext: the proxy reads message ids
    )
    proxy: LossyZmqProxy | None = None
    try:
        cluster.root.mkdir()
        cluster.start_server()
        proxy = LossyZmqProxy(cluster.gateway, seed)
        cluster.start_agent("lossy", server=proxy.endpoint)
        cluster.wait_ready_nodes(1, timeout=60)
        exercise(cluster, journal)
        wait_for(
            lambda: proxy.unacked == 0 and set(proxy.sent_ids) <= proxy.acked,
            timeout=30,
            message="every reliable message acked",
        )
        resent = [i for i, n in proxy.sent_ids.items() if n > 1]
        print(dict(proxy.stats), f"{len(proxy.sent_ids)} reliable ids, {len(resent)} re-sent")
        for kind in ("up reliable", "down other"):
            assert proxy.stats[f"{kind} dropped"] > 0, proxy.stats
            assert proxy.stats[f"{kind} duplicated"] > 0, proxy.stats
        assert proxy.stats["overtaken"] > 0, proxy.stats
        assert resent, "the agent never re-sent a message (its outbox path was not taken)"
    except BaseException:
        dump(cluster)
        raise
    finally:
        os.environ.pop("DOCKYARD_SIM_JOURNAL", None)
        cluster.close()
        if proxy is not None:
            proxy.close()
