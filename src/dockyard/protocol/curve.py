"""CURVE keys and join-token text, shared by server and agent.

A join token is ``dyj.<secret>.<server public key, hex>``: the secret proves the
agent was invited, the key pins the server it may talk to. Key pairs live in a
data dir: ``curve.key`` (secret, 0600) and ``curve.pub``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from dockyard.files import write_secret

SECRET_FILE = "curve.key"
PUBLIC_FILE = "curve.pub"
TOKEN_PREFIX = "dyj"


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes  # z85, 40 bytes
    secret: bytes


def load_or_create_keys(directory: Path) -> KeyPair:
    """The key pair in ``directory``; generated on first use (secret file 0600)."""
    secret_path, public_path = directory / SECRET_FILE, directory / PUBLIC_FILE
    if secret_path.exists() and public_path.exists():
        return KeyPair(
            public_path.read_text().strip().encode(), secret_path.read_text().strip().encode()
        )
    public, secret = zmq.curve_keypair()
    write_secret(secret_path, secret.decode())
    public_path.write_text(public.decode() + "\n")
    return KeyPair(public, secret)


def key_hex(public_z85: bytes) -> str:
    return bytes(z85.decode(public_z85)).hex()


def key_from_text(text: str) -> bytes:
    """A public key given as hex (64 digits) or z85 (40 characters), as z85."""
    text = text.strip()
    if len(text) == 64:
        return bytes(z85.encode(bytes.fromhex(text)))
    if len(text) == 40:
        z85.decode(text.encode())
        return text.encode()
    raise ValueError("a CURVE public key is 64 hex digits or 40 z85 characters")


def format_token(secret: str, server_public: bytes) -> str:
    return f"{TOKEN_PREFIX}.{secret}.{key_hex(server_public)}"


def parse_token(token: str) -> tuple[str, bytes]:
    """(secret, server public key z85) from a join token; ValueError if malformed."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1]:
        raise ValueError("not a dockyard join token (dyj.<secret>.<server key>)")
    return parts[1], key_from_text(parts[2])
