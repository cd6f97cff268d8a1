"""The drop folder: archives dropped in a directory are built and queued.

``dockyard server --watch-dir DIR`` scans DIR. An archive (``.zip``, ``.tar``,
``.tar.gz``, ``.tgz``) is taken only once its size and mtime were the same on
two scans and it is at least ``settle_s`` old, so a file still being written
(or copied) is not picked up early; dotfiles and ``*.part``/``*.tmp`` are
ignored. It is moved to ``processing/``, its ``dockyard.yml`` read (owner,
resources, priority, command, ...), built as the owner (images are
``<owner>/<name>:<tag>``) and submitted as the owner's job under the same
policy as the API; then moved to ``done/`` with a ``.result.json`` naming the
build, image and task, or to ``failed/`` with a ``.reason.txt`` saying why
(the build error and the end of the build output, a bad ``dockyard.yml``, an
unknown owner, ...).

``dockyard.yml``::

    owner: alice            # required: an existing user
    name: train             # job and image name (default: the archive's name)
    tag: v1                 # image tag (default: latest)
    command: ["python", "train.py"]   # or a string, run with sh -c
    cpu: 2
    memory: 4g
    gpus: 1
    priority: 10
    env: {EPOCHS: "3"}
    max_runtime_s: 3600
    dockerfile: Dockerfile
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from dockyard.core import archive
from dockyard.core.errors import ValidationError
from dockyard.core.specs import build_job_spec
from dockyard.errors import DockyardError
from dockyard.files import write_atomic
from dockyard.server.gateway.builds import BuildService, _default_name
from dockyard.server.state.auth import Principal
from dockyard.server.state.events import record
from dockyard.server.state.images import check_images
from dockyard.server.state.jobs import submit_job
from dockyard.server.state.policy import enforce, policy_for
from dockyard.store.db import Database
from dockyard.store.tables import User

log = logging.getLogger(__name__)

SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MANIFEST = ("dockyard.yml", "dockyard.yaml")
MAX_MANIFEST_BYTES = 64 * 1024
KNOWN_KEYS = {
    "owner",
    "name",
    "tag",
    "command",
    "cpu",
    "memory",
    "gpus",
    "priority",
    "env",
    "max_runtime_s",
    "dockerfile",
    "restart",
}


class DropError(DockyardError):
    """Why a dropped archive was not queued (written to its reason file)."""


def read_manifest(source: Path) -> dict[str, Any]:
    """The parsed ``dockyard.yml`` of an archive (extracted safely to a temp dir)."""
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-drop-"))
    try:
        archive.extract(source, workdir / "ctx")
        for name in MANIFEST:
            path = workdir / "ctx" / name
            if path.is_file() and not path.is_symlink():
                if path.stat().st_size > MAX_MANIFEST_BYTES:
                    raise DropError(f"{name} is larger than {MAX_MANIFEST_BYTES} bytes")
                try:
                    data = yaml.safe_load(path.read_text())
                except (yaml.YAMLError, UnicodeDecodeError) as exc:
                    raise DropError(f"{name} is not valid YAML: {exc}") from exc
                if not isinstance(data, dict):
                    raise DropError(f"{name} must be a mapping")
                unknown = set(data) - KNOWN_KEYS
                if unknown:
                    raise DropError(
                        f"{name}: unknown key(s) {sorted(unknown)} (known: {sorted(KNOWN_KEYS)})"
                    )
                if not isinstance(data.get("owner"), str) or not data["owner"]:
                    raise DropError(f"{name}: 'owner' (an existing user) is required")
                return data
        raise DropError("no dockyard.yml in the archive")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def archive_stem(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class DropFolder:
    """Scans ``root`` on a thread; processes one archive at a time."""

    def __init__(
        self,
        root: Path,
        db: Database,
        builds: BuildService,
        wake_scheduler: Callable[[], None],
        cluster_policy: dict[str, Any] | None = None,
        max_runtime_cap_s: float | None = None,
        scan_interval: float = 1.0,
        settle_s: float = 1.0,
        build_timeout_s: float = 3600.0,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.root = root
        #: Scan only while this returns True (HA: only the leader takes drops).
        self._active = active
        self._db = db
        self._builds = builds
        self._wake = wake_scheduler
        self._policy = dict(cluster_policy or {})
        self._cap = max_runtime_cap_s
        self._interval = scan_interval
        self._settle = settle_s
        self._build_timeout = build_timeout_s
        self._seen: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dropfolder", daemon=True)
        for sub in ("processing", "done", "failed"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._active():
                continue
            try:
                for path in self.scan():
                    self.process(path)
            except Exception:
                log.exception("drop folder scan failed")

    def scan(self) -> list[Path]:
        """Archives that are complete: unchanged since the last scan and settled."""
        ready: list[Path] = []
        current: dict[str, tuple[int, float]] = {}
        now = time.time()
        for path in sorted(self.root.iterdir()):
            name = path.name
            if name.startswith(".") or not path.is_file() or path.is_symlink():
                continue
            if not name.endswith(SUFFIXES):
                continue
            st = path.stat()
            current[name] = (st.st_size, st.st_mtime)
            if self._seen.get(name) == current[name] and now - st.st_mtime >= self._settle:
                ready.append(path)
        self._seen = current
        return ready

    def process(self, path: Path) -> None:
        work = self.root / "processing" / path.name
        try:
            path.rename(work)
        except OSError as exc:
            log.warning("cannot take %s: %s", path, exc)
            return
        self._seen.pop(path.name, None)
        try:
            result = self._build_and_submit(work)
        except (DropError, ValidationError, DockyardError) as exc:
            self._finish(work, "failed", {"error": str(exc)}, str(exc))
        except Exception as exc:
            log.exception("drop folder: %s", path.name)
            self._finish(work, "failed", {"error": f"internal error: {exc}"}, str(exc))
        else:
            self._finish(work, "done", result, "")

    def _build_and_submit(self, work: Path) -> dict[str, Any]:
        manifest = read_manifest(work)
        with self._db.read() as session:
            user = session.scalar(select(User).where(User.name == str(manifest["owner"])))
            if user is None:
                raise DropError(f"owner {manifest['owner']!r} is not a user")
            who = Principal(user_id=user.id, name=user.name, is_admin=user.is_admin)
        name = str(manifest.get("name") or _default_name(archive_stem(work.name)))
        tag = str(manifest.get("tag") or "latest")
        command = manifest.get("command")
        if isinstance(command, str):
            command = ["sh", "-c", command]
        # Validate the job before spending a build on it (the image is checked later).
        spec_args: dict[str, Any] = {
            "name": name,
            "command": command,
            "env": {str(k): str(v) for k, v in (manifest.get("env") or {}).items()},
            "cpu": manifest.get("cpu"),
            "memory": manifest.get("memory"),
            "gpus": manifest.get("gpus"),
            "priority": manifest.get("priority"),
            "max_runtime_s": manifest.get("max_runtime_s"),
            "restart": manifest.get("restart"),
        }
        build_job_spec(image="placeholder:latest", **spec_args)
        build = self._builds.submit(
            who,
            work,
            f"{name}:{tag}",
            str(manifest.get("dockerfile") or "Dockerfile"),
            label=work.name,
        )
        ended = self._builds.wait(build.id, self._build_timeout)
        if ended is None or ended.state != "succeeded":
            tail = "\n".join((ended.lines if ended else [])[-50:])
            error = ended.error if ended else "build record lost"
            raise DropError(f"build {build.id} of {build.image} failed: {error}\n\n{tail}")
        spec = build_job_spec(image=build.image, **spec_args)
        with self._db.write() as session:
            user = session.get(User, who.user_id)
            if user is None:
                raise DropError("owner vanished")
            policy = policy_for(user, self._policy)
            check_images(session, who, [("image", spec.image)])
            spec = enforce(spec, policy)
            task = submit_job(session, who, spec, self._cap, policy.to_dict() if policy else None)
            task_id = task.id
        self._wake()
        return {"build_id": build.id, "image": build.image, "task_id": task_id, "owner": who.name}

    def _finish(self, work: Path, outcome: str, result: dict[str, Any], reason: str) -> None:
        target_dir = self.root / outcome
        target = target_dir / work.name
        if target.exists():
            target = target_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{work.name}"
        work.rename(target)
        if outcome == "failed":
            write_atomic(target_dir / f"{target.name}.reason.txt", reason.rstrip() + "\n")
            try:
                with self._db.write() as session:
                    record(session, "build", "drop_failed", f"{work.name}: {reason[:400]}")
            except Exception:
                log.exception("recording drop failure")
        write_atomic(
            target_dir / f"{target.name}.result.json",
            json.dumps({"archive": work.name, "outcome": outcome, **result}, indent=2) + "\n",
        )
        log.info("drop folder: %s -> %s", work.name, outcome)
