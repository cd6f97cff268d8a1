"""Users: listing, lookup and the settings an admin changes (home, quota, policy, share)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import ValidationError
from dockyard.core.quota import Quota
from dockyard.core.security import ContainerPolicy
from dockyard.server.state.events import EventKind, record
from dockyard.store.errors import NotFound
from dockyard.store.tables import User


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def find_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound("user", name)
    return user


def update_user(
    session: Session,
    name: str,
    by: str,
    *,
    home: str | None = None,
    quota: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    share: float | None = None,
) -> User:
    """Change what is given (None: unchanged); each value is checked before any is set."""
    user = find_user(session, name)
    if home is not None and not home.startswith("/"):
        raise ValidationError("home", "must be an absolute path")
    if quota is not None:
        Quota.from_dict(quota)  # 422 naming the field when malformed
    if policy is not None:
        try:  # refuse malformed policies early
            ContainerPolicy.from_dict(policy)
        except (TypeError, AttributeError) as exc:
            raise ValidationError("policy", f"malformed policy: {exc}") from None
    if home is not None:
        user.home = home
    if quota is not None:
        user.quota = dict(quota)
    if policy is not None:
        user.policy = dict(policy)
    if share is not None:
        user.share = share
    record(session, EventKind.USER, "user_updated", f"{name} updated by {by}")
    return user
