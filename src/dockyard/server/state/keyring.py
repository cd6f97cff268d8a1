"""The server key that encrypts secrets and configs at rest (Fernet).

``secrets.key`` in the server's data directory (0600, made on the first start)
holds one or more Fernet keys, one per line: the first encrypts, every one
decrypts (``MultiFernet``), so a new key can be put first while values written
under the old one stay readable. Several server instances (HA) must share the
same file. See docs/security.md, *Secrets and configs*.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from dockyard.server.errors import ServerError

KEY_FILE = "secrets.key"


class SecretKeyError(ServerError):
    """The key file is unreadable, or a value cannot be decrypted with it."""

    status_code = 500
    code = "secret_key"


class Keyring:
    """Encrypts and decrypts values with the server key (never logs them)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no key in the secrets key file")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def __repr__(self) -> str:
        return "Keyring(<hidden>)"

    def encrypt(self, value: bytes) -> bytes:
        return self._fernet.encrypt(value)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise SecretKeyError(
                "a stored value cannot be decrypted with this server's secrets.key "
                "(another instance's key, or the key was replaced)"
            ) from None

    @classmethod
    def generate(cls) -> Keyring:
        return cls([Fernet.generate_key()])


def load_or_create(data_dir: Path) -> Keyring:
    """The keyring of ``data_dir/secrets.key``, made (0600) on the first start."""
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    try:
        lines = [line.strip() for line in path.read_bytes().splitlines()]
        return Keyring([line for line in lines if line and not line.startswith(b"#")])
    except (ValueError, OSError) as exc:
        raise SecretKeyError(f"{path}: not a list of Fernet keys ({type(exc).__name__})") from None
