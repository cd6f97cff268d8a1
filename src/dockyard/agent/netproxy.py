"""The node's L4 proxy for service names (TCP and UDP), on asyncio in a thread of its own.

Each service name of a network gets an address of that network's service range
on the node (``agent/networks.py``); the proxy listens there on the service's
container ports and forwards each connection (TCP) or each client's datagrams
(UDP) to a healthy replica's published endpoint — a node address and host
port, on this node or another. A connection from an address outside the
network's container range is refused (another network's containers reach the
host's addresses too). Endpoints are replaced as the server's tables change;
a connect that fails moves on to the next endpoint and passes that one over
for :data:`PASS_OVER_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
PASS_OVER_S = 1.0
UDP_IDLE_S = 60.0
CHUNK = 65536
#: (address, host port)
Endpoint = tuple[str, int]
#: (listen address, protocol, port)
ListenKey = tuple[str, str, int]


@dataclass
class Route:
    """What one listener forwards to, and who may use it."""

    allowed: ipaddress.IPv4Network
    endpoints: list[Endpoint] = field(default_factory=list)
    next: int = 0
    failed: dict[Endpoint, float] = field(default_factory=dict)

    def order(self) -> list[Endpoint]:
        """Endpoints to try, round robin, those that failed lately last."""
        ends = list(self.endpoints)
        if not ends:
            return []
        start = self.next % len(ends)
        self.next += 1
        ends = ends[start:] + ends[:start]
        now = time.monotonic()
        fresh = [e for e in ends if self.failed.get(e, 0.0) <= now]
        return fresh + [e for e in ends if e not in fresh]

    def mark_failed(self, endpoint: Endpoint) -> None:
        self.failed[endpoint] = time.monotonic() + PASS_OVER_S

    def admits(self, peer: str) -> bool:
        try:
            return ipaddress.ip_address(peer) in self.allowed
        except ValueError:
            return False


class NetProxy:
    """Listeners by (address, protocol, port); :meth:`apply` sets them all at once."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._routes: dict[ListenKey, Route] = {}
        self._servers: dict[ListenKey, asyncio.AbstractServer | asyncio.DatagramTransport] = {}
        self._thread = threading.Thread(target=self._run, name="netproxy", daemon=True)
        self._started = False
        self.connections = 0  # accepted TCP connections (metrics, tests)
        self.refused = 0  # connections from outside a listener's network

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        """Close every listener at once (open connections are dropped with the loop)."""
        if not self._started:
            return
        self._loop.call_soon_threadsafe(self._close_now)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2)

    def _close_now(self) -> None:
        for key in list(self._servers):
            server = self._servers.pop(key)
            self._routes.pop(key, None)
            if not isinstance(server, asyncio.AbstractServer):
                protocol = server.get_protocol()
                if isinstance(protocol, _UdpListener):
                    protocol.close_sessions()
            server.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def apply(self, routes: dict[ListenKey, tuple[str, Sequence[Endpoint]]]) -> None:
        """Make the listeners exactly ``routes``: key -> (allowed peers CIDR, endpoints).
        Blocks until done (at most a few seconds)."""
        self.start()
        future = asyncio.run_coroutine_threadsafe(self._apply(routes), self._loop)
        future.result(10)

    def listening(self) -> set[ListenKey]:
        return set(self._servers)

    async def _apply(self, routes: dict[ListenKey, tuple[str, Sequence[Endpoint]]]) -> None:
        for key in list(self._servers):
            if key not in routes:
                await self._close(key)
        for key, (allowed, endpoints) in routes.items():
            route = self._routes.get(key)
            network = ipaddress.IPv4Network(allowed)
            if route is None:
                route = self._routes[key] = Route(network)
            route.allowed = network
            route.endpoints = [(str(a), int(p)) for a, p in endpoints]
            if key not in self._servers:
                try:
                    await self._listen(key, route)
                except OSError as exc:
                    log.warning("cannot listen on %s %s:%d: %s", key[1], key[0], key[2], exc)
                    self._routes.pop(key, None)

    async def _listen(self, key: ListenKey, route: Route) -> None:
        address, proto, port = key
        if proto == "tcp":
            self._servers[key] = await asyncio.start_server(
                lambda r, w: self._serve_tcp(route, r, w), address, port, reuse_address=True
            )
        else:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpListener(route, self._loop), local_addr=(address, port)
            )
            self._servers[key] = transport

    async def _close(self, key: ListenKey) -> None:
        server = self._servers.pop(key, None)
        self._routes.pop(key, None)
        if isinstance(server, asyncio.AbstractServer):
            server.close()  # not wait_closed: open connections keep their pipes
        elif server is not None:
            protocol = server.get_protocol()
            if isinstance(protocol, _UdpListener):
                protocol.close_sessions()
            server.close()

    async def _serve_tcp(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        if not route.admits(str(peer[0])):
            self.refused += 1
            writer.close()
            return
        self.connections += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for endpoint in route.order():
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(*endpoint), CONNECT_TIMEOUT_S
                )
                break
            except (OSError, TimeoutError):
                route.mark_failed(endpoint)
        if upstream is None:
            writer.close()  # nothing healthy: the client sees its connection closed
            return
        up_reader, up_writer = upstream
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        pass
    finally:
        if reader.at_eof():
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()


class _UdpSession(asyncio.DatagramProtocol):
    """One client's datagrams to one endpoint; replies go back through the listener."""

    def __init__(self, listener: _UdpListener, client: tuple[str, int], endpoint: Endpoint):
        self.listener = listener
        self.client = client
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self.used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not an asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.used = time.monotonic()
        self.listener.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        self.listener.route.mark_failed(self.endpoint)
        self.listener.drop(self.client)


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, route: Route, loop: asyncio.AbstractEventLoop) -> None:
        self.route = route
        self.loop = loop
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple[str, int], _UdpSession] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not an asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        client = (str(addr[0]), int(addr[1]))
        if not self.route.admits(client[0]):
            return
        session = self.sessions.get(client)
        if session is not None and session.endpoint not in self.route.endpoints:
            self.drop(client)  # its replica left the rotation: pick again
            session = None
        if session is not None and session.transport is not None:
            session.used = time.monotonic()
            session.transport.sendto(data)
            return
        if client in self.pending:
            self.pending[client].append(data)
            return
        order = self.route.order()
        if not order:
            return
        self.pending[client] = [data]
        self.loop.create_task(self._open(client, order[0]))
        self._expire()

    async def _open(self, client: tuple[str, int], endpoint: Endpoint) -> None:
        try:
            transport, session = await self.loop.create_datagram_endpoint(
                lambda: _UdpSession(self, client, endpoint), remote_addr=endpoint
            )
        except OSError:
            self.route.mark_failed(endpoint)
            self.pending.pop(client, None)
            return
        self.sessions[client] = session
        for data in self.pending.pop(client, []):
            transport.sendto(data)

    def reply(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    def drop(self, client: tuple[str, int]) -> None:
        session = self.sessions.pop(client, None)
        if session is not None and session.transport is not None:
            session.transport.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for client, session in list(self.sessions.items()):
            if now - session.used > UDP_IDLE_S:
                self.drop(client)

    def close_sessions(self) -> None:
        for client in list(self.sessions):
            self.drop(client)
