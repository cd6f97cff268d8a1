"""run --wait on a terminal: the task's state as it goes, a bar while its image is pulled."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from dockyard.cli import render, waiting


class Tasks:
    """Answers api.task() with the given states in turn (the last one stays)."""

    def __init__(self, *states: dict[str, Any]) -> None:
        self.states = list(states)
        self.asked = 0

    def task(self, ref: str) -> dict[str, Any]:
        self.asked += 1
        return {"id": ref, "name": "job", **self.states[min(self.asked, len(self.states)) - 1]}

    def tasks(self, **_: Any) -> list[dict[str, Any]]:
        return []  # no retry


def test_pull_percent_reads_the_agents_progress_message() -> None:
    msg = "pulling busybox:1: 42% of 80 MiB"
    assert waiting.pull_percent({"state": "pulling", "message": msg}) == 42
    assert waiting.pull_percent({"state": "pulling", "message": "pulling busybox:1"}) is None
    assert waiting.pull_percent({"state": "running", "message": msg}) is None
    assert waiting.pull_percent({"state": "pulling", "message": "pulling x: 250% of 1 MiB"}) == 100


def test_wait_shows_the_state_and_the_pull_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(render, "err_console", Console(file=out, force_terminal=True, width=120))
    monkeypatch.setattr(waiting, "POLL_S", (0.0,))
    api = Tasks(
        {"state": "pending", "message": "", "reason": "queued"},
        {"state": "pulling", "message": "pulling busybox:1: 42% of 80 MiB"},
        {"state": "running", "message": ""},
        {"state": "succeeded", "exit_code": 0},
    )
    with waiting.StatusLine(enabled=True) as line:
        ended = waiting.wait(api, "t-1", line)  # type: ignore[arg-type]
    assert ended["state"] == "succeeded"
    shown = out.getvalue()
    assert "t-1 pending: queued" in shown and "42% of 80 MiB" in shown and "t-1 running" in shown


def test_nothing_is_shown_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(render, "err_console", Console(file=out, force_terminal=False))
    monkeypatch.setattr(waiting, "POLL_S", (0.0,))
    api = Tasks({"state": "pulling", "message": "pulling a: 5% of 1 MiB"}, {"state": "failed"})
    assert waiting.wait(api, "t-2")["state"] == "failed"  # type: ignore[arg-type]
    assert out.getvalue() == ""
