"""The agent's ZeroMQ DEALER connection, with an outbox re-sent until acknowledged.

Only the connection thread touches the socket. ``send_reliable`` puts a message
in the outbox; it is sent at once and then again every ``resend_after`` seconds
until the server acks its id, across server restarts and lost frames. The
server applies these messages idempotently, so a resend duplicates nothing.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from dockyard.core.ids import new_id
from dockyard.protocol.messages import (
    FROM_SERVER,
    Ack,
    AgentMessage,
    Heartbeat,
    Hello,
    ProtocolError,
    Refused,
    Rehello,
    ServerMessage,
    Status,
    Welcome,
    decode,
    encode,
)

log = logging.getLogger(__name__)

RESEND_AFTER_S = 2.0
UNSENT = -1.0  # outbox mark: could not be sent yet (no server connected)
HEARTBEAT_IVL_MS = 300
HEARTBEAT_TIMEOUT_MS = 1000
HELLO_RETRY_S = 2.0
MAX_RESEND_PER_ROUND = 200
MAX_MERGED = 500  # items merged into one queued message (send_reliable's merge)


class Connection:
    def __init__(
        self,
        endpoint: str,
        node_id: str,
        on_message: Callable[[ServerMessage], None],
        hello: Callable[[], Hello],
        heartbeat: Callable[[], Heartbeat],
        heartbeat_interval: float,
        curve: tuple[bytes, bytes, bytes] | None = None,
        link_timeout: float = HEARTBEAT_TIMEOUT_MS / 1000,
    ) -> None:
        #: ZMTP heartbeat timeout and TTL, s: a connection silent this long after a
        #: ping is dropped and redialled (both ends). Above the link's round trip.
        self._link_timeout_ms = max(100, int(link_timeout * 1000))
        #: (server public key, own public key, own secret key), z85; None: plaintext.
        self._curve = curve
        #: Why the server refused this agent (empty while not refused).
        self.refused = ""
        self._endpoint = endpoint
        self._node_id = node_id
        self._on_message = on_message
        self._hello = hello
        self._heartbeat = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self._lock = threading.Lock()
        #: Reliable messages not yet handed to the socket, (id, message).
        self._outgoing: collections.deque[tuple[str, AgentMessage]] = collections.deque()
        #: Reliable messages not yet acknowledged: id -> (message, when sent or UNSENT).
        self._outbox: collections.OrderedDict[str, tuple[AgentMessage, float]] = (
            collections.OrderedDict()
        )
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.welcomed = threading.Event()
        #: Called on the connection thread when the server welcomes this agent (after
        #: a hello; a restored store may have set the node's generation back).
        self.on_welcome: Callable[[], None] = lambda: None
        #: Ids of reliable messages handed to the socket at least once: never merged
        #: into (the server may have applied, deduplicated or acked that id already).
        self._sent_ids: set[str] = set()
        self._has_unsent = False
        self._thread = threading.Thread(target=self._run, name="agent-conn", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke()
        self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def send_reliable(self, msg: AgentMessage, merge: bool = False) -> str:
        """Queue a message until the server acknowledges it; returns its id.

        ``merge`` (status messages): while the newest queued message is a status too
        and has never been sent, the updates join it instead (one message, one ack,
        for a burst of task reports; order is kept). A message sent once is never
        changed: the server may have applied or deduplicated its id already.
        """
        msg_id = new_id()
        with self._lock:
            tail_id, tail = self._outgoing[-1] if self._outgoing else ("", None)
            if (
                merge
                and isinstance(msg, Status)
                and isinstance(tail, Status)
                and tail_id in self._outbox
                and tail_id not in self._sent_ids
                and len(tail.updates) < MAX_MERGED
            ):
                merged = tail.merged(msg)
                self._outgoing[-1] = (tail_id, merged)
                self._outbox[tail_id] = (merged, self._outbox[tail_id][1])
                return tail_id
            self._outbox[msg_id] = (msg, 0.0)
            self._outgoing.append((msg_id, msg))
        self._poke()
        return msg_id

    def unacked(self) -> int:
        with self._lock:
            return len(self._outbox)

    def pending(self, msg_id: str) -> bool:
        """Is this reliable message still waiting for its ack?"""
        with self._lock:
            return msg_id in self._outbox

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # a wake-up is already pending, or we are stopped
            pass

    def _send(self, sock: zmq.Socket[bytes], msg: AgentMessage, msg_id: str = "") -> bool:
        if msg_id:
            with self._lock:  # its newest content; from now on nothing merges into it
                queued = self._outbox.get(msg_id)
                if queued is not None:
                    msg = queued[0]
                    self._sent_ids.add(msg_id)
        try:
            sock.send(encode(msg, msg_id), zmq.NOBLOCK)
            return True
        except zmq.Again:  # no server connected (or queue full): re-sent later, in order
            log.debug("cannot send %s now; it stays queued", msg.TYPE)
            return False

    def _run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        if self._curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self._curve
        # HA: every server endpoint at once. Only the leader binds its gateway, so
        # only its connection completes; ZMTP heartbeats drop a paused or dead peer
        # within HEARTBEAT_TIMEOUT_MS, and the DEALER then sends only to the live one.
        # Queue only to completed connections: otherwise the DEALER round-robins into
        # pipes of endpoints that never answer (followers do not listen).
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, self._link_timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, self._link_timeout_ms)
        for endpoint in endpoints(self._endpoint):
            sock.connect(endpoint)
        # Connection events: when a connection drops, whatever was written into it
        # and not acknowledged may be lost; it is re-sent first, in its original order,
        # as soon as a server completes a handshake (not 2 s later, after newer reports).
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        last_hello = 0.0
        next_heartbeat = 0.0
        last_resend = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if not self.welcomed.is_set() and now - last_hello > HELLO_RETRY_S:
                    self._send(sock, self._hello())
                    last_hello = now
                if now >= next_heartbeat:
                    if self.welcomed.is_set():
                        self._send(sock, self._heartbeat())
                    next_heartbeat = now + self.heartbeat_interval
                if now - last_resend >= RESEND_AFTER_S / 2:
                    self._resend(sock, now)
                    last_resend = now
                timeout = max(0.0, min(next_heartbeat - time.monotonic(), 0.5))
                events = dict(poller.poll(int(timeout * 1000) + 1))
                if self._wake_r.fileno() in events:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                if monitor in events:
                    self._on_monitor(monitor)
                if sock in events:
                    self._receive(sock)
                self._drain_outgoing(sock)
        finally:
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)

    def _on_monitor(self, monitor: zmq.Socket[bytes]) -> None:
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] in (zmq.EVENT_DISCONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED):
                with self._lock:  # everything unacknowledged goes again, in order
                    for msg_id, (msg, _) in list(self._outbox.items()):
                        self._outbox[msg_id] = (msg, UNSENT)
                    self._has_unsent = bool(self._outbox)

    def _drain_outgoing(self, sock: zmq.Socket[bytes]) -> None:
        """Send new messages. Reliable ones that cannot go now are marked UNSENT and go
        first, in their original order, once a server is connected again (so a final
        status never overtakes the log batches queued before it)."""
        self._flush_unsent(sock)
        while True:
            with self._lock:
                if not self._outgoing:
                    return
                msg_id, msg = self._outgoing.popleft()
                reliable = msg_id in self._outbox
                blocked = self._has_unsent
            if reliable and blocked:
                with self._lock:
                    self._outbox[msg_id] = (msg, UNSENT)
                continue
            sent = self._send(sock, msg, msg_id)
            if reliable:
                with self._lock:
                    self._outbox[msg_id] = (msg, time.monotonic() if sent else UNSENT)
                    self._has_unsent = self._has_unsent or not sent

    def _flush_unsent(self, sock: zmq.Socket[bytes]) -> None:
        with self._lock:
            if not self._has_unsent:
                return
            waiting = [(i, msg) for i, (msg, sent) in self._outbox.items() if sent == UNSENT]
        for msg_id, msg in waiting:
            if not self._send(sock, msg, msg_id):
                return
            with self._lock:
                if msg_id in self._outbox:
                    self._outbox[msg_id] = (self._outbox[msg_id][0], time.monotonic())
        with self._lock:
            self._has_unsent = any(sent == UNSENT for _, sent in self._outbox.values())

    def _resend(self, sock: zmq.Socket[bytes], now: float) -> None:
        with self._lock:
            due = [
                (msg_id, msg)
                for msg_id, (msg, sent) in list(self._outbox.items())[:MAX_RESEND_PER_ROUND]
                if sent > 0 and now - sent >= RESEND_AFTER_S
            ]
            for msg_id, msg in due:
                self._outbox[msg_id] = (msg, now)
        for msg_id, msg in due:
            self._send(sock, msg, msg_id)

    def _receive(self, sock: zmq.Socket[bytes]) -> None:
        for _ in range(1000):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg, _ = decode(frame)
            except ProtocolError as exc:
                log.warning("dropping bad frame from server: %s", exc)
                continue
            except Exception:  # a decoder bug must not end this thread
                log.exception("decoding a frame from the server failed")
                continue
            if isinstance(msg, Ack):
                with self._lock:
                    for msg_id in msg.ids:
                        self._outbox.pop(msg_id, None)
                        self._sent_ids.discard(msg_id)
            elif isinstance(msg, Welcome):
                if msg.heartbeat_interval > 0:
                    self.heartbeat_interval = float(msg.heartbeat_interval)
                self.welcomed.set()
                try:
                    self.on_welcome()
                except Exception:
                    log.exception("handling welcome failed")
            elif isinstance(msg, Rehello):
                self.welcomed.clear()
            elif isinstance(msg, Refused):
                reason = msg.reason or "refused"
                if reason != self.refused:
                    log.error("the server refused this agent: %s (need --join-token)", reason)
                self.refused = reason
                self.welcomed.clear()
            elif isinstance(msg, FROM_SERVER):
                try:
                    self._on_message(msg)
                except Exception:
                    log.exception("handling %s failed", msg.TYPE)
            else:
                log.warning("dropping a %s message from the server (an agent's)", msg.TYPE)


def endpoints(spec: str) -> list[str]:
    """``tcp://a:8701,tcp://b:8701`` -> the server endpoints, in order."""
    return [part.strip() for part in spec.split(",") if part.strip()]
