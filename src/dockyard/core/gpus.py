"""How GPU devices are named (pure; shared by the agent and the server)."""

from __future__ import annotations

import re

#: NVIDIA's device names: ``GPU-<uuid>``, or ``MIG-...`` for a MIG slice.
GPU_UUID = re.compile(r"^(GPU|MIG)-[A-Za-z0-9][A-Za-z0-9/-]{0,95}$")
