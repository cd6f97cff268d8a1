"""Service templates (admin-registered services users launch instances of)."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.networks import COMPONENT_LABEL, INSTANCE_LABEL, NetworkRef
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


#: Keys of a stored template spec that are not the main service's spec.
TEMPLATE_KEYS = ("policy", "description", "components", "network")


def main_spec(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The main service's stored spec of a template row's ``spec``."""
    return {k: v for k, v in stored.items() if k not in TEMPLATE_KEYS}


def egress_allowed(stored: Mapping[str, Any]) -> bool:
    """Whether the template lets its instances reach out (``network: {egress: true}``):
    else their network is internal (no route out, nor to the host's services)."""
    return bool((stored.get("network") or {}).get("egress"))


def template_parts(
    name: str, stored: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """``(component, spec, policy)`` of every service an instance runs: the main one
    (component ``""``) first, then the template's ``components`` by name."""
    parts: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
        ("", main_spec(stored), stored.get("policy"))
    ]
    for key, raw in sorted((stored.get("components") or {}).items()):
        spec = {k: v for k, v in raw.items() if k != "policy"}
        parts.append((str(key), spec, raw.get("policy")))
    return parts


def instance_specs(
    template: str, stored: Mapping[str, Any], instance: str
) -> list[tuple[ServiceSpec, dict[str, Any] | None]]:
    """The services of a new instance named ``instance``: the main one named so, each
    component ``instance_KEY``; all labelled with the instance and on one network of
    their own (internal unless the template allows egress), where the main one
    answers to the template's name and each component to its key."""
    internal = not egress_allowed(stored)
    out = []
    for key, raw, policy in template_parts(template, stored):
        spec = ServiceSpec.from_dict(raw)
        name = f"{instance}_{key}" if key else instance
        labels = {**spec.labels, INSTANCE_LABEL: instance}
        labels.pop(COMPONENT_LABEL, None)
        if key:
            labels[COMPONENT_LABEL] = key
        network = NetworkRef("default", internal, (key or template,))
        spec = dataclasses.replace(
            spec,
            task=dataclasses.replace(spec.task, name=name),
            labels=labels,
            networks=(network,),
        )
        out.append((spec, policy))
    return out


def component_of(workload: Workload) -> str:
    """The instance part a service runs (``""``: the main one, or not an instance)."""
    return str((workload.spec.get("labels") or {}).get(COMPONENT_LABEL, ""))


def instance_of(workload: Workload) -> str:
    """The name of the template instance the service belongs to (``""``: none)."""
    if not workload.template:
        return ""
    return str((workload.spec.get("labels") or {}).get(INSTANCE_LABEL, workload.name))


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
        parts = {key: raw for key, raw, _ in template_parts(template.name, template.spec)}
        raw = parts.get(component_of(workload)) or workload.spec
        cap = ServiceSpec.from_dict(raw).replicas
    else:
        cap = ServiceSpec.from_dict(workload.spec).replicas
    if replicas > cap:
        raise Conflict(
            f"{workload.name} is an instance of template {workload.template}: "
            f"it runs at most {cap} replica(s)",
            code="instance_limit",
        )
