"""Leader election through the database, with a lease and a fencing term.

Any number of server instances share one store. Each runs a :class:`LeaderElector`
that every ``lease_s / 3`` seconds, in one transaction with the lease row locked
(``SELECT ... FOR UPDATE``):

* renews the lease if it holds it (same holder, same term);
* takes it, with ``term + 1``, if the lease expired (``db_now - renewed_at >
  lease_s``) — or at once with the embedded SQLite store, which has one server;
* otherwise stays a follower.

Times are the **database's** clock, so instances on different machines agree.
An instance that cannot renew (database gone, statement failed) steps down at
once, as does one that has not renewed within ``lease_s`` by its own monotonic
clock. On PostgreSQL every session is bounded by timeouts tied to the lease
(:meth:`SessionTimeouts.for_lease <dockyard.store.db.SessionTimeouts.for_lease>`):
an instance frozen inside a transaction that holds the lease row's lock is cut
off by the database within half a lease, and a lease attempt that times out on a
lock or a statement is a round without a lease (a follower stays one; a leader
keeps only what is left of its lease by its own clock) and is retried next round.

Leader-only writes go through :class:`FencedDatabase`, which re-reads
``(holder, term)`` with a shared row lock inside the same transaction: a paused
or partitioned old leader can never write after a new one took over (the new
leader's term update waits for, or invalidates, any fenced transaction).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from dockyard import config
from dockyard.server.errors import ServerError
from dockyard.store.db import Database, SessionTimeouts
from dockyard.store.tables import LeaderLease, ServerInstance

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = config.DEFAULT_LEASE_S
LEASE_ROW = 1
#: SQLSTATEs of PostgreSQL's session timeouts: lock_timeout, statement_timeout (and
#: a cancel), idle_in_transaction_session_timeout.
TIMEOUT_SQLSTATES = {
    "55P03": "lock timeout",
    "57014": "statement timeout",
    "25P03": "idle-in-transaction timeout",
}


def timed_out(exc: BaseException) -> str | None:
    """Which session timeout ``exc`` (a SQLAlchemy error) is, or None."""
    return TIMEOUT_SQLSTATES.get(str(getattr(getattr(exc, "orig", None), "sqlstate", None)))


class NotLeader(ServerError):
    """A leader-only write by an instance that is not (or no longer) the leader."""

    status_code = 503
    code = "not_leader"


def db_now(session: Session) -> float:
    """The database server's clock, epoch seconds (SQLite: this process's clock)."""
    if session.get_bind().dialect.name == "postgresql":
        return float(session.scalar(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")) or 0)
    return time.time()


class LeaderElector:
    """Runs the lease loop; calls ``on_elected(term)`` / ``on_deposed()`` on changes."""

    def __init__(
        self,
        db: Database,
        instance_id: str,
        on_elected: Callable[[int], None],
        on_deposed: Callable[[], None],
        lease_s: float = DEFAULT_LEASE_S,
        api_url: str = "",
        gateway: str = "",
    ) -> None:
        self._db = db
        self.instance_id = instance_id
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self.lease_s = lease_s
        self._api_url = api_url
        self._gateway = gateway
        self._single = db.is_sqlite  # one server per SQLite file: no one to wait for
        self._term: int | None = None
        self._renewed_mono = 0.0
        self._lock = threading.Lock()  # serialises transitions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader", daemon=True)
        self.fenced_writes = 0
        self.timeouts = 0  # lease attempts cut short by a session timeout
        # Bound every session of this store (a no-op on SQLite) before the first tick.
        db.set_session_timeouts(SessionTimeouts.for_lease(lease_s))
        # A connection to the store found dead (a terminated backend, a restart, a
        # cut): step down at once; the next tick decides again on a fresh connection.
        event.listen(db.write_engine.pool, "invalidate", self._on_invalidate)

    # -- state --------------------------------------------------------------
    @property
    def term(self) -> int | None:
        """The term this instance leads, or None. Expires by the local clock too, but
        not on the embedded SQLite store: no other instance can take over, and a lease
        renewal queued behind a burst of writes must not depose the only server."""
        term = self._term
        if (
            term is not None
            and not self._single
            and time.monotonic() - self._renewed_mono > self.lease_s
        ):
            return None
        return term

    @property
    def is_leader(self) -> bool:
        return self.term is not None

    # -- loop ---------------------------------------------------------------
    def start(self) -> None:
        self.tick()  # decide at once: a single SQLite server leads before it serves
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._step_down("stopping")
        with contextlib.suppress(SQLAlchemyError), self._db.write() as session:
            lease = session.get(LeaderLease, LEASE_ROW, with_for_update=True)
            if lease is not None and lease.holder == self.instance_id:
                lease.renewed_at = 0.0  # let a follower take over without waiting
            instance = session.get(ServerInstance, self.instance_id)
            if instance is not None:
                session.delete(instance)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self.tick()

    def tick(self) -> None:
        try:
            term = self._attempt()
        except SQLAlchemyError as exc:
            why = timed_out(exc)
            if why is None:
                log.warning("lease attempt failed: %s", exc)
                self._step_down("database unreachable")
                return
            # Not leader this round: nothing was decided (the transaction is rolled
            # back). A leader keeps what is left of its lease by its own clock and
            # retries next round; once that is gone, it steps down.
            self.timeouts += 1
            log.warning("lease attempt hit a %s; retrying next round", why)
            if self.term is None:
                self._step_down(f"lease not renewed within {self.lease_s}s ({why})")
            return
        except OSError as exc:
            log.warning("lease attempt failed: %s", exc)
            self._step_down("database unreachable")
            return
        if term is None:
            self._step_down("another instance holds the lease")
            return
        with self._lock:
            self._renewed_mono = time.monotonic()
            if self._term == term:
                return
            self._term = term
        log.warning("instance %s is the leader (term %d)", self.instance_id, term)
        self._on_elected(term)

    def _attempt(self) -> int | None:
        try:
            with self._db.write() as session:
                lease = session.get(LeaderLease, LEASE_ROW, with_for_update=True)
                # The clock is read once the row is ours: a wait for its lock (a fenced
                # write in flight, a frozen holder) must not make ``now`` stale, or this
                # instance would record a renewal in the past and the next one would
                # find the lease it just took already expired.
                now = db_now(session)
                term: int | None = None
                if lease is None:
                    session.add(
                        LeaderLease(
                            id=LEASE_ROW,
                            holder=self.instance_id,
                            term=1,
                            renewed_at=now,
                            lease_s=self.lease_s,
                        )
                    )
                    term = 1
                elif lease.holder == self.instance_id and lease.term == self._term:
                    lease.renewed_at = now
                    term = lease.term
                elif self._single or now - lease.renewed_at > lease.lease_s:
                    lease.holder = self.instance_id
                    lease.term += 1
                    lease.renewed_at = now
                    lease.lease_s = self.lease_s
                    term = lease.term
                self._note_instance(session, now, term)
                return term
        except IntegrityError:  # another instance created the row first
            return None

    def _note_instance(self, session: Session, now: float, term: int | None) -> None:
        instance = session.get(ServerInstance, self.instance_id)
        if instance is None:
            session.add(
                ServerInstance(
                    id=self.instance_id,
                    api_url=self._api_url,
                    gateway=self._gateway,
                    started_at=now,
                    seen_at=now,
                    term=term,
                )
            )
        else:
            instance.seen_at = now
            instance.term = term

    def _step_down(self, why: str) -> None:
        with self._lock:
            if self._term is None:
                return
            old, self._term = self._term, None
        log.warning("instance %s steps down from term %d: %s", self.instance_id, old, why)
        self._on_deposed()

    def _on_invalidate(self, *_: object) -> None:
        self._step_down("database connection lost")

    def fenced(self) -> None:
        """A fenced write found a newer term: stop leading now."""
        self.fenced_writes += 1
        self._step_down("a newer term exists (write fenced)")


class FencedDatabase(Database):
    """The same store (engines, sessions) as ``db``, but its writes succeed only for
    the current leader's term."""

    def __init__(self, db: Database, elector: LeaderElector) -> None:
        self.__dict__.update(db.__dict__)  # share engines and session factories
        self._inner = db
        self._elector = elector

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        term = self._elector.term
        if term is None:
            raise NotLeader("this instance is not the leader")
        with self._inner.write() as session:
            row = session.execute(
                select(LeaderLease.holder, LeaderLease.term)
                .where(LeaderLease.id == LEASE_ROW)
                .with_for_update(read=True)
            ).one_or_none()
            if row is None or row.holder != self._elector.instance_id or row.term != term:
                self._elector.fenced()
                raise NotLeader(f"term {term} is over; write refused")
            yield session
