"""Submitting jobs: one, or a batch stored all-or-nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fastapi import APIRouter, Request

from dockyard.core.errors import ValidationError
from dockyard.server.http.deps import CurrentUser, ServerContext, server_context
from dockyard.server.http.routes.tasks import task_out
from dockyard.server.http.schemas import ArrayOut, JobBatch, JobBatchOut, JobCreate, TaskOut, errors
from dockyard.server.state import arrays as array_ops
from dockyard.server.state import reads
from dockyard.server.state.fit import check_fits
from dockyard.server.state.images import check_images, own_image
from dockyard.server.state.jobs import insert_jobs, new_jobs, submit_job
from dockyard.server.state.policy import caller_policy, enforce

router = APIRouter(tags=["jobs"])


def _built(ctx: ServerContext) -> Callable[[str, str], bool] | None:
    """Which images this server built (``own_image``: ``tools:v1`` -> ``<you>/tools:v1``)."""
    return ctx.builds.built if ctx.builds is not None else None


@router.post("/api/v1/jobs", response_model=TaskOut, status_code=201)
def create_job(request: Request, body: JobCreate, who: CurrentUser) -> TaskOut:
    ctx = server_context(request)
    spec = body.to_spec()
    if spec.array:
        raise ValidationError("array", "submit job arrays with POST /api/v1/arrays")
    with ctx.db.write() as session:
        policy = caller_policy(session, who, ctx.cluster_policy)
        spec = replace(spec, image=own_image(session, who, spec.image, _built(ctx)))
        check_images(session, who, [("image", spec.image)])
        spec = enforce(spec, policy)
        if not body.hold:
            check_fits(session, spec)
        after = array_ops.resolve_after(session, who, spec)
        task = submit_job(
            session,
            who,
            spec,
            ctx.max_runtime_cap_s,
            policy.to_dict() if policy else None,
            after,
        )
        out = task_out(reads.task_view(session, task))
    ctx.wake_scheduler()
    return out


@router.post("/api/v1/jobs/batch", response_model=JobBatchOut, status_code=201)
def create_jobs(request: Request, body: JobBatch, who: CurrentUser) -> JobBatchOut:
    """Submit up to 1,000 jobs in one transaction: all are stored or none (the first
    invalid one is named as ``jobs[i].field``)."""
    ctx = server_context(request)
    specs = []
    for index, job in enumerate(body.jobs):
        try:
            specs.append(job.to_spec())
        except ValidationError as exc:
            raise ValidationError(f"jobs[{index}].{exc.field}", exc.message) from None
        for name in ("array", "after", "gang_size"):
            if getattr(specs[-1], name):
                raise ValidationError(f"jobs[{index}].{name}", "submit these one by one")
    # Checked and built before the write transaction: only the inserts hold it.
    built = _built(ctx)
    with ctx.db.read() as session:
        policy = caller_policy(session, who, ctx.cluster_policy)
        specs = [replace(s, image=own_image(session, who, s.image, built)) for s in specs]
        check_images(session, who, [(f"jobs[{i}].image", s.image) for i, s in enumerate(specs)])
        for i, (job, spec) in enumerate(zip(body.jobs, specs, strict=True)):
            if not job.hold:
                check_fits(session, spec, f"jobs[{i}].")
    stored = policy.to_dict() if policy else None
    enforced = [enforce(spec, policy) for spec in specs]
    jobs = new_jobs(who, enforced, ctx.max_runtime_cap_s, stored)
    with ctx.db.write() as session:
        ids = insert_jobs(session, jobs)
    ctx.wake_scheduler()
    return JobBatchOut(ids=ids, count=len(ids))


@router.post("/api/v1/arrays", response_model=ArrayOut, status_code=201, responses=errors(401, 422))
def create_array(request: Request, body: JobCreate, who: CurrentUser) -> ArrayOut:
    """Submit a job array (``array``: ``1-100000%50``, ``1-9:2``, ``1,3,5``): one call
    stores it compactly; elements become tasks as they may run, each with
    ``DOCKYARD_ARRAY_INDEX``, at most the throttle (after ``%``) live at once."""
    ctx = server_context(request)
    spec = body.to_spec()
    if not spec.array:
        raise ValidationError("array", "is required (an index expression such as 1-100%10)")
    if spec.gang_size:
        raise ValidationError("gang_size", "a gang job cannot also be an array")
    with ctx.db.write() as session:
        policy = caller_policy(session, who, ctx.cluster_policy)
        spec = replace(spec, image=own_image(session, who, spec.image, _built(ctx)))
        check_images(session, who, [("image", spec.image)])
        spec = enforce(spec, policy)
        if not body.hold:
            check_fits(session, spec)
        after = array_ops.resolve_after(session, who, spec)
        row = array_ops.submit_array(
            session, who, spec, after, ctx.max_runtime_cap_s, policy.to_dict() if policy else None
        )
        session.flush()
        out = ArrayOut(**array_ops.array_view(session, row).to_dict())
    ctx.wake_scheduler()
    return out


@router.get("/api/v1/arrays/{ref}", response_model=ArrayOut, responses=errors(401, 404))
def get_array(request: Request, ref: str, who: CurrentUser) -> ArrayOut:
    """An array's progress: elements released, its tasks by state, why it waits."""
    with server_context(request).db.read() as session:
        row = array_ops.find_array(session, who, ref)
        return ArrayOut(**array_ops.array_view(session, row).to_dict())


@router.post(
    "/api/v1/arrays/{ref}/cancel", response_model=ArrayOut, responses=errors(401, 404, 409)
)
def cancel_array(request: Request, ref: str, who: CurrentUser) -> ArrayOut:
    """No more elements start; pending ones end (killed), running ones are stopped."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        row = array_ops.cancel_array(session, who, ref)
        session.flush()
        out = ArrayOut(**array_ops.array_view(session, row).to_dict())
    ctx.wake_scheduler()
    return out
