"""Image locality: among nodes a task fits, those that already have its image win."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dockyard.core.image_ref import tagged
from dockyard.core.resources import Resources
from dockyard.scheduler.placement import NodeView, TaskRequest, place

GIB = 1 << 30


def node(name: str, used_cpu: int, images: tuple[str, ...] = ()) -> NodeView:
    return NodeView(
        node_id=name,
        name=name,
        state="ready",
        capacity=Resources(4000, 8 * GIB),
        allocated=Resources(used_cpu, 0),
        images=frozenset(images),
    )


def task(tid: str, image: str = "") -> TaskRequest:
    return TaskRequest(tid, Resources(500, GIB), image=image)


def test_binpack_alone_picks_the_fuller_node() -> None:
    plan = place([task("t")], [node("full", 3000), node("empty", 0)])
    assert plan.assignments == {"t": "full"}


def test_a_node_with_the_image_is_preferred() -> None:
    nodes = [node("full", 3000), node("warm", 0, ("acme/app:1",))]
    plan = place([task("t", "acme/app:1")], nodes)
    assert plan.assignments == {"t": "warm"}


def test_found_beyond_the_usual_candidates() -> None:
    cold = [node(f"cold-{i:02d}", 3000) for i in range(200)]
    plan = place([task("t", "acme/app:1")], [*cold, node("warm", 0, ("acme/app:1",))])
    assert plan.assignments == {"t": "warm"}


def test_locality_never_overrides_fit() -> None:
    nodes = [node("full", 3000), node("warm-but-full", 4000, ("acme/app:1",))]
    plan = place([task("t", "acme/app:1")], nodes)
    assert plan.assignments == {"t": "full"}


def test_tagged_names_match_what_docker_lists() -> None:
    assert tagged("busybox") == "busybox:latest"
    assert tagged("registry:5000/team/app") == "registry:5000/team/app:latest"
    assert tagged("team/app:2") == "team/app:2"
    assert tagged("app@sha256:" + "a" * 64) == "app@sha256:" + "a" * 64


@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(0, 3500))
def test_placed_on_an_image_node_whenever_one_fits(has: list[bool], used: int) -> None:
    nodes = [
        node(f"n{i:02d}", used if not h else 0, ("acme/app:1",) if h else ())
        for i, h in enumerate(has)
    ]
    plan = place([task("t", "acme/app:1")], nodes)
    chosen = plan.assignments["t"]
    if any(has):
        assert "acme/app:1" in next(n for n in nodes if n.node_id == chosen).images
