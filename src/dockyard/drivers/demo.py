"""The demo image ``dockyard/busybox:latest``, built on this machine (no registry here).

``FROM scratch`` plus the host's static busybox (Debian's ``busybox-static``): a few
hundred kilobytes, enough for the README's tour. ``dockyard up`` builds it when it is
missing, and the tests use it through :mod:`dockyard.testing.images`.
"""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

from dockyard.drivers.errors import BuildFailed, DriverError, RuntimeUnavailable

BUSYBOX_IMAGE = "dockyard/busybox:latest"
BUSYBOX_BINARY = Path("/bin/busybox")

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/usr/bin", "/sbin", "/usr/sbin"]
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin
CMD ["sh"]
"""

PT_INTERP = 3  # an ELF program header naming a dynamic loader


class BusyboxMissing(DriverError):
    """No static busybox on this machine to build the demo image from."""

    reason = "demo_image_unavailable"


def is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a dynamic loader (PT_INTERP)."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                return False
            wide, endian = head[4] == 2, "<" if head[5] == 1 else ">"
            if wide:
                phoff, phentsize, phnum = struct.unpack_from(endian + "Q14xHH", head, 32)
            else:
                phoff, phentsize, phnum = struct.unpack_from(endian + "I10xHH", head, 28)
            for index in range(min(phnum, 256)):
                f.seek(phoff + index * phentsize)
                (p_type,) = struct.unpack(endian + "I", f.read(4))
                if p_type == PT_INTERP:
                    return False
            return bool(phnum > 0)
    except (OSError, struct.error):
        return False


def _context(binary: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(str(binary), arcname="busybox")
    buffer.seek(0)
    return buffer


def docker_client() -> Any:
    """A Docker SDK client that answered a ping, or :class:`RuntimeUnavailable`."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailable(f"cannot reach Docker Engine: {exc}") from exc
    return client


def has_image(client: Any, tag: str = BUSYBOX_IMAGE) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailable(f"cannot list images: {exc}") from exc


def ensure_busybox_image(
    client: Any | None = None, tag: str = BUSYBOX_IMAGE, binary: Path = BUSYBOX_BINARY
) -> str:
    """Build ``tag`` from the static busybox binary unless it exists; return the tag.

    :class:`BusyboxMissing` when ``binary`` is absent or not static (a dynamic one
    cannot run in a scratch image), :class:`BuildFailed` if Docker refuses the build."""
    docker_client_ = client or docker_client()
    if has_image(docker_client_, tag):
        return tag
    if not binary.exists():
        raise BusyboxMissing(f"{binary} missing: apt-get install busybox-static")
    if not is_static_elf(binary):
        raise BusyboxMissing(
            f"{binary} is not a static binary (it cannot run in a scratch image): "
            "apt-get install busybox-static"
        )
    try:
        docker_client_.images.build(fileobj=_context(binary), custom_context=True, tag=tag, rm=True)
    except docker.errors.BuildError as exc:
        raise BuildFailed(f"building {tag} failed: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailable(f"building {tag} failed: {exc}") from exc
    return tag
