"""Removing checkpoints once their job is over for good.

A checkpointing job's attempts share a checkpoint (docs/scheduler.md, Cooperative
checkpoints): a Docker volume labelled ``io.dockyard.checkpoint`` on a node, or a
directory ``<checkpoint_root>/<owner>/ckpt-...`` when nodes share a root. The agent
never judges one by itself: every ``interval`` (on the cleanup thread of
``agent/orphans.py``) it names at most ``MAX_ASKED`` of those it holds, taking
turns through them, and asks the server (``checkpoints``, reliable); the answer
(``checkpoints_over``) names those whose job, array element or gang has no attempt
left or was removed. Only those are removed; a volume a container still uses is
tried again at a later pass. Several agents sharing an Engine or a root may remove
the same one: whoever comes second finds it gone.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from dockyard.core.checkpoints import PREFIX, parse_key
from dockyard.drivers.base import Driver
from dockyard.protocol.messages import AgentMessage, Checkpoints, CheckpointsOver

log = logging.getLogger(__name__)

#: How often the agent asks about the checkpoints it holds.
CHECK_EVERY_S = 10.0
#: At most this many checkpoints per question (and so removed per pass).
MAX_ASKED = 100


class CheckpointSweeper:
    """Asks about the checkpoints held here and removes those the server says are over."""

    def __init__(
        self,
        driver: Driver,
        node_id: str,
        send_reliable: Callable[[AgentMessage], str],
        pending: Callable[[str], bool],
        root: Path | None = None,
    ) -> None:
        self._driver = driver
        self._node_id = node_id
        self._send = send_reliable
        self._pending = pending
        self._root = root
        self._asked = ""  # id of the last question, not asked again while unanswered
        self._asked_keys: frozenset[str] = frozenset()
        self._cursor = ""  # the last key asked about: the next question starts after it
        self._failed: set[str] = set()  # removals logged as failed (once each)
        self.answers = 0  # answers handled (tests)
        self.removed = 0  # checkpoints removed (tests, logs)

    def held(self) -> tuple[set[str], set[str]]:
        """The keys of the checkpoints held here: volumes, directories under the root."""
        volumes = {f"{owner}/{name}" for owner, name in self._driver.checkpoint_volumes()}
        dirs = set(self._directories(self._root)) if self._root is not None else set()
        return volumes, dirs

    @staticmethod
    def _directories(root: Path) -> list[str]:
        keys: list[str] = []
        try:
            with os.scandir(root) as owners:
                for owner in owners:
                    if not owner.is_dir(follow_symlinks=False):
                        continue
                    with os.scandir(owner.path) as entries:
                        keys.extend(
                            f"{owner.name}/{e.name}"
                            for e in entries
                            if e.name.startswith(PREFIX) and e.is_dir(follow_symlinks=False)
                        )
        except FileNotFoundError:
            return keys
        return keys

    def ask(self) -> tuple[str, ...]:
        """Ask about the next (at most) MAX_ASKED checkpoints held here, in turn; once
        at a time (not again while a question is unacknowledged). Returns them."""
        if self._asked and self._pending(self._asked):
            return ()
        volumes, dirs = self.held()
        keys = sorted(k for k in volumes | dirs if parse_key(k) is not None)
        later = [k for k in keys if k > self._cursor] or keys
        batch = tuple(later[:MAX_ASKED])
        if not batch:
            return ()
        self._cursor = batch[-1]
        self._asked_keys = frozenset(batch)
        self._asked = self._send(Checkpoints(self._node_id, batch))
        return batch

    def remove(self, msg: CheckpointsOver) -> list[str]:
        """Remove the checkpoints the answer names (only ones asked about). Returns
        the keys removed."""
        self.answers += 1
        volumes, dirs = self.held()
        removed = []
        for key in msg.keys[:MAX_ASKED]:
            if parse_key(key) is None or key not in self._asked_keys:
                continue
            if key not in volumes and key not in dirs:
                continue
            try:
                gone = (key not in dirs or self._remove_dir(key)) and (
                    key not in volumes or self._remove_volume(key)
                )
            except Exception as exc:  # a driver or file system error: next pass
                if key not in self._failed:
                    self._failed.add(key)
                    log.warning("removing checkpoint %s failed: %s", key, exc)
                continue
            if gone:
                removed.append(key)
                self._failed.discard(key)
        if removed:
            log.info("removed %d checkpoint(s) of jobs that are over", len(removed))
        self.removed += len(removed)
        return removed

    def _remove_volume(self, key: str) -> bool:
        owner, name = key.split("/", 1)
        return self._driver.remove_volume(owner, name)

    def _remove_dir(self, key: str) -> bool:
        assert self._root is not None
        path = self._root / key  # both parts checked by parse_key: no "..", no "/"
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass  # another node sharing the root removed it first
        return True
