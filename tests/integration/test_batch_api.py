"""Issue 22 on hollow nodes: job arrays (throttle, index, accounting), dependencies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from typer.testing import CliRunner

from dockyard.agent.main import Agent, AgentConfig
from dockyard.cli.main import app
from dockyard.client import Client, ClientError
from dockyard.drivers.base import ContainerSpec
from dockyard.drivers.sim import SimDriver
from dockyard.server.state.workload_specs import workload_specs
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GiB = 1024**3
#: The environment of every container the hollow nodes created, by task id.
SEEN_ENV: dict[str, dict[str, str]] = {}


#: Their mounts (target -> source) and the signals each was sent, by task id.
SEEN_MOUNTS: dict[str, dict[str, str]] = {}
SIGNALS: dict[str, list[str]] = {}
_TASK_OF: dict[str, str] = {}


class RecordingSim(SimDriver):
    def create(self, spec: ContainerSpec) -> str:
        SEEN_ENV[spec.task_id] = dict(spec.env)
        SEEN_MOUNTS[spec.task_id] = {m.target: m.source for m in spec.mounts}
        rank = spec.env.get("DOCKYARD_ARRAY_INDEX")
        if ("FAIL_ON_RESUME" in spec.env and "DOCKYARD_RESUME" in spec.env) or (
            rank is not None and spec.env.get("FAIL_RANK") == rank
        ):
            extra = {"DOCKYARD_SIM_RUN_FOR": "300ms", "DOCKYARD_SIM_EXIT_CODE": "3"}
            spec = replace(spec, env={**spec.env, **extra})
        container_id = super().create(spec)
        _TASK_OF[container_id] = spec.task_id
        return container_id

    def signal(self, container_id: str, signal: str) -> None:
        SIGNALS.setdefault(_TASK_OF.get(container_id, container_id), []).append(signal)
        super().signal(container_id, signal)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster().start()
    for name in ("n1", "n2"):
        agent = Agent(
            AgentConfig(
                server=local.gateway,
                data_dir=local.root / f"agent-{name}",
                name=name,
                driver="sim",
            ),
            driver=RecordingSim(cpu_millis=8000, memory_bytes=16 * GiB),
        )
        agent.start()
        local.agents.append(agent)
    with local.client() as api:
        wait_for(lambda: len([n for n in api.nodes() if n["state"] == "ready"]) == 2, timeout=20)
    yield local
    local.close()


def _tasks_of(api: Client, workload_id: str) -> list[dict[str, Any]]:
    return [t for t in api.tasks() if t["workload_id"] == workload_id]


def test_array_throttle_index_and_accounting(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        array = api.run_job(
            "arr",
            "busybox",
            [],
            array="1-9:2,20%2",
            env={"DOCKYARD_SIM_RUN_FOR": "300ms"},
        )
        assert array["total"] == 6 and array["throttle"] == 2
        assert array["indices"] == "1-9:2,20"
        most = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = _tasks_of(api, array["id"])
            live = [t for t in tasks if t["state"] not in ("succeeded", "failed", "killed")]
            most = max(most, len(live))
            if len(tasks) == 6 and not live:
                break
            time.sleep(0.05)
        assert most <= 2
        done = api.array(array["id"])
        assert done["state"] == "released"
        assert done["counts"].get("succeeded") == 6
        # Each element's container saw its index; accounting records it (SGE task_number).
        envs = [SEEN_ENV[t["id"]]["DOCKYARD_ARRAY_INDEX"] for t in _tasks_of(api, array["id"])]
        assert sorted(int(e) for e in envs) == [1, 3, 5, 7, 9, 20]
        records = [r for r in api.accounting() if r["workload_id"] == array["id"]]
        assert sorted(r["array_index"] for r in records) == [1, 3, 5, 7, 9, 20]
        sge = api.export_accounting("sge")
        numbers = {
            int(line.split(":")[35])
            for line in sge.splitlines()
            if line and any(r["task_id"] in line for r in records)
        }
        assert numbers == {1, 3, 5, 7, 9, 20}


def test_array_bad_expression_is_a_422(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        for bad in ("5-1", "1-3,2", "x", "1-10%0"):
            with pytest.raises(ClientError) as info:
                api.run_job("bad", "busybox", [], array=bad)
            assert info.value.status == 422
            assert info.value.field == "array"


def test_large_array_is_one_cheap_call_and_cancellable(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        started = time.perf_counter()
        array = api.run_job("big", "busybox", ["sleep", "60"], array="1-100000%5")
        took = time.perf_counter() - started
        assert array["total"] == 100_000
        print(f"100,000-element array submitted in {took * 1000:.1f} ms")
        wait_for(lambda: len(_tasks_of(api, array["id"])) == 5, timeout=20)
        out = api.cancel_array(array["id"])
        assert out["state"] == "cancelled"
        wait_for(
            lambda: all(t["state"] == "killed" for t in _tasks_of(api, array["id"])), timeout=20
        )
        assert len(_tasks_of(api, array["id"])) == 5


def test_dependencies_wait_release_and_fail(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        first = api.run_job("dep-a", "busybox", ["sleep", "1"])
        after_ok = api.run_job("dep-b", "busybox", ["exit", "0"], after=[f"ok:{first['id']}"])
        notok = api.run_job("dep-c", "busybox", ["exit", "0"], after=[f"notok:{first['id']}"])
        held = api.task(after_ok["id"])
        assert held["state"] == "pending" and held["reason"] == "waiting_dependency"
        waiting = wait_for(
            lambda: t if "(running)" in (t := api.task(after_ok["id"]))["message"] else None,
            timeout=20,
        )
        assert waiting["message"] == f"waiting on {first['workload_id']} (running)"
        wait_for(lambda: api.task(after_ok["id"])["state"] == "succeeded", timeout=20)
        failed = wait_for(
            lambda: t if (t := api.task(notok["id"]))["state"] == "failed" else None, timeout=20
        )
        assert failed["reason"] == "dependency_never_satisfied"
        # A failed dependant fails what waits on it with ok; any: runs anyway.
        chained = api.run_job("dep-d", "busybox", ["exit", "0"], after=[f"ok:{notok['id']}"])
        anyway = api.run_job("dep-e", "busybox", ["exit", "0"], after=[f"any:{notok['id']}"])
        wait_for(lambda: api.task(chained["id"])["state"] == "failed", timeout=20)
        wait_for(lambda: api.task(anyway["id"])["state"] == "succeeded", timeout=20)
        # An array can wait and be waited on.
        arr = api.run_job("dep-arr", "busybox", ["exit", "0"], array="0-3", after=[first["id"]])
        last = api.run_job("dep-f", "busybox", ["exit", "0"], after=[f"ok:{arr['id']}"])
        wait_for(lambda: api.task(last["id"])["state"] == "succeeded", timeout=30)


def test_unknown_or_foreign_dependency_is_refused(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        mine = api.run_job("mine", "busybox", ["exit", "0"])
        other_token = api.add_user("other22")["token"]
        for bad in ("ok:nosuchjob", "maybe:x"):
            with pytest.raises(ClientError) as info:
                api.run_job("x", "busybox", [], after=[bad])
            assert info.value.status == 422 and info.value.field == "after"
    with cluster.client(other_token) as other, pytest.raises(ClientError) as info:
        other.run_job("theirs", "busybox", [], after=[f"ok:{mine['id']}"])
    assert info.value.status == 422 and info.value.field == "after"


def test_gang_jobs_start_together_or_not_at_all(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        gang = api.run_job("gang2", "busybox", ["exit", "0"], gang_size=2, gang_nodes=True)
        members = wait_for(
            lambda: (
                ts
                if len(ts := _tasks_of(api, gang["workload_id"])) == 2
                and all(t["state"] == "succeeded" for t in ts)
                else None
            ),
            timeout=20,
        )
        assert {t["node"] for t in members} == {"n1", "n2"}
        assert sorted(SEEN_ENV[t["id"]]["DOCKYARD_ARRAY_INDEX"] for t in members) == ["0", "1"]
        # Three members each on a node of its own: two nodes, so none is placed.
        big = api.run_job("gang3", "busybox", ["exit", "0"], gang_size=3, gang_nodes=True)
        stuck = wait_for(lambda: t if (t := api.task(big["id"]))["message"] else None, timeout=20)
        assert stuck["message"] == "gang: 2 of 3 nodes fit now"
        assert all(
            t["state"] == "pending" and t["node"] is None
            for t in _tasks_of(api, big["workload_id"])
        )
        for t in _tasks_of(api, big["workload_id"]):
            api.delete_queued(t["id"])


def test_queue_shows_estimated_starts(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        holders = [
            api.run_job(f"hold{i}", "busybox", ["sleep", "60"], cpu=8, max_runtime_s=30)
            for i in range(2)
        ]
        for h in holders:
            wait_for(lambda h=h: api.task(h["id"])["state"] == "running", timeout=20)
        started = max(api.task(h["id"])["started_at"] for h in holders)
        first = api.run_job("next1", "busybox", [], cpu=8, max_runtime_s=10)
        second = api.run_job("next2", "busybox", [], cpu=8, max_runtime_s=10)
        third = api.run_job("next3", "busybox", [], cpu=8, max_runtime_s=10)
        forever = api.run_job("forever", "busybox", [], cpu=8)
        after = api.run_job("after-forever", "busybox", [], cpu=8, max_runtime_s=1)
        entries = {e["id"]: e for e in api.queue(1000)["entries"]}
        eta = {
            k: entries[t["id"]]["estimated_start"]
            for k, t in (
                ("first", first),
                ("second", second),
                ("third", third),
                ("forever", forever),
                ("after", after),
            )
        }
        assert eta["first"] == pytest.approx(started + 30, abs=2)
        assert eta["second"] == pytest.approx(started + 30, abs=2)
        assert eta["third"] == pytest.approx(started + 40, abs=2)
        assert eta["forever"] == pytest.approx(started + 40, abs=2)
        assert eta["after"] == pytest.approx(started + 50, abs=2)
        for t in (*holders, first, second, third, forever, after):
            api.kill(t["id"])


def test_preemption_requeues_the_victim_and_names_the_gainer(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_PREEMPTION", "1")
    with cluster.client() as api:
        guarded = api.run_job("low-a", "busybox", ["sleep", "60"], cpu=8, min_runtime_s=600)
        victim = api.run_job("low-b", "busybox", ["sleep", "60"], cpu=8)
        for t in (guarded, victim):
            wait_for(lambda t=t: api.task(t["id"])["state"] == "running", timeout=20)
        preview = api.plan("urgent", "busybox", cpu=8, priority=10, preempt=True)
        assert not preview["fits"]
        assert [e["task_id"] for e in preview["evictions"]] == [victim["id"]]
        assert preview["evictions"][0]["why"] == "priority 10 > 0"
        urgent = api.run_job("urgent", "busybox", ["sleep", "60"], cpu=8, priority=10)
        wait_for(lambda: api.task(urgent["id"])["state"] == "running", timeout=20)
        gone = api.task(victim["id"])
        assert gone["state"] == "killed" and gone["reason"] == "preempted"
        assert api.task(guarded["id"])["state"] == "running"  # its --min-runtime held
        # Requeued as a new attempt; charged for what it ran.
        again = wait_for(
            lambda: [
                t
                for t in _tasks_of(api, victim["workload_id"])
                if t["attempt"] == 2 and t["previous_task_id"] == victim["id"]
            ],
            timeout=20,
        )[0]
        assert again["state"] == "pending"
        record = wait_for(
            lambda: [r for r in api.accounting() if r["task_id"] == victim["id"]], timeout=20
        )[0]
        assert record["reason"] == "preempted" and record["wall_s"] > 0
        said = [e["message"] for e in api.events(task=victim["id"])]
        assert any(f"preempted for {urgent['id']}: priority 10 > 0" in m for m in said)
        gained = [e["message"] for e in api.events(task=urgent["id"])]
        assert any(f"preempting {victim['id']}" in m for m in gained)
        for t in (guarded, urgent, again):
            api.kill(t["id"])


def test_preempted_checkpointing_job_gets_its_signal_resumes_and_keeps_its_retries(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoint signal instead of SIGTERM, the checkpoint volume on every attempt,
    DOCKYARD_RESUME=1 on the requeued one; the preempted attempt is charged and does
    not use up the job's one restart (on-failure:1)."""
    monkeypatch.setenv("DOCKYARD_PREEMPTION", "1")
    with cluster.client() as api:
        guard = api.run_job("ck-guard", "busybox", ["sleep", "60"], cpu=8, min_runtime_s=600)
        job = api.run_job(
            "ck",
            "busybox",
            ["sleep", "60"],
            cpu=8,
            restart={"mode": "on-failure", "max_attempts": 1, "initial_delay_s": 0.1},
            checkpoint_signal="usr1",
            env={"FAIL_ON_RESUME": "1"},
        )
        for t in (guard, job):
            wait_for(lambda t=t: api.task(t["id"])["state"] == "running", timeout=20)
        first = SEEN_ENV[job["id"]]
        assert first["DOCKYARD_CHECKPOINT_DIR"] == "/dockyard/checkpoint"
        assert "DOCKYARD_RESUME" not in first
        volume = f"ckpt-{job['workload_id']}"
        assert SEEN_MOUNTS[job["id"]]["/dockyard/checkpoint"] == volume
        urgent = api.run_job("ck-urgent", "busybox", ["sleep", "60"], cpu=8, priority=10)
        wait_for(lambda: api.task(urgent["id"])["state"] == "running", timeout=20)
        gone = api.task(job["id"])
        assert (gone["state"], gone["reason"]) == ("killed", "preempted")
        # (Later signals reach the exited container as it is removed.)
        assert SIGNALS[job["id"]][0] == "SIGUSR1"
        api.kill(urgent["id"])
        # Attempt 2 resumes (and fails, FAIL_ON_RESUME); the preempted attempt used no
        # restart, so on-failure:1 still gives attempt 3, and no attempt 4.
        attempts = wait_for(
            lambda: (
                ts
                if len(ts := sorted(_tasks_of(api, job["workload_id"]), key=lambda t: t["attempt"]))
                == 3
                and ts[2]["state"] == "failed"
                else None
            ),
            timeout=30,
        )
        assert [t["state"] for t in attempts] == ["killed", "failed", "failed"]
        for again in attempts[1:]:
            assert SEEN_ENV[again["id"]]["DOCKYARD_RESUME"] == "1"
            assert SEEN_MOUNTS[again["id"]]["/dockyard/checkpoint"] == volume
        assert len(_tasks_of(api, job["workload_id"])) == 3
        records = wait_for(
            lambda: (
                rs
                if len(
                    rs := [r for r in api.accounting() if r["workload_id"] == job["workload_id"]]
                )
                == 3
                else None
            ),
            timeout=20,
        )
        charged = {r["task_id"]: r for r in records}[job["id"]]
        assert charged["reason"] == "preempted" and charged["wall_s"] > 0
        api.kill(guard["id"])


def test_a_failed_gang_member_restarts_the_whole_gang_then_it_fails_as_a_whole(
    cluster: LocalCluster,
) -> None:
    """Rank 1 fails: rank 0 is stopped and both ranks get attempt 2, placed together
    as a gang; rank 1 fails again with on-failure:1 used up: the gang fails as a
    whole (rank 0 stopped, no attempt 3)."""
    with cluster.client() as api:
        gang = api.run_job(
            "gang-restart",
            "busybox",
            ["sleep", "60"],
            cpu=1,
            gang_size=2,
            gang_nodes=True,
            restart={"mode": "on-failure", "max_attempts": 1, "initial_delay_s": 0.1},
            env={"FAIL_RANK": "1"},
        )

        def ended() -> list[dict[str, Any]] | None:
            ts = _tasks_of(api, gang["workload_id"])
            done = all(t["state"] in ("failed", "killed") for t in ts)
            return ts if len(ts) == 4 and done else None

        tasks = sorted(wait_for(ended, timeout=40), key=lambda t: (t["attempt"], t["id"]))
        by_attempt: dict[int, list[dict[str, Any]]] = {}
        for t in tasks:
            by_attempt.setdefault(t["attempt"], []).append(t)
        assert sorted(by_attempt) == [1, 2]
        for attempt in (1, 2):
            pair = by_attempt[attempt]
            outcome = sorted((t["state"], t["reason"]) for t in pair)
            assert outcome == [("failed", "exit_nonzero"), ("killed", "gang_member_ended")]
            assert len({t["node_id"] for t in pair}) == 2  # still a node each
        again = by_attempt[2]
        assert len({t["assigned_at"] for t in again}) == 1  # placed together: a gang
        ranks = sorted(SEEN_ENV[t["id"]]["DOCKYARD_ARRAY_INDEX"] for t in again)
        assert ranks == ["0", "1"]
        said = [e["message"] for t in tasks for e in api.events(task=t["id"])]
        assert any("gang member 1 ended" in m and "the gang restarts" in m for m in said)
        assert any("the gang fails as a whole" in m for m in said)
        assert len(_tasks_of(api, gang["workload_id"])) == 4


def test_a_drain_stop_sends_the_checkpoint_signal_and_the_move_resumes(
    cluster: LocalCluster,
) -> None:
    """Drain: the checkpointing job gets SIGUSR2 (its --checkpoint-signal), not
    SIGTERM; its replacement on the other node starts with DOCKYARD_RESUME=1 (and a
    volume of that node's: checkpoints do not cross nodes, docs/scheduler.md)."""
    with cluster.client() as api:
        job = api.run_job("ck-drain", "busybox", ["sleep", "60"], checkpoint_signal="SIGUSR2")
        placed = wait_for(lambda: t if (t := api.task(job["id"]))["state"] == "running" else None)
        api.drain(placed["node_id"], deadline_s=0)
        try:
            again = wait_for(
                lambda: [t for t in _tasks_of(api, job["workload_id"]) if t["attempt"] == 2],
                timeout=20,
            )[0]
            gone = api.task(job["id"])
            assert (gone["state"], gone["reason"]) == ("killed", "node_drained")
            assert SIGNALS[job["id"]][0] == "SIGUSR2"
            wait_for(lambda: api.task(again["id"])["state"] == "running", timeout=20)
            assert api.task(again["id"])["node_id"] != placed["node_id"]
            assert SEEN_ENV[again["id"]]["DOCKYARD_RESUME"] == "1"
            api.kill(again["id"])
        finally:
            api.undrain(placed["node_id"])


def test_checkpoint_options_from_the_cli_and_a_bad_signal_is_a_422(cluster: LocalCluster) -> None:
    env = {"DOCKYARD_URL": cluster.url, "DOCKYARD_TOKEN": cluster.admin_token, "COLUMNS": "200"}
    for flags, signal in (
        (["--checkpoint"], "SIGUSR1"),
        (["--checkpoint-signal", "hup"], "SIGHUP"),
    ):
        result = CliRunner().invoke(
            app, ["run", "--name", "ck-cli", *flags, "busybox", "--", "sleep", "60"], env=env
        )
        assert result.exit_code == 0, result.output
        task_id = result.stdout.strip()
        wait_for(lambda task_id=task_id: task_id in SEEN_ENV, timeout=20)
        assert SEEN_ENV[task_id]["DOCKYARD_CHECKPOINT_DIR"] == "/dockyard/checkpoint"
        with cluster.client() as api:
            workload = api.task(task_id)["workload_id"]
            api.kill(task_id)
        with cluster.server.db.read() as session:
            spec = workload_specs(session, [workload])[workload].spec
        assert spec.checkpoint_signal == signal
    with cluster.client() as api, pytest.raises(ClientError) as bad:
        api.run_job("ck-bad", "busybox", ["true"], checkpoint_signal="SIGKILL")
    assert bad.value.status == 422 and bad.value.field == "checkpoint_signal"
