"""Submitting many jobs in one request: all stored or none, errors name the job."""

from __future__ import annotations

import pytest

from dockyard.client import ClientError
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


def job(name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "image": "busybox",
        "command": ["true"],
        "cpu": "100m",
        "memory": "16m",
        "env": {"DOCKYARD_SIM_RUN_FOR": "0"},
        **extra,
    }


def test_batch_runs_every_job(local: LocalCluster) -> None:
    with local.client() as api:
        ids = api.run_jobs([job(f"b-{i}") for i in range(200)])
        assert len(ids) == len(set(ids)) == 200
        wait_for(
            lambda: (
                all(t["state"] == "succeeded" for t in api.tasks() if t["id"] in ids)
                and len([t for t in api.tasks() if t["id"] in ids]) == 200
            ),
            timeout=60,
            message="200 batch jobs succeeded",
        )
        assert api.task(ids[7])["name"] == "b-7"


def test_bad_job_refuses_the_whole_batch(local: LocalCluster) -> None:
    with local.client() as api:
        before = len(api.tasks())
        with pytest.raises(ClientError) as err:
            api.run_jobs([job("ok-0"), job("bad", memory="lots"), job("ok-2")])
        assert err.value.status == 422 and err.value.field == "jobs[1].memory"
        with pytest.raises(ClientError) as empty:
            api.run_jobs([])
        assert empty.value.status == 422
        assert len(api.tasks()) == before

        api.add_user("batcher")
        with local.client(api.create_token("batcher")["token"]) as user:
            with pytest.raises(ClientError) as refused:
                user.run_jobs([job("fine"), job("root", privileged=True)])
            assert refused.value.status == 403
            assert user.tasks() == []
