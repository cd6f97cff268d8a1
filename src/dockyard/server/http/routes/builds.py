"""Image build routes: upload a context (raw body: zip, tar or tar.gz), follow the build."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from dockyard.core.archive import Limits
from dockyard.core.errors import ValidationError
from dockyard.server.errors import Conflict
from dockyard.server.gateway.builds import BuildService
from dockyard.server.http.deps import CurrentUser, server_context
from dockyard.server.http.schemas import INT64_MAX, errors
from dockyard.store.errors import NotFound

router = APIRouter()

#: The largest build context one upload may carry (the request guard's limit for this route).
MAX_UPLOAD_BYTES = Limits().max_total_bytes


def _builds(request: Request) -> BuildService:
    ctx = server_context(request)
    if ctx.builds is None:
        raise Conflict("builds are not enabled on this server")
    return ctx.builds


@router.post("/api/v1/builds", status_code=201, responses=errors(403, 409, 503))
async def create_build(
    request: Request,
    who: CurrentUser,
    tag: Annotated[str | None, Query(max_length=255)] = None,
    dockerfile: Annotated[str, Query(max_length=255)] = "Dockerfile",
    filename: Annotated[str, Query(max_length=255)] = "",
) -> dict[str, Any]:
    """Upload a build context as the raw request body; the build starts on every ready node."""
    builds = _builds(request)
    limit = MAX_UPLOAD_BYTES
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-upload-"))
    try:
        upload = workdir / "context"
        size = 0
        with upload.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ValidationError("context", f"upload larger than {limit} bytes")
                out.write(chunk)
        if size == 0:
            raise ValidationError("context", "empty upload")
        build = await run_in_threadpool(builds.submit, who, upload, tag, dockerfile, filename)
        return build.to_dict()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@router.get("/api/v1/builds", responses=errors(409))
def list_builds(request: Request, who: CurrentUser) -> list[dict[str, Any]]:
    return _builds(request).list(None if who.is_admin else who.user_id)


@router.get("/api/v1/builds/{build_id}", responses=errors(404, 409))
def get_build(
    request: Request,
    build_id: str,
    who: CurrentUser,
    since: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> dict[str, Any]:
    """The build's state and its output lines from ``since``."""
    builds = _builds(request)
    build = builds.get(build_id)
    if build is None or (build.owner_id != who.user_id and not who.is_admin):
        raise NotFound("build", build_id)
    snapshot = builds.snapshot(build_id, since)
    if snapshot is None:
        raise NotFound("build", build_id)
    return snapshot
