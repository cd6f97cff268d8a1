"""Which container policy applies to a caller, and enforcing it on a job spec."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from dockyard.core.security import ContainerPolicy, check
from dockyard.core.specs import JobSpec
from dockyard.server.errors import Unauthorized
from dockyard.server.state.auth import Principal
from dockyard.store.tables import User


def home_of(user: User) -> str:
    return user.home or f"/home/{user.name}"


def policy_for(user: User, cluster: Mapping[str, Any] | None = None) -> ContainerPolicy | None:
    """The policy limiting ``user``'s containers; None for admins (not limited).

    Cluster-wide settings (config file) apply first; the user's own overrides,
    set by an admin, win. Bind mounts default to the user's home directory.
    """
    if user.is_admin:
        return None
    merged = {**(cluster or {}), **(user.policy or {})}
    return ContainerPolicy.from_dict(merged, roots=(home_of(user),))


def caller_policy(
    session: Session, who: Principal, cluster: Mapping[str, Any] | None
) -> ContainerPolicy | None:
    """The policy limiting the caller's containers (None for admins); 401 if the
    caller's user was deleted after its token was checked."""
    user = session.get(User, who.user_id)
    if user is None:
        raise Unauthorized("user no longer exists")
    return policy_for(user, cluster)


def enforce(spec: JobSpec, policy: ContainerPolicy | None) -> JobSpec:
    """Check ``spec`` against ``policy`` (raising PolicyViolation: its options, mounts,
    image registry and host ports) and return it with bind sources resolved and the
    policy's default user applied."""
    if policy is None:  # admins: not limited, but bind sources are still resolved
        mounts = tuple(
            dataclasses.replace(m, source=os.path.realpath(m.source)) if m.kind == "bind" else m
            for m in spec.mounts
        )
        return dataclasses.replace(spec, mounts=mounts)
    resolved = check(
        spec.security,
        spec.mounts,
        policy,
        os.path.realpath,
        image=spec.image,
        host_ports=spec.ports,
    )
    security = spec.security
    if not security.user and policy.default_user:
        security = dataclasses.replace(security, user=policy.default_user)
    return dataclasses.replace(spec, mounts=tuple(resolved), security=security)
