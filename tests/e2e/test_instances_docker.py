"""Template instances on real Docker (issue 18, the CTF case):

- a two-container template (``web`` + ``db``): both launch, each resolves the other by
  name inside the instance (``db:5432``, the template's name for the main one);
- instance A's container cannot connect to instance B's (its name addresses nor its
  container address), nor to a host service it was not given (a listener on its
  network's host side, and B's published port), nor out (an address inside a network
  namespace this test makes);
- a template with ``network: {egress: true}`` reaches the same host listener and the
  namespace (so each refused probe above could have succeeded).

All traffic stays on this host: 127.0.0.1, the Docker networks the agent made and the
namespace's veth pair (10.237.N.0/30).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
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
from dockyard.testing.images import ensure_busybox_image
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

HTTPD = (
    'mkdir -p /www && echo "$0 $(hostname)" > /www/index.html && exec httpd -f -p {port} -h /www'
)
FAST = {"interval_s": 0.3, "timeout_s": 1.0, "retries": 2}


def part(image: str, role: str, port: int) -> dict[str, Any]:
    return {
        "image": image,
        "command": ["sh", "-c", HTTPD.format(port=port), role],
        "cpu": 0.05,
        "memory": "16m",
        "kill_grace_s": 1,
        "ports": [port],
        "health": {"kind": "http", "path": "/", **FAST},
    }


def container(task_id: str) -> Any:
    found = docker.from_env().containers.list(filters={"label": f"{LABEL_TASK}={task_id}"})
    return found[0]


def sh(task_id: str, script: str) -> tuple[int, str]:
    code, out = container(task_id).exec_run(["sh", "-c", script])
    return int(code), out.decode(errors="replace").strip()


def probes(task_id: str, urls: dict[str, str]) -> dict[str, int]:
    """Fetch every URL from the container at once (3 s each); name -> exit code."""
    script = " ".join(
        f"(timeout 3 wget -q -O- {url} >/dev/null 2>&1; echo {name} $?) &"
        for name, url in urls.items()
    )
    _, out = sh(task_id, f"{script} wait")
    return {name: int(code) for name, code in (ln.split() for ln in out.splitlines())}


def task_of(api: Client, name: str) -> dict[str, Any] | None:
    detail = api.service(name)["replicas_detail"]
    return detail[0] if len(detail) == 1 and detail[0]["ready"] else None


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """A network namespace behind a veth pair with an HTTP server on its side; yields
    the server's URL (an address inside the namespace)."""
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"dyiso{tag}", f"dyih{tag}", f"dyin{tag}"
    net = int(tag, 16) % 60 * 4
    host_ip, ns_ip = f"10.237.{net // 256}.{net % 256 + 1}", f"10.237.{net // 256}.{net % 256 + 2}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=30)  # noqa: E731
    server = None
    with tempfile.TemporaryDirectory() as www:
        Path(www, "index.html").write_text("outside\n")
        try:
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            run("ip", "link", "set", ns_if, "netns", ns)
            run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            run("ip", "link", "set", host_if, "up")
            run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            httpd = ["busybox", "httpd", "-f", "-p", f"{ns_ip}:8099", "-h", www]
            server = subprocess.Popen(["ip", "netns", "exec", ns, *httpd])
            yield f"http://{ns_ip}:8099/"
        finally:
            if server is not None:
                server.kill()
                server.wait(10)
            subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@contextlib.contextmanager
def listener(address: str) -> Iterator[int]:
    """A host service on ``address`` answering HTTP; yields its port."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.listen(8)
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhost\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        done.set()
        thread.join(5)
        sock.close()


def test_instances_are_isolated_from_each_other_the_host_and_the_outside() -> None:
    image = ensure_busybox_image()
    with docker_cluster(agents=1) as cl, cl.client() as admin, namespace() as outside:
        admin.create_template(
            {
                "name": "iso",
                "service": part(image, "web", 9000),
                "components": {"db": part(image, "db", 5432)},
                "max_per_user": 2,
            }
        )
        admin.create_template(
            {"name": "iso-open", "service": part(image, "open", 9000), "network": {"egress": True}}
        )
        a, b = admin.launch("iso")["name"], admin.launch("iso")["name"]
        c = admin.launch("iso-open")["name"]
        tasks = {
            name: wait_for(lambda n=name: task_of(admin, n), timeout=90)
            for name in (a, f"{a}_db", b, f"{b}_db", c)
        }
        web_a, db_a = tasks[a]["task_id"], tasks[f"{a}_db"]["task_id"]
        web_b, db_b = tasks[b]["task_id"], tasks[f"{b}_db"]["task_id"]
        open_c = tasks[c]["task_id"]
        # Inside an instance the parts resolve each other by name.
        code, out = sh(web_a, "wget -q -O- http://db:5432/")
        assert code == 0 and out == f"db {container(db_a).attrs['Config']['Hostname']}", out
        code, out = sh(db_a, "wget -q -O- http://iso:9000/")
        assert code == 0 and out == f"web {container(web_a).attrs['Config']['Hostname']}", out
        # B's addresses as B sees them: its names' service addresses, its containers'.
        _, hosts_b = sh(web_b, "cat /etc/hosts")
        b_db_name = next(ln.split()[0] for ln in hosts_b.splitlines() if ln.split()[1:] == ["db"])
        b_ip = next(iter(container(db_b).attrs["NetworkSettings"]["Networks"].values()))
        b_published = tasks[f"{b}_db"]["endpoints"][0]["host_port"]

        def gateway(task_id: str) -> str:
            nets = container(task_id).attrs["NetworkSettings"]["Networks"]
            return str(next(iter(nets.values()))["Gateway"])

        with listener(gateway(web_a)) as port_a, listener(gateway(open_c)) as port_c:
            refused = probes(
                web_a,
                {
                    "b_name_address": f"http://{b_db_name}:5432/",
                    "b_container": f"http://{b_ip['IPAddress']}:5432/",
                    "host_listener": f"http://{gateway(web_a)}:{port_a}/",
                    "b_published_via_host": f"http://{gateway(web_a)}:{b_published}/",
                    "b_published_loopback": f"http://127.0.0.1:{b_published}/",
                    "outside": outside,
                },
            )
            allowed = probes(
                open_c, {"host_listener": f"http://{gateway(open_c)}:{port_c}/", "outside": outside}
            )
        assert allowed == {"host_listener": 0, "outside": 0}, allowed  # the probes can pass
        assert all(code != 0 for code in refused.values()), refused
        # B still serves its own parts.
        code, out = sh(web_b, "wget -q -O- http://db:5432/")
        assert code == 0 and out.startswith("db "), out
        # Killing the instance removes both of its containers' services.
        admin.remove_service(a)
        assert not [s for s in admin.services() if s["name"].startswith(a)]
