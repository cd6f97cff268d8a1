"""GPU inventory: declared and NVML-detected devices, and what a container is given."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from dockyard.agent.gpus import declared, detect_gpus, inventory
from dockyard.agent.main import AgentConfig
from dockyard.drivers.base import ContainerSpec
from dockyard.drivers.docker import _gpu_requests
from dockyard.protocol.messages import Desired, DesiredEntry, TaskTemplate
from dockyard.settings import ConfigError

UUID_A = "GPU-5f3e2a1b-0000-4c1d-9e8f-aaaaaaaaaaaa"
UUID_B = "GPU-5f3e2a1b-0000-4c1d-9e8f-bbbbbbbbbbbb"


def test_declared_counts_indices_and_uuids() -> None:
    assert declared("4") == [0, 1, 2, 3]
    assert declared(2) == [0, 1]
    assert declared("2,0") == [0, 2]
    assert declared(f"{UUID_A},{UUID_B}") == [UUID_A, UUID_B]
    assert declared(None) is None


@pytest.mark.parametrize(
    "text", [f"{UUID_A},1", "nvidia0", f"{UUID_A},{UUID_A}", "GPU-", "GPU-a b"]
)
def test_declared_refuses_bad_lists(text: str) -> None:
    with pytest.raises(ValueError, match="GPUs"):
        declared(text)


def test_inventory_numbers_uuids_in_order() -> None:
    assert inventory([0, 2]) == {0: "", 2: ""}
    assert inventory([UUID_B, UUID_A]) == {0: UUID_B, 1: UUID_A}


def test_agent_config_names_the_bad_key() -> None:
    with pytest.raises(ConfigError) as caught:
        AgentConfig(gpus=[0, UUID_A])
    assert "agent.gpus" in str(caught.value)


def test_detect_reads_uuids_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    fake: Any = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: calls.append("init")
    fake.nvmlShutdown = lambda: calls.append("shutdown")
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlDeviceGetHandleByIndex = lambda index: index
    fake.nvmlDeviceGetUUID = lambda handle: [UUID_A.encode(), UUID_B][handle]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert detect_gpus() == {0: UUID_A, 1: UUID_B}
    assert calls == ["init", "shutdown"]


def test_detect_without_nvml_finds_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert detect_gpus() == {}


def _spec(**fields: Any) -> ContainerSpec:
    return ContainerSpec(task_id="t", node_id="n", workload_id="w", owner="o", image="i", **fields)


def test_env_by_index_numbers_cuda_devices_from_zero() -> None:
    spec = _spec(gpus=(2, 3))
    assert spec.gpu_env() == {"NVIDIA_VISIBLE_DEVICES": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}
    (request,) = _gpu_requests(spec) or []
    assert request["DeviceIDs"] == ["2", "3"] and request["Driver"] == "nvidia"


def test_env_and_device_request_by_uuid() -> None:
    spec = _spec(gpus=(0, 1), gpu_uuids=(UUID_B, UUID_A))
    both = f"{UUID_B},{UUID_A}"
    assert spec.gpu_env() == {"NVIDIA_VISIBLE_DEVICES": both, "CUDA_VISIBLE_DEVICES": both}
    (request,) = _gpu_requests(spec) or []
    assert request["DeviceIDs"] == [UUID_B, UUID_A]


def test_partly_known_uuids_fall_back_to_indices() -> None:
    assert _spec(gpus=(0, 1), gpu_uuids=(UUID_A, "")).gpu_device_ids() == ["0", "1"]


def test_task_without_gpus_cannot_ask_the_runtime_for_all() -> None:
    assert _spec().gpu_env() == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert _gpu_requests(_spec()) is None


def test_reconciler_gives_the_runtime_the_nodes_uuids() -> None:
    from dockyard.agent.logship import LogShipper
    from dockyard.agent.reconciler import Reconciler
    from dockyard.drivers.sim import SimDriver
    from dockyard.testing.wait import wait_for

    created: list[ContainerSpec] = []

    class Recording(SimDriver):
        def create(self, spec: ContainerSpec) -> str:
            created.append(spec)
            return super().create(spec)

    reconciler = Reconciler(
        Recording(),
        "n1",
        lambda _: None,
        LogShipper(lambda _: None),
        gpu_uuids={0: UUID_A, 1: UUID_B},
    )
    reconciler.start()
    try:
        template = TaskTemplate(command=("sleep", "60"))
        entry = DesiredEntry("t1", "busybox", 100, 1 << 24, template=template, gpus=(1,))
        reconciler.set_desired(Desired("n1", 1, (entry,)))
        wait_for(lambda: created, timeout=10, message="container created")
    finally:
        reconciler.stop()
    assert (created[0].gpus, created[0].gpu_uuids) == ((1,), (UUID_B,))
    assert created[0].gpu_env()["CUDA_VISIBLE_DEVICES"] == UUID_B


def test_server_keeps_only_well_formed_uuids_of_reported_gpus() -> None:
    from dockyard.server.state.nodes import _gpu_uuids

    reported = {"0": UUID_A, "1": "not-a-uuid", "7": UUID_B, "x": UUID_B}
    assert _gpu_uuids(reported, "0,1") == {"0": UUID_A}
    assert _gpu_uuids({}, "") == {}
