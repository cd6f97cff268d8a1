"""``dockyard deploy`` / ``apply`` on bad input: a clear message, non-zero exit, no API call."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dockyard.cli.main import app

# Nothing listens here: a test that reached the API would fail with "cannot reach".
NO_SERVER = ["--url", "http://127.0.0.1:9"]
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, *NO_SERVER])
    return result.exit_code, " ".join(result.output.split())


def test_missing_file(tmp_path: Path) -> None:
    code, out = run("deploy", "-f", str(tmp_path / "nope.yaml"))
    assert code == 1
    assert "nope.yaml: no such file" in out


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web:\n    image: [nginx\n")
    code, out = run("deploy", "-f", str(path))
    assert code == 1
    assert "invalid YAML at line 4" in out


def test_refusal_lists_each_service_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        "services:\n  api:\n    image: api:1\n    secrets: [token]\n"
        "  db:\n    image: db:1\n    pid: service:api\n"
    )
    result = runner.invoke(app, ["deploy", "-f", str(path), "--json", *NO_SERVER])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    out = " ".join(result.output.split())
    assert [(r["service"], r["key"]) for r in body["refusals"]] == [
        ("api", "secrets"),
        ("db", "pid"),
    ]
    assert "cannot deploy; nothing was created" in out
    assert "cannot reach" not in out


def test_dry_run_prints_the_services(tmp_path: Path) -> None:
    project = tmp_path / "Blog App"
    project.mkdir()
    (project / "compose.yaml").write_text(
        "services:\n  web:\n    image: nginx\n    ports: ['8080:80']\n    restart: no\n"
    )
    result = runner.invoke(app, ["deploy", "-f", str(project / "compose.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["stack"] == "blogapp"
    (web,) = body["services"]
    assert (web["name"], web["ports"], web["labels"]) == (
        "blogapp_web",
        [80],
        {"dockyard.stack": "blogapp"},
    )
    assert {"service": "web", "key": "restart", "message": "no: services always restart"} in body[
        "warnings"
    ]


def test_apply_rejects_bad_documents_before_calling_the_api(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: a\nimage: busybox\n---\nname: b\nimage: busybox\nmemory: lots\n")
    code, out = run("apply", "-f", str(path))
    assert code == 1
    assert "document 2 (b): memory: cannot parse size 'lots'" in out
    assert "Nothing was applied" in out


def test_apply_json_errors_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('[{"name": "a", "image": "busybox"}, 3]')
    code, out = run("apply", "-f", str(path))
    assert (code, "document 2: must be a mapping" in out) == (1, True)
    path.write_text('{"name": "a",')
    code, out = run("apply", "-f", str(path))
    assert code == 1
    assert "invalid JSON at line 1" in out
