"""Secrets and configs through the API (issue 18), on SQLite and PostgreSQL with a
hollow node: values never come back, owners only see and mount their own, a value in
use cannot be removed (409 naming the services), bad input is a 4xx naming the field
with nothing written, and the dry-run check takes the names a deploy will store."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from dockyard.client import Client, ClientError
from dockyard.testing.cluster import LocalCluster

VALUE = b"hunter2-do-not-print"


def svc(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sleep", "600"], **extra}


def refused(call: Any) -> ClientError:
    with pytest.raises(ClientError) as info:
        call()
    return info.value


def test_store_list_mount_and_remove_with_ownership(local: LocalCluster) -> None:
    with local.client() as admin:
        alice = Client(local.url, admin.add_user("sec-alice")["token"])
        bob = Client(local.url, admin.add_user("sec-bob")["token"])
    with alice, bob, local.client() as admin:
        made = alice.create_secret("db_pw", VALUE, labels={"app": "shop"})
        assert made["size"] == len(VALUE) and made["owner"] == "sec-alice"
        alice.create_secret("nginx.conf", b"server {}\n", kind="config")
        # Never returned: not by create, show, list, nor any service answer.
        shown = [made, alice.secret("db_pw"), *alice.secrets(), *alice.secrets("config")]
        assert all("data" not in s and VALUE.decode() not in str(s) for s in shown)
        assert [s["name"] for s in alice.secrets()] == ["db_pw"]
        assert [s["name"] for s in alice.secrets("config")] == ["nginx.conf"]
        # The store holds ciphertext only.
        with local.server.db.read() as session:
            raw = session.execute(text("SELECT ciphertext FROM secret_values")).scalars().all()
        assert raw and all(VALUE not in bytes(r) for r in raw)

        body = svc(
            "sec-web",
            secrets=["db_pw", {"source": "db_pw", "target": "pw2", "mode": "0400"}],
            configs=[{"source": "nginx.conf", "target": "/etc/nginx/nginx.conf"}],
        )
        created = alice.create_service(body)
        assert VALUE.decode() not in str(created)
        spec = created["spec"]
        assert [s["target"] for s in spec["secrets"]] == ["/run/secrets/db_pw", "/run/secrets/pw2"]
        assert spec["secrets"][1]["mode"] == 0o400
        assert spec["configs"][0]["target"] == "/etc/nginx/nginx.conf"

        # Bob sees none of it and cannot mount Alice's secret.
        assert bob.secrets() == [] and bob.secrets("config") == []
        assert refused(lambda: bob.secret("db_pw")).status == 404
        assert refused(lambda: bob.secret("db_pw", owner="sec-alice")).status == 404
        assert refused(lambda: bob.remove_secret("db_pw", owner="sec-alice")).status == 404
        err = refused(lambda: bob.create_service(svc("bob-steal", secrets=["db_pw"])))
        assert err.status == 422 and err.field == "secrets[0].source", err
        assert "bob-steal" not in [s["name"] for s in admin.services()]
        # Same name in Bob's namespace is his own value.
        bob.create_secret("db_pw", b"bobs")
        assert bob.secret("db_pw")["size"] == 4

        # The admin lists everyone's (owners shown), and removal in use is a 409.
        owners = {(s["owner"], s["name"]) for s in admin.secrets()}
        assert {("sec-alice", "db_pw"), ("sec-bob", "db_pw")} <= owners
        err = refused(lambda: admin.remove_secret("db_pw", owner="sec-alice"))
        assert err.status == 409 and "sec-web" in str(err), err
        err = refused(lambda: alice.remove_secret("nginx.conf", kind="config"))
        assert err.status == 409 and "sec-web" in str(err)
        alice.remove_service("sec-web")
        admin.remove_secret("db_pw", owner="sec-alice")
        alice.remove_secret("nginx.conf", kind="config")
        assert alice.secrets() == [] and bob.secret("db_pw")["owner"] == "sec-bob"
        bob.remove_secret("db_pw")


def test_bad_input_names_the_field_and_writes_nothing(local: LocalCluster) -> None:
    with local.client() as api, httpx.Client(base_url=local.url) as http:
        http.headers["Authorization"] = f"Bearer {local.admin_token}"
        for body, field in (
            ({"name": "x", "data": "%%%"}, "data"),
            ({"name": "bad name", "data": ""}, "name"),
            ({"name": "big", "data": "A" * 800_000}, "data"),
        ):
            response = http.post("/api/v1/secrets", json=body)
            assert response.status_code == 422, response.text
            assert field in str(response.json().get("field")), response.text
        big = refused(lambda: api.create_secret("big", b"x" * (512 * 1024 + 1)))
        assert big.status == 422 and big.field == "data"
        api.create_secret("once", b"1")
        assert refused(lambda: api.create_secret("once", b"2")).status == 409
        assert api.create_secret("once", b"22", replace=True)["size"] == 2
        for refs, field in (
            ({"secrets": [{"source": "once", "mode": 4000}]}, "secrets[0].mode"),
            ({"secrets": [{"source": "once", "target": "../x"}]}, "secrets[0].target"),
            ({"configs": [{"source": "once", "target": "/proc/x"}]}, "configs[0].target"),
            ({"secrets": ["once", {"source": "once", "target": "once"}]}, "secrets"),
            ({"secrets": [{"source": "once", "bogus": 1}]}, "secrets[0].bogus"),
        ):
            err = refused(lambda refs=refs: api.create_service(svc("bad-refs", **refs)))
            assert err.status == 422 and err.field == field, (refs, err, err.field)
        assert "bad-refs" not in [s["name"] for s in api.services()]
        assert [s["name"] for s in api.secrets()] == ["once"]
        # The dry run: a secret the deploy will store first counts as existing.
        err = refused(lambda: api.check_service(svc("chk", secrets=["later"])))
        assert err.status == 422 and err.field == "secrets[0].source"
        assert api.check_service(svc("chk", secrets=["later"]), secrets=["later"])["ok"]
        # Templates cannot mount them (an instance is owned by whoever launches it).
        tpl = {"name": "sec-tpl", "service": {"image": "busybox", "secrets": ["once"]}}
        err = refused(lambda: api.create_template(tpl))
        assert err.status == 422 and err.field == "service.secrets", err
        api.remove_secret("once")
