"""Pinned bind sources: what was checked is what gets mounted.

The agent resolves a bind source and checks it lies under the owner's allowed
roots; Docker resolves the path again when it mounts it. A user who can write
in their home could swap a directory of the checked path for a symlink in
between (``/home/bob/data -> /etc``) and get ``/etc`` mounted. This closes the
race the way Kubernetes' subPath fix (CVE-2017-1002101) does:

1. open the checked path one component at a time with ``O_PATH | O_NOFOLLOW``
   (a symlink anywhere on it now means it changed since the check: refused);
2. bind-mount the opened file descriptor (``/proc/self/fd/N``, the inode that
   was opened, whatever the path names by now) onto a private directory of the
   agent (root-owned, 0700);
3. give Docker that pinned path, and unmount it when the container goes.

Mounting needs ``CAP_SYS_ADMIN`` (an agent running as root, as with the real
Docker driver on a node). Without it the driver still refuses a path that is
no longer symlink-free when the container is created, but the window between
that walk and Docker's mount stays open; a warning says so once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

from dockyard.drivers.errors import CreateFailed

log = logging.getLogger(__name__)

_MS_BIND = 4096
_MS_REC = 16384
_MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class MountRace(CreateFailed):
    """A bind source changed between the policy check and the mount (a symlink
    appeared on its resolved path): the container is not created."""


def open_no_symlinks(path: str) -> int:
    """An ``O_PATH`` descriptor of the absolute ``path``, opened component by
    component without following any symlink (raises :class:`MountRace` on one)."""
    if not os.path.isabs(path):
        raise MountRace(f"bind source {path!r} is not absolute")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in path.split("/") if p]:
            if part in (".", ".."):
                raise MountRace(f"bind source {path!r} is not resolved")
            try:
                nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise MountRace(f"bind source {path} vanished after the check") from None
            os.close(fd)
            fd = nxt
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise MountRace(
                    f"bind source {path} changed after the check: {part} is now a symlink"
                )
        return fd
    except BaseException:
        os.close(fd)
        raise


class MountPins:
    """Pinned bind sources under ``root``, one folder per container name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._warned = False
        #: Whether bind mounts can be made (learnt from the first attempt; never as
        #: a user other than root).
        self.can_mount: bool | None = None if os.geteuid() == 0 else False

    def _private_root(self) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.root)
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise CreateFailed(f"pin directory {self.root} must be a private directory of ours")
        return self.root

    def pin(self, key: str, index: int, source: str) -> str:
        """Pin ``source`` (a resolved, checked path) for container ``key``; returns the
        path to give Docker instead."""
        fd = open_no_symlinks(source)
        try:
            if self.can_mount is False:
                return source  # walked just now; see the module docstring
            folder = self._private_root() / key
            folder.mkdir(mode=0o700, exist_ok=True)
            target = folder / str(index)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                target.mkdir(mode=0o700, exist_ok=True)
            else:
                target.touch(mode=0o600, exist_ok=True)
            proc = f"/proc/self/fd/{fd}".encode()
            if _libc.mount(proc, str(target).encode(), None, _MS_BIND | _MS_REC, None) != 0:
                err = ctypes.get_errno()
                if err in (errno.EPERM, errno.EACCES):
                    self._cannot_mount(err)
                    shutil.rmtree(folder, ignore_errors=True)
                    return source
                raise CreateFailed(f"pinning {source} failed: {os.strerror(err)}")
            self.can_mount = True
            return str(target)
        finally:
            os.close(fd)

    def _cannot_mount(self, err: int) -> None:
        self.can_mount = False
        if not self._warned:
            self._warned = True
            log.warning(
                "cannot bind-mount to pin bind sources (%s): the agent needs CAP_SYS_ADMIN "
                "(run it as root) to close the symlink-swap window fully",
                os.strerror(err),
            )

    def release(self, key: str) -> None:
        """Unmount and remove every pin of container ``key`` (idempotent)."""
        folder = self.root / key
        if not folder.is_dir() or folder.is_symlink():
            return
        with self._lock:
            for target in folder.iterdir():
                _libc.umount2(str(target).encode(), _MNT_DETACH)
                try:
                    if target.is_dir():
                        target.rmdir()
                    else:
                        target.unlink(missing_ok=True)
                except OSError as exc:  # still mounted: left for the next release
                    log.warning("could not remove pin %s: %s", target, exc)
                    return
            folder.rmdir()

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir())
