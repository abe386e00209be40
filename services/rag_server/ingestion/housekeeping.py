"""A worker's periodic jobs beside its tasks: liveness and recovery, the BM25 pack, retention.

Each runs in `repeat`: a failure (the database down, a statement timed out) is logged and tried again
next round, never the worker's end; a stop ends the wait at once and cancels a job in progress (its
transaction rolls back: a pack keeps the previous one, a prune what its earlier transactions removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from rag_server.infra.runtime import Runtime
from rag_server.ingestion import retention
from rag_server.ingestion.recovery import WorkerLease, release_unstarted_messages, requeue_dead_workers_tasks
from rag_server.retrieval.bm25 import read_engine
from rag_server.retrieval.bm25_packs import UNPACKED_MAX, pack_if_due

logger = logging.getLogger(__name__)

# A worker's first prune comes this long after it starts (sooner with a shorter interval).
FIRST_PRUNE_S = 60.0


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less when `stopping` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def repeat(
    stopping: asyncio.Event,
    what: str,
    job: Callable[[], Awaitable[None]],
    interval_s: float,
    *,
    first_s: float = 0.0,
) -> None:
    """`job` after `first_s`, then every `interval_s`, until `stopping`; a failure: `<what> failed`."""
    await pause(stopping, first_s)
    while not stopping.is_set():
        try:
            await job()
        except Exception as exc:
            logger.warning("%s failed (%s: %s)", what, exc.__class__.__name__, exc)
        await pause(stopping, interval_s)


async def pack(runtime: Runtime) -> None:
    """Refresh the native BM25 engine's pack when enough chunks changed (decision 0014)."""
    async with runtime.pool.acquire() as conn:
        native = await read_engine(conn) == "native"
    if native:
        await pack_if_due(runtime.pool, runtime.settings)


async def pack_after_write(runtime: Runtime, chunks: int) -> None:
    """After a final write of more than UNPACKED_MAX chunks, the pack now if it is due, not at the next
    round: a pack that ran while the write inserted (0026 lets it) leaves all its chunks unpacked, and
    every search probes each of them (seconds for tens of thousands) until the next pack. A failure is
    logged: the document is written, and the next round packs."""
    if chunks <= UNPACKED_MAX or runtime.settings.bm25_pack_interval_s <= 0:
        return
    try:
        await pack(runtime)
    except Exception as exc:
        logger.warning("BM25 pack after a write failed (%s: %s)", exc.__class__.__name__, exc)


def jobs(
    runtime: Runtime, lease: WorkerLease | None, stopping: asyncio.Event
) -> list[Coroutine[Any, Any, None]]:
    """The loops a worker runs beside its slots, per its settings."""
    s = runtime.settings

    async def recover() -> None:
        """Keep this worker's liveness lock, and queue dead workers' tasks again at once."""
        if lease is not None:
            await lease.ensure()
        await requeue_dead_workers_tasks(runtime.pool, runtime.queue)
        await release_unstarted_messages(runtime.pool, runtime.queue)

    async def prune() -> None:
        """Retention (retention.py): one process at a time; another's run makes this one stop at once."""
        result = await retention.prune(runtime.pool, runtime.queue, s)
        busy = "another process is pruning; " if result.busy else ""
        # Nothing to remove, the usual hourly case: at DEBUG.
        logger.log(logging.INFO if result.total else logging.DEBUG, "retention: %s%s", busy, result.line())

    loops = [repeat(stopping, "dead-worker check", recover, s.worker_recovery_interval_s)]
    if s.bm25_pack_interval_s > 0:
        loops.append(
            repeat(
                stopping,
                "BM25 pack",
                lambda: pack(runtime),
                s.bm25_pack_interval_s,
                first_s=s.bm25_pack_interval_s,
            )
        )
    if s.retention_interval_s > 0 and (s.task_retention_days or s.chat_retention_days):
        first = min(FIRST_PRUNE_S, s.retention_interval_s)
        loops.append(repeat(stopping, "retention prune", prune, s.retention_interval_s, first_s=first))
    return loops
