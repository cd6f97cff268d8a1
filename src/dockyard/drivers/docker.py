"""The real driver: Docker Engine through the Docker SDK for Python."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils.socket as docker_socket
import requests.exceptions
from docker.types import LogConfig
from tenacity import (
    RetryCallState,
    RetryError,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from dockyard.core.resources import Resources
from dockyard.core.security import registry_host, volume_name
from dockyard.drivers.base import (
    LABEL_CHECKPOINT,
    LABEL_NETWORK,
    LABEL_NODE,
    LABEL_OWNER,
    LABEL_TASK,
    ContainerSpec,
    ContainerStatus,
    LogLine,
    NetworkInfo,
    Usage,
)
from dockyard.drivers.errors import (
    BuildFailed,
    ContainerExists,
    ContainerNotFound,
    CreateFailed,
    DriverError,
    ImageNotFound,
    ImagePullFailed,
    RuntimeUnavailable,
    StartFailed,
)
from dockyard.drivers.pins import MountPins

log = logging.getLogger(__name__)

PULL_ATTEMPTS = 3
BUILD_ATTEMPTS = 3
#: Where bind sources are pinned (root-owned, 0700; ``DOCKYARD_PIN_DIR`` moves it).
DEFAULT_PIN_DIR = Path(os.environ.get("DOCKYARD_PIN_DIR") or "/run/dockyard/pins")

#: Where service networks' subnets come from: one /24 each (``DOCKYARD_NET_POOL``).
NET_POOL = os.environ.get("DOCKYARD_NET_POOL") or "10.213.0.0/16"
NETWORK_ATTEMPTS = 8
#: On a service network: "1" when it is internal (the agent's firewall rules).
LABEL_INTERNAL = "io.dockyard.internal"

_NOT_FOUND_HINTS = ("not found", "manifest unknown", "pull access denied", "does not exist")
#: A pull that failed because no registry answered (no network, no such host).
_NO_REGISTRY_HINTS = ("no such host", "dial tcp", "server misbehaving", "network is unreachable")


class _TransientPullError(Exception):
    pass


class DockerDriver:
    """Drives the local Docker Engine. Thread-safe: the SDK client is shared."""

    name = "docker"

    def __init__(
        self,
        client: Any | None = None,
        pull_attempts: int = PULL_ATTEMPTS,
        pins: MountPins | None = None,
    ) -> None:
        try:
            self._client = client or docker.from_env(timeout=60)
            self._client.ping()
        except docker.errors.DockerException as exc:
            raise RuntimeUnavailable(f"cannot reach Docker Engine: {exc}") from exc
        self._pull_attempts = pull_attempts
        #: Bind sources are pinned before Docker mounts them (drivers/pins.py).
        self.pins = pins or MountPins(DEFAULT_PIN_DIR)
        self._pinned: dict[str, str] = {}  # container id -> its pins' key

    # -- node -------------------------------------------------------------
    def capacity(self) -> Resources:
        info = self._call(self._client.info)
        return Resources(int(info["NCPU"]) * 1000, int(info["MemTotal"]))

    # -- images -----------------------------------------------------------
    def has_image(self, image: str) -> bool:
        try:
            self._client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except (requests.exceptions.RequestException, docker.errors.DockerException):
            return False

    def ensure_image(self, image: str, progress: Callable[[str], None] | None = None) -> None:
        try:
            self._client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ImagePullFailed(f"cannot look up image {image}: {exc}") from exc

        say = progress or (lambda _: None)
        attempts = self._pull_attempts

        def retrying(state: RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action else 0.0
            failure = state.outcome.exception() if state.outcome else None
            say(
                f"pull attempt {state.attempt_number}/{attempts} failed ({failure}); "
                f"retrying in {wait:.1f}s"
            )

        @retry(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception_type(_TransientPullError),
            before_sleep=retrying,
            reraise=False,
        )
        def pull() -> None:
            try:
                self._pull_with_progress(image, say)
            except docker.errors.APIError as exc:
                text = str(exc).lower()
                if exc.status_code == 404 or any(h in text for h in _NOT_FOUND_HINTS):
                    raise ImageNotFound(f"image {image} not found: {exc.explanation}") from exc
                raise _TransientPullError(str(exc.explanation or exc)) from exc
            except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
                raise _TransientPullError(str(exc)) from exc

        try:
            pull()
        except RetryError as exc:
            last = exc.last_attempt.exception()
            if not registry_host(image) and any(h in str(last).lower() for h in _NO_REGISTRY_HINTS):
                # Not on this node, and Docker Hub is out of reach: the image is not
                # found (a build's image is <owner>/NAME:TAG), not a registry error. A
                # registry the image names itself that does not answer is one.
                raise ImageNotFound(
                    f"image {image} not found: it is not on this node and no registry "
                    f"answered ({last})"
                ) from exc
            raise ImagePullFailed(
                f"pulling {image} failed after {self._pull_attempts} attempts: {last}"
            ) from exc

    def _pull_with_progress(self, image: str, say: Callable[[str], None]) -> None:
        """Pull, reporting the bytes of all layers at most once a second."""
        repo, tag = pull_target(image)
        layers: dict[str, tuple[int, int]] = {}
        last = 0.0
        for event in self._client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise docker.errors.APIError(str(event["error"]))
            detail = event.get("progressDetail") or {}
            if event.get("id") and detail.get("total"):
                layers[str(event["id"])] = (int(detail.get("current", 0)), int(detail["total"]))
            now = time.monotonic()
            if layers and now - last >= 1.0:
                last = now
                done = sum(c for c, _ in layers.values())
                total = sum(t for _, t in layers.values())
                say(f"pulling {image}: {100 * done // max(total, 1)}% of {total >> 20} MiB")

    def build(
        self,
        context: bytes,
        tag: str,
        on_line: Callable[[str], None],
        dockerfile: str = "Dockerfile",
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """``docker build`` from a context tar, streaming its output; transient Engine
        errors (connection, 5xx before any output) are retried with back-off."""

        @retry(
            stop=stop_after_attempt(BUILD_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception_type(_TransientPullError),
            reraise=False,
        )
        def attempt() -> str:
            image_id = ""
            started = False
            try:
                stream = self._client.api.build(
                    fileobj=io.BytesIO(context),
                    custom_context=True,
                    tag=tag,
                    dockerfile=dockerfile,
                    labels=dict(labels or {}),
                    rm=True,
                    forcerm=True,
                    pull=False,
                    decode=True,
                )
                for chunk in stream:
                    started = True
                    if "error" in chunk:
                        raise BuildFailed(str(chunk["error"]).strip())
                    text = str(chunk.get("stream") or chunk.get("status") or "")
                    for line in text.splitlines():
                        if line.strip():
                            on_line(line.rstrip())
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("ID"):
                        image_id = str(aux["ID"])
            except docker.errors.APIError as exc:
                if started or (exc.status_code or 500) < 500:
                    raise BuildFailed(f"build failed: {exc.explanation or exc}") from exc
                raise _TransientPullError(str(exc)) from exc
            except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
                if started:
                    raise BuildFailed(f"build interrupted: {exc}") from exc
                raise _TransientPullError(str(exc)) from exc
            return image_id or str(self._call(lambda: self._client.images.get(tag).id))

        try:
            return attempt()
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise BuildFailed(f"build failed after {BUILD_ATTEMPTS} attempts: {last}") from exc

    def exec(
        self,
        container_id: str,
        command: list[str],
        tty: bool = False,
        stdin: bool = False,
        cols: int = 80,
        rows: int = 24,
    ) -> DockerExec:
        try:
            created = self._client.api.exec_create(
                container_id, command, stdin=stdin, tty=tty, stdout=True, stderr=True
            )
            exec_id = str(created["Id"])
            stream = self._client.api.exec_start(exec_id, tty=tty, socket=True)
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(f"container {container_id} not found") from exc
        except docker.errors.APIError as exc:
            raise DriverError(f"exec failed: {exc.explanation or exc}") from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"Docker Engine error: {exc}") from exc
        handle = DockerExec(self._client, exec_id, stream, tty)
        if tty:
            handle.resize(cols, rows)
        return handle

    # -- containers -------------------------------------------------------
    def create(self, spec: ContainerSpec) -> str:
        key = spec.container_name
        sources = {
            i: self.pins.pin(key, i, m.source)  # MountRace if it changed since the check
            for i, m in enumerate(spec.mounts)
            if m.kind == "bind"
        }
        try:
            if spec.checkpoint_volume:
                self._checkpoint_volume(spec)
            container_id = self._create(spec, sources)
        except BaseException:
            self.pins.release(key)
            raise
        if sources:
            self._pinned[container_id] = key
        return container_id

    def _create(self, spec: ContainerSpec, sources: Mapping[int, str]) -> str:
        try:
            container = self._client.containers.create(
                spec.image,
                command=list(spec.command) or None,
                name=spec.container_name,
                labels=spec.labels(),
                environment={**spec.env, **spec.gpu_env()},
                device_requests=_gpu_requests(spec),
                ports=spec.published() or None,
                network=(spec.networks[0] if spec.networks else None)
                if not spec.security.network_mode
                else None,
                extra_hosts=dict(spec.extra_hosts) or None,
                nano_cpus=spec.resources.cpu_millis * 1_000_000,
                mem_limit=spec.resources.memory_bytes,
                memswap_limit=spec.resources.memory_bytes,
                pids_limit=spec.pids_limit,
                security_opt=["no-new-privileges", *spec.security.security_opt],
                privileged=spec.security.privileged,
                cap_add=list(spec.security.cap_add) or None,
                network_mode=spec.security.network_mode or None,
                pid_mode=spec.security.pid_mode or None,
                ipc_mode=spec.security.ipc_mode or None,
                uts_mode=spec.security.uts_mode or None,
                userns_mode=spec.security.userns_mode or None,
                devices=list(spec.security.devices) or None,
                sysctls=dict(spec.security.sysctls) or None,
                user=spec.security.user or None,
                volumes=_volumes(spec, sources),
                init=True,
                log_config=LogConfig(type="json-file"),
                detach=True,
            )
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"image {spec.image} not found") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ContainerExists(f"container for task {spec.task_id} exists") from exc
            raise CreateFailed(f"create failed: {exc.explanation or exc}") from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"Docker Engine error: {exc}") from exc
        if not spec.security.network_mode:
            for network in spec.networks[1:]:
                try:
                    self._client.api.connect_container_to_network(container.id, network)
                except docker.errors.APIError as exc:
                    self._client.api.remove_container(container.id, force=True)
                    raise CreateFailed(f"joining network {network}: {exc.explanation}") from exc
        return str(container.id)

    # -- networks ---------------------------------------------------------
    def ensure_network(
        self, name: str, labels: Mapping[str, str], internal: bool
    ) -> NetworkInfo | None:
        """A user-defined bridge for a service network, on a /24 of :data:`NET_POOL`:
        containers get addresses from its lower half, the node proxy's service addresses
        come from the upper half. The bridge interface is named after the network."""
        found = self._network(name)
        if found is not None:
            return found
        bridge = "dy" + hashlib.sha256(name.encode()).hexdigest()[:12]
        for _ in range(NETWORK_ATTEMPTS):
            subnet = self._free_subnet()
            half = list(subnet.subnets(prefixlen_diff=1))
            pool = docker.types.IPAMPool(
                subnet=str(subnet),
                iprange=str(half[0]),
                gateway=str(next(subnet.hosts())),
            )
            try:
                # Never Docker's internal flag: it also stops the published ports the node
                # proxies forward to. The agent's firewall rules make it internal.
                self._client.api.create_network(
                    name,
                    driver="bridge",
                    labels={**labels, LABEL_INTERNAL: "1" if internal else "0"},
                    ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                    options={"com.docker.network.bridge.name": bridge},
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                found = self._network(name)
                if found is not None:  # another agent of this Engine made it meanwhile
                    return found
                if "overlap" in str(exc).lower() or "in use" in str(exc).lower():
                    continue
                raise DriverError(f"creating network {name}: {exc.explanation or exc}") from exc
            made = self._network(name)
            if made is not None:
                return made
        raise DriverError(f"creating network {name}: no free subnet in {NET_POOL}")

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for net in self._call(self._client.api.networks):
            for config in (net.get("IPAM") or {}).get("Config") or ():
                if config.get("Subnet"):
                    used.append(ipaddress.ip_network(config["Subnet"], strict=False))
        pool = ipaddress.IPv4Network(NET_POOL)
        candidates = list(pool.subnets(new_prefix=24)) if pool.prefixlen < 24 else [pool]
        start = int.from_bytes(os.urandom(2), "big") % len(candidates)
        for index in range(len(candidates)):
            subnet = candidates[(start + index) % len(candidates)]
            if not any(subnet.overlaps(u) for u in used if u.version == 4):
                return subnet
        raise DriverError(f"no free subnet left in {NET_POOL}")

    def _network(self, name: str) -> NetworkInfo | None:
        try:
            attrs = self._client.api.inspect_network(name)
        except docker.errors.NotFound:
            return None
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"Docker Engine error: {exc}") from exc
        return _network_info(attrs)

    def service_networks(self, node_id: str) -> Sequence[NetworkInfo]:
        found = self._call(
            lambda: self._client.api.networks(
                filters={"label": [LABEL_NETWORK, f"{LABEL_NODE}={node_id}"]}
            )
        )
        out = []
        for net in found:
            info = self._network(str(net["Name"]))
            if info is not None:
                out.append(info)
        return out

    def refresh_hosts(self, network: str, entries: Mapping[str, str]) -> None:
        """Names added to a network after a container was made: its hosts file (which
        Docker bind-mounts from the host) gets them, rewritten in place, between marker
        lines of this network."""
        try:
            attached = self._client.api.inspect_network(network).get("Containers") or {}
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return
        begin, end = f"# dockyard {network} begin", f"# dockyard {network} end"
        block = [begin, *(f"{a}\t{n}" for n, a in sorted(entries.items())), end]
        for container_id in attached:
            try:
                path = self._client.api.inspect_container(container_id).get("HostsPath")
                if not path:
                    continue
                with open(path, "r+", encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
                    if begin in lines and end in lines:
                        lines = lines[: lines.index(begin)] + lines[lines.index(end) + 1 :]
                    handle.seek(0)
                    handle.write("\n".join([*lines, *block]) + "\n")
                    handle.truncate()
            except (OSError, docker.errors.DockerException, requests.exceptions.RequestException):
                log.debug("cannot refresh the hosts file of %s", container_id)

    def remove_network(self, name: str) -> None:
        try:
            self._client.api.remove_network(name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise DriverError(f"removing network {name}: {exc.explanation or exc}") from exc

    def start(self, container_id: str) -> None:
        try:
            self._client.api.start(container_id)
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(container_id) from exc
        except docker.errors.APIError as exc:
            raise StartFailed(f"start failed: {exc.explanation or exc}") from exc

    def list_foreign(self, node_id: str) -> list[ContainerStatus]:
        def fetch() -> list[Any]:
            return list(self._client.api.containers(all=True, filters={"label": LABEL_TASK}))

        out = []
        for c in self._call(fetch):
            labels = c.get("Labels") or {}
            owner = str(labels.get(LABEL_NODE, ""))
            if owner and owner != node_id:
                out.append(
                    ContainerStatus(
                        container_id=str(c["Id"]),
                        task_id=str(labels[LABEL_TASK]),
                        status=str(c.get("State") or "unknown"),
                        node_id=owner,
                    )
                )
        return out

    def list(self, node_id: str) -> list[ContainerStatus]:
        """The node's containers from one summary call (no inspect per container:
        that made a reconcile pass cost one Docker round trip per container).
        Exit details are read by ``inspect`` when a watcher sees the container end."""

        def fetch() -> list[Any]:
            return list(
                self._client.api.containers(all=True, filters={"label": f"{LABEL_NODE}={node_id}"})
            )

        return [
            ContainerStatus(
                container_id=str(c["Id"]),
                task_id=str((c.get("Labels") or {})[LABEL_TASK]),
                status=str(c.get("State") or "unknown"),
            )
            for c in self._call(fetch)
            if LABEL_TASK in (c.get("Labels") or {})
        ]

    def images(self) -> tuple[str, ...]:
        def fetch() -> list[Any]:
            return list(self._client.api.images())

        tags = {str(t) for image in self._call(fetch) for t in image.get("RepoTags") or ()}
        return tuple(sorted(tags - {"<none>:<none>"}))

    def prune(self, node_id: str) -> int:
        def fetch() -> list[Any]:
            return list(
                self._client.api.containers(
                    all=True, filters={"label": LABEL_TASK, "status": ["exited", "dead"]}
                )
            )

        removed = 0
        for c in self._call(fetch):
            if (c.get("Labels") or {}).get(LABEL_NODE) == node_id:
                continue  # this node's own: the reconciler removes them with their tasks
            try:
                self.remove(str(c["Id"]))
                removed += 1
            except DriverError as exc:
                log.warning("prune: cannot remove %s: %s", c["Id"], exc)
        return removed

    def inspect(self, container_id: str) -> ContainerStatus:
        try:
            return _status(self._client.api.inspect_container(container_id))
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(container_id) from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"Docker Engine error: {exc}") from exc

    def wait(self, container_id: str, timeout: float | None = None) -> bool:
        try:
            self._client.api.wait(container_id, timeout=timeout)
            return True
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(container_id) from exc
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return False

    def signal(self, container_id: str, signal: str) -> None:
        try:
            self._client.api.kill(container_id, signal=signal)
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(container_id) from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # not running any more
                return
            raise DriverError(f"signal failed: {exc.explanation or exc}") from exc

    def remove(self, container_id: str) -> None:
        key = self._pinned.pop(container_id, None)
        if key is None and self.pins.keys():  # pinned before this agent started
            key = self._name_of(container_id)
        try:
            self._client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress
                return
            raise DriverError(f"remove failed: {exc.explanation or exc}") from exc
        if key:
            self.pins.release(key)

    # -- checkpoint volumes -----------------------------------------------
    def _checkpoint_volume(self, spec: ContainerSpec) -> None:
        """Create the job's checkpoint volume, labelled, unless it exists (a later
        attempt's: Docker returns the existing one, its labels unchanged)."""
        name = volume_name(spec.owner, spec.checkpoint_volume)
        try:
            self._client.volumes.create(name=name, labels=spec.checkpoint_labels())
        except docker.errors.APIError as exc:
            raise CreateFailed(f"checkpoint volume {name}: {exc.explanation or exc}") from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"Docker Engine error: {exc}") from exc

    def checkpoint_volumes(self) -> Sequence[tuple[str, str]]:
        def fetch() -> list[Any]:
            found = self._client.api.volumes(filters={"label": LABEL_CHECKPOINT})
            return list(found.get("Volumes") or [])

        out = []
        for v in self._call(fetch):
            labels = v.get("Labels") or {}
            owner, name = labels.get(LABEL_OWNER, ""), labels.get(LABEL_CHECKPOINT, "")
            if owner and name and v.get("Name") == volume_name(owner, name):
                out.append((str(owner), str(name)))
        return out

    def remove_volume(self, owner: str, name: str) -> bool:
        try:
            self._client.api.remove_volume(volume_name(owner, name))
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a container still uses it
                return False
            raise DriverError(f"removing volume: {exc.explanation or exc}") from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"Docker Engine error: {exc}") from exc
        return True

    def _name_of(self, container_id: str) -> str | None:
        try:
            return str(self._client.api.inspect_container(container_id)["Name"]).lstrip("/")
        except (docker.errors.DockerException, requests.exceptions.RequestException, KeyError):
            return None

    def logs(self, container_id: str, stream: str, follow: bool) -> Iterator[LogLine]:
        try:
            chunks = self._client.api.logs(
                container_id,
                stdout=stream == "stdout",
                stderr=stream == "stderr",
                stream=True,
                follow=follow,
                timestamps=True,
            )
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(container_id) from exc
        buffer = b""
        try:
            for chunk in chunks:
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    yield _log_line(stream, raw)
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"log stream broke: {exc}") from exc
        if buffer:
            yield _log_line(stream, buffer)

    def usage(self, container_id: str) -> Usage | None:
        try:
            stats = self._client.api.stats(container_id, stream=False, one_shot=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return None
        cpu = (stats.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage", 0)
        memory_stats = stats.get("memory_stats") or {}
        if not memory_stats and not cpu:
            return None  # the container is gone
        memory = int(memory_stats.get("usage") or 0)
        peak = int(memory_stats.get("max_usage") or memory_stats.get("peak") or memory)
        return Usage(cpu_seconds=cpu / 1e9, memory_bytes=memory, max_memory_bytes=peak)

    # -- helpers ----------------------------------------------------------
    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise RuntimeUnavailable(f"Docker Engine error: {exc}") from exc


def pull_target(image: str) -> tuple[str, str]:
    """The repository and the tag or digest to ask the Engine for: a digest-pinned
    reference (``name@sha256:...``, also ``name:tag@sha256:...``) is pulled by its
    digest (the tag is then only a label), anything else by its tag (``latest`` if
    none)."""
    name, at, digest = image.partition("@")
    repo, tag = name, "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        repo, tag = name.rsplit(":", 1)
    return (repo, digest) if at else (repo, tag)


def _gpu_requests(spec: ContainerSpec) -> list[docker.types.DeviceRequest] | None:
    """The task's GPUs (UUIDs, else indices) as a Docker device request (NVIDIA runtime)."""
    if not spec.gpus:
        return None
    return [
        docker.types.DeviceRequest(
            driver="nvidia", device_ids=spec.gpu_device_ids(), capabilities=[["gpu"]]
        )
    ]


def _volumes(
    spec: ContainerSpec, sources: Mapping[int, str] | None = None
) -> dict[str, dict[str, str]] | None:
    """Docker's ``volumes`` argument: bind sources (pinned, by mount index, where
    ``sources`` has them) and per-owner volume names."""
    out: dict[str, dict[str, str]] = {}
    for index, mount in enumerate(spec.mounts):
        if mount.kind == "bind":
            source = (sources or {}).get(index, mount.source)
        else:
            source = volume_name(spec.owner, mount.source)
        out[source] = {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"}
    return out or None


def _network_info(attrs: dict[str, Any]) -> NetworkInfo | None:
    configs = (attrs.get("IPAM") or {}).get("Config") or ()
    if not configs or not configs[0].get("Subnet"):
        return None
    subnet = ipaddress.IPv4Network(configs[0]["Subnet"])
    half = list(subnet.subnets(prefixlen_diff=1)) if subnet.prefixlen < 32 else [subnet] * 2
    options = attrs.get("Options") or {}
    labels = attrs.get("Labels") or {}
    return NetworkInfo(
        name=str(attrs.get("Name")),
        bridge=str(options.get("com.docker.network.bridge.name") or ""),
        subnet=str(subnet),
        gateway=str(configs[0].get("Gateway") or ""),
        containers_range=str(configs[0].get("IPRange") or half[0]),
        services_range=str(half[1]),
        internal=bool(attrs.get("Internal")) or labels.get(LABEL_INTERNAL) == "1",
        containers=len(attrs.get("Containers") or {}),
        labels=dict(labels),
    )


def _status(attrs: dict[str, Any]) -> ContainerStatus:
    state = attrs.get("State") or {}
    status = str(state.get("Status", "unknown"))
    exited = status in ("exited", "dead")
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    return ContainerStatus(
        container_id=str(attrs["Id"]),
        task_id=str(labels.get(LABEL_TASK, "")),
        status=status,
        exit_code=int(state.get("ExitCode", 0)) if exited else None,
        oom_killed=bool(state.get("OOMKilled", False)),
        started_at=_docker_time(state.get("StartedAt")),
        finished_at=_docker_time(state.get("FinishedAt")) if exited else None,
        error=str(state.get("Error") or ""),
    )


def _docker_time(value: Any) -> str | None:
    if not value or str(value).startswith("0001-"):
        return None
    return str(value)


def _log_line(stream: str, raw: bytes) -> LogLine:
    text = raw.decode("utf-8", errors="replace")
    timestamp, _, rest = text.partition(" ")
    return LogLine(stream=stream, timestamp=timestamp, text=rest)


class DockerExec:
    """One ``docker exec`` over the Engine's hijacked HTTP stream."""

    def __init__(self, client: Any, exec_id: str, stream: Any, tty: bool) -> None:
        self._client = client
        self._id = exec_id
        self._stream = stream
        self._raw = getattr(stream, "_sock", stream)
        self._tty = tty
        #: stdin was hung up (write side shut); the output keeps flowing until the end.
        self._hung_up = False
        self._ended = False

    def output(self) -> Iterator[tuple[str, bytes]]:
        names = {docker_socket.STDOUT: "stdout", docker_socket.STDERR: "stderr"}
        try:
            for stream, data in docker_socket.frames_iter(self._stream, self._tty):
                if data:
                    yield names.get(stream, "stdout"), bytes(data)
        except (OSError, ValueError):  # ValueError: the stream was closed under the read
            return
        finally:
            self._ended = True

    def write(self, data: bytes) -> None:
        try:
            self._raw.sendall(data)
        except OSError as exc:
            raise DriverError(f"exec input failed: {exc}") from exc

    def resize(self, cols: int, rows: int) -> None:
        try:
            self._client.api.exec_resize(self._id, height=rows, width=cols)
        except (requests.exceptions.RequestException, docker.errors.DockerException):
            pass

    def close(self) -> None:
        """The first call while the output still flows hangs up stdin only (``cat`` fed
        from a pipe sees its end and still answers); a second call, or one after the
        output ended, closes the stream."""
        if not self._hung_up and not self._ended:
            self._hung_up = True
            try:
                self._raw.shutdown(socket.SHUT_WR)
                return
            except OSError:
                pass
        for action in (lambda: self._raw.shutdown(socket.SHUT_RDWR), self._stream.close):
            try:
                action()
            except OSError:
                pass

    def exit_code(self) -> int | None:
        for _ in range(50):  # the stream can end a moment before the Engine records the exit
            info = self._client.api.exec_inspect(self._id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if code is not None else None
            time.sleep(0.05)
        return None
