"""Running the ``dockyard`` CLI as a user would, in tests: a real process, an environment."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


class CliUser:
    """Runs ``python -m dockyard ARGS`` with ``env`` (read at each call, so a test may
    swap the token) and checks the exit code unless told not to."""

    def __init__(self, env: dict[str, str], timeout: float = 120.0) -> None:
        self.env = env
        self.timeout = timeout

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "dockyard", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"dockyard {args} exited {result.returncode}: {result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        """``ARGS --json``, parsed."""
        return json.loads(self.cli(*args, "--json").stdout)
