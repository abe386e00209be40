"""`rag-server up` adopts its stack's orphans (become_subreaper) and reaps its ended PostgreSQL processes
(reap_ended_postgres): a killed postmaster is never left a zombie whose postmaster.pid looks alive."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# Run in a process of its own: a subreaper stays one for its life, and pytest's must not become one.
SCRIPT = """
import os, subprocess, sys, time
import psutil
from rag_server.stack import become_subreaper, reap_ended_postgres

become_subreaper()
# The shell exits at once: its child, named like PostgreSQL's processes, is an orphan.
subprocess.run(["sh", "-c", sys.argv[1] + " 0.2 &"], check=True)
orphan = None
for _ in range(100):
    zombies = [c for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
    if zombies:
        orphan = zombies[0].pid
        break
    time.sleep(0.05)
print("adopted" if orphan else "not adopted")
reap_ended_postgres()
print("reaped" if orphan and not psutil.pid_exists(orphan) else "left")
"""


def test_an_orphaned_postgres_process_is_adopted_and_reaped(tmp_path: Path) -> None:
    postgres = tmp_path / "postgres"  # its name is what the reaper looks at
    shutil.copy(shutil.which("sleep") or "/bin/sleep", postgres)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(postgres)], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["adopted", "reaped"], done.stderr
