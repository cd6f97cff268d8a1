"""Service networks and discovery: which network a replica joins, what names it sees. Pure.

Every service is attached to one or more *networks*: a Compose stack's
networks (``default`` unless the file says otherwise), or, for a standalone
service or a template instance, a network of its own. A network is identified
across the cluster by :func:`network_id` (owner, scope, name), so two users'
stacks of the same name never share one. Each node that runs a member of a
network has a Docker network for it; the node's agent answers the names of the
network's services on it and forwards to their healthy replicas anywhere in the
cluster (``docs/networking.md``).

:func:`endpoint_tables` is what the server sends each node: for every network
one of its tasks is on, every name on that network with the published
endpoints (node address, host port) of the healthy replicas, per protocol and
container port.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockyard.core.errors import ValidationError

DEFAULT_NETWORK = "default"
MAX_NETWORKS = 8
MAX_ALIASES = 16
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
#: A DNS-ish host name (Compose service names and aliases): letters, digits, ``-``, ``_``, ``.``.
_HOST_RE = re.compile(r"^[a-zA-Z0-9_]([a-zA-Z0-9_.-]{0,62})$")
#: Protocols the node proxy forwards.
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True, slots=True)
class NetworkRef:
    """A service's attachment to one network: the network's name in its scope, whether
    it is internal (no route out of it, nor to the node's own services), the names the
    service answers to on it besides its own, and the cluster-wide id (set by the server
    from the owner and scope, :func:`resolve`)."""

    name: str = DEFAULT_NETWORK
    internal: bool = False
    aliases: tuple[str, ...] = ()
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "internal": self.internal,
            "aliases": list(self.aliases),
            "id": self.id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "networks[0]") -> NetworkRef:
        if not isinstance(data, Mapping):
            raise ValidationError(where, "must be a map {name, internal, aliases}")
        name = str(data.get("name") or DEFAULT_NETWORK)
        if not _NAME_RE.match(name):
            raise ValidationError(f"{where}.name", "must be 1-63 letters, digits, _ . -")
        aliases = data.get("aliases") or ()
        if not isinstance(aliases, list | tuple) or len(aliases) > MAX_ALIASES:
            raise ValidationError(f"{where}.aliases", f"must be a list of at most {MAX_ALIASES}")
        for alias in aliases:
            if not isinstance(alias, str) or not _HOST_RE.match(alias):
                raise ValidationError(f"{where}.aliases", f"{alias!r} is not a host name")
        internal = data.get("internal", False)
        if not isinstance(internal, bool):
            raise ValidationError(f"{where}.internal", "must be true or false")
        net_id = str(data.get("id") or "")
        if net_id and not re.fullmatch(r"[0-9a-f]{12}", net_id):
            raise ValidationError(f"{where}.id", "is set by the server")
        return cls(name, internal, tuple(dict.fromkeys(aliases)), net_id)


def parse_networks(data: Any) -> tuple[NetworkRef, ...]:
    """Validate a service body's ``networks`` (a list of maps); none: ``()``."""
    if not data:
        return ()
    if not isinstance(data, list | tuple):
        raise ValidationError("networks", "must be a list of {name, internal, aliases}")
    if len(data) > MAX_NETWORKS:
        raise ValidationError("networks", f"at most {MAX_NETWORKS} networks")
    refs = tuple(NetworkRef.from_dict(n, f"networks[{i}]") for i, n in enumerate(data))
    if len({r.name for r in refs}) != len(refs):
        raise ValidationError("networks", "lists a network twice")
    return refs


def network_id(owner_id: str, scope: str, name: str) -> str:
    """The cluster-wide id of network ``name`` of ``scope`` (a stack, or one service)."""
    digest = hashlib.sha256(f"{owner_id}\0{scope}\0{name}".encode()).hexdigest()
    return digest[:12]


#: The label the server sets on every service of one template instance (its name):
#: they share one network scope (``instance:NAME``), are launched, expire and are
#: removed together. Users cannot set it.
INSTANCE_LABEL = "dockyard.instance"
#: The part of a template instance a service runs (``""``: the main one).
COMPONENT_LABEL = "dockyard.component"


def scope_of(service_name: str, labels: Mapping[str, str]) -> str:
    """A service's network scope: its template instance, else its Compose stack, else
    the service itself."""
    if instance := labels.get(INSTANCE_LABEL, ""):
        return f"instance:{instance}"
    stack = labels.get("dockyard.stack", "")
    return f"stack:{stack}" if stack else f"service:{service_name}"


def resolve(
    refs: Sequence[NetworkRef],
    *,
    owner_id: str,
    service_name: str,
    labels: Mapping[str, str],
    internal_default: bool = False,
) -> tuple[NetworkRef, ...]:
    """The service's networks with their ids: the ``default`` network of its scope when
    it names none (internal when ``internal_default``, as for template instances)."""
    scope = scope_of(service_name, labels)
    chosen = list(refs) or [NetworkRef(DEFAULT_NETWORK, internal_default)]
    return tuple(
        NetworkRef(r.name, r.internal, r.aliases, network_id(owner_id, scope, r.name))
        for r in chosen
    )


@dataclass(frozen=True, slots=True)
class ServiceNetView:
    """What the endpoint tables need of one live service."""

    workload_id: str
    name: str
    networks: tuple[NetworkRef, ...]
    ports: tuple[int, ...]
    udp_ports: tuple[int, ...] = ()
    health_checked: bool = False


@dataclass(frozen=True, slots=True)
class ReplicaNetView:
    """One placed replica of a service (a task row joined with its node)."""

    workload_id: str
    node_id: str
    state: str
    desired_state: str
    health: str
    port_map: tuple[tuple[int, int], ...] = ()
    node_state: str | None = None
    node_address: str | None = None


#: protocol -> container port -> [(address, host port)], sorted.
PortTable = dict[str, dict[int, list[tuple[str, int]]]]


@dataclass
class NetworkTable:
    """One network as a node sees it: ``names`` -> endpoints, and whether internal."""

    internal: bool = False
    names: dict[str, PortTable] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "internal": self.internal,
            "names": {
                name: {
                    proto: {str(port): [list(e) for e in ends] for port, ends in ports.items()}
                    for proto, ports in table.items()
                }
                for name, table in sorted(self.names.items())
            },
        }


def _ready(replica: ReplicaNetView, checked: bool) -> bool:
    return (
        replica.state == "running"
        and replica.desired_state == "run"
        and replica.node_state == "ready"
        and bool(replica.node_address)
        and (not checked or replica.health == "healthy")
    )


def names_on(service: ServiceNetView, ref: NetworkRef) -> list[str]:
    """The names ``service`` answers to on network ``ref``: its own, then its aliases."""
    return list(dict.fromkeys([service.name, *ref.aliases]))


def endpoint_tables(
    services: Iterable[ServiceNetView], replicas: Iterable[ReplicaNetView]
) -> dict[str, dict[str, NetworkTable]]:
    """Node id -> network id -> that network's table, for every network a replica placed
    on the node is attached to. Endpoints are the node address and host port of every
    routable replica (running, meant to run, on a ready node, healthy when checked),
    wherever it runs; a name whose service has none has empty lists (it still resolves,
    and connections to it are refused)."""
    by_id = {s.workload_id: s for s in services}
    placed: dict[str, list[ReplicaNetView]] = {}
    members: dict[str, set[str]] = {}  # network id -> nodes with a member placed
    for replica in replicas:
        service = by_id.get(replica.workload_id)
        if service is None:
            continue
        placed.setdefault(replica.workload_id, []).append(replica)
        for ref in service.networks:
            members.setdefault(ref.id, set()).add(replica.node_id)
    networks: dict[str, NetworkTable] = {}
    for service in by_id.values():
        ports = _ports_of(service, placed.get(service.workload_id, []))
        for ref in service.networks:
            if ref.id not in members:
                continue
            table = networks.setdefault(ref.id, NetworkTable())
            table.internal = table.internal or ref.internal
            for name in names_on(service, ref):
                table.names.setdefault(name, {})
                _merge(table.names[name], ports)
    out: dict[str, dict[str, NetworkTable]] = {}
    for net_id, nodes in members.items():
        for node_id in nodes:
            out.setdefault(node_id, {})[net_id] = networks[net_id]
    return out


def _ports_of(service: ServiceNetView, replicas: Sequence[ReplicaNetView]) -> PortTable:
    table: PortTable = {"tcp": {p: [] for p in service.ports}}
    if service.udp_ports:
        table["udp"] = {p: [] for p in service.udp_ports}
    for replica in replicas:
        if not _ready(replica, service.health_checked):
            continue
        for container_port, host_port in replica.port_map:
            if not host_port:
                continue
            endpoint = (str(replica.node_address), int(host_port))
            for proto in PROTOCOLS:
                if container_port in table.get(proto, {}):
                    table[proto][container_port].append(endpoint)
    for ports in table.values():
        for ends in ports.values():
            ends.sort()
    return table


def _merge(into: PortTable, ports: PortTable) -> None:
    """Two services with one name on a network (an alias both claim): union."""
    for proto, table in ports.items():
        for port, ends in table.items():
            merged = into.setdefault(proto, {}).setdefault(port, [])
            merged.extend(e for e in ends if e not in merged)
            merged.sort()
