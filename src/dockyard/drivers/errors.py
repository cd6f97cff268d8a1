"""Driver errors: every runtime library exception is translated into one of these."""

from __future__ import annotations

from dockyard.errors import DockyardError


class DriverError(DockyardError):
    """A container runtime operation failed."""

    reason = "driver_error"


class ImageNotFound(DriverError):
    reason = "image_not_found"


class ImagePullFailed(DriverError):
    reason = "image_pull_failed"


class ContainerExists(DriverError):
    reason = "container_exists"


class ContainerNotFound(DriverError):
    reason = "container_vanished"


class CreateFailed(DriverError):
    reason = "create_failed"


class StartFailed(DriverError):
    reason = "start_failed"


class BuildFailed(DriverError):
    """The image build failed (the Dockerfile or its context)."""

    reason = "build_failed"


class RuntimeUnavailable(DriverError):
    reason = "runtime_unavailable"
