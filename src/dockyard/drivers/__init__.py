"""Container runtimes behind one interface: Docker (real) and a simulator."""

from __future__ import annotations

from dockyard.drivers.base import Driver
from dockyard.drivers.errors import DriverError

#: Runtime drivers selectable by name (``agent.driver`` in the config file).
DRIVERS = ("docker", "sim")


def make_driver(name: str, **options: object) -> Driver:
    """Create a driver by its configured name (``docker`` or ``sim``)."""
    if name == "docker":
        from dockyard.drivers.docker import DockerDriver

        return DockerDriver()
    if name == "sim":
        from dockyard.drivers.sim import SimDriver

        return SimDriver(**options)  # type: ignore[arg-type]
    raise DriverError(f"unknown driver {name!r} (known: {', '.join(DRIVERS)})")
