"""`rag-server up` adopts its stack's orphans (become_subreaper) and reaps those that ended (reap_orphans):
a killed postmaster is never left a zombie whose postmaster.pid looks alive, nor a killed worker's parse
child a zombie for the life of `up`; a child a Popen waits for keeps its exit status."""

from __future__ import annotations

import subprocess
import sys

# Run in a process of its own: a subreaper stays one for its life, and pytest's must not become one.
SCRIPT = """
import subprocess, sys, time
import psutil
from rag_server.stack import become_subreaper, reap_orphans

become_subreaper()
worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])  # spared: its Popen waits
# Each shell exits at once: its child is an orphan.
subprocess.run(["sh", "-c", "sleep 0.2 &"], check=True)
subprocess.run(["sh", "-c", "sleep 0.3 &"], check=True)
zombies = []
for _ in range(100):
    zombies = [c.pid for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
    if len(zombies) == 3:
        break
    time.sleep(0.05)
print(f"zombies={len(zombies)}")
reap_orphans(lambda: {worker.pid})
left = [pid for pid in zombies if psutil.pid_exists(pid)]
print(f"left={left == [worker.pid]}", f"worker={worker.wait()}")
"""


def test_ended_orphans_are_reaped_and_a_spared_child_keeps_its_exit_status() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["zombies=3", "left=True", "worker=3"], done.stderr
