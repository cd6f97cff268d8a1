"""The agent's pool of watcher threads (agent/watchers.py): idle threads are reused,
work never waits behind blocked threads, and a blocked watcher never keeps the
agent process from exiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from dockyard.agent.watchers import Watchers
from dockyard.testing.wait import wait_for


def _named(prefix: str) -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(prefix)}


def test_blocked_work_gets_new_threads_and_finished_threads_are_reused() -> None:
    pool = Watchers(name="t-reuse")
    release = threading.Event()
    try:
        blocked = [pool.submit(release.wait, 10) for _ in range(3)]
        # None of the three waits for another: each runs at once on its own thread.
        wait_for(lambda: all(f.running() for f in blocked), timeout=5, message="3 running")
        assert len(_named("t-reuse")) == 3
        release.set()
        assert [f.result(timeout=5) for f in blocked] == [True, True, True]
        again = [pool.submit(lambda x: x * 2, i) for i in range(3)]
        assert [f.result(timeout=5) for f in again] == [0, 2, 4]
        assert len(_named("t-reuse")) == 3  # the idle threads served: none started
    finally:
        release.set()
        pool.shutdown()


def test_an_exception_reaches_the_future() -> None:
    pool = Watchers(name="t-exc")
    try:

        def boom() -> None:
            raise ValueError("no")

        error = pool.submit(boom).exception(timeout=5)
        assert isinstance(error, ValueError)
    finally:
        pool.shutdown()


def test_a_watcher_blocked_forever_does_not_keep_the_process_alive() -> None:
    # ThreadPoolExecutor joins its threads at exit: an agent whose containers outlive
    # it (they are adopted by the next agent) would never exit.
    code = textwrap.dedent(
        """
        import threading
        from dockyard.agent.watchers import Watchers
        pool = Watchers()
        started = threading.Event()
        pool.submit(lambda: (started.set(), threading.Event().wait()))
        assert started.wait(5)
        print("exiting", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "exiting" in done.stdout
