"""`rag-server up` adopts its stack's orphans (become_subreaper) and reaps those that ended (reap_orphans):
a killed postmaster is never left a zombie whose postmaster.pid looks alive, nor a killed worker's parse
child a zombie for the life of `up`; a child a Popen waits for keeps its exit status."""

from __future__ import annotations

import subprocess
import sys
import threading

from rag_server.stack import WorkerSupervisor

# Run in a process of its own: a subreaper stays one for its life, and pytest's must not become one.
SCRIPT = """
import contextlib, subprocess, sys, time
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
reap_orphans(lambda: contextlib.nullcontext({worker.pid}))
left = [pid for pid in zombies if psutil.pid_exists(pid)]
print(f"left={left == [worker.pid]}", f"worker={worker.wait()}")
"""


def test_ended_orphans_are_reaped_and_a_spared_child_keeps_its_exit_status() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["zombies=3", "left=True", "worker=3"], done.stderr


# A worker that dies before its Popen is assigned (a spawn that takes a while to return): the watch reaping
# in between took its exit status, and the supervisor read 0.
RACE = """
import subprocess, sys, threading, time
from rag_server.stack import WorkerSupervisor, become_subreaper, reap_orphans

class Quick(WorkerSupervisor):
    def _spawn(self):
        process = subprocess.Popen(["sh", "-c", "exit 3"])
        time.sleep(0.05)  # it has ended before this returns
        return process

become_subreaper()
supervisor, done = Quick(), threading.Event()

def watch():
    while not done.is_set():
        reap_orphans(supervisor.waited_for)

threading.Thread(target=watch, daemon=True).start()
codes = [supervisor._start_worker().wait() for _ in range(10)]
done.set()
print(*codes)
"""


def test_a_worker_ending_before_its_popen_returns_keeps_its_exit_status() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RACE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["3"] * 10, done.stderr


def test_a_worker_starting_while_up_stops_is_stopped_too() -> None:
    """stop() while a worker was being spawned read the previous Popen (none), returned, and the worker
    then started ran on, unsignalled, as long as `up` lived; and none starts once stop() began."""
    spawning, stop_returned = threading.Event(), threading.Event()

    class Slow(WorkerSupervisor):
        def _spawn(self) -> subprocess.Popen[bytes]:
            spawning.set()
            stop_returned.wait(1.0)  # stop() returns first, or waits for this spawn (then: 1 s)
            return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    supervisor = Slow()
    supervisor.start()
    assert spawning.wait(30)
    supervisor.stop(grace_s=30)
    stop_returned.set()
    supervisor._thread.join(5)
    worker = supervisor.process
    assert worker is not None
    try:
        assert worker.poll() is not None, "the worker spawned during stop() still runs"
        assert not supervisor._thread.is_alive()
    finally:
        worker.kill()
        worker.wait()
    assert supervisor._start_worker() is None
