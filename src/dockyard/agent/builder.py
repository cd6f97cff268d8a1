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
from typing import Any

from dockyard.drivers.base import LABEL_OWNER, Driver
from dockyard.drivers.errors import DriverError
from dockyard.protocol.messages import MsgType

log = logging.getLogger(__name__)

BATCH_S = 0.25
MAX_SEEN = 1000


class Builder:
    def __init__(self, driver: Driver, send: Callable[[MsgType, dict[str, Any]], str]) -> None:
        self._driver = driver
        self._send = send
        self._lock = threading.Lock()
        self._seen: dict[str, None] = {}

    def handle(self, body: dict[str, Any]) -> None:
        build_id = str(body.get("build_id") or "")
        context = body.get("context")
        tag = str(body.get("tag") or "")
        if not build_id or not isinstance(context, bytes) or not tag:
            log.warning("ignoring malformed build message")
            return
        with self._lock:
            if build_id in self._seen:
                return
            self._seen[build_id] = None
            while len(self._seen) > MAX_SEEN:
                self._seen.pop(next(iter(self._seen)))
        thread = threading.Thread(
            target=self._run,
            args=(build_id, context, tag, str(body.get("dockerfile") or "Dockerfile")),
            kwargs={"owner": str(body.get("owner") or "")},
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
                self._send(
                    MsgType.BUILD_OUTPUT, {"build_id": build_id, "seq": seq, "lines": pending}
                )
                seq += len(pending)
                pending = []
            last_flush = time.monotonic()

        def on_line(line: str) -> None:
            pending.append(line[:4000])
            if time.monotonic() - last_flush >= BATCH_S or len(pending) >= 200:
                flush()

        self._send(MsgType.BUILD_OUTPUT, {"build_id": build_id, "seq": -1, "lines": []})
        result: dict[str, Any] = {"build_id": build_id, "tag": tag}
        try:
            labels = {LABEL_OWNER: owner} if owner else {}
            image_id = self._driver.build(context, tag, on_line, dockerfile, labels)
            result.update(ok=True, image_id=image_id)
        except DriverError as exc:
            result.update(ok=False, error=str(exc))
        except Exception as exc:  # a bug must still end the build
            log.exception("build %s crashed", build_id)
            result.update(ok=False, error=f"build crashed: {exc}")
        flush()
        result["lines"] = seq
        self._send(MsgType.BUILD_DONE, result)
