"""One real worker process for a whole test module, frozen (SIGSTOP) between the steps that need it.

A frozen worker is, for the database and the API, a worker that is not running: queued tasks stay
queued. Tests that alternate "no worker yet" and "now process it" used to start a worker per step, each
~5 s of CPU (imports, its parsing child, the model or the embedding client).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag_server.config import Settings
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import query, wait_for
from tests.support.processes import Proc, start_worker

# Backends of this database in the middle of something (our own query excluded).
BUSY_SQL = (
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'"
    " AND backend_type = 'client backend'"
)


class PausedWorker:
    def __init__(self, proc: Proc, database_url: str) -> None:
        self.proc = proc
        self.database_url = database_url

    @classmethod
    @contextmanager
    def start(cls, env: dict[str, str], log_path: Path, database_url: str) -> Iterator[PausedWorker]:
        """Start a worker, wait until it is ready, freeze it; at the end it must stop cleanly (exit 0)."""
        proc = start_worker(env, log_path)
        worker = cls(proc, database_url)
        try:
            wait_for(
                lambda: "worker ready" in proc.log() or proc.popen.poll() is not None, 120, "worker ready"
            )
            assert proc.popen.poll() is None, proc.log()
            worker._freeze()
            yield worker
            proc.popen.send_signal(signal.SIGCONT)  # a frozen process acts on no SIGTERM
            assert proc.stop() == 0, proc.log_tail()
        finally:
            proc.kill()

    @contextmanager
    def running(self) -> Iterator[Proc]:
        """The worker works inside the block, and is frozen again after it."""
        assert self.proc.popen.poll() is None, self.proc.log_tail()
        self.proc.popen.send_signal(signal.SIGCONT)
        try:
            yield self.proc
        finally:
            self._freeze()

    def _freeze(self) -> None:
        """SIGSTOP at a moment when no statement or transaction of the database is open: frozen inside
        one, the worker would hold its locks (and the test would wait on them) for as long as it sleeps."""
        for _ in range(200):
            self.proc.popen.send_signal(signal.SIGSTOP)
            wait_for(self._stopped, 10, "the worker to stop")
            if query(self.database_url, BUSY_SQL)[0]["n"] == 0:
                return
            self.proc.popen.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        raise AssertionError(f"the worker was never between transactions:\n{self.proc.log_tail()}")

    def _stopped(self) -> bool:
        stat = Path(f"/proc/{self.proc.popen.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"


def one_try_settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    """A module's settings for a worker paused and resumed by its tests: small chunks, one attempt per
    task (a failure is final), no backoff, quick polls."""
    return fake_embedding_settings(
        database_url,
        data_dir,
        fake,
        chunk_size=128,
        chunk_overlap=16,
        worker_max_attempts=1,
        worker_retry_backoff_s=0,
        worker_poll_interval_s=0.1,
    )
