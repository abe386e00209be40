"""The `integration` marker cannot drift: deselecting it leaves nothing under tests/integration."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_not_integration_collects_nothing_under_tests_integration() -> None:
    command = ["pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not integration"]
    done = subprocess.run(
        [sys.executable, "-m", *command, "tests/integration"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Exit code 5: no tests collected. The deselected count shows the modules were really collected.
    assert done.returncode == 5, done.stdout + done.stderr
    deselected = re.search(r"no tests collected \((\d+) deselected\)", done.stdout)
    assert deselected and int(deselected.group(1)) > 100, done.stdout
