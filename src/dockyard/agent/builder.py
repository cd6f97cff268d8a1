"""Image builds on this node, asked for by the server with a ``build`` message.

Each build runs on its own thread through the driver; output lines are batched
into reliable ``build_output`` messages and the result is a reliable
``build_done``. A build id seen before is ignored (the server may re-send).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dockyard.drivers.base import LABEL_OWNER, Driver
from dockyard.drivers.errors import DriverError
from dockyard.protocol.messages import AgentMessage, Build, BuildDone, BuildOutput

log = logging.getLogger(__name__)

BATCH_S = 0.25
MAX_SEEN = 1000


class Builder:
    def __init__(self, driver: Driver, node_id: str, send: Callable[[AgentMessage], str]) -> None:
        self._driver = driver
        self._node_id = node_id
        self._send = send
        self._lock = threading.Lock()
        self._seen: dict[str, None] = {}

    def handle(self, msg: Build) -> None:
        build_id = msg.build_id
        if not build_id or not msg.tag:
            log.warning("ignoring a build message without a build id or tag")
            return
        with self._lock:
            if build_id in self._seen:
                return
            self._seen[build_id] = None
            while len(self._seen) > MAX_SEEN:
                self._seen.pop(next(iter(self._seen)))
        thread = threading.Thread(
            target=self._run,
            args=(build_id, msg.context, msg.tag, msg.dockerfile or "Dockerfile"),
            kwargs={"owner": msg.owner},
            name=f"build-{build_id}",
            daemon=True,
        )
        thread.start()

    def _run(self, build_id: str, context: bytes, tag: str, dockerfile: str, owner: str) -> None:
        pending: list[str] = []
        last_flush = time.monotonic()
        seq = 0

        def flush() -> None:
            nonlocal pending, last_flush, seq
            if pending:
                self._send(BuildOutput(self._node_id, build_id, seq, tuple(pending)))
                seq += len(pending)
                pending = []
            last_flush = time.monotonic()

        def on_line(line: str) -> None:
            pending.append(line[:4000])
            if time.monotonic() - last_flush >= BATCH_S or len(pending) >= 200:
                flush()

        self._send(BuildOutput(self._node_id, build_id, -1, ()))  # it began
        ok, image_id, error = False, "", ""
        try:
            labels = {LABEL_OWNER: owner} if owner else {}
            image_id = self._driver.build(context, tag, on_line, dockerfile, labels)
            ok = True
        except DriverError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must still end the build
            log.exception("build %s crashed", build_id)
            error = f"build crashed: {exc}"
        flush()
        self._send(BuildDone(self._node_id, build_id, tag, ok, seq, image_id, error))
