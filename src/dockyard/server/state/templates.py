"""Service templates (admin-registered services users launch instances of)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.server.errors import Conflict
from dockyard.store.errors import NotFound
from dockyard.store.tables import Template


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
