"""The agent gateway: one ZeroMQ ROUTER socket, served by two threads.

The I/O thread alone touches the socket. It receives, decodes and admits
messages, stamps each node's last-seen time and answers heartbeats of nodes
known to be ready from memory, so liveness never waits for the database. Every
message that needs the store (status, logs, usage, hello, build output, ...)
goes to the apply thread, which applies them in batches, one transaction per
batch, and builds desired task sets. Its replies (acks, desired sets) and
other threads' messages (:meth:`Gateway.send`, :meth:`Gateway.push`) reach
the socket through the I/O thread, woken by a socket pair.
"""

from __future__ import annotations

import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from dockyard.protocol.messages import (
    FROM_AGENT,
    Ack,
    AgentMessage,
    HealthReport,
    Heartbeat,
    Hello,
    Logs,
    MsgType,
    ProtocolError,
    Prune,
    Pruned,
    Refused,
    Rehello,
    ServerMessage,
    Status,
    Usage,
    Welcome,
    decode,
    encode,
)
from dockyard.server.errors import ServerError
from dockyard.server.metrics import ServerMetrics
from dockyard.server.state import join, usage_history
from dockyard.server.state import nodes as node_ops
from dockyard.server.state import secrets as secret_ops
from dockyard.server.state.accounting import apply_usage, enforce_consumed
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.health import apply_health
from dockyard.server.state.keyring import Keyring
from dockyard.server.state.reports import apply_statuses, store_logs
from dockyard.server.state.usage_history import UsageBuffer
from dockyard.store.db import Database
from dockyard.store.errors import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

#: How often one owner's consumed CPU-hours are compared with their quota.
QUOTA_CHECK_S = 1.0

#: How often buffered heartbeats are written and cached node states re-read.
FLUSH_INTERVAL_S = 2.0
#: How long a desired set that only lost ended tasks waits, gathering more endings.
ENDED_PUSH_DELAY_S = 0.25
#: Most messages the apply thread takes from its queue for one transaction.
APPLY_BATCH = 2000
#: A reliable message that fails this many times alone (not the store being away)
#: is acked and dropped (logged): re-sent for ever, it would fail for ever.
MAX_APPLY_FAILURES = 3
#: A refused agent retries its hello; log and record it at most this often.
REFUSAL_LOG_S = 60.0
#: Malformed frames are counted each; logged at most this often.
MALFORMED_LOG_S = 10.0

M = TypeVar("M", bound=AgentMessage)
#: An agent's message as the apply thread gets it: (node id, message, message id).
Received = tuple[str, AgentMessage, str]


def _flush_failed(what: str, exc: Exception) -> None:
    """A follower (or a leader just fenced) may not write: that is expected, said once
    at debug level; anything else is logged with its traceback."""
    if isinstance(exc, ServerError) and exc.code == "not_leader":
        log.debug("%s skipped: not the leader", what)
    else:
        log.error("%s failed", what, exc_info=exc)


class Gateway:
    """Receives agent reports, answers with acks and desired task sets."""

    def __init__(
        self,
        db: Database,
        bind: str,
        heartbeat_interval: float,
        on_change: Callable[[], None],
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._last_beat: dict[str, float] = {}  # I/O thread: previous heartbeat per node
        self._type_counters: dict[MsgType, Any] = {}  # I/O thread: metric child per type
        self._counts: dict[MsgType, int] = {}  # I/O thread: messages this poll, per type
        self._log_lines = 0
        #: Failed applies of a message on its own, by message id (MAX_APPLY_FAILURES).
        self._apply_failures: dict[str, int] = {}
        self._to_prune = False
        self._images: dict[str, list[str]] = {}  # I/O thread -> flush: reported, not yet stored
        self._quota_checked: dict[str, float] = {}  # apply thread: owner -> last check
        self._bind = bind
        #: Decrypts the secrets and configs of replicas' start entries (set before start()).
        self.keyring: Keyring | None = None
        self._heartbeat_interval = heartbeat_interval
        self._on_change = on_change
        self._lock = threading.Lock()
        #: Nodes whose desired sets are to be sent -> when (monotonic); see push().
        self._to_push: dict[str, float] = {}
        self._forget: set[str] = set()
        self._outgoing: list[tuple[str, ServerMessage]] = []
        #: The server's CURVE key pair (z85 public, secret); set before start(). None:
        #: plaintext and every agent admitted (``insecure_open_join``).
        self.curve_keys: tuple[bytes, bytes] | None = None
        self._admitted: dict[str, str] = {}  # I/O thread: node id -> joined public key
        self._refused: dict[str, float] = {}
        self._malformed = 0  # I/O thread: malformed frames not logged yet
        self._malformed_logged = -MALFORMED_LOG_S
        #: Handlers of further message types (builds, ...), by message class, called
        #: on the apply thread; a message with an id is acked after its handler returns.
        self._handlers: dict[type, Callable[[str, Any], None]] = {}

        # Buffered heartbeats and last-seen stamps (written by the I/O thread) and each
        # node's (generation, state) (written by the apply thread; the I/O thread only
        # looks entries up).
        self._beats: dict[str, tuple[float, float, int]] = {}
        #: Open usage-history buckets (apply thread), written when they close.
        self.usage_history = UsageBuffer()
        self._known: dict[str, tuple[int, str]] = {}
        self._last_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        #: Hellos and heartbeats waiting in ``_work``, one per node at most: agents
        #: re-send them while the apply thread is busy (registering 2,000 nodes).
        self._queued: set[tuple[str, MsgType]] = set()
        #: I/O thread -> apply thread: messages needing the store.
        self._work: queue.SimpleQueue[Received | None] = queue.SimpleQueue()
        self._applier = threading.Thread(target=self._apply_loop, name="gateway-apply", daemon=True)
        self._ready = threading.Event()
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.bound_endpoint = ""

    # -- called from other threads ---------------------------------------
    def handle(self, kind: type[M], handler: Callable[[str, M], None]) -> None:
        """Have ``handler(node id, message)`` called for each message of this class
        (before start)."""
        self._handlers[kind] = handler

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("gateway did not start")
        self._applier.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke()
        self._work.put(None)
        self._thread.join(5)
        self._applier.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def push(self, node_ids: set[str] | list[str], after: float = 0.0) -> None:
        """Send these nodes their desired task sets in ``after`` seconds, coalesced: a
        node asked for twice gets one set, at the earlier time."""
        if not node_ids:
            return
        at = time.monotonic() + after
        with self._lock:
            for node_id in node_ids:
                self._to_push[node_id] = min(at, self._to_push.get(node_id, at))
        self._work.put(None)  # wakes the apply thread, which builds them

    def prune_all(self) -> int:
        """Ask every connected agent to remove its dead containers (admin gc).

        Returns how many live nodes (heard from within three heartbeats) were asked;
        each answers with a ``pruned`` message, recorded as an event on the node."""
        now = time.monotonic()
        with self._lock:
            self._to_prune = True
        count = sum(1 for t in self.last_seen().values() if now - t < 3 * self._heartbeat_interval)
        self._poke()
        return count

    def send(self, node_id: str, msg: ServerMessage) -> None:
        """Send one message to a node soon (from any thread); dropped if it is not connected."""
        with self._lock:
            self._outgoing.append((node_id, msg))
        self._poke()

    def last_seen(self) -> dict[str, float]:
        """Monotonic time of the last message from each node, on this server's clock."""
        return dict(self._last_seen)  # one C-level copy: atomic under the GIL

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # a wake-up is already pending, or we are stopped
            pass

    # -- gateway thread ---------------------------------------------------
    def _run(self) -> None:
        authenticator = None
        if self.curve_keys is not None:
            # An own context: its ZAP handler must not clash with another server's.
            self._ctx = zmq.Context()
            authenticator = ThreadAuthenticator(self._ctx)
            authenticator.start()
            # Any client key may do the handshake (traffic is encrypted); admission
            # is decided per message from the key and the join token (see _admit).
            authenticator.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
            with self._db.read() as session:
                self._admitted = join.admitted_keys(session)
        try:
            self._serve()
        finally:
            if authenticator is not None:
                authenticator.stop()
                self._ctx.term()

    def _serve(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        if self.curve_keys is not None:
            sock.curve_publickey, sock.curve_secretkey = self.curve_keys
            sock.curve_server = True
            sock.zap_domain = b"dockyard"
        # No ROUTER_HANDOVER and no agent-chosen identities: each connection gets
        # its own routing id from ZeroMQ (a peer cannot pick one: they start with a
        # zero byte), and a node's route moves only to a connection whose message
        # was admitted (its CURVE key is the one the node joined with). With
        # handover, a peer that named itself after a node took the node's route
        # before any message was checked.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(self._bind)
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._routes: dict[str, bytes] = {}
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._ready.set()
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(500))
                if sock in events:
                    self._receive(sock)
                if self._wake_r.fileno() in events:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                self._flush_outgoing()
        finally:
            sock.close(0)

    def _receive(self, sock: zmq.Socket[bytes]) -> None:
        """Handle up to 1,000 waiting messages. With CURVE, the ZAP handler names each
        peer's public key on the frame; without it, plain bytes are cheaper to take."""
        curve = self.curve_keys is not None
        try:
            for _ in range(1000):
                if curve:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    if len(frames) == 2:
                        peer = str(frames[1].get("User-Id") or "")
                        self._handle(frames[0].bytes, frames[1].bytes, peer)
                else:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                    if len(parts) == 2:
                        self._handle(parts[0], parts[1])
        except zmq.Again:
            pass
        finally:
            self._count()

    def _send(self, node_id: str, msg: ServerMessage) -> None:
        identity = self._routes.get(node_id)
        if identity is None:
            return
        try:
            self._sock.send_multipart([identity, encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or queue full: level triggers will resend
            log.debug("send to %s failed: %s", node_id, exc)

    def _flush_outgoing(self) -> None:
        """I/O thread: send what other threads queued."""
        with self._lock:
            prune, self._to_prune = self._to_prune, False
            outgoing, self._outgoing = self._outgoing, []
        for target, message in outgoing:
            self._send(target, message)
        if prune:
            for node_id in list(self._routes):
                self._send(node_id, Prune())

    # -- apply thread -----------------------------------------------------
    def _apply_loop(self) -> None:
        """Apply queued messages in batches; build desired sets; flush heartbeats."""
        next_flush = time.monotonic() + FLUSH_INTERVAL_S
        while not self._stop.is_set():
            with self._lock:
                wake = min([next_flush, *self._to_push.values()])
            try:
                first = self._work.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                first = None
            items = [] if first is None else [first]
            while len(items) < APPLY_BATCH:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    items.append(item)
            try:
                self._apply_items(items)
                self._push_pending()
                if time.monotonic() >= next_flush:
                    self._refresh_and_flush()
                    next_flush = time.monotonic() + FLUSH_INTERVAL_S
            except Exception:
                log.exception("gateway apply step failed")

    def _apply_items(self, items: list[Received]) -> None:
        """Batched types in one transaction (a message re-sent while queued counts once);
        the others one by one, in arrival order after the batch."""
        batch: list[Received] = []
        others: list[Received] = []
        seen: set[str] = set()
        for item in items:
            node_id, msg, msg_id = item
            if isinstance(msg, _BATCHED):
                if msg_id:
                    if msg_id in seen:
                        continue
                    seen.add(msg_id)
                batch.append(item)
            else:
                others.append(item)
        if batch:
            self._apply_batch(batch)
        for node_id, msg, msg_id in others:
            if isinstance(msg, _COALESCED):
                with self._lock:
                    self._queued.discard((node_id, msg.TYPE))
            try:
                if isinstance(msg, Hello):
                    self._on_hello(node_id, msg)
                elif isinstance(msg, Heartbeat):
                    self._on_heartbeat(node_id, msg)
                elif isinstance(msg, Pruned):
                    self._on_pruned(node_id, msg, msg_id)
                else:
                    handler = self._handlers.get(type(msg))
                    if handler is not None:
                        handler(node_id, msg)
                        self._ack(node_id, msg_id)
            except Exception:
                log.exception("handling %s from %s failed", msg.TYPE, node_id)

    def _push_pending(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [node_id for node_id, at in self._to_push.items() if at <= now]
            for node_id in due:
                del self._to_push[node_id]
            forget, self._forget = self._forget, set()
        for node_id in forget:
            self._known.pop(node_id, None)
        self._send_desired(*due)

    def _send_desired(self, *node_ids: str) -> None:
        """Build these connected nodes' desired sets in one read and send them."""
        wanted = [n for n in node_ids if n in self._routes]
        if not wanted:
            return
        with self._db.read() as session:
            nodes = node_ops.nodes_by_id(session, wanted)
            sets = node_ops.desired_sets(session, nodes)
            sets = secret_ops.add_start_files(session, self.keyring, sets)
            for node in nodes:
                self._known[node.id] = (node.generation, node.state)
        for node_id, desired in sets.items():
            self.send(node_id, desired)

    def _handle(self, identity: bytes, frame: bytes, peer_key: str = "") -> None:
        """I/O thread: admit, route and stamp one message. A heartbeat of a node known
        to be ready, holding the current generation, ends here; anything else is
        queued for the apply thread."""
        try:
            msg, msg_id = decode(frame)
        except ProtocolError as exc:
            self._drop(identity, str(exc))
            return
        except Exception as exc:  # a decoder bug must not end this thread
            log.exception("decoding a frame from %r failed", identity[:64])
            self._drop(identity, f"decoder failed: {exc!r}")
            return
        if not isinstance(msg, FROM_AGENT):
            self._drop(identity, f"a {msg.TYPE} message is not an agent's")
            return
        node_id = msg.node_id
        if not node_id:
            return
        if self.curve_keys is not None and not self._admit(identity, node_id, peer_key, msg):
            return
        self._routes[node_id] = identity
        now = time.monotonic()
        # No lock: one item set, and readers copy with dict() (atomic under the GIL).
        self._last_seen[node_id] = now
        if self._metrics is not None:
            self._observe(node_id, msg, now)
        if isinstance(msg, Heartbeat) and self._beat(node_id, msg):
            return
        if isinstance(msg, _COALESCED):
            key = (node_id, msg.TYPE)
            with self._lock:
                if key in self._queued:  # one waits already: the agent re-sent it
                    return
                self._queued.add(key)
        self._work.put((node_id, msg, msg_id))

    def _drop(self, identity: bytes, why: str) -> None:
        """Count a malformed frame and drop it; logged at most every MALFORMED_LOG_S."""
        if self._metrics is not None:
            self._metrics.gateway_malformed.inc()
        self._malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged >= MALFORMED_LOG_S:
            log.warning(
                "dropped %d malformed frame(s); the last from %r: %s",
                self._malformed,
                identity[:64],
                why[:500],
            )
            self._malformed, self._malformed_logged = 0, now

    def _beat(self, node_id: str, msg: Heartbeat) -> bool:
        """Buffer a heartbeat (written in bulk every few seconds: no disk write each).
        True when nothing more is needed: the node is known ready at this generation."""
        if msg.images is not None:  # sent when they change: stored with the next flush
            self._images[node_id] = [i[:255] for i in msg.images[: node_ops.MAX_IMAGES]]
        # No lock: the flush swaps the dict; a beat landing in the old one is at worst
        # not displayed (liveness is ``_last_seen``, stamped above).
        self._beats[node_id] = (time.time(), msg.cpu_percent, msg.memory_bytes)
        known = self._known.get(node_id)
        return known is not None and known[1] == "ready" and msg.generation == known[0]

    def _admit(self, identity: bytes, node_id: str, peer_key: str, msg: AgentMessage) -> bool:
        """Is this message from the key ``node_id`` joined with? A ``hello`` with a valid
        join token admits (or re-keys) the node; anything else is refused and logged."""
        if peer_key and self._admitted.get(node_id) == peer_key:
            return True
        reason = "no valid join token"
        name = msg.name if isinstance(msg, Hello) else ""
        if isinstance(msg, Hello) and peer_key:
            with self._db.write() as session:
                token = join.check_token(session, msg.join_token)
                if token is not None:
                    join.admit(session, node_id, peer_key, token)
                    record(
                        session,
                        EventKind.NODE,
                        "node_joined",
                        f"{name or node_id} joined with token {token.id}",
                        node_id=node_id,
                    )
                    self._admitted[node_id] = peer_key
                    log.info("node %s joined with token %s", node_id, token.id)
                    return True
            if node_id in self._admitted:
                reason = "node id bound to another key and no valid join token"
        elif node_id in self._admitted:
            reason = "message from a key the node did not join with"
        now = time.monotonic()
        if now - self._refused.get(node_id, -3600.0) >= REFUSAL_LOG_S:
            self._refused[node_id] = now
            log.warning("refused agent %s (key %s): %s", node_id, peer_key[:12] or "?", reason)
            try:
                with self._db.write() as session:
                    record(
                        session,
                        EventKind.NODE,
                        "node_refused",
                        f"agent {name[:64]!r} (node id {node_id[:64]!r}): {reason}",
                    )
            except Exception:
                log.exception("recording a refusal failed")
        try:
            refusal = encode(Refused(reason))
            self._sock.send_multipart([identity, refusal], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        return False

    def _observe(self, node_id: str, msg: AgentMessage, now: float) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        counts = self._counts
        counts[msg.TYPE] = counts.get(msg.TYPE, 0) + 1  # added to the counters per poll
        if isinstance(msg, Heartbeat):
            previous = self._last_beat.get(node_id)
            self._last_beat[node_id] = now
            if previous is not None:
                metrics.heartbeat_interval.observe(now - previous)
            # The agent's clock: an hour off or jumping is no lag below zero, and a
            # clock reading NaN or infinite must not poison the histogram's sum.
            lag = time.time() - msg.sent_at
            if math.isfinite(lag):
                metrics.heartbeat_lag.observe(max(0.0, lag))
        elif isinstance(msg, Logs):
            self._log_lines += len(msg.lines)

    def _count(self) -> None:
        """Add this poll's message counts to the metrics: one update per type, not
        one per message (counter updates took a third of a heartbeat's cost)."""
        metrics = self._metrics
        if metrics is None or not self._counts:
            return
        for msg_type, n in self._counts.items():
            counter = self._type_counters.get(msg_type)
            if counter is None:
                counter = metrics.gateway_messages.labels(type=msg_type.value)
                self._type_counters[msg_type] = counter
            counter.inc(n)
        beats = self._counts.get(MsgType.HEARTBEAT, 0)
        if beats:
            metrics.heartbeats.inc(beats)
        if self._log_lines:
            metrics.log_lines_received.inc(self._log_lines)
        self._counts = {}
        self._log_lines = 0

    def _on_hello(self, node_id: str, msg: Hello) -> None:
        with self._db.write() as session:
            node = node_ops.register(session, msg)
            desired = node_ops.desired_for(session, node)
            self._known[node_id] = (node.generation, node.state)
        self.send(node_id, Welcome(self._heartbeat_interval))
        self.send(node_id, desired)
        self._on_change()

    def _on_heartbeat(self, node_id: str, msg: Heartbeat) -> None:
        """Apply thread: a heartbeat of a node not known ready, or holding another
        generation than the store's (then it gets its desired set again)."""
        known = self._known.get(node_id)
        if known is None or known[1] != "ready":
            with self._db.write() as session:
                node = node_ops.get_node(session, node_id)
                if node is None:
                    self.send(node_id, Rehello())
                    return
                came_back = node_ops.heartbeat(session, node, msg)
                known = (node.generation, node.state)
            self._known[node_id] = known
            if came_back:
                self._on_change()
        if msg.generation > known[0]:
            with self._db.read() as session:
                node = node_ops.get_node(session, node_id)
                stored = None if node is None else node.generation
            if stored is None or msg.generation > stored:
                # The node holds a generation the store never had (it was restored
                # from a backup): hello again, and the welcome lets the agent take
                # the store's lower generation.
                self.send(node_id, Rehello())
                return
        if msg.generation != known[0]:
            self._send_desired(node_id)

    def forget(self, node_ids: set[str]) -> None:
        """Drop cached node state (e.g. the node was declared down): next heartbeat reads the DB."""
        with self._lock:
            self._forget.update(node_ids)
        self._work.put(None)

    def _refresh_and_flush(self) -> None:
        """Write buffered heartbeats in one statement; re-read every node's generation and state."""
        beats, self._beats = self._beats, {}
        images, self._images = self._images, {}
        if images:
            try:
                with self._db.write() as session:
                    node_ops.store_images(session, images)
            except Exception as exc:
                _flush_failed("storing node images", exc)
        if beats:
            try:
                with self._db.write() as session:
                    node_ops.store_heartbeats(session, beats)
            except Exception as exc:
                _flush_failed("flushing heartbeats", exc)
            for node_id, (at, cpu, mem) in beats.items():
                self.usage_history.add_node(node_id, at, cpu, mem)
        closed = self.usage_history.closed(time.time())
        if closed:
            try:
                with self._db.write() as session:
                    usage_history.store(session, closed)
            except Exception:
                log.exception("storing usage history failed (%d buckets lost)", len(closed))
        with self._db.read() as session:
            self._known = node_ops.generations(session)

    def _apply_batch(self, batch: list[Received]) -> None:
        """Apply status reports, log batches and usage samples in one transaction.

        One commit per poll instead of one per message: under load (hundreds of
        tasks starting, every node shipping logs and samples) per-message commits
        put the gateway behind, and a backlog also delays liveness. Acks go out
        after the commit, one per node. If the batch fails as a whole, each message
        is retried alone so one bad report cannot hold back the others.
        """
        try:
            self._apply(batch)
        except Exception as exc:
            if len(batch) == 1:
                node_id, msg, msg_id = batch[0]
                log.exception("handling %s from %s failed", msg.TYPE, node_id)
                if msg_id and not isinstance(exc, UNAVAILABLE_ERRORS):
                    # Not the store being away: this message itself fails. Re-sent
                    # for ever it would only fail again; after a few tries it is
                    # acked and dropped (logged), so the node's outbox moves on.
                    if len(self._apply_failures) > 10_000:
                        self._apply_failures.clear()  # bounded; a count only delays a drop
                    failures = self._apply_failures.get(msg_id, 0) + 1
                    self._apply_failures[msg_id] = failures
                    if failures >= MAX_APPLY_FAILURES:
                        self._apply_failures.pop(msg_id, None)
                        log.error(
                            "dropping %s %s from %s after %d failed applies",
                            msg.TYPE,
                            msg_id,
                            node_id,
                            failures,
                        )
                        self._ack(node_id, msg_id)
                return
            log.exception("a batch of %d messages failed; applying one by one", len(batch))
            for item in batch:
                self._apply_batch([item])

    def _apply(self, batch: list[Received]) -> None:
        now = time.monotonic()
        ended: set[str] = set()  # nodes whose desired set lost a task
        changed = False
        owners: set[str] = set()
        dialect = self._db.write_engine.dialect.name
        with self._db.write() as session:
            statuses = [
                (node_id, update)
                for node_id, msg, _ in batch
                if isinstance(msg, Status)
                for update in msg.updates
            ]
            if statuses:
                changed, ended = apply_statuses(session, statuses)
            shipped = [(node_id, msg.lines) for node_id, msg, _ in batch if isinstance(msg, Logs)]
            stored = store_logs(session, shipped, dialect) if shipped else 0
            for node_id, msg, _ in batch:
                if isinstance(msg, Usage):
                    owners |= apply_usage(session, node_id, msg.samples, self.usage_history)
                elif isinstance(msg, HealthReport):
                    changed = apply_health(session, node_id, msg) or changed
            # Consumed quotas: per owner at most every QUOTA_CHECK_S.
            due = {o for o in owners if now - self._quota_checked.get(o, 0.0) >= QUOTA_CHECK_S}
            touched = enforce_consumed(session, due) if due else set()
        self._quota_checked.update(dict.fromkeys(due, now))
        if self._metrics is not None and stored:
            self._metrics.log_lines_stored.inc(stored)
        acks: dict[str, list[str]] = {}
        for node_id, _, msg_id in batch:
            if msg_id:
                acks.setdefault(node_id, []).append(msg_id)
        for node_id, ids in acks.items():
            self.send(node_id, Ack(tuple(ids)))
        self.push(touched)  # quota kills: at once
        # A node's set lost ended tasks: only clean-up is left (the container has
        # exited), so it waits a little and is built once for all that end meanwhile.
        self.push(ended, after=ENDED_PUSH_DELAY_S)
        if changed:
            self._on_change()

    def _on_pruned(self, node_id: str, msg: Pruned, msg_id: str) -> None:
        with self._db.write() as session:
            record(
                session,
                EventKind.NODE,
                "containers_pruned",
                f"removed {msg.removed} dead containers",
                node_id=node_id,
            )
        self._ack(node_id, msg_id)

    def _ack(self, node_id: str, msg_id: str) -> None:
        if msg_id:
            self.send(node_id, Ack((msg_id,)))


#: Messages of which at most one per node waits for the apply thread.
_COALESCED = (Hello, Heartbeat)

#: Messages applied together, one transaction per received batch.
_BATCHED = (Status, Logs, Usage, HealthReport)
