"""Worker liveness the PostgreSQL way: a dead worker's tasks are queued again within seconds.

Each worker process holds, on a connection of its own, the session advisory lock
(WORKER_LOCK_CLASS, worker_id) for its whole life, and `start_task` records that id on the task row.
PostgreSQL releases the lock the moment the worker's session ends (kill -9, OOM killer, a lost host:
the connection closes), so a task `processing` under an id whose lock no session holds belongs to a
dead worker. Every live worker looks for such tasks every RAG_WORKER_RECOVERY_INTERVAL_S and, in ONE
transaction under each task's row lock (the lock a worker's final write takes first), puts the task back
to `queued` and makes its message visible now, instead of after the visibility timeout (unless another
worker has read the message since: its timeout ran out first, and that worker starts the task).

A worker can also die between reading a message (pgmq raised its read_ct and hid it for the visibility
timeout) and recording the task as its own (`start_task` writes attempts = read_ct): the task is still
`queued` and no worker id names it. The same pass finds such messages: read more than
UNSTARTED_GRACE_S ago, still invisible, and read_ct above the task's recorded attempts. A retry's
backoff never matches: the failed delivery was started, so attempts = read_ct while the message waits.

A worker whose lock connection dropped (the database restarted) takes the same id again on a new one;
meanwhile its tasks may be re-queued by another worker, and then its own writes for them are refused
(tasks.OWNED), so nothing is done twice.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import asyncpg

from rag_server.infra.database import Executor, plain_url, transaction
from rag_server.infra.queue import IngestQueue

logger = logging.getLogger(__name__)

# The first key of every worker's advisory lock ('RAGW'); the second is its job_worker_ids number.
WORKER_LOCK_CLASS = 0x52414757

# The worker `{worker_id}` (an SQL expression) is alive: some session of this database holds its lock.
# pg_locks lists every session's locks to any role; the two-key form shows as classid, objid with
# objsubid 2. The one definition: recovery and the operators' listing (ingestion/operations.py) use it.
# WORKER_LOCKS: the condition on pg_locks `l` selecting the live workers' locks (counted by /metrics).
WORKER_LOCKS = f"""l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = {WORKER_LOCK_CLASS}::oid"""
WORKER_ALIVE = f"""EXISTS (
      SELECT 1 FROM pg_locks l WHERE {WORKER_LOCKS} AND l.objid = ({{worker_id}})::oid)"""


def worker_alive_sql(worker_id: str) -> str:
    """WORKER_ALIVE for the worker id in the SQL expression `worker_id` (a column, never user input)."""
    return WORKER_ALIVE.format(worker_id=worker_id)


# Tasks in progress whose worker holds no lock in this database.
DEAD_WORKER_TASKS = f"""
SELECT t.id FROM job_tasks t
WHERE t.status = 'processing' AND t.worker_id IS NOT NULL AND NOT {worker_alive_sql("t.worker_id")}
FOR UPDATE OF t SKIP LOCKED
"""


# The tasks DEAD_WORKER_TASKS locked ($1) whose worker is still dead, queued again. Looked at again:
# a live worker that started the task between that statement's snapshot and its lock had its update
# rechecked against the snapshot's pg_locks (PostgreSQL rechecks a concurrently updated row with the
# other relations' rows as first read), which lacked the new owner's lock. Seen in a suite run: a task
# a new worker had started was queued again 60 ms later and processed twice. Locked now, the rows cannot
# change.
REQUEUE_LOCKED_TASKS = f"""
WITH dead AS (
    SELECT t.id, t.worker_id FROM job_tasks t
    WHERE t.id = ANY($1::uuid[]) AND t.status = 'processing' AND NOT {worker_alive_sql("t.worker_id")}
)
UPDATE job_tasks t SET status = 'queued', worker_id = NULL, total_chunks = 0, completed_chunks = 0,
                       updated_at = now()
FROM dead WHERE t.id = dead.id
RETURNING t.id, t.msg_id, dead.worker_id, t.attempts
"""


# Longer than any live worker takes from its read to start_task's commit: a slower one only costs a
# duplicate delivery (its later writes are refused, tasks.OWNED), never a lost or doubled document.
UNSTARTED_GRACE_S = 10.0


def unstarted_messages_sql(queue: IngestQueue) -> str:
    """Queued tasks whose message a worker read and hid, then never started ($1: grace seconds)."""
    # Settings.queue_name's pattern allows only [a-z0-9_]: safe as an identifier.
    return f"""
    SELECT t.id, t.msg_id, q.read_ct FROM job_tasks t JOIN {queue.table} q ON q.msg_id = t.msg_id
    WHERE t.status = 'queued' AND q.read_ct > t.attempts AND q.vt > clock_timestamp()
      AND q.last_read_at < clock_timestamp() - make_interval(secs => $1)
    FOR UPDATE OF t SKIP LOCKED
    """


class WorkerLease:
    """The worker's identity and proof of life: a session advisory lock on a dedicated connection."""

    def __init__(self, url: str) -> None:
        self._url = plain_url(url)
        self._conn: asyncpg.Connection | None = None
        self.worker_id: int | None = None

    async def acquire(self) -> int:
        """Connect and hold the lock: the same id again after a lost connection when it is still free."""
        await self.close()
        conn = await asyncpg.connect(self._url)
        try:
            worker_id = self.worker_id
            while worker_id is None or not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", WORKER_LOCK_CLASS, worker_id
            ):
                # A fresh id (the sequence cycles: skip one a live worker still holds).
                worker_id = int(await conn.fetchval("SELECT nextval('job_worker_ids')"))
        except BaseException:
            await conn.close()
            raise
        if self.worker_id is not None and worker_id != self.worker_id:
            logger.warning("worker id %d was taken; now worker %d", self.worker_id, worker_id)
        self._conn, self.worker_id = conn, worker_id
        return worker_id

    async def ensure(self, timeout_s: float = 5.0) -> None:
        """Check the lock's connection is alive; take the lock again on a new one when it is not."""
        if self._conn is not None and not self._conn.is_closed():
            try:
                async with asyncio.timeout(timeout_s):  # not wait_for: it can drop a cancel (3.11)
                    await self._conn.fetchval("SELECT 1")
                return
            except Exception as exc:
                logger.warning(
                    "worker %s lost its liveness connection (%s); reconnecting", self.worker_id, exc
                )
        await self.acquire()
        logger.info("worker %d holds its liveness lock again", self.worker_id)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # Released now, not when the server notices the closed socket (a worker that died
            # is noticed that way, a moment later).
            await asyncio.wait_for(conn.execute("SELECT pg_advisory_unlock_all()"), 2.0)
            await asyncio.wait_for(conn.close(), 2.0)
        except Exception:
            conn.terminate()


async def requeue_dead_workers_tasks(conn: Executor, queue: IngestQueue) -> list[UUID]:
    """Tasks of dead workers back to `queued`, their messages visible now: ONE transaction. Rows
    locked by a worker finishing its task are skipped (looked at again next time)."""
    async with transaction(conn) as c:
        locked = await c.fetch(DEAD_WORKER_TASKS)
        if not locked:
            return []
        rows = await c.fetch(REQUEUE_LOCKED_TASKS, [r["id"] for r in locked])
        for r in rows:
            if r["msg_id"] is None:
                continue
            # Read again since the dead worker's delivery (its visibility timeout ran out first): a
            # live worker holds it now and starts the task. Made visible, it was read a third time and
            # processed twice. Locked, it cannot be read until this commits (pgmq skips locked rows).
            read_ct = await c.fetchval(
                f"SELECT read_ct FROM {queue.table} WHERE msg_id = $1 FOR UPDATE", r["msg_id"]
            )
            if read_ct is not None and read_ct <= r["attempts"]:
                await queue.extend(int(r["msg_id"]), 0, conn=c)
    for r in rows:
        logger.warning("task %s: its worker %d died; queued again", r["id"], r["worker_id"])
    return [r["id"] for r in rows]


async def release_unstarted_messages(
    conn: Executor, queue: IngestQueue, grace_s: float = UNSTARTED_GRACE_S
) -> list[UUID]:
    """Messages read by a worker that died before starting their task: visible now, the lost delivery
    recorded (attempts = read_ct), ONE transaction under the task row locks."""
    async with transaction(conn) as c:
        rows = await c.fetch(unstarted_messages_sql(queue), grace_s)
        for r in rows:
            await c.execute(
                "UPDATE job_tasks SET attempts = $2, updated_at = now() WHERE id = $1", r["id"], r["read_ct"]
            )
            await queue.extend(int(r["msg_id"]), 0, conn=c)
    for r in rows:
        logger.warning("task %s: read by a worker that stopped before starting it; queued again", r["id"])
    return [r["id"] for r in rows]
