"""Batch rules the scheduler applies before placement: array releases and
dependencies. Pure.

**Arrays** are stored compactly and their elements become tasks lazily:
:func:`release_count` says how many more to turn into tasks now, so that at most
``throttle`` elements are live (pending or placed) at once and at most ``window``
wait pending (the queue stays fed without holding every element as a row).

**Dependencies** are judged per dependency from the state of the job depended on
(:func:`judge`): met, still waiting, or never (the dependant fails). Cycles are
refused at submit (:func:`find_cycle`); since a job can only name jobs that
already exist, a stored graph never has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: At most this many elements of one array wait pending at once.
RELEASE_WINDOW = 2000

MET, WAIT, NEVER = "met", "wait", "never"


def release_count(
    total: int,
    released: int,
    live: int,
    pending: int,
    throttle: int | None,
    window: int = RELEASE_WINDOW,
) -> int:
    """How many more elements of an array to turn into tasks now.

    ``live``: its tasks pending or placed; ``pending``: those of them pending. The
    result keeps ``live + n <= throttle`` and ``pending + n <= window`` and never
    goes past the last element.
    """
    room = total - released
    room = min(room, window - pending)
    if throttle is not None:
        room = min(room, throttle - live)
    return max(0, room)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What a dependency needs to know of the job it waits for."""

    phase: str  # "pending", "running" or "ended"
    ok: bool = False  # ended, and every element's last attempt succeeded


def judge(kind: str, status: JobStatus | None) -> str:
    """MET, WAIT or NEVER for one dependency (``None``: the job is gone: NEVER)."""
    if status is None:
        return NEVER
    if status.phase != "ended":
        return WAIT
    if kind == "any":
        return MET
    if kind == "ok":
        return MET if status.ok else NEVER
    return NEVER if status.ok else MET  # notok


def judge_all(
    deps: Sequence[tuple[str, str]], statuses: Mapping[str, JobStatus]
) -> tuple[str, list[tuple[str, str, str]]]:
    """The verdict on a dependant: MET when all are met, NEVER when one never can
    be, else WAIT; and each dependency as (kind, job id, verdict)."""
    each = [(kind, job, judge(kind, statuses.get(job))) for kind, job in deps]
    verdicts = {v for _, _, v in each}
    if NEVER in verdicts:
        return NEVER, each
    if WAIT in verdicts:
        return WAIT, each
    return MET, each


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in the graph ``job -> jobs it waits for``, as a path, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour: dict[str, int] = {}
    for root in edges:
        if colour.get(root, WHITE) != WHITE:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = GREY
        while stack:
            node, i = stack[-1]
            nexts = edges.get(node, ())
            if i < len(nexts):
                stack[-1] = (node, i + 1)
                child = nexts[i]
                state = colour.get(child, WHITE)
                if state == GREY:
                    return [*path[path.index(child) :], child]
                if state == WHITE:
                    colour[child] = GREY
                    stack.append((child, 0))
                    path.append(child)
            else:
                colour[node] = BLACK
                stack.pop()
                path.pop()
    return None
