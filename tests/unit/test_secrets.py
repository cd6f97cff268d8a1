"""Secrets and configs (issue 18): reference parsing, Compose definitions, the server
key (Fernet, 0600 file, rotation by prepending), the store holding ciphertext only,
the start entry's files on the wire, and the agent's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from dockyard.agent.secretfiles import SecretFiles, SecretFilesError
from dockyard.core.compose import ComposeError, convert
from dockyard.core.errors import ValidationError
from dockyard.core.secrets import FileKind, FileRef, parse_file_refs
from dockyard.core.services import ServiceSpec
from dockyard.protocol.messages import Desired, DesiredEntry, ProtocolError, decode, encode
from dockyard.server.state import auth, keyring
from dockyard.server.state import secrets as secret_ops
from dockyard.store.db import Database, sqlite_url

VALUE = b"s3cr3t-value-never-stored-plain"


def test_references_short_and_long_with_defaults() -> None:
    refs = parse_file_refs(
        FileKind.SECRET,
        ["pw", {"source": "pw", "target": "k.txt", "mode": "0400", "uid": "1000"}],
    )
    assert refs[0] == FileRef(FileKind.SECRET, "pw", "/run/secrets/pw", 0o444)
    assert (refs[1].target, refs[1].mode, refs[1].uid) == ("/run/secrets/k.txt", 0o400, 1000)
    (conf,) = parse_file_refs(FileKind.CONFIG, ["nginx.conf"])
    assert conf.target == "/nginx.conf"
    assert FileRef.from_dict(conf.to_dict()) == conf


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ("pw", "secrets"),
        ([{"source": "bad name"}], "secrets[0].source"),
        ([{"source": "pw", "mode": 0o1777}], "secrets[0].mode"),
        ([{"source": "pw", "mode": "rw"}], "secrets[0].mode"),
        ([{"source": "pw", "target": "/a/../etc/passwd"}], "secrets[0].target"),
        ([{"source": "pw", "target": "/proc/self/x"}], "secrets[0].target"),
        ([{"source": "pw", "uid": -1}], "secrets[0].uid"),
        ([{"source": "pw", "extra": 1}], "secrets[0].extra"),
        ([7], "secrets[0]"),
    ],
)
def test_bad_references_name_the_field(items: object, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_file_refs(FileKind.SECRET, items)
    assert info.value.field == field


def test_compose_definitions_and_references(tmp_path: Path) -> None:
    doc = {
        "services": {
            "web": {
                "image": "web:1",
                "secrets": ["db_pw", {"source": "key", "target": "api.key", "mode": "0440"}],
                "configs": [{"source": "conf", "target": "/etc/web.conf"}, "ext_conf"],
            }
        },
        "secrets": {"db_pw": {"file": "./pw.txt"}, "key": {"environment": "API_KEY"}},
        "configs": {
            "conf": {"content": "a=1"},
            "ext_conf": {"external": True, "name": "shared.conf"},
        },
    }
    result = convert(doc, stack="shop", base_dir=str(tmp_path), environ={"API_KEY": "k1"})
    (body,) = result.payloads
    assert body["secrets"] == [
        {"source": "shop_db_pw", "target": "db_pw"},
        {"source": "shop_key", "target": "api.key", "mode": "0440"},
    ]
    assert body["configs"] == [
        {"source": "shop_conf", "target": "/etc/web.conf"},
        {"source": "shared.conf", "target": "ext_conf"},
    ]
    values = {(v.kind, v.name): v for v in result.values}
    assert set(values) == {
        (FileKind.SECRET, "shop_db_pw"),
        (FileKind.SECRET, "shop_key"),
        (FileKind.CONFIG, "shop_conf"),
    }  # the external one is not stored by the deploy
    assert values[(FileKind.SECRET, "shop_db_pw")].path == str(tmp_path / "pw.txt")
    assert values[(FileKind.SECRET, "shop_key")].text == "k1"
    assert "k1" not in repr(result.values)  # values are never printed


def test_compose_secret_mistakes_are_refusals() -> None:
    doc = {
        "services": {"a": {"image": "a:1", "secrets": ["undeclared", "from_env"]}},
        "secrets": {"from_env": {"environment": "UNSET_VAR"}, "empty": {}},
    }
    with pytest.raises(ComposeError) as info:
        convert(doc, stack="s", base_dir="/p", environ={})
    found = {(n.service, n.key) for n in info.value.refusals}
    assert found == {("a", "secrets"), ("", "secrets.from_env.environment"), ("", "secrets.empty")}


def test_key_file_is_private_stable_and_rotates_by_prepending(tmp_path: Path) -> None:
    ring = keyring.load_or_create(tmp_path)
    path = tmp_path / keyring.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    token = ring.encrypt(VALUE)
    assert VALUE not in token and keyring.load_or_create(tmp_path).decrypt(token) == VALUE
    assert "<hidden>" in repr(ring)
    # A new key first: new values use it, old ones still decrypt.
    new = keyring.Keyring.generate()
    old_key = path.read_bytes()
    path.write_bytes(new._fernet._fernets[0]._signing_key + b"\n")
    with pytest.raises(keyring.SecretKeyError):
        keyring.load_or_create(tmp_path)
    from cryptography.fernet import Fernet

    path.write_bytes(Fernet.generate_key() + b"\n" + old_key)
    rotated = keyring.load_or_create(tmp_path)
    assert rotated.decrypt(token) == VALUE
    with pytest.raises(keyring.SecretKeyError):
        keyring.Keyring.generate().decrypt(token)  # another server's key


def test_store_holds_ciphertext_only_and_start_files_decrypt(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path))
    db.migrate()
    ring = keyring.load_or_create(tmp_path)
    with db.write() as session:
        user = auth.create_user(session, "alice")
        who = auth.Principal(user.id, user.name, False)
        secret_ops.put(session, who, FileKind.SECRET, "pw", VALUE, ring)
    with db.read() as session:
        (raw,) = session.execute(text("SELECT * FROM secret_values")).all()
        assert all(VALUE not in (c if isinstance(c, bytes) else str(c).encode()) for c in raw)
        ref = {"kind": "secret", "source": "pw", "target": "/run/secrets/pw", "mode": 0o400}
        missing = {**ref, "source": "gone"}
        files = secret_ops.start_files(session, ring, [(user.id, [ref]), (user.id, [missing])])
        assert files[0] == (
            {"target": "/run/secrets/pw", "mode": 0o400, "uid": None, "gid": None, "data": VALUE},
        )
        assert "no longer exists" in files[1][0]["error"]
        # Another owner's value is not found under their name.
        assert "error" in secret_ops.start_files(session, ring, [("other", [ref])])[0][0]


def test_start_entry_files_on_the_wire_and_hidden_from_repr() -> None:
    files = ({"target": "/run/secrets/pw", "mode": 0o444, "uid": None, "gid": None, "data": VALUE},)
    entry = DesiredEntry("t1", "busybox", 100, 2**20, files=files)
    msg, _ = decode(encode(Desired("n1", 3, (entry,))))
    assert isinstance(msg, Desired) and msg.tasks[0].files == files
    assert VALUE.decode() not in repr(msg)
    body = Desired("n1", 3, (DesiredEntry("t1", "busybox", 100, 2**20),)).encode()
    body["tasks"][0]["files"] = [{"target": "/x", "mode": 0o444, "data": VALUE.decode()}]
    with pytest.raises(ProtocolError) as info:
        Desired.decode(body)
    assert VALUE.decode() not in str(info.value)


def test_agent_files_modes_and_prune(tmp_path: Path) -> None:
    store = SecretFiles(tmp_path / "secrets")
    mounts = store.write("t1", [{"target": "/run/secrets/pw", "mode": 0o400, "data": VALUE}])
    (mount,) = mounts
    assert (mount.target, mount.read_only, mount.kind) == ("/run/secrets/pw", True, "bind")
    assert Path(mount.source).read_bytes() == VALUE
    assert os.stat(mount.source).st_mode & 0o777 == 0o400
    assert (tmp_path / "secrets" / "t1").stat().st_mode & 0o777 == 0o700
    with pytest.raises(SecretFilesError) as info:
        store.write("t2", [{"error": "the secret 'pw' no longer exists"}])
    assert info.value.reason == "secret_unavailable"
    store.prune(keep={"t9"})
    assert not (tmp_path / "secrets" / "t1").exists()


def test_service_spec_keeps_references_not_values() -> None:
    from dockyard.core.services import build_service_spec
    from dockyard.core.specs import build_job_spec

    task = build_job_spec(name="web", image="busybox")
    spec = build_service_spec(task, secrets=["pw"], configs=[{"source": "c", "target": "/c"}])
    again = ServiceSpec.from_dict(spec.to_dict())
    assert again.files == spec.files and len(spec.files) == 2
    with pytest.raises(ValidationError) as info:
        build_service_spec(
            task, secrets=["pw"], configs=[{"source": "c", "target": "/run/secrets/pw"}]
        )
    assert info.value.field == "configs"


def test_only_start_entries_of_service_replicas_carry_the_files(tmp_path: Path) -> None:
    from dockyard.protocol.messages import TaskTemplate
    from dockyard.store.tables import Workload

    db = Database(sqlite_url(tmp_path))
    db.migrate()
    ring = keyring.Keyring.generate()
    ref = {"kind": "secret", "source": "pw", "target": "/run/secrets/pw", "mode": 0o444}
    with db.write() as session:
        user = auth.create_user(session, "alice")
        secret_ops.put(
            session, auth.Principal(user.id, user.name, False), FileKind.SECRET, "pw", VALUE, ring
        )
        session.add(
            Workload(
                id="w1",
                owner_id=user.id,
                name="web",
                kind="service",
                created_at=0.0,
                spec={"files": [ref]},
            )
        )
    net = TaskTemplate(networks=({"name": "default", "id": "n1"},))
    start = DesiredEntry("t1", "busybox", 100, 2**20, template=net, workload_id="w1")
    running = DesiredEntry(
        "t2", "busybox", 100, 2**20, template=net, workload_id="w1", container_id="c2"
    )
    job = DesiredEntry("t3", "busybox", 100, 2**20, workload_id="w1")
    with db.read() as session:
        sets = secret_ops.add_start_files(
            session, ring, {"n": Desired("n", 1, (start, running, job))}
        )
    first, second, third = sets["n"].tasks
    assert first.files[0]["data"] == VALUE
    assert second.files == () and third.files == ()
