"""The typed wire messages: round trips, the frames of today's format, malformed bodies."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.protocol.messages import (
    FROM_AGENT,
    FROM_SERVER,
    VERSION,
    Ack,
    Build,
    BuildDone,
    BuildOutput,
    Checkpoints,
    CheckpointsOver,
    Desired,
    DesiredEntry,
    Endpoints,
    ExecClose,
    ExecExit,
    ExecInput,
    ExecOutput,
    ExecResize,
    ExecStart,
    Foreign,
    HealthReport,
    Heartbeat,
    Hello,
    LogLine,
    Logs,
    Message,
    MsgType,
    Orphans,
    ProtocolError,
    Prune,
    Pruned,
    Reaped,
    Refused,
    Rehello,
    Status,
    TaskStatus,
    TaskTemplate,
    TaskUsage,
    Usage,
    UsageSample,
    Welcome,
    decode,
    encode,
)

UUID = "GPU-5f3e2a1b-0000-4c1d-9e8f-aaaaaaaaaaaa"
TEMPLATE = TaskTemplate(
    command=("sh", "-c", "echo hi"),
    env={"A": "1"},
    kill_grace_s=30.0,
    mounts=({"source": "/data", "target": "/in", "read_only": True, "kind": "bind"},),
    security={"privileged": False, "cap_add": ("NET_ADMIN",), "sysctls": {}},
    policy={"allowed_roots": ("/data",), "allow_privileged": False},
    health={"kind": "http", "path": "/h", "interval_s": 2.0},
)
FINAL = TaskStatus(
    "t1",
    "failed",
    "exit_nonzero",
    "boom",
    exit_code=3,
    container_id="c1",
    started_at="2024-01-01T00:00:00Z",
    finished_at="2024-01-01T00:00:01Z",
    forced=True,
    log_lines_total=12,
    usage=TaskUsage(1.5, 1 << 20, 0.25),
)

#: Every message type, with every optional field set, and lean variants.
SAMPLES: list[Message] = [
    Hello(
        node_id="n-1",
        name="node-a",
        address="10.0.0.5",
        driver="docker",
        version="0.1.0",
        cpu_millis=4000,
        memory_bytes=8 << 30,
        labels={"zone": "a"},
        images=("busybox:latest",),
        gpus=(0, 2),
        gpu_uuids={"0": UUID},
        join_token="dyj.s.k",
    ),
    Hello("n-1", "", "127.0.0.1", "sim", "bench", 1000, 1 << 30),
    Heartbeat("n-1", 1.7e9, 3, 12.5, 1 << 30, 2, 1, images=("a:1", "b:2")),
    Heartbeat("n-1", 1.7e9, 3, 12, 1 << 30, 0, 0),
    Status("n-1", (TaskStatus("t1", "running", "started", container_id="c1"), FINAL)),
    Status("n-1", (TaskStatus("t2", "starting", "creating"),)),
    Logs("n-1", (LogLine("t1", "stdout", 1, "2024-01-01T00:00:00Z", "hi"),)),
    Logs("n-1", (LogLine("t1", "stderr", 2, "", ""), LogLine("t2", "stdout", 1, "ts", "x"))),
    Usage("n-1", (UsageSample("t1", 1.5, 1 << 20, 0.25), UsageSample("t2", 0, 0, 0))),
    HealthReport("n-1", "t1", "healthy", "GET /h -> 200", 1.7e9),
    Pruned("n-1", 3),
    BuildOutput("n-1", "b1", -1, ()),
    BuildOutput("n-1", "b1", 0, ("Step 1/2 : FROM busybox", "")),
    BuildDone("n-1", "b1", "alice/app:latest", True, 2, image_id="sha256:abc"),
    BuildDone("n-1", "b1", "alice/app:latest", False, 0, error="no Dockerfile"),
    ExecOutput("n-1", "e1", 0, "stdout", b"\x00\xffhi"),
    ExecExit("n-1", "e1", 0, "", 3),
    ExecExit("n-1", "e1", None, "task is not running here"),
    Welcome(2.0),
    Welcome(1),
    Refused("no valid join token"),
    Desired(
        "n-1",
        7,
        (
            DesiredEntry(
                "t1",
                "busybox",
                100,
                16 << 20,
                TEMPLATE,
                workload_id="w1",
                owner="u1",
                gpus=(1,),
                ports=(8080,),
                port_map=((8080, 30001),),
                desired="stop",
                log_offsets={"stdout": 5, "stderr": 0},
            ),
            DesiredEntry("t2", "nginx", 1000, 1 << 30),
        ),
    ),
    Desired("n-1", 1, ()),
    Endpoints("n-1", {"0123456789ab": {"internal": False, "names": {"api": {"tcp": {}}}}}),
    Ack(("m-1", "m-2")),
    Ack(()),
    Rehello(),
    Prune(),
    Build("b1", "alice/app:latest", "alice", "Dockerfile", b"\x1f\x8b tar"),
    ExecStart("e1", "t1", ("sh",), tty=True, stdin=True, cols=120, rows=40),
    ExecStart("e1", "t1", ("ls", "-l")),
    ExecInput("e1", b"ls\n"),
    ExecResize("e1", 100, 30),
    ExecClose("e1"),
    Foreign("n-1", ("n-old", "n-other")),
    Orphans(("n-old",)),
    Reaped("n-1", "n-old", ("t1", "t2")),
    Checkpoints("n-1", ("u1/ckpt-w1", "u1/ckpt-w2-3")),
    CheckpointsOver(("u1/ckpt-w1",)),
]


def _frame(name: str, body: Any, msg_id: Any = "", version: Any = VERSION) -> bytes:
    return bytes(msgpack.packb({"v": version, "t": name, "id": msg_id, "b": body}))


def _body(msg: Message) -> dict[str, Any]:
    """The body as it travels (sequences as lists), through a real frame."""
    body = msgpack.unpackb(encode(msg))["b"]
    assert isinstance(body, dict)
    return body


def test_every_message_type_has_a_class_and_a_sample() -> None:
    classes = (*FROM_AGENT, *FROM_SERVER)
    assert sorted(cls.TYPE.value for cls in classes) == sorted(m.value for m in MsgType)
    assert {type(m) for m in SAMPLES} == set(classes)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    assert decode(encode(msg, "m-1")) == (msg, "m-1")
    assert decode(encode(msg)) == (msg, "")
    # A body built in Python (lists, not tuples) decodes to the same message (the maps
    # inside a desired entry's template are left as they come: compared on the wire).
    assert encode(type(msg).decode(_body(msg))) == encode(msg)


# -- the frames of today's format --------------------------------------------------
def test_heartbeat_frame_is_byte_for_byte_the_old_one() -> None:
    beat = Heartbeat("n-1", 1.7e9, 3, 12.5, 1 << 30, 2, 1)
    old = {
        "node_id": "n-1",
        "sent_at": 1.7e9,
        "generation": 3,
        "usage": {"cpu_percent": 12.5, "memory_bytes": 1 << 30},
        "running": 2,
        "unacked": 1,
    }
    assert encode(beat) == _frame("heartbeat", old)
    with_images = Heartbeat("n-1", 1.7e9, 3, 12.5, 1 << 30, 2, 1, images=("a:1",))
    assert encode(with_images) == _frame("heartbeat", {**old, "images": ["a:1"]})


def test_desired_entry_has_the_keys_and_order_of_the_old_entries() -> None:
    desired = SAMPLES[21]
    assert isinstance(desired, Desired)
    entry = _body(desired)["tasks"][0]
    assert list(entry) == [
        "command",
        "env",
        "kill_grace_s",
        "mounts",
        "security",
        "policy",
        "health",
        "task_id",
        "workload_id",
        "owner",
        "image",
        "cpu_millis",
        "memory_bytes",
        "gpus",
        "ports",
        "port_map",
        "desired",
        "log_offsets",
    ]
    assert entry["port_map"] == [[8080, 30001]]
    assert entry["log_offsets"] == {"stdout": 5, "stderr": 0}


def test_hello_status_and_reliable_bodies_keep_their_keys() -> None:
    hello = _body(SAMPLES[0])
    assert list(hello) == [
        "node_id",
        "join_token",
        "name",
        "address",
        "driver",
        "version",
        "labels",
        "images",
        "capacity",
    ]
    assert hello["capacity"] == {
        "cpu_millis": 4000,
        "memory_bytes": 8 << 30,
        "gpus": [0, 2],
        "gpu_uuids": {"0": UUID},
    }
    final = _body(Status("n-1", (FINAL,)))["updates"][0]
    assert set(final) == {
        "task_id",
        "state",
        "reason",
        "exit_code",
        "container_id",
        "started_at",
        "finished_at",
        "forced",
        "log_lines_total",
        "message",
        "usage",
    }
    # Optional keys are written only when set.
    assert _body(Status("n-1", (TaskStatus("t", "starting", "creating"),)))["updates"] == [
        {"task_id": "t", "state": "starting", "reason": "creating"}
    ]
    assert _body(SAMPLES[6])["lines"] == [["t1", "stdout", 1, "2024-01-01T00:00:00Z", "hi"]]
    assert _body(SAMPLES[8])["samples"][0] == ["t1", 1.5, 1 << 20, 0.25]
    assert _body(SAMPLES[17]) == {
        "node_id": "n-1",
        "exec_id": "e1",
        "exit_code": None,
        "error": "task is not running here",
    }


def test_bodies_as_the_old_code_built_them_decode() -> None:
    """Keys the old senders always wrote, with their empty values, read as the defaults."""
    old_final = {
        "task_id": "t1",
        "state": "succeeded",
        "reason": "exit_zero",
        "exit_code": None,
        "container_id": "c1",
        "started_at": None,
        "finished_at": None,
        "forced": False,
        "log_lines_total": 0,
        "message": "",
        "usage": {"cpu_s": 0.0, "max_memory_bytes": 0, "memory_gib_s": 0.0},
    }
    msg, msg_id = decode(_frame("status", {"node_id": "n-1", "updates": [old_final]}, "m-9"))
    assert msg_id == "m-9"
    assert msg == Status(
        "n-1",
        (
            TaskStatus(
                "t1",
                "succeeded",
                "exit_zero",
                container_id="c1",
                log_lines_total=0,
                usage=TaskUsage(0.0, 0, 0.0),
            ),
        ),
    )
    done = {"build_id": "b", "tag": "u/x:1", "ok": True, "image_id": "", "lines": 0}
    assert decode(_frame("build_done", {"node_id": "n-1", **done}))[0] == BuildDone(
        "n-1", "b", "u/x:1", True, 0
    )


def test_status_merged_keeps_the_order() -> None:
    a, b = TaskStatus("t1", "running", "started"), TaskStatus("t1", "succeeded", "exit_zero")
    assert Status("n", (a,)).merged(Status("n", (b,))) == Status("n", (a, b))


# -- malformed frames and bodies -----------------------------------------------------
HELLO_BODY = _body(SAMPLES[0])
BEAT_BODY = _body(SAMPLES[3])
ENTRY = _body(SAMPLES[21])["tasks"][0]


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (b"\xc1", "undecodable"),
        (b"", "undecodable"),
        (bytes(msgpack.packb([1, 2])), "not a map"),
        (_frame("heartbeat", BEAT_BODY, version=2), "version"),
        (_frame("heartbeat", BEAT_BODY, version=None), "version"),
        (_frame("nope", {}), "unknown message type"),
        (bytes(msgpack.packb({"v": 1, "t": 5, "b": {}})), "unknown message type"),
        (_frame("heartbeat", [1]), "body is not a map"),
        (_frame("heartbeat", BEAT_BODY, msg_id=5), "id is not a string"),
        (bytes(msgpack.packb({"v": 1, "t": "ack", "id": "", "b": {1: 2}})), "undecodable"),
    ],
)
def test_malformed_frames(frame: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        decode(frame)


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        ("heartbeat", _without(BEAT_BODY, "generation"), "missing field 'generation'"),
        ("heartbeat", {**BEAT_BODY, "generation": "3"}, "'generation' is str"),
        ("heartbeat", {**BEAT_BODY, "generation": True}, "'generation' is bool"),
        ("heartbeat", {**BEAT_BODY, "node_id": None}, "'node_id' is NoneType"),
        ("heartbeat", {**BEAT_BODY, "sent_at": "now"}, "'sent_at' is str"),
        ("heartbeat", {**BEAT_BODY, "usage": [1]}, "'usage' is"),
        ("heartbeat", {**BEAT_BODY, "usage": {"cpu_percent": 1.0}}, "usage.memory_bytes"),
        ("heartbeat", {**BEAT_BODY, "images": "a:1"}, "'images' is str"),
        ("heartbeat", {**BEAT_BODY, "images": [1]}, r"'images\[\]' is int"),
        ("hello", _without(HELLO_BODY, "capacity"), "missing field 'capacity'"),
        ("hello", {**HELLO_BODY, "capacity": {"cpu_millis": "4"}}, "'cpu_millis' is str"),
        ("hello", {**HELLO_BODY, "labels": {"zone": 1}}, "labels"),
        ("hello", {**HELLO_BODY, "join_token": None}, "'join_token'"),
        (
            "hello",
            {**HELLO_BODY, "capacity": {**HELLO_BODY["capacity"], "gpu_uuids": ["GPU-1"]}},
            "'gpu_uuids' is",
        ),
        ("status", {"node_id": "n", "updates": [{"state": "running"}]}, "'task_id'"),
        ("status", {"node_id": "n", "updates": ["running"]}, "a status update is str"),
        ("status", {"node_id": "n", "updates": {}}, "'updates' is dict"),
        (
            "status",
            {"node_id": "n", "updates": [{"task_id": "t", "state": "x", "reason": "", "usage": 1}]},
            "usage is int",
        ),
        (
            "status",
            {
                "node_id": "n",
                "updates": [{"task_id": "t", "state": "x", "reason": "", "forced": 1}],
            },
            "'forced' is int",
        ),
        ("logs", {"node_id": "n", "lines": [["t", "stdout", 1, "ts"]]}, "an array of 5"),
        ("logs", {"node_id": "n", "lines": [["t", "stdout", "1", "ts", "x"]]}, "log line"),
        ("logs", {"node_id": "n", "lines": [{"t": 1}]}, "an array of 5"),
        ("usage", {"node_id": "n", "samples": [["t", 1.0, 2.5, 0.0]]}, "usage sample"),
        ("health", {"node_id": "n", "task_id": "t", "health": "healthy"}, "missing"),
        ("exec_output", {"node_id": "n", "exec_id": "e", "seq": 0, "stream": "stdout"}, "'data'"),
        (
            "exec_output",
            {"node_id": "n", "exec_id": "e", "seq": 0, "stream": "stdout", "data": "text"},
            "'data' is str, not binary",
        ),
        ("exec_exit", {"node_id": "n", "exec_id": "e", "error": ""}, "'exit_code'"),
        ("welcome", {"heartbeat_interval": "2"}, "'heartbeat_interval' is str"),
        ("ack", {"ids": "m-1"}, "'ids' is str"),
        ("desired", {"node_id": "n", "generation": 1, "tasks": [["t"]]}, "a desired task is"),
        (
            "desired",
            {"node_id": "n", "generation": 1, "tasks": [{**ENTRY, "port_map": [[8080]]}]},
            "port_map",
        ),
        (
            "desired",
            {"node_id": "n", "generation": 1, "tasks": [{**ENTRY, "mounts": ["/data"]}]},
            "mounts",
        ),
        (
            "desired",
            {"node_id": "n", "generation": 1, "tasks": [{**ENTRY, "policy": [1]}]},
            "'policy'",
        ),
        (
            "desired",
            {"node_id": "n", "generation": 1, "tasks": [_without(ENTRY, "image")]},
            "missing field 'image'",
        ),
        ("build", {"build_id": "b", "tag": "t", "owner": "", "dockerfile": "D"}, "'context'"),
        ("exec_start", {"exec_id": "e", "task_id": "t", "command": "ls"}, "'command' is str"),
    ],
)
def test_malformed_bodies(name: str, body: dict[str, Any], says: str) -> None:
    with pytest.raises(ProtocolError, match=says) as raised:
        decode(_frame(name, body))
    assert str(raised.value).startswith(f"{name}: ")


# -- anything else decodes or raises ProtocolError, never anything else ----------------
#: Field names of every body, so random bodies reach past the first missing key.
KEYS = sorted(
    {key for msg in SAMPLES for key in _body(msg)}
    | {"cpu_millis", "memory_bytes", "gpus", "gpu_uuids", "cpu_percent", "cpu_s"}
    | {key for key in ENTRY}
    | {key for key in _body(Status("n", (FINAL,)))["updates"][0]}
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=24,
)
BODIES = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=12)


def _decodes_or_protocol_error(frame: bytes) -> None:
    try:
        msg, _ = decode(frame)
    except ProtocolError:
        return
    # What is accepted encodes back to a frame that decodes to the same thing.
    assert encode(decode(encode(msg))[0]) == encode(msg)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([m.value for m in MsgType]), BODIES)
def test_random_bodies_never_raise_anything_but_protocol_error(name: str, body: Any) -> None:
    _decodes_or_protocol_error(_frame(name, body))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_damaged_bodies_never_raise_anything_but_protocol_error(
    msg: Message, data: st.DataObject
) -> None:
    """Take a good body and replace or drop one of its values, at any depth."""
    body = _body(msg)
    target: Any = body
    while True:
        if isinstance(target, dict) and target:
            key = data.draw(st.sampled_from(sorted(target)))
        elif isinstance(target, list) and target:
            key = data.draw(st.integers(0, len(target) - 1))
        else:
            break
        if isinstance(target[key], dict | list) and data.draw(st.booleans()):
            target = target[key]
            continue
        if isinstance(target, dict) and data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(VALUES)
        break
    _decodes_or_protocol_error(_frame(msg.TYPE.value, body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_protocol_error(frame: bytes) -> None:
    _decodes_or_protocol_error(frame)


def test_orphan_messages_travel_as_typed_frozen_values() -> None:
    """foreign (agent -> server), orphans (the answer) and reaped (reliable) keep
    their node ids and task ids; a malformed one is a ProtocolError naming the field."""
    asked = Foreign("n-1", ("n-old", "n-other"))
    frame = encode(asked, "m-7")
    assert decode(frame) == (asked, "m-7")
    assert _body(asked) == {"node_id": "n-1", "node_ids": ["n-old", "n-other"]}
    assert decode(encode(Orphans(("n-old",))))[0] == Orphans(("n-old",))
    reaped = Reaped("n-1", "n-old", ("t1",))
    assert _body(reaped) == {"node_id": "n-1", "orphan": "n-old", "task_ids": ["t1"]}
    assert decode(encode(reaped))[0] == reaped
    assert isinstance(asked, FROM_AGENT) and isinstance(reaped, FROM_AGENT)
    assert isinstance(Orphans(()), FROM_SERVER)
    with pytest.raises(AttributeError):
        asked.node_ids = ()  # type: ignore[misc]
    with pytest.raises(ProtocolError, match="node_ids"):
        decode(_frame("foreign", {"node_id": "n-1", "node_ids": [1]}))
    with pytest.raises(ProtocolError, match="orphan"):
        decode(_frame("reaped", {"node_id": "n-1", "task_ids": []}))


def test_a_desired_entry_carries_the_container_the_task_ran_in() -> None:
    """Written only once the task ran; read as "" when absent; a wrong type is refused."""
    ran = DesiredEntry("t1", "busybox", 100, 1 << 20, container_id="c0ffee")
    frame = encode(Desired("n-1", 3, (ran, DesiredEntry("t2", "busybox", 100, 1 << 20))))
    decoded, _ = decode(frame)
    assert isinstance(decoded, Desired)
    assert [e.container_id for e in decoded.tasks] == ["c0ffee", ""]
    assert "container_id" not in _body(Desired("n-1", 3, (decoded.tasks[1],)))["tasks"][0]
    body = _body(Desired("n-1", 3, (ran,)))
    body["tasks"][0]["container_id"] = 7
    with pytest.raises(ProtocolError, match="container_id"):
        decode(_frame("desired", body))
