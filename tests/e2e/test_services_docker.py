"""Issue 5's proof on the real Docker engine, through the real server and agent processes:

- a busybox-httpd service with 3 replicas behind ``/svc/NAME/``: requests spread over
  the replicas; a killed container costs no failed request (the router retries) and
  the replica is replaced and rejoins;
- a good rolling update completes with no failed request during it; a failing one
  reverts automatically;
- ``launch`` returns a working URL and the instance expires at its lifetime.

All traffic goes to 127.0.0.1 (published ports and the server's router).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import docker
import httpx
import pytest

from dockyard.client import Client
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

#: Serves its container's hostname (one per replica) and a version marker.
HTTPD = (
    'mkdir -p /www && echo "$(hostname) $VERSION" > /www/index.html'
    " && exec httpd -f -p 8080 -h /www"
)


def service_body(name: str, image: str, version: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["sh", "-c", HTTPD],
        "env": {"VERSION": version},
        "replicas": 3,
        "ports": [8080],
        "cpu": 0.1,
        "memory": "32m",
        "kill_grace_s": 2,
        "health": {"kind": "http", "path": "/", "interval_s": 0.3, "timeout_s": 1, "retries": 2},
        "update": {"max_parallel": 1, "order": "start-first", "deadline_s": 20},
        **extra,
    }


def ready(api: Client, name: str, replicas: int, version: int) -> dict[str, Any] | None:
    svc = api.service(name)
    detail = svc["replicas_detail"]
    ok = len(detail) == replicas and all(r["ready"] and r["version"] == version for r in detail)
    return svc if ok and svc["rollout"]["status"] in ("stable", "completed", "reverted") else None


class Load:
    """GETs through the router in a thread until stopped; counts answers by status."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self.bodies: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            for _ in range(100_000):  # bounded; stopped long before
                if self._stop.is_set():
                    return
                try:
                    response = http.get(self.url)
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.bodies[response.text.split()[0]] += 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)


def test_routing_spreads_survives_a_killed_replica_and_it_rejoins(
    cluster: ProcessCluster, image: str
) -> None:
    with cluster.client() as api:
        api.create_service(service_body("web", image, "v1"))
        svc = wait_for(lambda: ready(api, "web", 3, 1), timeout=90, message="3 healthy replicas")
        url = f"{cluster.url}/svc/web/"
        assert svc["url"] == url

        # Spread: 60 requests reach all three replicas.
        with httpx.Client(timeout=5) as http:
            seen = Counter(http.get(url).text.split()[0] for _ in range(60))
        assert len(seen) == 3 and min(seen.values()) >= 5, seen

        # Kill one replica's container under load: no failed request, and it is replaced.
        victim = svc["replicas_detail"][0]["task_id"]
        container = docker.from_env().containers.get(f"dockyard-{victim}")
        with Load(url) as load:
            wait_for(lambda: load.total >= 20, timeout=20, message="load running")
            container.kill()

            def rejoined() -> dict[str, Any] | None:
                s = ready(api, "web", 3, 1)
                gone = s is not None and victim not in {r["task_id"] for r in s["replicas_detail"]}
                return s if gone else None

            replaced = wait_for(
                rejoined,
                timeout=90,
                message="the killed replica replaced",
            )
            before = load.total
            wait_for(lambda: load.total >= before + 30, timeout=20, message="load after rejoin")
        assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors)
        # The replacement serves: all three current replicas answer again.
        hosts = {
            docker.from_env().containers.get(f"dockyard-{r['task_id']}").attrs["Config"]["Hostname"]
            for r in replaced["replicas_detail"]
        }
        with httpx.Client(timeout=5) as http:
            seen = Counter(http.get(url).text.split()[0] for _ in range(60))
        assert set(seen) == hosts, (seen, hosts)
        api.remove_service("web")
        wait_for(
            lambda: httpx.get(url, timeout=5).status_code == 404, timeout=20, message="route gone"
        )


def test_good_update_has_no_failed_request_and_bad_update_reverts(
    cluster: ProcessCluster, image: str
) -> None:
    with cluster.client() as api:
        api.create_service(service_body("roll", image, "v1"))
        wait_for(lambda: ready(api, "roll", 3, 1), timeout=90, message="v1 ready")
        url = f"{cluster.url}/svc/roll/"
        with Load(url) as load:
            wait_for(lambda: load.total >= 10, timeout=20, message="load running")
            assert api.update_service("roll", service_body("roll", image, "v2"))["change"] == (
                "rolling"
            )
            wait_for(lambda: ready(api, "roll", 3, 2), timeout=120, message="v2 rolled out")
        assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors)
        assert api.service("roll")["rollout"]["status"] == "completed"
        with httpx.Client(timeout=5) as http:
            assert all(http.get(url).text.split()[1] == "v2" for _ in range(10))

        # v3 listens on the wrong port: never healthy -> reverted to v2's spec (version 4).
        bad = service_body("roll", image, "v3")
        bad["command"] = ["sh", "-c", HTTPD.replace("-p 8080", "-p 9090")]
        bad["update"] = {"max_parallel": 1, "deadline_s": 6}
        with Load(url) as load:
            api.update_service("roll", bad)
            svc = wait_for(lambda: ready(api, "roll", 3, 4), timeout=120, message="reverted")
        assert svc["rollout"]["status"] == "reverted", svc["rollout"]
        assert svc["spec"]["env"] == {"VERSION": "v2"}
        assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors)
        api.remove_service("roll")


def test_launch_gives_a_working_url_and_the_instance_expires(
    cluster: ProcessCluster, image: str
) -> None:
    with cluster.client() as admin:
        body = service_body("x", image, "chal")
        del body["name"], body["replicas"], body["update"]
        admin.create_template({"name": "web-chal", "service": body, "lifetime_s": 15})
        admin.add_user("player")
        token = admin.create_token("player")["token"]
    with cluster.client(token) as player:
        inst = player.launch("web-chal")
        up = wait_for(lambda: (s := player.service(inst["name"]))["ready"] == 1 and s, timeout=60)
        answer = httpx.get(up["url"], timeout=5)
        assert answer.status_code == 200 and answer.text.split()[1] == "chal"
        assert [i["name"] for i in player.instances()] == [inst["name"]]
        # Expiry: gone from the list, the route answers 404, its container is stopped.
        wait_for(lambda: player.instances() == [], timeout=60, message="instance expired")
        wait_for(
            lambda: httpx.get(up["url"], timeout=5).status_code == 404,
            timeout=10,
            message="route gone",
        )
        task_id = up["replicas_detail"][0]["task_id"]
        wait_for(
            lambda: player.task(task_id)["state"] in ("killed", "succeeded", "failed"),
            timeout=30,
            message="replica stopped",
        )
