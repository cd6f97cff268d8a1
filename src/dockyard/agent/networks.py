"""Service networks on this node: Docker networks, service addresses, the proxy's routes.

For each service network a task of this node is on (the ``networks`` of its
desired entry) the driver makes a Docker bridge network. Every name the server's
``endpoints`` tables list for that network gets an address in the network's
service range (the upper half of its /24) added to the bridge interface; the
replicas get those names in ``/etc/hosts`` (Docker's ``extra_hosts``) and the
node proxy (``agent/netproxy.py``) listens on each address and port. An
internal network also gets a firewall rule: its containers reach nothing on
the host but those service addresses (Docker itself drops its forwarded
traffic). Networks no container and no desired task uses any more are
removed. See docs/networking.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dockyard.agent.netproxy import Endpoint, ListenKey, NetProxy
from dockyard.drivers.base import LABEL_NETWORK, LABEL_NODE, Driver, NetworkInfo
from dockyard.drivers.errors import DriverError
from dockyard.protocol.messages import Endpoints

log = logging.getLogger(__name__)

#: A task's container waits at most this long for its network's first table (the
#: server sends it within a fraction of a second of the placement).
TABLE_WAIT_S = 3.0
CLEANUP_EVERY_S = 5.0
_COMMAND_TIMEOUT_S = 10.0


def docker_name(node_id: str, net_id: str) -> str:
    """The node-local Docker network of service network ``net_id`` (agents sharing one
    Engine have their own)."""
    return f"dockyard-{node_id[:8]}-{net_id}"


def assign_addresses(
    names: Iterable[str], services_range: str, taken: Mapping[str, str]
) -> dict[str, str]:
    """An address of ``services_range`` for each name: those in ``taken`` keep theirs,
    the others hash to a slot (the next free one on a collision), in name order."""
    network = ipaddress.IPv4Network(services_range)
    hosts = [str(h) for h in network.hosts()]
    out = {n: a for n, a in taken.items() if a in hosts}
    used = set(out.values())
    for name in sorted(set(names) - set(out)):
        if len(used) >= len(hosts):
            log.warning("network %s: no service address left for %s", services_range, name)
            continue
        slot = int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(hosts)
        while hosts[slot] in used:
            slot = (slot + 1) % len(hosts)
        out[name] = hosts[slot]
        used.add(hosts[slot])
    return out


class NetworkManager:
    """Service networks of one node (Docker driver; a driver without networks: no-op)."""

    def __init__(self, driver: Driver, node_id: str, proxy: NetProxy | None = None) -> None:
        self._driver = driver
        self._node_id = node_id
        self.proxy = proxy or NetProxy()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tables: dict[str, dict[str, Any]] = {}
        self._received = False
        self._infos: dict[str, NetworkInfo] = {}  # network id -> made on this node
        self._addresses: dict[str, dict[str, str]] = {}  # network id -> name -> address
        self._applied: dict[ListenKey, tuple[str, Sequence[Endpoint]]] = {}
        self._sync_lock = threading.Lock()  # one sync at a time: the last one wins
        self._pending: Endpoints | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="networks", daemon=True)
        self.wanted: Any = lambda: set()  # network ids of the node's desired tasks

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._changed:
            self._changed.notify_all()  # a start waiting for its table gives up
        if self._thread.ident is not None:
            self._thread.join(2)
        self.proxy.stop()

    def submit(self, msg: Endpoints) -> None:
        """Apply ``msg`` soon, on this manager's thread (from the connection's); a newer
        one replaces one not applied yet."""
        with self._lock:
            self._pending = msg
        self._wake.set()

    def _run(self) -> None:
        last_cleanup = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(CLEANUP_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                msg, self._pending = self._pending, None
            try:
                if msg is not None:
                    self.apply(msg)
                if time.monotonic() - last_cleanup >= CLEANUP_EVERY_S:
                    last_cleanup = time.monotonic()
                    self.cleanup()
            except DriverError as exc:
                log.warning("service networks: %s", exc)
            except Exception:
                log.exception("service networks failed")

    # -- a task's container -------------------------------------------------
    def prepare(
        self, networks: Sequence[Mapping[str, Any]]
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """Make the task's networks on this node; return their Docker names and the
        ``/etc/hosts`` entries of every name on them (empty where the driver has no
        networks). Waits up to :data:`TABLE_WAIT_S` for the networks' tables."""
        names: list[str] = []
        for ref in networks:
            net_id = str(ref.get("id") or "")
            if not net_id:
                continue
            info = self._driver.ensure_network(
                docker_name(self._node_id, net_id),
                {LABEL_NETWORK: net_id, LABEL_NODE: self._node_id},
                bool(ref.get("internal")),
            )
            if info is None:
                return (), {}
            with self._lock:
                self._infos[net_id] = info
            self._firewall(info)
            names.append(info.name)
        ids = [str(r.get("id")) for r in networks if r.get("id")]
        with self._lock:  # a network made again (removed meanwhile) has lost them
            known = [(self._infos[i], dict(self._addresses.get(i, {}))) for i in ids]
        for info, addresses in known:
            for address in addresses.values():
                self._add_address(info, address)
        deadline = time.monotonic() + TABLE_WAIT_S
        with self._changed:
            while (
                any(i not in self._tables for i in ids)
                and time.monotonic() < deadline
                and not self._stop.is_set()
            ):
                self._changed.wait(max(0.0, deadline - time.monotonic()))
        self._sync()
        hosts: dict[str, str] = {}
        with self._lock:
            for net_id in ids:
                for name, address in self._addresses.get(net_id, {}).items():
                    hosts.setdefault(name, address)
        return tuple(names), hosts

    # -- the server's tables ----------------------------------------------------
    def apply(self, msg: Endpoints) -> None:
        with self._changed:
            self._tables = dict(msg.networks)
            self._received = True
            self._changed.notify_all()
        self._sync()

    def _sync(self) -> None:
        """Addresses for every name of every network made here, and the proxy's routes."""
        with self._sync_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        routes: dict[ListenKey, tuple[str, Sequence[Endpoint]]] = {}
        with self._lock:
            work = [(i, info, self._tables.get(i)) for i, info in self._infos.items()]
        for net_id, info, table in work:
            if table is None:
                continue
            names = table.get("names") or {}
            with self._lock:
                before = self._addresses.get(net_id, {})
            addresses = assign_addresses(names, info.services_range, before)
            for new in set(addresses.values()) - set(before.values()):
                self._add_address(info, new)
            with self._lock:
                self._addresses[net_id] = addresses
            if addresses != before:  # containers made before these names get them too
                self._driver.refresh_hosts(info.name, addresses)
            for name, ports in names.items():
                address = addresses.get(name)
                if address is None or not isinstance(ports, Mapping):
                    continue
                for proto in ("tcp", "udp"):
                    for port, ends in (ports.get(proto) or {}).items():
                        try:
                            key = (address, proto, int(port))
                            endpoints = [(str(a), int(p)) for a, p in ends]
                        except (TypeError, ValueError):
                            log.warning("network %s: bad endpoints for %s", net_id, name)
                            continue
                        routes[key] = (info.containers_range, endpoints)
        with self._lock:
            if routes == self._applied:
                return
            self._applied = routes
        self.proxy.apply(routes)

    # -- host side ------------------------------------------------------------
    def _add_address(self, info: NetworkInfo, address: str) -> None:
        if not info.bridge:
            return
        _command(["ip", "addr", "replace", f"{address}/32", "dev", info.bridge])

    def _firewall(self, info: NetworkInfo) -> None:
        """An internal network's containers start no connection to anything on the host but
        its service addresses, nor out of the bridge (answers to connections made to them,
        e.g. through their published ports, pass)."""
        if not info.internal or not info.bridge:
            return
        for rule in _internal_rules(info):
            if not _command(["iptables", "-C", *rule], quiet=True):
                _command(["iptables", "-I", *rule])

    def _unfirewall(self, info: NetworkInfo) -> None:
        if info.internal and info.bridge:
            for rule in _internal_rules(info):
                while _command(["iptables", "-D", *rule], quiet=True):
                    pass

    def cleanup(self) -> None:
        """Remove this node's networks no container uses and no desired task wants."""
        wanted = set(self.wanted()) | set(self._tables)
        for info in self._driver.service_networks(self._node_id):
            net_id = str(info.labels.get(LABEL_NETWORK, ""))
            if info.containers or net_id in wanted:
                continue
            with self._lock:
                self._infos.pop(net_id, None)
                self._addresses.pop(net_id, None)
            self._unfirewall(info)
            try:
                self._driver.remove_network(info.name)
            except DriverError as exc:
                log.debug("network %s kept: %s", info.name, exc)
        self._sync()

    def addresses(self, net_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._addresses.get(net_id, {}))


def _internal_rules(info: NetworkInfo) -> list[list[str]]:
    new = ["-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED"]
    to_host = ["INPUT", "-i", info.bridge, "!", "-d", info.services_range, *new, "-j", "DROP"]
    # DOCKER-USER is where Docker leaves room for such rules (before its own).
    out = ["DOCKER-USER", "-i", info.bridge, "!", "-o", info.bridge, *new, "-j", "DROP"]
    return [to_host, out]


def _command(argv: list[str], quiet: bool = False) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s failed: %s", " ".join(argv), exc)
        return False
    if done.returncode != 0 and not quiet:
        log.warning("%s failed: %s", " ".join(argv), done.stderr.strip())
    return done.returncode == 0
