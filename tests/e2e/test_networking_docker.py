"""Issue 18's proof on real Docker, two agent processes on this host as two nodes:

- a stack's ``web`` replica fetches ``http://api:9000/`` (TCP) and a shell in it resolves
  ``db`` and talks UDP to ``echo:5353``, through its node's proxy, to replicas on both
  nodes (their published ports on the node address, never a container bridge IP);
- killing the replica that answered: the next request goes to another one;
- another stack's container and another user's cannot connect to those names'
  addresses; an internal network's container reaches nothing on the host but them.

All traffic stays on this host: 127.0.0.1 and the Docker networks the agents made.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker_cluster import docker_cluster

from dockyard.client import Client
from dockyard.drivers.base import LABEL_TASK
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.images import ensure_busybox_image
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

IMAGE = "dockyard/netbox:test"
HTTPD = 'mkdir -p /www && echo "$(hostname)" > /www/index.html && exec httpd -f -p 9000 -h /www'
FAST = {"interval_s": 0.3, "timeout_s": 1.0, "retries": 2}


@pytest.fixture(scope="module")
def image() -> str:
    """busybox plus a static UDP echo (tests/e2e/images/udpecho.c), built here."""
    base = ensure_busybox_image()
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "udpecho"
        source = Path(__file__).parent / "images" / "udpecho.c"
        gcc = shutil.which("gcc") or "gcc"
        subprocess.run([gcc, "-static", "-O2", "-o", str(binary), str(source)], check=True)
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            tar.add(binary, "udpecho")
            dockerfile = f"FROM {base}\nCOPY udpecho /bin/udpecho\n".encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
        context.seek(0)
        docker.from_env().images.build(fileobj=context, custom_context=True, tag=IMAGE, rm=True)
    return IMAGE


@pytest.fixture(scope="module")
def cluster(image: str) -> Iterator[ProcessCluster]:
    with docker_cluster(agents=2) as cl:
        yield cl


def service(name: str, stack: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"{stack}_{name}",
        "image": IMAGE,
        "command": ["sh", "-c", command],
        "cpu": 0.05,
        "memory": "16m",
        "kill_grace_s": 1,
        "labels": {"dockyard.stack": stack},
        "networks": [{"name": "default", "aliases": [name]}],
        **extra,
    }


def ready(api: Client, name: str, count: int) -> list[Any] | None:
    detail = api.service(name)["replicas_detail"]
    return detail if len(detail) == count and all(r["ready"] for r in detail) else None


def container(task_id: str) -> Any:
    found = docker.from_env().containers.list(filters={"label": f"{LABEL_TASK}={task_id}"})
    return found[0] if found else None


def sh(task_id: str, script: str) -> tuple[int, str]:
    """Run ``script`` in the replica's container (like a job in the stack would)."""
    code, out = container(task_id).exec_run(["sh", "-c", script])
    return int(code), out.decode(errors="replace").strip()


@pytest.fixture(scope="module")
def shop(cluster: ProcessCluster) -> Iterator[dict[str, Any]]:
    """Stack ``shop``: api (2 replicas, one per node), echo (UDP, 2), db (1), web (1)."""
    with cluster.client() as api:
        # web first: the names of the services made after it reach its /etc/hosts too.
        # (smaller than api: the spread puts api's two replicas on both nodes below)
        api.create_service(service("web", "shop", "exec sleep 3600", cpu=0.02, memory="8m"))
        wait_for(lambda: ready(api, "shop_web", 1), timeout=60)
        health = {"kind": "http", "path": "/", **FAST}
        # One replica, then a second: spread puts it on the other (emptier) node.
        api.create_service(service("api", "shop", HTTPD, ports=[9000], health=health))
        wait_for(lambda: ready(api, "shop_api", 1), timeout=60)
        api.scale_service("shop_api", 2)
        api.create_service(
            service(
                "echo",
                "shop",
                "exec udpecho 5353",
                replicas=2,
                ports=[5353],
                udp_ports=[5353],
            )
        )
        api.create_service(service("db", "shop", "exec sleep 3600", ports=[5432]))
        replicas = {
            name: wait_for(lambda n=name, c=count: ready(api, f"shop_{n}", c), timeout=60)
            for name, count in (("api", 2), ("echo", 2), ("db", 1), ("web", 1))
        }
        yield {"api": api, "replicas": replicas}
        for name in ("api", "echo", "db", "web"):
            api.remove_service(f"shop_{name}")


def fetch(web: str) -> str:
    code, out = sh(web, "wget -O- http://api:9000/ 2>/dev/null")
    return out if code == 0 else f"failed ({code}): {out}"


def test_web_reaches_api_on_both_nodes(shop: dict[str, Any]) -> None:
    api_nodes = {r["node"] for r in shop["replicas"]["api"]}
    assert len(api_nodes) == 2, shop["replicas"]["api"]
    web = shop["replicas"]["web"][0]["task_id"]
    hostnames = {
        container(r["task_id"]).attrs["Config"]["Hostname"] for r in shop["replicas"]["api"]
    }
    answers = {fetch(web) for _ in range(6)}
    assert answers == hostnames  # round robin over both nodes' replicas


def test_job_resolves_db_and_talks_udp(shop: dict[str, Any]) -> None:
    web = shop["replicas"]["web"][0]["task_id"]
    code, out = sh(web, "ping -c1 -W1 db | head -1")
    assert code == 0 and "PING db (10." in out, out
    code, out = sh(web, "ping -c1 -W1 echo | head -1 | sed 's/.*(\\(.*\\)).*/\\1/'")
    address = out
    echoes = set()
    for index in range(6):
        code, out = sh(web, f"udpecho -c {address} 5353 hello{index}")
        assert code == 0 and out.endswith(f"hello{index}"), out
        echoes.add(out.split()[0])
    assert len(echoes) >= 1


def test_killed_replica_next_request_goes_elsewhere(shop: dict[str, Any]) -> None:
    api: Client = shop["api"]
    web = shop["replicas"]["web"][0]["task_id"]
    first = fetch(web)
    victim = next(
        r["task_id"]
        for r in shop["replicas"]["api"]
        if container(r["task_id"]).attrs["Config"]["Hostname"] == first
    )
    container(victim).kill()
    # The very next requests go to the other replica (the proxy's connect to the dead
    # one is refused and it moves on; the tables drop it within ~0.25 s of the store).
    after = [fetch(web) for _ in range(4)]
    assert all(a != first and not a.startswith("failed") for a in after), (first, after)
    wait_for(lambda: ready(api, "shop_api", 2), timeout=60)  # replaced


def test_other_stack_and_other_user_cannot_connect(
    cluster: ProcessCluster, shop: dict[str, Any]
) -> None:
    api: Client = shop["api"]
    web = shop["replicas"]["web"][0]["task_id"]
    _, hosts = sh(web, "cat /etc/hosts")
    address = next(ln.split()[0] for ln in hosts.splitlines() if ln.split()[-1:] == ["api"])
    api.add_user("mallory")
    token = api.create_token("mallory")["token"]
    probes = []
    api.create_service(service("probe", "other", "exec sleep 3600"))
    with Client(url=cluster.url, token=token) as mallory:
        mallory.create_service(service("probe", "evil", "exec sleep 3600"))
        for name, client in (("other_probe", api), ("evil_probe", mallory)):
            detail = wait_for(lambda n=name, c=client: ready(c, n, 1), timeout=60)
            probes.append(detail[0]["task_id"])
        try:
            for probe in probes:
                code, out = sh(probe, f"wget -O- http://{address}:9000/ 2>&1")
                assert code != 0, out
                code, out = sh(probe, "wget -O- http://api:9000/ 2>&1")
                assert code != 0, out  # the name is not theirs
            assert fetch(web) != "" and not fetch(web).startswith("failed")  # still served
        finally:
            mallory.remove_service("evil_probe")
            api.remove_service("other_probe")


def test_internal_network_has_no_route_out(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        vault = service("box", "vault", HTTPD, ports=[9000])
        vault["networks"] = [{"name": "back", "internal": True, "aliases": ["box"]}]
        api.create_service(vault)
        open_box = service("box", "lobby", "exec sleep 3600")
        api.create_service(open_box)
        try:
            inside = wait_for(lambda: ready(api, "vault_box", 1), timeout=60)[0]["task_id"]
            outside = wait_for(lambda: ready(api, "lobby_box", 1), timeout=60)[0]["task_id"]
            results = {}
            for task_id in (inside, outside):
                networks = container(task_id).attrs["NetworkSettings"]["Networks"]
                gateway = next(iter(networks.values()))["Gateway"]
                results[task_id] = _probe_gateway(task_id, gateway)
            assert results[outside] == 0  # the probe can succeed ...
            assert results[inside] != 0  # ... but not from the internal network
            # Its names answer, through the node proxy and its published port.
            code, out = sh(inside, "wget -O- http://box:9000/ 2>/dev/null")
            assert code == 0 and out == container(inside).attrs["Config"]["Hostname"], out
        finally:
            api.remove_service("vault_box")
            api.remove_service("lobby_box")


def _probe_gateway(task_id: str, gateway: str) -> int:
    """Listen on the network's host side (the bridge address) and let the container
    connect to it; its exit code."""
    listener = socket.socket()
    listener.bind((gateway, 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def accept() -> None:
        listener.settimeout(5)
        try:
            conn, _ = listener.accept()
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nok\n")
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        code, _ = sh(task_id, f"timeout 3 wget -O- http://{gateway}:{port}/ >/dev/null 2>&1")
        return code
    finally:
        listener.close()
        thread.join(6)
