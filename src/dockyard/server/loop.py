"""The shape of the server's background threads: a step every interval, or when woken."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Loop:
    """A thread that runs ``step`` every ``interval`` seconds or when woken."""

    name = "loop"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.started:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.step()
            except Exception:
                log.exception("%s step failed", self.name)

    def step(self) -> None:
        raise NotImplementedError
