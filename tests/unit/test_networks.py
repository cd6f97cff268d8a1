"""Service networks: ids and tables (core/networks.py), service addresses and the node
proxy (agent/), the wire form of a task's networks."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from dockyard.agent.netproxy import NetProxy
from dockyard.agent.networks import assign_addresses
from dockyard.core.errors import ValidationError
from dockyard.core.networks import (
    NetworkRef,
    ReplicaNetView,
    ServiceNetView,
    endpoint_tables,
    network_id,
    parse_networks,
    resolve,
)
from dockyard.protocol.messages import Desired, DesiredEntry, TaskTemplate, decode, encode


def test_ids_depend_on_owner_scope_and_name() -> None:
    a = network_id("alice", "stack:shop", "default")
    assert a == network_id("alice", "stack:shop", "default")
    assert a != network_id("bob", "stack:shop", "default")
    assert a != network_id("alice", "stack:shop2", "default")
    assert a != network_id("alice", "stack:shop", "back")
    refs = resolve((), owner_id="alice", service_name="shop_web", labels={"dockyard.stack": "shop"})
    assert refs == (NetworkRef("default", False, (), a),)
    alone = resolve((), owner_id="alice", service_name="web", labels={}, internal_default=True)
    assert alone[0].internal and alone[0].id == network_id("alice", "service:web", "default")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([{"name": "bad name"}], "networks[0].name"),
        ([{"name": "a", "aliases": ["no spaces"]}], "networks[0].aliases"),
        ([{"name": "a", "internal": "yes"}], "networks[0].internal"),
        ([{"name": "a"}, {"name": "a"}], "networks"),
        ([{"name": "a", "id": "chosen-by-me"}], "networks[0].id"),
        ("default", "networks"),
    ],
)
def test_bad_networks_name_the_field(body: object, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_networks(body)
    assert err.value.field == field


def _replica(wid: str, node: str, port: int, **kw: str) -> ReplicaNetView:
    fields = {"state": "running", "desired_state": "run", "health": "healthy"}
    fields.update(kw)
    return ReplicaNetView(
        wid, node, port_map=((9000, port),), node_state="ready", node_address="127.0.0.1", **fields
    )


def test_tables_list_healthy_replicas_anywhere_to_nodes_of_the_network() -> None:
    net = NetworkRef("default", False, ("api",), "aaaaaaaaaaaa")
    other = NetworkRef("default", False, ("api",), "bbbbbbbbbbbb")
    services = [
        ServiceNetView("w-api", "shop_api", (net,), (9000,), health_checked=True),
        ServiceNetView("w-web", "shop_web", (net,), ()),
        ServiceNetView("w-x", "evil_api", (other,), (9000,)),
    ]
    replicas = [
        _replica("w-api", "n1", 21000),
        _replica("w-api", "n2", 22000),
        _replica("w-api", "n2", 23000, health="unhealthy"),
        _replica("w-api", "n2", 24000, desired_state="stop"),
        _replica("w-web", "n3", 0),
        _replica("w-x", "n4", 25000),
    ]
    tables = endpoint_tables(services, replicas)
    assert set(tables) == {"n1", "n2", "n3", "n4"}
    web_view = tables["n3"]["aaaaaaaaaaaa"].names
    assert web_view["api"]["tcp"][9000] == [("127.0.0.1", 21000), ("127.0.0.1", 22000)]
    assert web_view["shop_api"] == web_view["api"]
    assert "shop_web" in web_view and "evil_api" not in web_view
    assert set(tables["n3"]) == {"aaaaaaaaaaaa"}  # nothing of the other stack
    assert tables["n4"]["bbbbbbbbbbbb"].names["api"]["tcp"][9000] == [("127.0.0.1", 25000)]


def test_service_addresses_are_stable_and_distinct() -> None:
    first = assign_addresses(["api", "db", "web"], "10.213.5.128/25", {})
    assert len(set(first.values())) == 3
    assert all(a.startswith("10.213.5.") and int(a.rsplit(".", 1)[1]) > 128 for a in first.values())
    again = assign_addresses(["api", "db", "web", "cache"], "10.213.5.128/25", first)
    assert {k: again[k] for k in first} == first and again["cache"] not in first.values()


def test_a_task_template_carries_its_networks() -> None:
    networks = ({"name": "default", "internal": True, "aliases": ["db"], "id": "a" * 12},)
    entry = DesiredEntry(
        "t1", "img", 100, 1 << 20, TaskTemplate(networks=networks, udp_ports=(53,))
    )
    msg, _ = decode(encode(Desired("n1", 1, (entry,))))
    assert isinstance(msg, Desired)
    assert msg.tasks[0].template.networks == ({**networks[0], "aliases": ("db",)},)
    assert msg.tasks[0].template.udp_ports == (53,)


# -- the node proxy, on loopback addresses --------------------------------------------------
class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(100)
        self.request.sendall(b"tcp:" + data)


@pytest.fixture
def backends() -> Iterator[tuple[int, int]]:
    tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))

    def serve_udp() -> None:
        while True:
            try:
                data, peer = udp.recvfrom(100)
            except OSError:
                return
            udp.sendto(b"udp:" + data, peer)

    threads = [
        threading.Thread(target=tcp.serve_forever, daemon=True),
        threading.Thread(target=serve_udp, daemon=True),
    ]
    for thread in threads:
        thread.start()
    yield tcp.server_address[1], udp.getsockname()[1]
    tcp.shutdown()
    tcp.server_close()
    udp.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_proxy_forwards_tcp_and_udp_and_skips_dead_endpoints(backends: tuple[int, int]) -> None:
    tcp_port, udp_port = backends
    dead = _free_port()
    listen = _free_port()
    proxy = NetProxy()
    try:
        proxy.apply(
            {
                ("127.0.0.7", "tcp", listen): (
                    "127.0.0.0/8",
                    [("127.0.0.1", dead), ("127.0.0.1", tcp_port)],
                ),
                ("127.0.0.7", "udp", listen): ("127.0.0.0/8", [("127.0.0.1", udp_port)]),
            }
        )
        for _ in range(3):  # the dead endpoint is tried, then passed over
            with socket.create_connection(("127.0.0.7", listen), timeout=3) as conn:
                conn.sendall(b"hi")
                assert conn.recv(100) == b"tcp:hi"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(3)
            client.sendto(b"yo", ("127.0.0.7", listen))
            assert client.recv(100) == b"udp:yo"
        # A peer outside the network's range is refused.
        proxy.apply({("127.0.0.7", "tcp", listen): ("10.0.0.0/8", [("127.0.0.1", tcp_port)])})
        with socket.create_connection(("127.0.0.7", listen), timeout=3) as conn:
            conn.sendall(b"hi")
            try:
                assert conn.recv(100) == b""
            except ConnectionResetError:
                pass  # closed unread: a reset
        assert proxy.refused == 1
        proxy.apply({})
        assert proxy.listening() == set()
    finally:
        proxy.stop()
