"""Run as root, the embedded PostgreSQL runs as a system user created on first use. Processes starting
their first clusters together (the suite's workers on a new machine) must create it once: `useradd`s
run together all succeed here, each replacing the user with a new uid, and a server already running as
a replaced uid fails every connection ("could not look up effective user ID")."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rag_server.infra.embedded_postgres import ensure_system_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: root only")
PROCESSES = 6


def _ensure_together(name: str, start: Any, uids: Any) -> None:
    start.wait()
    ensure_system_user(name)
    uids.put(pwd.getpwnam(name).pw_uid)


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    name = f"ragt{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["userdel", name], capture_output=True)


def _next_uid() -> int:
    """The uid `useradd` gives a new user (login.defs' UID_MIN 1000: the highest in use, plus one)."""
    return max([1000 - 1, *(u.pw_uid for u in pwd.getpwall() if 1000 <= u.pw_uid < 60000)]) + 1


def test_processes_creating_the_user_together_create_it_once(throwaway_user: str) -> None:
    ensure_system_user()  # the embedded server's own, made first: the only other user the suite creates
    expected_uid = _next_uid()
    spawn = multiprocessing.get_context("spawn")
    start, uids = spawn.Barrier(PROCESSES), spawn.Queue()
    together = (throwaway_user, start, uids)
    processes = [spawn.Process(target=_ensure_together, args=together) for _ in range(PROCESSES)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    seen = {uids.get(timeout=5) for _ in processes}
    # Each extra `useradd` would have taken the next uid and replaced the user.
    assert pwd.getpwnam(throwaway_user).pw_uid == expected_uid
    assert seen == {expected_uid}
