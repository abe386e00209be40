"""Is this server ready for traffic? The checks behind GET /health/ready (a load balancer's or
Kubernetes' readiness probe): the database answers, its schema is at this code's migration head, the
embedding model is loaded, the ingestion queue exists. Each check says why when it fails."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rag_server.infra.embeddings import Embedder, LazyEmbedder
from rag_server.infra.migrations import head_revisions, newer_schema
from rag_server.infra.queue import queue_table
from rag_server.infra.runtime import Runtime

# A probe must answer within its own timeout (often 1-5 s): a database that hangs fails the check.
DATABASE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def _embedding_check(embedder: Embedder) -> Check:
    if isinstance(embedder, LazyEmbedder) and embedder.loaded is None:
        return Check(False, f"the embedding model {embedder.model_name} is not loaded yet")
    return Check(True, f"{embedder.model_name} loaded")


def _migrations_check(versions: list[str] | None) -> Check:
    heads, current = head_revisions(), frozenset(versions or ())
    if current == heads:
        return Check(True, f"at head {', '.join(sorted(heads))}")
    if said := newer_schema(current):  # `migrate` would not help: it is this code that is too old
        return Check(False, said)
    found = ", ".join(sorted(current)) or "none"
    return Check(
        False,
        f"the database is at revision {found}, this code needs {', '.join(sorted(heads))}: "
        "run `rag-server migrate` (or restart one server, which migrates at start-up)",
    )


def _replicas_check(runtime: Runtime) -> dict[str, Check]:
    """Read replicas only degrade: reads fall back to the primary, so the check passes ("degraded: ...")."""
    if runtime.reads is None:
        return {}
    return {"read_replicas": Check(True, runtime.reads.summary()[1])}


# Probes given up on, still unwinding: held here so that they are not collected mid-way.
_unwinding: set[asyncio.Task[object]] = set()


def _let_go(probe: asyncio.Task[object]) -> None:
    """Cancel a probe without waiting for it: it ends when the database answers again (or its connection
    is closed), and its outcome is of no interest by then."""
    probe.cancel()
    _unwinding.add(probe)
    probe.add_done_callback(_unwinding.discard)
    probe.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved: never logged


async def readiness(runtime: Runtime) -> dict[str, Check]:
    """Every check by name (database, migrations, embedding, queue, read_replicas when configured);
    never raises."""
    checks = {"embedding": _embedding_check(runtime.embedder), **_replicas_check(runtime)}
    queue = queue_table(runtime.settings.queue_name)
    probe = asyncio.create_task(
        runtime.pool.fetchrow(
            "SELECT (SELECT array_agg(version_num::text) FROM alembic_version) AS versions, "
            "to_regclass($1) IS NOT NULL AS queue",
            queue,
        )
    )
    try:
        # Not asyncio.wait_for: it waits for the cancelled query to unwind, and a database that hangs
        # (frozen, or a network that drops packets) holds that unwinding too: the probe never answered.
        done, _ = await asyncio.wait({probe}, timeout=DATABASE_TIMEOUT_S)
        if not done:
            _let_go(probe)
            raise TimeoutError
        row = probe.result()
    except TimeoutError:
        reason = f"the database did not answer within {DATABASE_TIMEOUT_S:g} s"
        row = None
    except Exception as exc:  # any failure to reach or query it: the probe reports, never raises
        reason = f"the database is unreachable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        row = None
    if row is None:
        skipped = Check(False, "not checked: the database is unreachable")
        return {"database": Check(False, reason), "migrations": skipped, **checks, "queue": skipped}
    checks["queue"] = (
        Check(True, f"{queue} present")
        if row["queue"]
        else Check(False, f"the queue table {queue} is missing (RAG_QUEUE_NAME; migrations create it)")
    )
    return {
        "database": Check(True, "reachable"),
        "migrations": _migrations_check(row["versions"]),
        **checks,
    }
