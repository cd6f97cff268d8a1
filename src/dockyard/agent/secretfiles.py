"""Secret and config files of the replicas on this node.

A replica's start entry carries its files' values (``DesiredEntry.files``, the
only message that does). Right before the container is created they are written
under ``<agent data dir>/secrets/<task id>/`` (directories 0700, owned by the
agent; each file with the mode asked, and the uid/gid asked when the agent runs
as root) and bind-mounted read-only at their targets. Nothing reaches the
container's environment, labels or command, nor a log line. The task's directory
is removed once the task has ended here or is no longer wanted
(:meth:`SecretFiles.prune`, each reconcile pass), and on the agent's start for
tasks it no longer holds. Mount a tmpfs on the directory to keep values off disk.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from dockyard.core.security import Mount
from dockyard.drivers.errors import DriverError

log = logging.getLogger(__name__)


class SecretFilesError(DriverError):
    """A start entry's files cannot be written (or the server could not send them):
    the task fails with reason ``secret_unavailable``."""

    reason = "secret_unavailable"


class SecretFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, task_id: str, files: Sequence[dict[str, Any]]) -> tuple[Mount, ...]:
        """Write the task's files; the read-only bind mounts that put them in place."""
        for item in files:
            if "error" in item:
                raise SecretFilesError(str(item["error"]))
        if not files:
            return ()
        folder = self.root / task_id
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.root, 0o700)
            folder.mkdir(exist_ok=True, mode=0o700)
            mounts = []
            for index, item in enumerate(files):
                path = folder / str(index)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(item["data"])
                if os.geteuid() == 0 and (
                    item.get("uid") is not None or item.get("gid") is not None
                ):
                    uid, gid = item.get("uid"), item.get("gid")
                    os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
                os.chmod(path, int(item["mode"]) & 0o777)
                mounts.append(Mount(str(path), str(item["target"]), True, "bind"))
        except OSError as exc:
            self.remove(task_id)
            raise SecretFilesError(f"writing the secret files failed: {exc.strerror}") from None
        return tuple(mounts)

    def remove(self, task_id: str) -> None:
        shutil.rmtree(self.root / task_id, ignore_errors=True)

    def prune(self, keep: Collection[str]) -> None:
        """Remove the files of every task not in ``keep``."""
        try:
            held = [p.name for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return
        for task_id in held:
            if task_id not in keep:
                self.remove(task_id)
