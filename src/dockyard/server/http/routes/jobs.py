"""Submitting jobs: one, or a batch stored all-or-nothing."""

from __future__ import annotations

from fastapi import APIRouter, Request

from dockyard.core.errors import ValidationError
from dockyard.server.http.deps import CurrentUser, server_context
from dockyard.server.http.routes.tasks import task_out
from dockyard.server.http.schemas import JobBatch, JobBatchOut, JobCreate, TaskOut
from dockyard.server.state import reads
from dockyard.server.state.images import check_images
from dockyard.server.state.jobs import insert_jobs, new_jobs, submit_job
from dockyard.server.state.policy import caller_policy, enforce

router = APIRouter(tags=["jobs"])


@router.post("/api/v1/jobs", response_model=TaskOut, status_code=201)
def create_job(request: Request, body: JobCreate, who: CurrentUser) -> TaskOut:
    ctx = server_context(request)
    spec = body.to_spec()
    with ctx.db.write() as session:
        policy = caller_policy(session, who, ctx.cluster_policy)
        check_images(session, who, [("image", spec.image)])
        spec = enforce(spec, policy)
        task = submit_job(
            session, who, spec, ctx.max_runtime_cap_s, policy.to_dict() if policy else None
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
    # Checked and built before the write transaction: only the inserts hold it.
    with ctx.db.read() as session:
        policy = caller_policy(session, who, ctx.cluster_policy)
        check_images(session, who, [(f"jobs[{i}].image", s.image) for i, s in enumerate(specs)])
    stored = policy.to_dict() if policy else None
    enforced = [enforce(spec, policy) for spec in specs]
    jobs = new_jobs(who, enforced, ctx.max_runtime_cap_s, stored)
    with ctx.db.write() as session:
        ids = insert_jobs(session, jobs)
    ctx.wake_scheduler()
    return JobBatchOut(ids=ids, count=len(ids))
