"""The CLI as docker, kubectl and Slurm users expect it (issue 20), run as a user would:
a real server process and a hollow-node agent process, the `dockyard` commands with
their arguments, exit codes asserted. Most run in this process (Typer's runner, the
same code from argv to exit code, without a Python start each); the exit-code checks
that matter most also run as a `python -m dockyard` process. Log streams with real
containers and exec: tests/e2e/test_cli_docker.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dockyard.cli.main import app
from dockyard.client import ClientError
from dockyard.testing.cli import CliUser
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for


class User(CliUser):
    def __init__(self, cluster: ProcessCluster, token: str) -> None:
        self.api = cluster.client(token)
        super().__init__(
            {
                **os.environ,
                "DOCKYARD_URL": cluster.url,
                "DOCKYARD_TOKEN": token,
                "PYTHONUNBUFFERED": "1",
                "COLUMNS": "200",
            },
            timeout=60,
        )

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``dockyard ARGS`` in this process: its exit code, stdout and stderr."""
        env = {k: self.env[k] for k in ("DOCKYARD_URL", "DOCKYARD_TOKEN", "COLUMNS")}
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
        out = subprocess.CompletedProcess(
            list(args), result.exit_code, result.stdout, result.stderr
        )
        if check and out.returncode != 0:
            raise AssertionError(f"dockyard {args} exited {out.returncode}: {out.stderr}")
        return out

    def proc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``python -m dockyard ARGS`` as its own process."""
        return CliUser.cli(self, *args, check=check)

    def task(self, ref: str) -> Any:
        return self.api.task(ref)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(driver="sim", agent_args=["--cpu", "4", "--memory", "8g"])
    cluster.start_server()
    cluster.start_agent("hollow")
    try:
        cluster.wait_ready_nodes(1)
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def admin(cluster: ProcessCluster) -> User:
    return User(cluster, cluster.admin_token)


def test_run_wait_exits_with_the_tasks_code(admin: User) -> None:
    ok = admin.cli("run", "--wait", "--name", "w-ok", "busybox", "--", "sleep", "0.2")
    assert ok.returncode == 0 and len(ok.stdout.strip()) == 12
    bad = admin.proc("run", "--wait", "--name", "w-bad", "busybox", "--", "exit", "3", check=False)
    assert bad.returncode == 3
    assert "failed (exit_nonzero)" in bad.stderr and "exit code 3" in bad.stderr
    ended = json.loads(
        admin.cli("run", "--wait", "--json", "busybox", "--", "exit", "4", check=False).stdout
    )
    assert (ended["state"], ended["exit_code"]) == ("failed", 4)
    # dockyard's own failures are 125, distinct from the job's codes
    missing = admin.proc("run", "--wait", "missing-image:v1", "--", "sleep", "1", check=False)
    assert missing.returncode == 125 and "image_" in missing.stderr
    refused = admin.cli("run", "--wait", "--memory", "lots", "busybox", check=False)
    assert refused.returncode == 125 and "memory" in refused.stderr
    unreachable = {**admin.env, "DOCKYARD_URL": "http://127.0.0.1:9"}
    gone = CliUser(unreachable).cli("run", "--wait", "busybox", check=False)
    assert gone.returncode == 125 and "cannot reach" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_run_wait_follows_retries_to_the_last_attempt(admin: User) -> None:
    out = admin.cli(
        "run", "--wait", "--name", "w-retry", "--restart", "on-failure:1", "busybox", "--",
        "exit", "5", check=False,
    )  # fmt: skip
    assert out.returncode == 5
    attempts = admin.json("ps", "-a", "--filter", "name=w-retry")
    assert len(attempts) == 2 and all(t["exit_code"] == 5 for t in attempts)


def test_run_attach_streams_logs_then_exits_with_its_code(admin: User) -> None:
    out = admin.cli(
        "run", "--attach", "-e", "DOCKYARD_SIM_LOG_LINES=3", "-e", "DOCKYARD_SIM_RUN_FOR=0.3",
        "-e", "DOCKYARD_SIM_EXIT_CODE=2", "busybox", "--", "work", check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stdout.splitlines() == ["sim: work", "line 1", "line 2", "line 3"]
    follow = admin.proc("logs", "-f", admin.api.tasks(limit=1)[0]["id"], check=False)
    assert follow.returncode == 2 and follow.stdout.count("line") == 3
    ok = admin.cli("run", "--attach", "busybox", "--", "sleep", "0.1")
    assert ok.returncode == 0 and ok.stdout == "sim: sleep 0.1\n"


def test_logs_tail_and_follow(admin: User) -> None:
    task_id = admin.cli(
        "run", "--name", "chatty", "-e", "DOCKYARD_SIM_LOG_LINES=5", "busybox", "--",
        "sleep", "0.3",
    ).stdout.strip()  # fmt: skip
    follow = admin.cli("logs", "-f", task_id)
    assert follow.returncode == 0 and follow.stdout.count("\n") == 6
    assert admin.cli("logs", "--tail", "2", task_id).stdout == "line 4\nline 5\n"
    stamped = admin.cli("logs", "-t", "--tail", "1", task_id).stdout
    assert stamped.endswith("Z line 5\n")
    assert admin.cli("logs", "--stderr", task_id).stdout == ""
    assert admin.cli("logs", "--since", "1h", task_id).stdout.count("\n") == 6
    assert admin.cli("logs", "--since", "2099-01-01", task_id).stdout == ""
    both = admin.cli("logs", "--stdout", "--stderr", task_id, check=False)
    assert both.returncode == 2


def test_ps_defaults_to_active_tasks(admin: User) -> None:
    long_id = admin.cli("run", "--name", "ps-long", "busybox", "--", "sleep", "300").stdout.strip()
    wait_for(lambda: admin.task(long_id)["state"] == "running", timeout=20)
    done_id = admin.cli(
        "run", "--wait", "--name", "ps-done", "busybox", "--", "exit", "0"
    ).stdout.strip()
    active = [t["id"] for t in admin.json("ps")]
    assert long_id in active and done_id not in active
    everything = [t["id"] for t in admin.json("ps", "-a")]
    assert long_id in everything and done_id in everything
    assert admin.cli("ps", "-q").stdout.split() == active
    assert admin.cli("ps", "-aq", "-n", "2").stdout.split() == everything[:2]
    succeeded = admin.json("ps", "--filter", "state=succeeded")
    assert succeeded and {t["state"] for t in succeeded} == {"succeeded"}
    node = admin.task(long_id)["node"]
    mine = admin.json("ps", "-a", "--filter", f"owner=admin,node={node},name=ps-")
    assert {t["name"] for t in mine} == {"ps-long", "ps-done"}
    assert admin.json("ps", "-a", "--filter", "owner=nobody") == []
    bad = admin.cli("ps", "--filter", "colour=red", check=False)
    assert bad.returncode == 2 and "colour" in bad.stderr
    wide = admin.cli("ps", "-o", "wide").stdout
    assert "IMAGE" in wide and "busybox" in wide
    assert "IMAGE" not in admin.cli("ps").stdout
    admin.cli("kill", long_id)


def test_output_formats_on_read_commands(admin: User) -> None:
    task_id = admin.cli("run", "--wait", "--name", "fmt", "busybox", "--", "exit", "0")
    task_id_str = task_id.stdout.strip()
    as_json = json.loads(admin.cli("inspect", "-o", "json", task_id_str).stdout)
    as_yaml = yaml.safe_load(admin.cli("inspect", "-o", "yaml", task_id_str).stdout)
    assert as_json["id"] == as_yaml["id"] == task_id_str
    assert as_yaml["state"] == "succeeded"
    names = admin.cli("nodes", "-o", "name").stdout.split()
    assert names == [n["name"] for n in admin.json("nodes")]
    assert json.loads(admin.cli("ps", "-a", "-o", "json").stdout)[0]["id"]
    bad = admin.cli("ps", "-o", "xml", check=False)
    assert bad.returncode == 2 and "json, yaml" in bad.stderr


def test_kill_stop_and_rm_many(admin: User) -> None:
    ids = [
        admin.cli("run", "--name", f"many{i}", "busybox", "--", "sleep", "300").stdout.strip()
        for i in range(3)
    ]
    wait_for(lambda: all(admin.task(i)["state"] == "running" for i in ids), timeout=20)
    busy = admin.cli("rm", ids[0], check=False)
    assert busy.returncode == 1 and "kill it first" in busy.stderr
    killed = admin.cli("kill", ids[0], ids[1], "nope-nope", check=False)
    assert killed.returncode == 1 and "nope-nope" in killed.stderr
    assert killed.stdout.count("stop requested") == 2
    stopped = admin.json("stop", ids[2])
    assert stopped["desired_state"] == "stop"
    wait_for(lambda: all(admin.task(i)["state"] == "killed" for i in ids), timeout=20)
    assert admin.cli("rm", *ids).stdout.split() == ids
    gone = admin.cli("inspect", ids[0], check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr
    forced_id = admin.cli("run", "busybox", "--", "sleep", "300").stdout.strip()
    wait_for(lambda: admin.task(forced_id)["state"] == "running", timeout=20)
    assert admin.cli("rm", "-f", forced_id).stdout.split() == [forced_id]


def test_rm_is_owner_only(cluster: ProcessCluster, admin: User) -> None:
    token = admin.cli("user", "add", "rmbob").stdout.strip()
    bob = User(cluster, token)
    theirs = admin.cli("run", "--wait", "busybox", "--", "exit", "0").stdout.strip()
    denied = bob.cli("rm", theirs, check=False)
    assert denied.returncode == 1 and "not found" in denied.stderr
    assert admin.task(theirs)["state"] == "succeeded"


def test_options_after_the_image_are_refused(admin: User) -> None:
    misplaced = admin.cli("run", "busybox", "--cpu", "2", "sleep", "1", check=False)
    assert misplaced.returncode == 2 and "--cpu comes after the image" in misplaced.stderr
    later = admin.cli("run", "busybox", "sh", "--memory", "1g", check=False)
    assert later.returncode == 0 and "warning" in later.stderr
    admin.cli("kill", later.stdout.strip())
    fine = admin.cli("run", "busybox", "--", "--cpu", "2")
    assert fine.returncode == 0 and fine.stderr == ""
    admin.cli("kill", fine.stdout.strip())


def test_expected_errors_are_one_line_not_a_traceback(admin: User, tmp_path: Path) -> None:
    gone = CliUser({**admin.env, "DOCKYARD_URL": "http://127.0.0.1:9"}).cli("ps", check=False)
    assert gone.returncode == 1 and "cannot reach dockyard at http://127.0.0.1:9" in gone.stderr
    assert "Traceback" not in gone.stderr
    missing = admin.proc("inspect", "no-such-task", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_token = CliUser({**admin.env, "DOCKYARD_TOKEN": "dy_wrong"}).cli("ps", check=False)
    assert bad_token.returncode == 1 and "invalid token" in bad_token.stderr
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[server]\nport = 'eighty'\n")
    config = admin.cli("server", "--config", str(bad_config), check=False)
    assert config.returncode == 2 and "port" in config.stderr and "Traceback" not in config.stderr
    with socket.socket() as taken:  # up --port on a taken port: which one, and what to do
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = admin.proc(
            "up", "--driver", "sim", "--data-dir", str(tmp_path / "up"), "--port", str(port),
            check=False,
        )  # fmt: skip
    assert up.returncode == 2 and f"--port {port}" in up.stderr and "another --port" in up.stderr
    assert "Traceback" not in up.stderr


def test_expected_error_messages_for_errors_raised_anywhere() -> None:
    import errno

    import httpx

    from dockyard.cli.app import expected_error_message

    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert "--port" in str(expected_error_message(in_use))
    assert "cannot talk" in str(expected_error_message(httpx.ReadTimeout("slow")))
    assert expected_error_message(KeyError("bug")) is None  # a bug keeps its traceback


def test_build_tag_resolves_in_the_callers_namespace(admin: User, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    built = admin.cli("build", "-q", "-t", "tools:v1", str(tmp_path))
    assert built.stdout.strip() == "admin/tools:v1"
    ok = admin.cli("run", "--wait", "--json", "tools:v1", "--", "exit", "0")
    assert json.loads(ok.stdout)["image"] == "admin/tools:v1"
    other = json.loads(
        admin.cli("run", "--json", "busybox:1", "--", "exit", "0").stdout
    )  # not built by admin: as given
    assert other["image"] == "busybox:1"
    missing = admin.proc("run", "--wait", "missing-tools:v1", check=False)
    assert missing.returncode == 125 and "image_not_found" in missing.stderr


def test_a_request_no_node_could_fit_is_refused_unless_held(admin: User) -> None:
    cpu = admin.cli("run", "--cpu", "64", "busybox", "--", "sleep", "1", check=False)
    assert cpu.returncode == 1 and "field: cpu" in cpu.stderr and "the largest has 4" in cpu.stderr
    memory = admin.cli("run", "--memory", "64g", "busybox", check=False)
    assert memory.returncode == 1 and "field: memory" in memory.stderr and "--hold" in memory.stderr
    with pytest.raises(ClientError) as refused:
        admin.api.run_job("huge", "busybox", cpu=64)
    assert (refused.value.status, refused.value.field) == (422, "cpu")
    assert admin.json("ps", "-a", "--filter", "name=huge") == []  # nothing stored
    held = json.loads(
        admin.cli(
            "run", "--json", "--hold", "--name", "held-huge", "--memory", "64g", "busybox"
        ).stdout
    )
    assert held["state"] == "pending"
    assert admin.cli("plan", "--memory", "64g", "busybox", check=False).returncode == 1
    assert admin.cli("plan", "busybox").returncode == 0
    admin.cli("kill", held["id"])


def test_a_service_no_node_could_fit_is_refused_unless_held(admin: User) -> None:
    """As for jobs: create and update name the field; nothing is stored; --hold keeps it."""
    refused = admin.cli(
        "service", "create", "huge-svc", "--image", "busybox", "--cpu", "64", check=False
    )
    assert refused.returncode == 1 and "field: cpu" in refused.stderr
    with pytest.raises(ClientError) as missing:
        admin.api.service("huge-svc")
    assert missing.value.status == 404  # nothing stored
    made = admin.cli(
        "service", "create", "held-svc", "--image", "busybox", "--memory", "64g", "--hold", "-d"
    )
    assert made.returncode == 0
    small = admin.cli("service", "create", "small-svc", "--image", "busybox", "-d")
    assert small.returncode == 0
    before = admin.api.service("small-svc")["spec"]
    grown = admin.cli("service", "update", "small-svc", "--memory", "64g", "-d", check=False)
    assert grown.returncode == 1 and "field: memory" in grown.stderr
    assert admin.api.service("small-svc")["spec"] == before  # unchanged
    admin.cli("service", "rm", "held-svc")
    admin.cli("service", "rm", "small-svc")


def test_stop_takes_a_time(admin: User) -> None:
    """stop -t N passes its grace (the e2e test checks the SIGKILL timing on Docker)."""
    task_id = admin.cli("run", "--name", "stop-time", "busybox", "--", "sleep", "300").stdout
    task_id = task_id.strip()
    wait_for(lambda: admin.task(task_id)["state"] == "running", timeout=20)
    bad = admin.cli("stop", "-t", "-1", task_id, check=False)
    assert bad.returncode == 2 and admin.task(task_id)["state"] == "running"
    assert admin.cli("stop", "--time", "0", task_id).returncode == 0
    events = admin.api.task(task_id)["events"]
    assert any("(grace 0s)" in e["message"] for e in events if e["reason"] == "kill_requested")
    wait_for(lambda: admin.task(task_id)["state"] == "killed", timeout=20)


def test_clear_history_asks_first(admin: User) -> None:
    result = CliRunner().invoke(
        app,
        ["queue", "clear-history"],
        input="n\n",
        env={
            "DOCKYARD_URL": admin.env["DOCKYARD_URL"],
            "DOCKYARD_TOKEN": admin.env["DOCKYARD_TOKEN"],
        },
    )
    assert result.exit_code == 1 and "Aborted" in result.output
    assert admin.cli("queue", "clear-history", "--yes", "--older-than", "365").returncode == 0


def test_login_contexts_never_shadow_the_admin_token(
    cluster: ProcessCluster, admin: User, tmp_path: Path
) -> None:
    bob_token = admin.cli("user", "add", "ctxbob").stdout.strip()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "admin.token").write_text(cluster.admin_token)  # as `dockyard up` leaves it
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_URL": None,
        "DOCKYARD_TOKEN": None,
        "COLUMNS": "200",
    }

    def cli(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result.stdout + result.stderr

    url = cluster.url
    assert "admin (admin)" in cli("whoami", "--url", url)
    assert "the local admin token" in cli("whoami", "--url", url)
    said = cli("login", url, "--token", bob_token)
    assert f"logged in to {url} as ctxbob" in said
    stored = tmp_path / "config" / "dockyard" / "contexts.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    who = cli("whoami")  # the current context: its URL and its token, said so
    assert f"ctxbob on {url}" in who and f"dockyard login for {url}" in who
    listed = json.loads(cli("context", "ls", "--json"))
    assert listed == [{"url": url, "user": "ctxbob", "current": True}]
    assert bob_token not in cli("context", "ls")
    other = url.replace("127.0.0.1", "localhost")  # another server URL: not bob's token
    assert "admin (admin)" in cli("whoami", "--url", other)
    refused = cli("user", "ls", code=1)  # bob is no admin: the message says whose token
    assert "dockyard login for" in refused
    cli("context", "use", "http://nowhere:1", code=1)
    assert f"logged out of {url}" in cli("logout")
    assert "admin (admin)" in cli("whoami", "--url", url)
    cli("logout", url, code=1)


def test_token_revoke_and_user_disable_take_effect_at_once(
    cluster: ProcessCluster, admin: User
) -> None:
    bob_token = admin.cli("user", "add", "revbob").stdout.strip()
    bob = User(cluster, bob_token)
    second = bob.cli("token", "create", "--description", "laptop").stdout.strip()
    mine = bob.json("token", "ls")
    assert {t["user"] for t in mine} == {"revbob"} and len(mine) == 2
    assert second not in bob.cli("token", "ls").stdout  # ids only, never the tokens
    everyone = {t["user"] for t in admin.json("token", "ls")}
    assert {"admin", "revbob"} <= everyone
    admins = [t["id"] for t in admin.json("token", "ls", "--user", "admin")]
    assert bob.cli("token", "revoke", admins[0], check=False).returncode == 1  # not found
    laptop = next(t["id"] for t in mine if t["description"] == "laptop")
    laptop_user = User(cluster, second)
    laptop_user.cli("whoami")  # now in the server's token cache
    assert admin.cli("token", "revoke", laptop).stdout.strip() == f"{laptop} revoked"
    gone = laptop_user.cli("whoami", check=False)  # at once: no cache delay
    assert gone.returncode == 1 and "invalid token" in gone.stderr
    assert bob.cli("user", "disable", "revbob", check=False).returncode == 1  # admins only
    bob.cli("whoami")
    admin.cli("user", "disable", "revbob")
    disabled = bob.cli("whoami", check=False)
    assert disabled.returncode == 1 and "disabled" in disabled.stderr
    assert admin.cli("token", "create", "--user", "revbob", check=False).returncode == 1
    assert {u["name"]: u["disabled"] for u in admin.json("user", "ls")}["revbob"] is True
    admin.cli("user", "enable", "revbob")
    assert bob.cli("whoami").stdout.startswith("revbob")
    bob.cli("run", "--wait", "busybox", "--", "exit", "0")
    owns = admin.cli("user", "rm", "--yes", "revbob", check=False)
    assert owns.returncode == 1 and "disable revbob instead" in " ".join(owns.stderr.split())
    spare = User(cluster, admin.cli("user", "add", "spare").stdout.strip())
    assert admin.cli("user", "rm", "--yes", "spare").returncode == 0
    assert "spare" not in [u["name"] for u in admin.json("user", "ls")]
    assert spare.cli("whoami", check=False).returncode == 1


def test_completion_and_service_logs(admin: User) -> None:
    script = admin.cli("completion", "bash").stdout
    assert "_DOCKYARD_COMPLETE" in script and "complete " in script
    assert "compdef" in admin.cli("completion", "zsh").stdout
    assert admin.cli("completion", "tcsh", check=False).returncode == 2
    asked = subprocess.run(  # what the shell's completion function runs
        [str(Path(sys.executable).parent / "dockyard")],  # the installed entry point
        env={**admin.env, "_DOCKYARD_COMPLETE": "complete_bash", "COMP_WORDS": "dockyard lo",
             "COMP_CWORD": "1"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert asked.stdout.split() == ["logs", "login", "logout"]
    admin.api.create_service(
        {"name": "chatter", "image": "busybox", "command": ["serve"], "replicas": 2,
         "env": {"DOCKYARD_SIM_LOG_LINES": "2"}}
    )  # fmt: skip

    def both_logged() -> list[str] | None:
        out = admin.cli("service", "logs", "chatter").stdout.splitlines()
        return out if len(out) == 6 else None

    lines = wait_for(both_logged, timeout=30, message="both replicas' logs")
    named = subprocess.run(  # dynamic: the service names the API has
        [str(Path(sys.executable).parent / "dockyard")],
        env={**admin.env, "_DOCKYARD_COMPLETE": "complete_bash",
             "COMP_WORDS": "dockyard service logs chat", "COMP_CWORD": "3"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert named.stdout.split() == ["chatter"]
    replicas = {line.split(" | ")[0] for line in lines}
    assert len(replicas) == 2 and all(r.startswith("chatter.") for r in replicas)
    assert sorted(line.split(" | ")[1] for line in lines)[:2] == ["line 1", "line 1"]
    tailed = admin.cli("service", "logs", "--tail", "1", "chatter").stdout.splitlines()
    assert len(tailed) == 2 and all(line.endswith("| line 2") for line in tailed)
    missing = admin.cli("service", "logs", "nope", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    admin.api.remove_service("chatter")


def test_service_create_says_which_health_check_failed(admin: User) -> None:
    out = admin.cli(
        "service", "create", "sick", "--image", "busybox", "--health-cmd", "exit 3",
        "--health-interval", "0.2", "--health-retries", "1", "--wait", "4", "--", "serve",
        check=False,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    said = " ".join(out.stderr.split())
    assert "health check failed:" in said and "'sh -c exit 3' exited 3" in said
    admin.api.remove_service("sick")


def test_top_shows_nodes_and_running_tasks(admin: User) -> None:
    task_id = admin.cli("run", "--name", "topped", "busybox", "--", "sleep", "300").stdout.strip()
    wait_for(lambda: admin.task(task_id)["state"] == "running", timeout=20)
    data = json.loads(admin.cli("top", "--json").stdout)
    assert [n["name"] for n in data["nodes"]] == [n["name"] for n in admin.json("nodes")]
    (mine,) = [t for t in data["tasks"] if t["id"] == task_id]
    assert mine["name"] == "topped" and mine["node"] == admin.task(task_id)["node"]
    shown = admin.cli("top", "--once").stdout
    assert "CPU (cores)" in shown and task_id in shown
    admin.cli("kill", task_id)
