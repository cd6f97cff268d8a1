"""Users and bearer tokens. Tokens are random, shown once, and stored as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
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
    if user.disabled:
        raise Unauthorized("user disabled")
    return Principal(user.id, user.name, user.is_admin)


#: How long a verified token is trusted without asking the store again: a token
#: revoked (or deleted, or its user removed) in the store stops working within this.
TOKEN_CACHE_S = 2.0
TOKEN_CACHE_MAX = 4096


class TokenCache:
    """Tokens verified in the last :data:`TOKEN_CACHE_S` seconds, so a burst of API
    calls costs one store lookup per token, not one per request.

    Keyed by the token's SHA-256 (the raw token is never kept); only successful
    verifications are remembered, so a wrong or revoked token is always checked
    against the store, and a cache full of guesses cannot push out real callers
    (least recently verified out, bounded). One cache per server: a token of
    another server's store is never trusted here."""

    def __init__(
        self,
        ttl_s: float = TOKEN_CACHE_S,
        max_entries: int = TOKEN_CACHE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(
        self, session: Callable[[], AbstractContextManager[Session]], token: str
    ) -> Principal:
        """The caller of ``token``: from the cache while fresh, else from the store
        (``session`` opens a read session); raises :class:`Unauthorized`."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise Unauthorized("invalid token")
        cached = self.cached(token)
        if cached is not None:
            return cached
        digest = hash_token(token)
        now = self._clock()
        with session() as read:
            who = authenticate(read, token)
        with self._lock:
            self._entries[digest] = (now + self.ttl_s, who)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return who

    def cached(self, token: str) -> Principal | None:
        """The caller of ``token`` if it was verified within the TTL (no I/O)."""
        digest = hash_token(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None and entry[0] > self._clock():
                return entry[1]
        return None

    def clear(self) -> None:
        """Forget every verified token (the next call of each asks the store)."""
        with self._lock:
            self._entries.clear()


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
    if user.disabled:
        raise Conflict(f"user {user.name!r} is disabled (dockyard user enable {user.name})")
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
