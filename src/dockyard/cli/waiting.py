"""Waiting for a task from the CLI: ``run --wait``, ``run --attach`` and ``logs -f`` end
with the task's own exit code, like ``docker run`` / ``srun`` / ``sbatch --wait``.

Exit codes (docs/cli-json.md, "Exit codes"):

* the task's container exit code once it ended (0 when it succeeded; a kill gives
  what the container returned, usually 137 or 143);
* :data:`DOCKYARD_FAILED` (125, as ``docker run`` uses it) when dockyard itself failed:
  the submission was refused, the server could not be reached, or the task ended
  without an exit code of its own (``image_not_found``, ``image_pull_failed``,
  ``start_failed``, ``node_lost``, killed while pending, ...). The reason is printed on
  stderr.

A job with a restart policy is followed through its attempts: the code is the last
attempt's.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, NoReturn

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.client import Client, ClientError

#: dockyard (not the task) failed: refused, unreachable, or no exit code of the task's own.
DOCKYARD_FAILED = 125
TERMINAL = frozenset({"succeeded", "failed", "killed", "lost", "expired"})
POLL_S = (0.2, 0.5, 1.0)


def die(message: str, code: int = DOCKYARD_FAILED) -> NoReturn:
    render.err_console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def exit_code(task: dict[str, Any]) -> int:
    """The code a waiting command exits with for an ended task."""
    if task["state"] == "succeeded":
        return 0
    code = task.get("exit_code")
    if isinstance(code, int) and code != 0:
        return code
    return DOCKYARD_FAILED


def report_end(task: dict[str, Any]) -> int:
    """Say on stderr how a task that did not succeed ended; its exit code."""
    code = exit_code(task)
    if code != 0:
        detail = render.task_reason(task) or task["state"]
        render.err_console.print(
            f"dockyard: task {task['id']} {task['state']} ({escape(detail)}), exit code {code}"
        )
    return code


def next_attempt(api: Client, task: dict[str, Any]) -> dict[str, Any] | None:
    """The attempt that replaced ``task`` (a restart policy's retry), if any."""
    for other in api.tasks(q=task["name"], limit=200):
        if other.get("previous_task_id") == task["id"]:
            return dict(other)
    return None


#: The agent's pull progress, as its ``pulling`` status message says it.
_PULLED = re.compile(r"(\d{1,3})% of ")


def pull_percent(task: dict[str, Any]) -> int | None:
    """How much of its image a ``pulling`` task has (0-100), if the node said."""
    if task.get("state") != "pulling":
        return None
    found = _PULLED.search(str(task.get("message") or ""))
    return min(100, int(found.group(1))) if found else None


class StatusLine:
    """On a terminal, the waited-for task as one live line on stderr: its state and
    message, with a bar while its image is pulled (``pulling ...: 42% of 80 MiB``).
    Nothing when stderr is not a terminal (scripts, ``--json``)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self._enabled = render.err_console.is_terminal if enabled is None else enabled
        self._progress: Any = None
        self._bar: Any = None

    def __enter__(self) -> StatusLine:
        if self._enabled:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                console=render.err_console,
                transient=True,
            )
            self._progress.start()
            self._bar = self._progress.add_task("waiting", total=None)
        return self

    def show(self, task: dict[str, Any]) -> None:
        if self._progress is None:
            return
        detail = str(task.get("message") or task.get("reason") or "")
        text = f"{task['id']} {task['state']}" + (f": {detail}" if detail else "")
        done = pull_percent(task)
        self._progress.update(
            self._bar, description=escape(text[:100]), total=None if done is None else 100
        )
        if done is not None:
            self._progress.update(self._bar, completed=done)
        self._progress.refresh()  # each poll is shown, not only the next auto-refresh

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


def wait(api: Client, task_id: str, status: StatusLine | None = None) -> dict[str, Any]:
    """Poll until the task (and any retry of it) ended; the last attempt. On a
    terminal its state (and an image pull's progress) is shown as it goes."""
    with status or StatusLine() as line:
        polls = 0
        while True:
            task = api.task(task_id)
            if task["state"] in TERMINAL:
                follow_up = next_attempt(api, task)
                if follow_up is None:
                    return task
                task_id = follow_up["id"]
                continue
            line.show(task)
            time.sleep(POLL_S[min(polls, len(POLL_S) - 1)])
            polls += 1


def print_line(item: dict[str, Any], json_out: bool, timestamps: bool = False) -> None:
    if json_out:
        print(json.dumps(item, sort_keys=True), flush=True)
        return
    text = f"{item['ts']} {item['line']}" if timestamps else item["line"]
    print(text, file=sys.stderr if item["stream"] == "stderr" else sys.stdout, flush=True)


def follow(
    api: Client, ref: str, after: int = 0, stream: str | None = None
) -> Iterator[dict[str, Any]]:
    """A task's log lines as they come, until it ends (the ``end`` item is dropped)."""
    for item in api.follow_logs(ref, after=after, stream=stream):
        if item.get("end"):
            return
        yield item


def attach(api: Client, task_id: str, json_out: bool = False, timestamps: bool = False) -> int:
    """Stream a task's logs (and its retries') until it ended; its exit code."""
    while True:
        for item in follow(api, task_id):
            print_line(item, json_out, timestamps)
        task = wait_ended(api, task_id)
        follow_up = next_attempt(api, task)
        if follow_up is None:
            return report_end(task)
        task_id = follow_up["id"]


def wait_ended(api: Client, task_id: str) -> dict[str, Any]:
    """The task once terminal (the log stream may end a moment before the state shows)."""
    polls = 0
    while True:
        task = api.task(task_id)
        if task["state"] in TERMINAL:
            return task
        time.sleep(POLL_S[min(polls, len(POLL_S) - 1)])
        polls += 1


def guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(...)``; an API error exits :data:`DOCKYARD_FAILED` with its message."""
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        die(f"{exc} (field: {exc.field})" if exc.field else str(exc))
