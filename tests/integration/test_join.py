"""Secure node joining: join tokens, CURVE, refusals (in-process server, simulated nodes)."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from dockyard.agent.main import Agent, AgentConfig
from dockyard.client import ClientError
from dockyard.drivers.sim import SimDriver
from dockyard.protocol import curve
from dockyard.store.tables import JoinToken, NodeKey
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


@pytest.fixture(scope="module")
def secure() -> Iterator[LocalCluster]:
    cluster = LocalCluster(insecure_open_join=False).start()
    yield cluster
    cluster.close()


def _ready_names(cluster: LocalCluster) -> set[str]:
    with cluster.client() as api:
        return {n["name"] for n in api.nodes() if n["state"] == "ready"}


def _agent(cluster: LocalCluster, name: str, **options: object) -> Agent:
    agent = Agent(
        AgentConfig(
            server=cluster.gateway,
            data_dir=cluster.root / f"agent-{name}",
            name=name,
            **options,  # type: ignore[arg-type]
        ),
        driver=SimDriver(),
    )
    agent.start()
    cluster.agents.append(agent)
    return agent


def _reasons(cluster: LocalCluster) -> list[str]:
    with cluster.client() as api:
        return [e["reason"] for e in api.events()]


def test_server_key_pair_on_first_start(secure: LocalCluster) -> None:
    secret = secure.root / "server" / curve.SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len((secure.root / "server" / curve.PUBLIC_FILE).read_text().strip()) == 40


def test_token_crud_admin_only_and_hashed(secure: LocalCluster) -> None:
    with secure.client() as admin:
        created = admin.create_join_token("rack 4", ttl_s=3600)
        token = created["token"]
        secret, server_key = curve.parse_token(token)
        assert (
            server_key == (secure.root / "server" / curve.PUBLIC_FILE).read_text().strip().encode()
        )
        listed = {t["id"]: t for t in admin.join_tokens()}
        assert listed[created["id"]]["state"] == "active"
        assert "token" not in listed[created["id"]]
        user_token = admin.add_user("dave-join")["token"]
    with secure.server.db.read() as session:
        row = session.get(JoinToken, created["id"])
        assert row is not None and secret not in row.token_hash and token not in row.token_hash
    with secure.client(user_token) as dave:
        for call in (dave.join_tokens, lambda: dave.create_join_token("x")):
            with pytest.raises(ClientError) as exc:
                call()
            assert exc.value.status == 403


def test_valid_token_joins_and_binds_key(secure: LocalCluster) -> None:
    with secure.client() as admin:
        token = admin.create_join_token("good")["token"]
    agent = _agent(secure, "good-1", join_token=token)
    wait_for(lambda: "good-1" in _ready_names(secure), timeout=20, message="good-1 ready")
    with secure.server.db.read() as session:
        key = session.get(NodeKey, agent.node_id)
        assert key is not None
        own = (secure.root / "agent-good-1" / curve.PUBLIC_FILE).read_text().strip()
        assert key.public_key == own
    assert "node_joined" in _reasons(secure)
    # A restart without the token still works: the node's key is admitted and the
    # server key was remembered in the agent's data dir.
    agent.stop()
    secure.agents.remove(agent)
    again = _agent(secure, "good-1")
    wait_for(lambda: again.connection.welcomed.is_set(), timeout=20, message="rejoined")


def test_missing_bad_and_revoked_tokens_are_refused(secure: LocalCluster) -> None:
    server_key = (secure.root / "server" / curve.PUBLIC_FILE).read_text().strip()
    with secure.client() as admin:
        revoked = admin.create_join_token("to revoke")
        admin.revoke_join_token(revoked["id"])
        assert {t["id"]: t for t in admin.join_tokens()}[revoked["id"]]["state"] == "revoked"
    no_token = _agent(secure, "no-token", server_key=server_key)
    forged = _agent(
        secure, "forged", join_token=f"dyj.not-a-real-secret.{curve.key_hex(server_key.encode())}"
    )
    old = _agent(secure, "revoked", join_token=revoked["token"])
    for agent in (no_token, forged, old):
        wait_for(lambda a=agent: a.connection.refused, timeout=20, message="refused")  # type: ignore[misc]
        assert not agent.connection.welcomed.is_set()
    assert not {"no-token", "forged", "revoked"} & _ready_names(secure)
    assert "node_refused" in _reasons(secure)


def test_spoofed_node_id_is_refused(secure: LocalCluster) -> None:
    with secure.client() as admin:
        token = admin.create_join_token("victim")["token"]
    victim = _agent(secure, "victim", join_token=token)
    wait_for(lambda: "victim" in _ready_names(secure), timeout=20)
    server_key = (secure.root / "server" / curve.PUBLIC_FILE).read_text().strip()
    thief = _agent(secure, "thief", server_key=server_key, node_id=victim.node_id)
    wait_for(lambda: thief.connection.refused, timeout=20, message="thief refused")
    assert "another key" in thief.connection.refused
    with secure.server.db.read() as session:
        keys = session.scalars(select(NodeKey).where(NodeKey.node_id == victim.node_id)).all()
        assert [k.public_key for k in keys] == [
            (secure.root / "agent-victim" / curve.PUBLIC_FILE).read_text().strip()
        ]
    assert victim.connection.welcomed.is_set()


def test_wrong_server_key_never_connects(secure: LocalCluster) -> None:
    other_public, _ = __import__("zmq").curve_keypair()
    with secure.client() as admin:
        secret, _ = curve.parse_token(admin.create_join_token("mitm")["token"])
    wrong = _agent(secure, "wrong-key", join_token=curve.format_token(secret, other_public))
    with secure.client() as admin:
        token = admin.create_join_token("control")["token"]
    _agent(secure, "control", join_token=token)
    wait_for(lambda: "control" in _ready_names(secure), timeout=20, message="control joined")
    deadline = time.monotonic() + 3  # several hello retries of the wrong-key agent
    while time.monotonic() < deadline:
        assert "wrong-key" not in _ready_names(secure)
        assert not wrong.connection.welcomed.is_set()
        time.sleep(0.2)
