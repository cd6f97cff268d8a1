"""Users and bearer tokens. Tokens are random, shown once, and stored as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.ids import new_id
from dockyard.core.specs import validate_name
from dockyard.files import write_secret
from dockyard.server.errors import Conflict, Unauthorized
from dockyard.store.tables import Token, User

TOKEN_PREFIX = "dy_"
ADMIN_NAME = "admin"
ADMIN_TOKEN_FILE = "admin.token"
#: Auth backends selectable by name in the config file (``server.auth``).
BACKENDS = ("token",)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of an API request."""

    user_id: str
    name: str
    is_admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def authenticate(session: Session, token: str) -> Principal:
    """Resolve a bearer token to its user, or raise :class:`Unauthorized`."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthorized("invalid token")
    digest = hash_token(token)
    row = session.execute(
        select(Token, User).join(User, Token.user_id == User.id).where(Token.token_hash == digest)
    ).first()
    if row is None:
        raise Unauthorized("invalid token")
    stored, user = row
    if not hmac.compare_digest(stored.token_hash, digest) or stored.revoked:
        raise Unauthorized("invalid token")
    return Principal(user.id, user.name, user.is_admin)


def create_user(session: Session, name: str, is_admin: bool = False) -> User:
    validate_name(name)
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} exists")
    user = User(id=new_id(), name=name, is_admin=is_admin, created_at=time.time())
    session.add(user)
    session.flush()
    return user


def issue_token(session: Session, user: User, description: str = "") -> str:
    """Create a token for ``user`` and return it; only its hash is stored."""
    token = generate_token()
    session.add(
        Token(
            id=new_id(),
            user_id=user.id,
            token_hash=hash_token(token),
            description=description[:200],
            created_at=time.time(),
        )
    )
    return token


def bootstrap_admin(session: Session, data_dir: Path) -> str | None:
    """On first start create the admin user and write its token to a 0600 file.

    Returns the new token, or None when an admin already exists.
    """
    if session.scalar(select(User).where(User.is_admin.is_(True))) is not None:
        return None
    admin = create_user(session, ADMIN_NAME, is_admin=True)
    token = issue_token(session, admin, "bootstrap")
    write_secret(data_dir / ADMIN_TOKEN_FILE, token)
    return token
