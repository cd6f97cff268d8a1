"""``GET /api/v1/status``: the server instances, who leads, the term, the lease age."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from dockyard.server.control.leader import LEASE_ROW, db_now
from dockyard.server.http.deps import CurrentUser, server_context
from dockyard.server.state import leases

router = APIRouter(tags=["status"])


class InstanceOut(BaseModel):
    id: str
    api_url: str
    gateway: str
    seen_age_s: float
    leader: bool
    this: bool


class StatusOut(BaseModel):
    #: The instance that answered.
    instance: str
    leader: str | None
    term: int | None
    lease_s: float | None
    #: Seconds since the leader last renewed its lease (database clock).
    lease_age_s: float | None
    instances: list[InstanceOut]


@router.get("/api/v1/status", response_model=StatusOut)
def status(request: Request, who: CurrentUser) -> StatusOut:
    """The control plane: every server instance, the leader, its term and lease age."""
    ctx = server_context(request)
    with ctx.db.read() as session:
        now = db_now(session)
        lease = leases.lease(session, LEASE_ROW)
        alive = lease is not None and now - lease.renewed_at <= lease.lease_s
        leader = lease.holder if lease is not None and alive else None
        instances = [
            InstanceOut(
                id=i.id,
                api_url=i.api_url,
                gateway=i.gateway,
                seen_age_s=round(max(0.0, now - i.seen_at), 3),
                leader=i.id == leader,
                this=i.id == ctx.instance_id,
            )
            for i in leases.instances(session)
        ]
        return StatusOut(
            instance=ctx.instance_id,
            leader=leader,
            term=lease.term if lease is not None else None,
            lease_s=lease.lease_s if lease is not None else None,
            lease_age_s=round(max(0.0, now - lease.renewed_at), 3) if lease is not None else None,
            instances=instances,
        )
