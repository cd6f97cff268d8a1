"""Image builds: a checked context is sent to every ready node, which builds it.

A user's context (directory, zip, tar, tar.gz) is unpacked with the safe
extractor into a private temp dir, repacked as a plain tar and sent to each
ready, non-draining node in a ``build`` message; the agents build through the
Docker SDK and stream their output back. Images are always tagged under the
owner's name (``<user>/<name>:<tag>``), so one user cannot overwrite another's.

Build records (state, per-node state, output) are kept in server memory (the
last ``MAX_BUILDS``); their start and end are events in the store. A node that
does not acknowledge a build is sent it again with back-off, then counted as
failed.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.core import archive
from dockyard.core.errors import ValidationError
from dockyard.core.ids import new_id
from dockyard.core.image_ref import validate_image
from dockyard.protocol.messages import Build, BuildDone, BuildOutput, ServerMessage
from dockyard.server.errors import Conflict
from dockyard.server.state.auth import Principal
from dockyard.server.state.events import record
from dockyard.server.state.images import check_dockerfile
from dockyard.server.state.nodes import ready_nodes
from dockyard.server.state.policy import caller_policy
from dockyard.store.db import Database

log = logging.getLogger(__name__)

EVENT_KIND = "build"
MAX_BUILDS = 500
ACK_TIMEOUT_S = 3.0
SEND_ATTEMPTS = 4
BUILD_TIMEOUT_S = 3600.0
TERMINAL = ("succeeded", "failed")
DEFAULT_LIMITS = archive.Limits()
_USER_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")


def owner_image(owner: str, name: str | None, default_name: str = "build") -> str:
    """``<owner>/<name>:<tag>``; a name under another user's prefix is refused."""
    namespace = owner.lower()
    if not _USER_RE.match(namespace):
        raise ValidationError("tag", f"user name {owner!r} cannot be an image namespace")
    ref = (name or default_name).strip()
    repo, tag = ref, "latest"
    if ":" in ref.rsplit("/", 1)[-1]:
        repo, tag = ref.rsplit(":", 1)
    if "/" in repo:
        first, rest = repo.split("/", 1)
        if first != namespace:
            raise ValidationError(
                "tag", f"images are tagged under your own name: use {namespace}/{rest}"
            )
        repo = rest
    image = f"{namespace}/{repo}:{tag}"
    validate_image(image, "tag")
    return image


def _default_name(label: str) -> str:
    base = re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", label.rstrip("/").rsplit("/", 1)[-1])
    clean = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    return clean or "build"


@dataclass
class _NodeBuild:
    name: str
    state: str = "sent"  # sent -> building -> succeeded | failed
    attempts: int = 1
    sent_at: float = 0.0
    next_seq: int = 0
    error: str = ""
    image_id: str = ""


@dataclass
class BuildRecord:
    id: str
    owner_id: str
    owner: str
    image: str
    dockerfile: str
    created_at: float
    state: str = "building"
    finished_at: float | None = None
    error: str = ""
    files: int = 0
    context_bytes: int = 0
    nodes: dict[str, _NodeBuild] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    context: bytes | None = None

    def to_dict(self, since: int = 0) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "image": self.image,
            "dockerfile": self.dockerfile,
            "state": self.state,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "files": self.files,
            "context_bytes": self.context_bytes,
            "nodes": [
                {"node_id": nid, "name": n.name, "state": n.state, "error": n.error}
                for nid, n in self.nodes.items()
            ],
            "offset": since,
            "lines": self.lines[since:],
            "total_lines": len(self.lines),
        }


class BuildService:
    def __init__(
        self,
        db: Database,
        send: Callable[[str, ServerMessage], None],
        limits: archive.Limits = DEFAULT_LIMITS,
        cluster_policy: Mapping[str, Any] | None = None,
    ) -> None:
        self._db = db
        #: The cluster's container policy (a user's own overrides win), for the
        #: registries a Dockerfile may name.
        self._cluster_policy = dict(cluster_policy or {})
        self._send = send
        self._limits = limits
        self._builds: OrderedDict[str, BuildRecord] = OrderedDict()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="builds", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(5)

    # -- API side -----------------------------------------------------------
    def submit(
        self,
        who: Principal,
        source: Path,
        name: str | None = None,
        dockerfile: str = "Dockerfile",
        label: str = "",
    ) -> BuildRecord:
        """Check and unpack ``source``, then ask every ready node to build it."""
        image = owner_image(who.name, name, _default_name(label or str(source)))
        if dockerfile.startswith("/") or ".." in dockerfile.split("/") or not dockerfile:
            raise ValidationError("dockerfile", "must be a relative path inside the context")
        workdir = Path(tempfile.mkdtemp(prefix="dockyard-build-"))
        try:
            ctx_dir = workdir / "ctx"
            extracted = archive.extract(source, ctx_dir, self._limits)
            if not (ctx_dir / dockerfile).is_file():
                raise ValidationError("dockerfile", f"{dockerfile} not found in the context")
            text = (ctx_dir / dockerfile).read_text(errors="replace")
            with self._db.read() as session:  # FROM another user's image: refused
                policy = caller_policy(session, who, self._cluster_policy)
                check_dockerfile(session, who, text, policy)
            context = archive.pack(ctx_dir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        build = BuildRecord(
            id=new_id(),
            owner_id=who.user_id,
            owner=who.name,
            image=image,
            dockerfile=dockerfile,
            created_at=time.time(),
            files=extracted.files,
            context_bytes=len(context),
            context=context,
        )
        with self._db.write() as session:
            nodes = ready_nodes(session)
            if not nodes:
                raise Conflict("no ready node to build on")
            record(
                session,
                EVENT_KIND,
                "build_started",
                f"build {build.id} of {image} on {len(nodes)} node(s)",
                owner_id=who.user_id,
            )
        now = time.monotonic()
        for node_id, node_name in nodes:
            build.nodes[str(node_id)] = _NodeBuild(name=str(node_name), sent_at=now)
        with self._cond:
            self._builds[build.id] = build
            while len(self._builds) > MAX_BUILDS:
                self._builds.popitem(last=False)
        for node_id in build.nodes:
            self._send(node_id, self._message(build))
        return build

    def get(self, build_id: str) -> BuildRecord | None:
        with self._cond:
            return self._builds.get(build_id)

    def snapshot(self, build_id: str, since: int = 0) -> dict[str, Any] | None:
        with self._cond:
            build = self._builds.get(build_id)
            return build.to_dict(max(0, since)) if build else None

    def list(self, owner_id: str | None) -> list[dict[str, Any]]:
        with self._cond:
            builds = [b for b in self._builds.values() if owner_id in (None, b.owner_id)]
            return [{**b.to_dict(), "lines": []} for b in reversed(builds)]

    def built(self, owner_id: str, image: str) -> bool:
        """Did ``owner_id`` build ``image`` here with success (the records kept)?"""
        with self._cond:
            return any(
                b.owner_id == owner_id and b.image == image and b.state == "succeeded"
                for b in self._builds.values()
            )

    def wait(self, build_id: str, timeout: float) -> BuildRecord | None:
        """Block until the build ends (or ``timeout``); the record, or None if unknown."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                build = self._builds.get(build_id)
                if build is None or build.state in TERMINAL:
                    return build
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return build
                self._cond.wait(min(left, 1.0))

    # -- gateway side (gateway thread) ----------------------------------------
    def on_output(self, node_id: str, msg: BuildOutput) -> None:
        with self._cond:
            found = self._in_progress(msg.build_id, node_id)
            if found is None:
                return
            build, node = found
            node.state = "building"
            seq = msg.seq
            lines = msg.lines
            if seq < node.next_seq:  # a re-sent batch
                lines = lines[node.next_seq - seq :]
            node.next_seq = max(node.next_seq, seq + len(msg.lines))
            prefix = f"[{node.name}] " if len(build.nodes) > 1 else ""
            build.lines.extend(prefix + line for line in lines)
            self._cond.notify_all()

    def on_done(self, node_id: str, msg: BuildDone) -> None:
        with self._cond:
            found = self._in_progress(msg.build_id, node_id)
            if found is None:
                return
            build, node = found
            node.state = "succeeded" if msg.ok else "failed"
            node.error = msg.error
            node.image_id = msg.image_id
            if node.error:
                build.lines.append(f"ERROR: {node.error}")
            finished = self._maybe_finish(build)
        if finished:
            self._record_end(build)

    # -- internals --------------------------------------------------------
    def _in_progress(self, build_id: str, node_id: str) -> tuple[BuildRecord, _NodeBuild] | None:
        """The build and node a message is about, unless either is unknown or done
        (call with ``_cond`` held)."""
        build = self._builds.get(build_id)
        node = build.nodes.get(node_id) if build else None
        if build is None or node is None or node.state in TERMINAL:
            return None
        return build, node

    def _message(self, build: BuildRecord) -> Build:
        return Build(build.id, build.image, build.owner, build.dockerfile, build.context or b"")

    def _maybe_finish(self, build: BuildRecord) -> bool:
        """Under the lock: end the build when every node has; True if it ended now."""
        if build.state in TERMINAL or any(n.state not in TERMINAL for n in build.nodes.values()):
            return False
        failed = {nid: n for nid, n in build.nodes.items() if n.state == "failed"}
        build.state = "failed" if failed else "succeeded"
        build.error = "; ".join(f"{n.name}: {n.error}" for n in failed.values())
        build.finished_at = time.time()
        build.context = None
        self._cond.notify_all()
        return True

    def _record_end(self, build: BuildRecord) -> None:
        try:
            with self._db.write() as session:
                record(
                    session,
                    EVENT_KIND,
                    f"build_{build.state}",
                    f"build {build.id} of {build.image}"
                    + (f": {build.error[:400]}" if build.error else ""),
                    owner_id=build.owner_id,
                )
        except Exception:
            log.exception("recording the end of build %s failed", build.id)

    def _watch(self) -> None:
        """Re-send unacknowledged builds with back-off; fail nodes that never answer."""
        while not self._stop.wait(0.5):
            now = time.monotonic()
            resend: list[tuple[str, Build]] = []
            ended: list[BuildRecord] = []
            with self._cond:
                for build in self._builds.values():
                    if build.state in TERMINAL:
                        continue
                    for node_id, node in build.nodes.items():
                        waited = now - node.sent_at
                        if node.state == "sent" and waited > ACK_TIMEOUT_S * node.attempts:
                            if node.attempts >= SEND_ATTEMPTS:
                                node.state, node.error = "failed", "node did not answer"
                            else:
                                node.attempts += 1
                                node.sent_at = now
                                resend.append((node_id, self._message(build)))
                        elif node.state == "building" and waited > BUILD_TIMEOUT_S:
                            node.state, node.error = "failed", "build timed out"
                    if self._maybe_finish(build):
                        ended.append(build)
            for node_id, message in resend:
                self._send(node_id, message)
            for build in ended:
                self._record_end(build)
