"""Hollow nodes: many simulated nodes in one agent process (as Kubernetes' kubemark).

Each hollow node is a full :class:`~dockyard.agent.main.Agent` — its own node
id and data dir, its own ZeroMQ DEALER identity, heartbeats, reconciler and log
shipping — over its own in-memory :class:`~dockyard.drivers.sim.SimDriver`. Only
the runtime is fake; the agent and server code paths are the real ones.
"""

from __future__ import annotations

import dataclasses

from dockyard.agent.main import Agent, AgentConfig
from dockyard.drivers.sim import SimDriver


def hollow_configs(base: AgentConfig, nodes: int) -> list[AgentConfig]:
    """``nodes`` configs named ``NAME-0000``... with data dirs under ``base.data_dir``.

    One node keeps the base config as it is (its name, data dir and node id), so a
    single sim agent behaves like a single docker agent."""
    if nodes == 1:
        return [base]
    width = max(4, len(str(nodes - 1)))
    return [
        dataclasses.replace(
            base,
            name=f"{base.name}-{index:0{width}d}",
            data_dir=base.data_dir / f"node-{index:0{width}d}",
            node_id=None,
            metrics_port=None,
            labels=dict(base.labels),
            gpus=None if base.gpus is None else list(base.gpus),
            # Each hollow node has a runtime of its own: no other node's containers.
            orphan_check_interval=0.0,
        )
        for index in range(nodes)
    ]


def hollow_agents(base: AgentConfig, nodes: int, cpu_millis: int, memory_bytes: int) -> list[Agent]:
    """Build (not start) ``nodes`` hollow agents, each offering the given capacity."""
    return [
        Agent(cfg, driver=SimDriver(cpu_millis=cpu_millis, memory_bytes=memory_bytes))
        for cfg in hollow_configs(base, nodes)
    ]
