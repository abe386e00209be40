"""Whole-pipeline figures for /metrics, read from the database at scrape time: the queue, tasks by
status, failures by reason class, recent throughput, live workers. Workers expose no port: what they
do shows in the rows they write, so the API reports it.

Reads every row whatever the collection: the caller passes a system-scoped executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_server.infra.admin import get_meta
from rag_server.infra.database import Executor, transaction
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.recovery import WORKER_LOCKS
from rag_server.ingestion.retention import KINDS as PRUNED_KINDS
from rag_server.ingestion.retention import PRUNED_META_KEY

TASK_STATUSES = ("queued", "processing", "completed", "failed", "duplicate")

# Failure reason classes: a small fixed set (each a label value), told apart by how the stored reason
# starts (the sentences the worker, the parsers, cancel and delete write). First match wins.
FAILURE_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cancelled", ("Cancelled by",)),
    ("gave_up", ("Gave up after",)),
    ("embedding", ("The embedding service",)),
    ("database", ("The database was unavailable",)),
    ("deleted", ("The document was deleted",)),
    ("unexpected", ("Unexpected error",)),
    # Last: every parser's sentence starts "The <file, PDF, workbook, table...>" (the classes above are
    # checked first), so a new format's reasons need no entry here.
    ("parse", ("The ", "Files of type ")),
)
OTHER_FAILURE = "other"
FAILURE_CLASS_NAMES = (*(name for name, _ in FAILURE_CLASSES), OTHER_FAILURE)

# Throughput is measured over tasks completed in this many recent seconds.
THROUGHPUT_WINDOW_S = 60


def classify_failure(reason: str | None) -> str:
    """The class of a failed task's stored reason (FAILURE_CLASS_NAMES)."""
    for name, prefixes in FAILURE_CLASSES:
        if reason is not None and reason.startswith(prefixes):
            return name
    return OTHER_FAILURE


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def failure_class_sql() -> tuple[str, list[str]]:
    """`classify_failure` as an SQL CASE over `error`, with its bound values (from $1)."""
    whens, params = [], []
    for name, prefixes in FAILURE_CLASSES:
        for prefix in prefixes:
            params += [_like_prefix(prefix), name]
            whens.append(f"WHEN error LIKE ${len(params) - 1} THEN ${len(params)}::text")
    return f"CASE {' '.join(whens)} ELSE '{OTHER_FAILURE}' END", params


@dataclass(frozen=True)
class QueueStats:
    visible: int  # ready for a worker now
    invisible: int  # taken by a worker (or waiting out a retry backoff)
    oldest_visible_age_s: float  # 0 when none is visible


@dataclass(frozen=True)
class PipelineStats:
    queue: QueueStats
    tasks: dict[str, int]  # every TASK_STATUSES key
    failures: dict[str, int]  # failed tasks by FAILURE_CLASS_NAMES
    recent_tasks: int  # completed in the last THROUGHPUT_WINDOW_S seconds
    recent_chunks: int  # their chunks
    workers_alive: int
    # Rows retention removed since the database was created, per kind (ingestion/retention.py).
    pruned: dict[str, int] = field(default_factory=dict)

    @property
    def chunks_per_second(self) -> float:
        return self.recent_chunks / THROUGHPUT_WINDOW_S


# Every worker holds a session advisory lock (recovery.WORKER_LOCK_CLASS, its id) while it lives
# (ingestion/recovery.py): the live workers are the holders of such locks in this database.
_LIVE_WORKERS = f"SELECT count(*) FROM pg_locks l WHERE {WORKER_LOCKS}"


def _queue_sql(queue: IngestQueue) -> str:
    return f"""
    SELECT count(*) FILTER (WHERE vt <= now()) AS visible,
           count(*) FILTER (WHERE vt > now()) AS invisible,
           coalesce(extract(epoch FROM now() - min(enqueued_at) FILTER (WHERE vt <= now())), 0)
               AS oldest_visible_age_s
    FROM {queue.table}
    """


async def read_pipeline_stats(conn: Executor, queue: IngestQueue) -> PipelineStats:
    """The pipeline's figures, read in one transaction (system scope: every collection's tasks)."""
    case, params = failure_class_sql()
    async with transaction(conn) as c:
        q = await c.fetchrow(_queue_sql(queue))
        # Tasks by status and failed ones by reason class in ONE scan of job_tasks (~50 ms per 100k
        # tasks here): finished tasks are kept, so this grows with the table.
        counts = await c.fetch(
            f"""
            SELECT status, CASE WHEN status = 'failed' THEN {case} END AS reason, count(*) AS n
            FROM job_tasks GROUP BY 1, 2
            """,
            *params,
        )
        recent = await c.fetchrow(
            """
            SELECT count(*) AS tasks, coalesce(sum(total_chunks), 0) AS chunks FROM job_tasks
            WHERE status = 'completed' AND finished_at > now() - make_interval(secs => $1)
            """,
            THROUGHPUT_WINDOW_S,
        )
        workers = await c.fetchval(_LIVE_WORKERS)
        pruned = await get_meta(c, PRUNED_META_KEY, {})
    assert q is not None and recent is not None
    tasks, failures = dict.fromkeys(TASK_STATUSES, 0), dict.fromkeys(FAILURE_CLASS_NAMES, 0)
    for r in counts:
        tasks[r["status"]] += int(r["n"])
        if r["reason"] is not None:
            failures[r["reason"]] += int(r["n"])
    return PipelineStats(
        queue=QueueStats(int(q["visible"]), int(q["invisible"]), float(q["oldest_visible_age_s"])),
        tasks=tasks,
        failures=failures,
        recent_tasks=int(recent["tasks"]),
        recent_chunks=int(recent["chunks"]),
        workers_alive=int(workers),
        pruned={kind: int(pruned.get(kind, 0)) for kind in PRUNED_KINDS},
    )
