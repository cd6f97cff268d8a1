"""Service templates (admin-registered services users launch instances of)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.services import ServiceSpec
from dockyard.server.errors import Conflict
from dockyard.server.state.auth import Principal
from dockyard.store.errors import NotFound
from dockyard.store.tables import Template, Workload


def find_template(session: Session, name: str) -> Template:
    """The template named ``name``; NotFound otherwise."""
    template = session.scalar(select(Template).where(Template.name == name))
    if template is None:
        raise NotFound("template", name)
    return template


def list_templates(session: Session) -> list[Template]:
    """Every template, by name."""
    return list(session.scalars(select(Template).order_by(Template.name)))


def create_template(
    session: Session,
    name: str,
    spec: dict[str, Any],
    lifetime_s: float,
    max_per_user: int,
    created_by: str,
) -> Template:
    """Store a template; a :class:`Conflict` (``name_taken``) if the name is in use."""
    if session.scalar(select(Template).where(Template.name == name)) is not None:
        raise Conflict(f"a template named {name} exists", code="name_taken")
    template = Template(
        id=secrets.token_hex(8),
        name=name,
        spec=spec,
        lifetime_s=lifetime_s,
        max_per_user=max_per_user,
        created_by=created_by,
        created_at=time.time(),
    )
    session.add(template)
    session.flush()
    return template


def delete_template(session: Session, template: Template) -> None:
    session.delete(template)


def check_instance_replicas(
    session: Session, who: Principal, workload: Workload, replicas: int
) -> None:
    """Refuse (409 ``instance_limit``) a non-admin's scale or update of a template
    instance to more replicas than its template runs: each replica is a copy of the
    challenge, so scaling one instance up would get round ``max_per_user``.

    Once the template is gone the instance may not grow past what it runs now.
    """
    if not workload.template or who.is_admin:
        return
    template = session.scalar(select(Template).where(Template.name == workload.template))
    if template is not None:
        raw = {k: v for k, v in template.spec.items() if k not in ("policy", "description")}
        cap = ServiceSpec.from_dict(raw).replicas
    else:
        cap = ServiceSpec.from_dict(workload.spec).replicas
    if replicas > cap:
        raise Conflict(
            f"{workload.name} is an instance of template {workload.template}: "
            f"it runs at most {cap} replica(s)",
            code="instance_limit",
        )
