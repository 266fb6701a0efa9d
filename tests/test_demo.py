"""`relay demo` end to end, as a user runs it: no Redis, embedded store, exit code 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RELAY = Path(sys.executable).parent / "relay"


def test_demo_runs_without_redis(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RELAY_")}
    result = subprocess.run(
        [str(RELAY), "demo"],
        capture_output=True,
        text=True,
        timeout=50,  # under the 60 s test timeout, so a hang reports as TimeoutExpired
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo finished" in result.stdout
