"""The `integration` marker cannot drift: deselecting it leaves nothing under tests/integration."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# Two light modules: the marker comes from tests/integration/conftest.py's hook, for every module alike
# (collecting all of tests/integration imports every heavy dependency: 30 s of a busy suite).
MODULES = ["tests/integration/test_session_store.py", "tests/integration/test_chat_store.py"]


def test_not_integration_collects_nothing_under_tests_integration() -> None:
    command = ["pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not integration"]
    done = subprocess.run(
        [sys.executable, "-m", *command, *MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Exit code 5: no tests collected. The deselected count shows the modules were really collected.
    assert done.returncode == 5, done.stdout + done.stderr
    deselected = re.search(r"no tests collected \((\d+) deselected\)", done.stdout)
    assert deselected and int(deselected.group(1)) >= 2 * len(MODULES), done.stdout
