"""Container security options and the policy that limits them. Pure.

Non-admins never get privileged mode, host namespaces, added capabilities,
devices, an unconfined seccomp profile, sysctls, the Docker socket, bind
mounts outside their allowed roots, images from a registry other than Docker
Hub, or host ports below 1024 — unless an admin's policy allows that specific
thing. Paths are resolved (``..`` and symlinks) by a resolver the
caller injects (the server and, again, the agent use ``os.path.realpath``);
the check runs on the resolved path and the resolved path is what gets mounted.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.core.errors import ValidationError

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd")
_VOLUME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", re.ASCII)  # fullmatch
_NAMESPACE_MODES = ("network_mode", "pid_mode", "ipc_mode", "uts_mode", "userns_mode")
#: Registry hosts Docker itself reads as Docker Hub (``docker.io/library/busybox``).
DOCKER_HUB = ("docker.io", "index.docker.io")
#: An ``allowed_registries`` entry: ``*`` (any registry) or a ``host[:port]``.
_REGISTRY_RE = re.compile(
    r"\*|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:]+\])(?::[0-9]{1,5})?",
    re.ASCII,
)
#: Host ports below this need ``allow_privileged_ports`` (root's ports on a Linux host).
PRIVILEGED_PORTS = 1024


class PolicyViolation(ValidationError):
    """A request the caller's container policy does not allow (HTTP 403)."""

    def __init__(self, field_name: str, rule: str, message: str) -> None:
        super().__init__(field_name, message)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount (``source`` is a host path) or a named volume (``source`` a name)."""

    source: str
    target: str
    read_only: bool = False
    kind: str = "bind"  # "bind" or "volume"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "read_only": self.read_only,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mount:
        return cls(
            str(data["source"]),
            str(data["target"]),
            bool(data.get("read_only", False)),
            str(data.get("kind", "bind")),
        )


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    """The risky knobs a container spec may ask for; all off by default."""

    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    network_mode: str = ""
    pid_mode: str = ""
    ipc_mode: str = ""
    uts_mode: str = ""
    userns_mode: str = ""
    devices: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    user: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "privileged": self.privileged,
            "cap_add": list(self.cap_add),
            "network_mode": self.network_mode,
            "pid_mode": self.pid_mode,
            "ipc_mode": self.ipc_mode,
            "uts_mode": self.uts_mode,
            "userns_mode": self.userns_mode,
            "devices": list(self.devices),
            "security_opt": list(self.security_opt),
            "sysctls": dict(self.sysctls),
            "user": self.user,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SecurityOptions:
        data = data or {}
        return cls(
            privileged=bool(data.get("privileged", False)),
            cap_add=tuple(str(c) for c in data.get("cap_add") or ()),
            network_mode=str(data.get("network_mode") or ""),
            pid_mode=str(data.get("pid_mode") or ""),
            ipc_mode=str(data.get("ipc_mode") or ""),
            uts_mode=str(data.get("uts_mode") or ""),
            userns_mode=str(data.get("userns_mode") or ""),
            devices=tuple(str(d) for d in data.get("devices") or ()),
            security_opt=tuple(str(o) for o in data.get("security_opt") or ()),
            sysctls={str(k): str(v) for k, v in (data.get("sysctls") or {}).items()},
            user=str(data.get("user") or ""),
        )


@dataclass(frozen=True, slots=True)
class ContainerPolicy:
    """What one user may ask for. Admins' requests are not limited."""

    allowed_roots: tuple[str, ...] = ()
    allow_privileged: bool = False
    allow_cap_add: frozenset[str] = frozenset()
    allow_host_namespaces: frozenset[str] = frozenset()  # e.g. {"network_mode"}
    allow_devices: frozenset[str] = frozenset()
    allow_security_opt: frozenset[str] = frozenset()
    allow_sysctls: bool = False
    allow_docker_socket: bool = False
    default_user: str = ""
    #: Registry hosts (``host[:port]``, lowercase; ``*``: any) images may come from,
    #: besides Docker Hub (a reference with no registry host), which is always allowed.
    allowed_registries: tuple[str, ...] = ()
    allow_privileged_ports: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed_roots": list(self.allowed_roots),
            "allow_privileged": self.allow_privileged,
            "allow_cap_add": sorted(self.allow_cap_add),
            "allow_host_namespaces": sorted(self.allow_host_namespaces),
            "allow_devices": sorted(self.allow_devices),
            "allow_security_opt": sorted(self.allow_security_opt),
            "allow_sysctls": self.allow_sysctls,
            "allow_docker_socket": self.allow_docker_socket,
            "default_user": self.default_user,
            "allowed_registries": list(self.allowed_registries),
            "allow_privileged_ports": self.allow_privileged_ports,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None, roots: Iterable[str] = ()
    ) -> ContainerPolicy:
        data = data or {}
        unknown = set(data) - set(POLICY_KEYS)
        if unknown:
            raise ValidationError("policy", f"unknown keys: {', '.join(sorted(unknown))}")
        return cls(
            allowed_roots=tuple(data.get("allowed_roots") or roots),
            allow_privileged=bool(data.get("allow_privileged", False)),
            allow_cap_add=frozenset(str(c).upper() for c in data.get("allow_cap_add") or ()),
            allow_host_namespaces=frozenset(data.get("allow_host_namespaces") or ()),
            allow_devices=frozenset(data.get("allow_devices") or ()),
            allow_security_opt=frozenset(data.get("allow_security_opt") or ()),
            allow_sysctls=bool(data.get("allow_sysctls", False)),
            allow_docker_socket=bool(data.get("allow_docker_socket", False)),
            default_user=str(data.get("default_user") or ""),
            allowed_registries=_registries(data.get("allowed_registries")),
            allow_privileged_ports=bool(data.get("allow_privileged_ports", False)),
        )


POLICY_KEYS = (
    "allowed_roots",
    "allow_privileged",
    "allow_cap_add",
    "allow_host_namespaces",
    "allow_devices",
    "allow_security_opt",
    "allow_sysctls",
    "allow_docker_socket",
    "default_user",
    "allowed_registries",
    "allow_privileged_ports",
)


def _registries(value: Any) -> tuple[str, ...]:
    """``allowed_registries`` as lowercase ``host[:port]`` entries (or ``*``)."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValidationError("policy", "allowed_registries must be a list of host[:port]")
    out = tuple(v.strip().lower() for v in value)
    for entry in out:
        if not _REGISTRY_RE.fullmatch(entry):
            raise ValidationError(
                "policy", f"allowed_registries: {entry!r} is not a host[:port] or *"
            )
    return out


def registry_host(reference: str) -> str:
    """The registry a valid image reference names, as ``host[:port]`` in lowercase;
    ``""`` for Docker Hub (no registry host, or ``docker.io``).

    As Docker reads it: the first of several path components is a registry host
    when it has a ``.`` or a ``:``, is ``localhost``, or has an uppercase letter.
    """
    name = reference.split("@", 1)[0]
    first, slash, _ = name.partition("/")
    if not slash:
        return ""
    if "." in first or ":" in first or first == "localhost" or first != first.lower():
        host = first.lower()
        return "" if host in DOCKER_HUB else host
    return ""


def check_image(image: str, policy: ContainerPolicy, field_name: str = "image") -> None:
    """Refuse (rule ``registry``) an image from a registry the policy does not list:
    a node's Docker Engine fetches whatever host a reference names, so an arbitrary
    ``127.0.0.1:PORT/x`` would make it probe the node's own ports."""
    host = registry_host(image)
    if not host or "*" in policy.allowed_registries or host in policy.allowed_registries:
        return
    allowed = ", ".join(["Docker Hub", *policy.allowed_registries])
    raise PolicyViolation(
        field_name, "registry", f"registry {host} is not allowed (allowed: {allowed})"
    )


def check_host_ports(ports: Iterable[int], policy: ContainerPolicy) -> None:
    """Refuse (rule ``privileged_port``) a host port below 1024 unless allowed."""
    if policy.allow_privileged_ports:
        return
    for port in ports:
        if port < PRIVILEGED_PORTS:
            raise PolicyViolation(
                "ports",
                "privileged_port",
                f"host port {port} is privileged (below {PRIVILEGED_PORTS}): not allowed",
            )


def parse_mount(text: str) -> Mount:
    """``SOURCE:TARGET[:ro|rw]``; a SOURCE without ``/`` is a named volume."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValidationError("mounts", f"{text!r} is not SOURCE:TARGET[:ro]")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValidationError("mounts", f"mode {mode!r} must be ro or rw")
    kind = "bind" if parts[0].startswith(("/", ".")) else "volume"
    return validate_mount(Mount(parts[0], parts[1], mode == "ro", kind))


def validate_mount(mount: Mount) -> Mount:
    if mount.kind not in ("bind", "volume"):
        raise ValidationError("mounts", f"kind {mount.kind!r} must be bind or volume")
    if not mount.target.startswith("/") or "\x00" in mount.target:
        raise ValidationError("mounts", f"target {mount.target!r} must be an absolute path")
    if mount.kind == "volume" and not _VOLUME_RE.fullmatch(mount.source):
        raise ValidationError("mounts", f"volume name {mount.source!r} is invalid")
    if mount.kind == "bind" and (not mount.source.startswith("/") or "\x00" in mount.source):
        raise ValidationError("mounts", f"bind source {mount.source!r} must be an absolute path")
    return mount


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def check(
    options: SecurityOptions,
    mounts: Iterable[Mount],
    policy: ContainerPolicy,
    resolve: Callable[[str], str],
    *,
    image: str = "",
    host_ports: Iterable[int] = (),
) -> list[Mount]:
    """Raise :class:`PolicyViolation` for the first forbidden thing; else return the
    mounts with bind sources replaced by their resolved paths. ``image`` (its
    registry) and ``host_ports`` are checked when given."""
    if image:
        check_image(image, policy)
    check_host_ports(host_ports, policy)
    if options.privileged and not policy.allow_privileged:
        raise PolicyViolation("privileged", "no_privileged", "privileged mode is not allowed")
    for cap in options.cap_add:
        if cap.upper() not in policy.allow_cap_add:
            raise PolicyViolation(
                "cap_add", "no_added_capabilities", f"adding capability {cap} is not allowed"
            )
    for name in _NAMESPACE_MODES:
        value = getattr(options, name)
        if value and name not in policy.allow_host_namespaces:
            raise PolicyViolation(
                name, "no_host_namespaces", f"{name}={value} is not allowed (host namespaces)"
            )
    for device in options.devices:
        if device not in policy.allow_devices:
            raise PolicyViolation("devices", "no_devices", f"device {device} is not allowed")
    for opt in options.security_opt:
        if opt not in policy.allow_security_opt:
            raise PolicyViolation(
                "security_opt", "no_security_opt", f"security option {opt} is not allowed"
            )
    if options.sysctls and not policy.allow_sysctls:
        raise PolicyViolation("sysctls", "no_sysctls", "sysctls are not allowed")
    resolved: list[Mount] = []
    for mount in mounts:
        validate_mount(mount)
        if mount.kind == "volume":
            resolved.append(mount)
            continue
        real = posixpath.normpath(resolve(mount.source))
        if any(_under(real, sock) or _under(sock, real) for sock in DOCKER_SOCKETS):
            if not policy.allow_docker_socket:
                raise PolicyViolation(
                    "mounts", "no_docker_socket", f"{mount.source} exposes the Docker socket"
                )
            resolved.append(Mount(real, mount.target, mount.read_only, "bind"))
            continue
        if not any(_under(real, root) for root in policy.allowed_roots):
            roots = ", ".join(policy.allowed_roots) or "none"
            raise PolicyViolation(
                "mounts",
                "mount_outside_allowed_roots",
                f"{mount.source} resolves to {real}, outside your allowed roots ({roots})",
            )
        resolved.append(Mount(real, mount.target, mount.read_only, "bind"))
    return resolved


def volume_name(owner: str, name: str) -> str:
    """Named volumes are namespaced per user, so users cannot share or steal them."""
    return f"dy-{owner}-{name}"
