"""The systemd units in deploy/systemd: Type=notify (readiness by sd_notify), the
right commands, and no warning from ``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def parse(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("role", ["server", "agent"])
def test_unit_is_notify_and_runs_its_role(role: str) -> None:
    unit = parse(UNITS / f"dockyard-{role}.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"].split()[1] == role
    assert service["ExecStart"].split()[0].endswith("/dockyard")
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def verify(unit: Path, tmp_path: Path) -> str:
    """``systemd-analyze verify``'s complaints (ExecStart pointed at a real file)."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/dockyard/bin/dockyard", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    return (result.stderr + ("" if result.returncode == 0 else result.stdout)).strip()


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    for unit in sorted(UNITS.glob("*.service")):
        complaints = [
            line
            for line in verify(unit, tmp_path).splitlines()
            if "dockyard" in line or unit.name in line  # not the host's own units
        ]
        assert not complaints, complaints
    bad = tmp_path / "src" / "bad.service"
    bad.parent.mkdir()
    bad.write_text("[Service]\nType=notifyy\nExecStart=/bin/true\n")
    assert "notifyy" in verify(bad, tmp_path)  # the check can fail
