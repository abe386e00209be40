"""SIGTERM or Ctrl-C while `worker`, `serve` or `up` is still starting (here: waiting for the migrations'
lock, which another process holds) is an orderly stop: exit 0 and a line saying it stopped before it was
ready, once the step under way has finished; it never goes on to serve or take tasks. A supervisor
(systemd, `docker stop`, `up` stopping its worker) saw these die by the signal (exit -15) and count a
crash."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from rag_server.config import Settings
from rag_server.infra.migrations import ADVISORY_LOCK_KEY
from rag_server.infra.runtime import Runtime
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.support.ingest import enqueue, query, task_row, wait_for
from tests.support.processes import Proc, free_port, process_env, start, start_worker
from tests.support.sample_files import long_text

COMMANDS = {
    "worker": ["worker"],
    "serve": ["serve", "--host", "127.0.0.1"],
    "up": ["up", "--host", "127.0.0.1"],
}
# What each says once it is past its start-up.
READY_LINES = {"worker": "worker ready", "serve": "Application startup", "up": "with one worker"}


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


@contextmanager
def migrations_locked(database_url: str) -> Iterator[None]:
    """The lock every migration run takes first, held as another process migrating would hold it, with
    a grant of the runtime role missing: a database at head with its grants is not migrated (no lock)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        runtime_role = Settings.model_fields["runtime_db_user"].default
        conn.execute(f"REVOKE INSERT ON chunks FROM {runtime_role}")
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        yield


def waiting_for_migrations(database_url: str) -> bool:
    # A one-key advisory lock shows as (classid, objid) = (high, low) 32 bits, objsubid 1.
    [row] = query(
        database_url,
        """SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND classid = %s AND objid = %s AND objsubid = 1""",
        ADVISORY_LOCK_KEY >> 32,
        ADVISORY_LOCK_KEY & 0xFFFF_FFFF,
    )
    return int(row["n"]) > 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_a_stop_while_it_starts_is_an_orderly_exit(
    command: str,
    sig: signal.Signals,
    runtime: Runtime,
    fake: FakeEmbeddingServer,
    database_url: str,
    data_dir: Path,
    tmp_path: Path,
    workers: list[Proc],
) -> None:
    env = process_env(database_url, data_dir, **fake_ollama_env(fake))
    args = COMMANDS[command] + ([] if command == "worker" else ["--port", str(free_port())])
    with migrations_locked(database_url):
        # A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so
        # would the child (Python keeps an ignored SIGINT): it gets it back as a terminal's Ctrl-C is.
        inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = start(args, env, tmp_path / f"{command}.log")
        finally:
            signal.signal(signal.SIGINT, inherited)
        workers.append(proc)
        wait_for(lambda: waiting_for_migrations(database_url), 60, f"{command} waiting for migrations")
        proc.popen.send_signal(sig)
    # The lock released: the migration run it was in finishes (nothing to do), and then it stops.
    status = proc.popen.wait(60)
    log = proc.log()
    assert status == 0, log
    assert f"rag-server {command} stopped before it was ready" in log, log
    assert READY_LINES[command] not in log and "Traceback" not in log, log

    if command == "worker":  # nothing of it is in the way of the next one (lease, lock, connections)
        # Its own text: a copy of another parametrisation's file would be a duplicate, with no task.
        [task] = await enqueue(runtime, [(f"after-{sig.name}.txt", long_text(300, seed=sig).encode())])
        workers.append(start_worker(env, tmp_path / "next.log"))
        wait_for(lambda: task_row(database_url, task.task_id)["status"] == "completed", 90, "next worker")
