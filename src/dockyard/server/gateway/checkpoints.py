"""Answering agents about the checkpoints they hold (``checkpoints``).

An agent lists its labelled checkpoint volumes and the directories under its shared
``checkpoint_root`` and asks, at most 100 at a time; the answer
(``checkpoints_over``) names those whose job, array element or gang is over for
good (``state/checkpoints.over_for_good``). Only those are removed, so a requeued
attempt always finds its checkpoint; a lost answer costs one more question.
"""

from __future__ import annotations

from dockyard.protocol.messages import Checkpoints, CheckpointsOver
from dockyard.server.gateway.gateway import Gateway
from dockyard.server.state.checkpoints import over_for_good
from dockyard.store.db import Database


class CheckpointCheck:
    """The gateway handler for ``checkpoints`` (apply thread)."""

    def __init__(self, db: Database, gateway: Gateway) -> None:
        self._db = db
        self._gateway = gateway

    def wire(self) -> None:
        self._gateway.handle(Checkpoints, self.on_checkpoints)

    def on_checkpoints(self, node_id: str, msg: Checkpoints) -> None:
        with self._db.read() as session:
            done = over_for_good(session, msg.keys)
        self._gateway.send(node_id, CheckpointsOver(tuple(done)))
