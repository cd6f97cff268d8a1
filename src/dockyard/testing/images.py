"""Build small local images (no registry here): scratch + Debian's static busybox."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

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


def ensure_busybox_image(client: Any | None = None, tag: str = BUSYBOX_IMAGE) -> str:
    """Build ``tag`` from the static busybox binary unless it exists; return the tag."""
    import docker
    import docker.errors

    docker_client = client or docker.from_env()
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if not BUSYBOX_BINARY.exists():
        raise FileNotFoundError(f"{BUSYBOX_BINARY} missing: apt-get install busybox-static")
    docker_client.images.build(
        fileobj=_context(BUSYBOX_BINARY), custom_context=True, tag=tag, rm=True
    )
    return tag


if __name__ == "__main__":
    print(ensure_busybox_image())
