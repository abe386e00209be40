"""`rag-server worker`: reads the pgmq queue and turns stored files into searchable chunks.

Delivery is at-least-once (pgmq `read` + visibility timeout); correctness comes from the final
transaction: chunks + task completed + message deleted commit together or not at all. Nothing is
written to `chunks` before that, so a worker killed at any point leaves nothing partial, and the
message reappears for another worker (on any host: only Postgres is shared). A dead worker is noticed
by its free liveness lock within seconds, not the visibility timeout (ingestion/recovery.py).

Two counters decide when a document fails for good: `failures`, the errors it caused (limit
RAG_WORKER_MAX_ATTEMPTS), and deliveries (pgmq read_ct), which also count the workers that died on it
(limit RAG_WORKER_MAX_DELIVERIES: the poison-pill guard against a file that kills every worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from uuid import UUID

import numpy as np

from rag_server.config import Settings
from rag_server.generations.backfill import handle_reembed, is_reembed, write_for_generations
from rag_server.infra.database import is_transient_db_error, runtime_url, transaction, unavailable_reason
from rag_server.infra.embeddings import EmbeddingError
from rag_server.infra.heap import startup_heap_frozen
from rag_server.infra.lifetime import StopSignals, unless_stopped
from rag_server.infra.log_context import current_request_id, log_context, valid_request_id
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.ingestion import housekeeping, tasks
from rag_server.ingestion.chunks import DeleteWaitingError
from rag_server.ingestion.parse_process import CodeChanged, ParseProcess, ParserCrashed, ParserUnavailable
from rag_server.ingestion.parsing import ParseError
from rag_server.ingestion.recovery import WorkerLease
from rag_server.ingestion.retry_policy import give_up_reason, retry_delay_s

if TYPE_CHECKING:  # pgmq is imported when the queue is first used (infra/queue.py)
    from pgmq import Message

logger = logging.getLogger(__name__)

# The worker's exit status when it stopped to restart on upgraded code (EX_TEMPFAIL: systemd's
# Restart=on-failure restarts it too).
EXIT_CODE_CHANGED = 75


def message_log_ids(msg: Message) -> dict[str, str | None]:
    """The ids a message's log lines carry; a malformed or foreign value is left out, not trusted."""
    payload = msg.message if isinstance(msg.message, dict) else {}
    task_id, request_id = payload.get("task_id"), payload.get("request_id")
    try:
        task = str(UUID(str(task_id))) if task_id is not None else None
    except ValueError:
        task = None
    return {
        "task_id": task,
        "request_id": request_id if isinstance(request_id, str) and valid_request_id(request_id) else None,
    }


class Worker:
    def __init__(
        self, runtime: Runtime, lease: WorkerLease | None = None, stopping: asyncio.Event | None = None
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.lease = lease
        # Every file is parsed and chunked in this child, with a time and a memory limit.
        self.parser = ParseProcess(runtime.settings)
        self.stopping = asyncio.Event() if stopping is None else stopping
        self.code_changed = False  # stopped because rag_server's files changed under it
        self._heartbeats: dict[int, asyncio.Task[None]] = {}

    @property
    def worker_id(self) -> int | None:
        return None if self.lease is None else self.lease.worker_id

    async def run(self) -> None:
        slots = [asyncio.create_task(self._slot(i)) for i in range(max(1, self.settings.worker_concurrency))]
        background = [
            asyncio.create_task(job) for job in housekeeping.jobs(self.runtime, self.lease, self.stopping)
        ]
        await self.stopping.wait()
        for task in background:
            task.cancel()  # a pack in progress rolls back: the previous one stays
        await asyncio.gather(*background, return_exceptions=True)
        logger.info(
            "stopping: finishing in-flight tasks (up to %.0f s)", self.settings.worker_shutdown_grace_s
        )
        _done, pending = await asyncio.wait(slots, timeout=self.settings.worker_shutdown_grace_s)
        for slot in pending:
            slot.cancel()  # _handle releases the message (vt = 0) when cancelled
        await asyncio.gather(*pending, return_exceptions=True)

    async def _slot(self, number: int) -> None:
        while not self.stopping.is_set():
            try:
                messages = await self.runtime.queue.read(self.settings.worker_visibility_timeout_s, qty=1)
            except Exception as exc:
                # Never let a slot die: a database outage ends, and the queue is still there after it.
                logger.warning("queue read failed (%s: %s); retrying", exc.__class__.__name__, exc)
                await self._pause(max(1.0, self.settings.worker_poll_interval_s))
                continue
            if not messages:
                await self._pause(self.settings.worker_poll_interval_s)
                continue
            await self.handle(messages[0])

    async def _pause(self, seconds: float) -> None:
        await housekeeping.pause(self.stopping, seconds)

    async def handle(self, msg: Message) -> None:
        """Process one message; never raises except on cancellation. Its log lines carry the task id
        and the id of the request that queued it (the message's `request_id`)."""
        with log_context(**message_log_ids(msg)):
            await self._handle(msg)

    async def _handle(self, msg: Message) -> None:
        try:
            await self._process(msg)
        except asyncio.CancelledError:
            # Shutdown grace exceeded: hand the task back at once; its transaction did not commit.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(msg))
            raise
        except Exception:
            logger.exception("unexpected error handling message %s", msg.msg_id)
        finally:
            await self._stop_heartbeat(msg.msg_id)

    async def _release(self, msg: Message) -> None:
        """Task back to queued and the message visible now (vt 0), for another worker to take."""
        await self._stop_heartbeat(msg.msg_id)
        payload = msg.message if isinstance(msg.message, dict) else {}
        if is_reembed(payload):  # nothing to reset: its written batches stay, the rest is redone
            with contextlib.suppress(Exception):
                await self.runtime.queue.extend(msg.msg_id, 0)
            return
        with contextlib.suppress(KeyError, ValueError):
            task_id = UUID(str(payload["task_id"]))
            if await tasks.release_task(
                self.runtime.pool, self.runtime.queue, task_id, self.worker_id, msg.msg_id
            ):
                logger.info("released message %s for another worker", msg.msg_id)

    async def _stop_heartbeat(self, msg_id: int) -> None:
        heartbeat = self._heartbeats.pop(msg_id, None)
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _keep_invisible(self, task_id: UUID, msg_id: int, attempt: int) -> None:
        """Extend the visibility timeout while the task runs, so a large file is never picked twice;
        stop once the task is no longer this worker's (re-queued while its liveness lock was lost); quietly
        once this delivery ended it (it runs until the handling ends: after the final write, a pack)."""
        vt = self.settings.worker_visibility_timeout_s
        while True:
            await asyncio.sleep(max(0.5, vt / 3))
            try:
                pool, queue = self.runtime.pool, self.runtime.queue
                kept = await tasks.keep_invisible(pool, queue, task_id, self.worker_id, msg_id, vt, attempt)
                if kept == "ended":
                    return
                if kept == "lost":
                    logger.warning("task %s is no longer this worker's; its result will be dropped", task_id)
                    return
            except Exception as exc:
                logger.warning("could not extend message %s: %s", msg_id, exc)

    async def _process(self, msg: Message) -> None:
        pool, queue, settings = self.runtime.pool, self.runtime.queue, self.settings
        payload = msg.message if isinstance(msg.message, dict) else {}
        if is_reembed(payload):  # `rag-server reembed`'s backfill (rag_server.generations)
            await handle_reembed(self.runtime, msg)
            return
        try:
            task_id = UUID(str(payload["task_id"]))
        except (KeyError, ValueError):
            logger.error("archiving malformed message %s: %r", msg.msg_id, msg.message)
            await queue.archive(msg.msg_id)
            return
        attempt = int(msg.read_ct)
        work: tasks.TaskWork | None = None
        try:
            work = await tasks.start_task(pool, task_id, attempt, self.worker_id, msg.msg_id)
            if work is None:  # finished, failed or deleted meanwhile: the message is stale
                await queue.delete(msg.msg_id)
                return
            reason = give_up_reason(settings, work.failures, attempt, work.error)
            if reason is not None:
                await tasks.fail_task(
                    pool, queue, task_id, work.worker_id, work.document_id, reason, msg.msg_id
                )
                return
            self._heartbeats[msg.msg_id] = asyncio.create_task(
                self._keep_invisible(task_id, msg.msg_id, attempt)
            )
            await self._ingest(work, msg.msg_id, attempt)
        except tasks.TaskDropped:
            logger.info("task %s: document deleted or task taken over while processing; stopped", task_id)
            await tasks.drop_stale_message(pool, queue, task_id, msg.msg_id)
        except DeleteWaitingError:
            assert work is not None  # raised by its final write only
            await self._after_giving_way(work, msg)
        except ParseError as exc:
            await self._fail(task_id, work, str(exc), msg)
        except ParserCrashed as exc:
            # The file (or the machine's memory) took the parser's process down, or left it stuck past
            # the wall-clock backstop, not this worker: a failure of this document, retried a bounded
            # number of times like any other.
            await self._retry(task_id, f"Unexpected error while processing: {exc}.", msg)
        except CodeChanged as exc:
            # Not this document's fault nor this worker's to fix: it stops, handing the task back, and
            # its supervisor (rag-server up, systemd, compose) starts it again on the new code.
            logger.error(
                "task %s: %s; stopping this worker so that it restarts on the new code", task_id, exc
            )
            self.code_changed = True
            self.stopping.set()  # first: the other slot must not read the task handed back below
            await self._release(msg)
        except ParserUnavailable as exc:
            # This worker's environment, not the document: redelivered without using up its attempts.
            logger.error("task %s: %s", task_id, exc)
            await self._retry(task_id, f"The worker could not read files: {exc}.", msg, count_failure=False)
        except EmbeddingError as exc:
            # The task's error keeps the service's answer; the log line does not (it may quote the text).
            if exc.transient:
                reason, logged = "The embedding service is unavailable", exc.summary
                await self._retry(task_id, f"{reason}: {exc}.", msg, logged=f"{reason}: {logged}.")
            else:
                reason, logged = "The embedding service refused this document", exc.summary
                await self._fail(task_id, work, f"{reason}: {exc}.", msg, logged=f"{reason}: {logged}.")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient_db_error(exc):
                # Not the document's doing: redelivered without using up one of its attempts.
                await self._retry(task_id, unavailable_reason(exc), msg, count_failure=False)
                return
            # A bug or a file the parsers choke on: a failure of this document, retried a bounded
            # number of times (worker_max_attempts), the reason kept.
            logger.exception("task %s failed unexpectedly", task_id)
            await self._retry(task_id, f"Unexpected error while processing: {exc}.", msg)

    async def _ingest(self, work: tasks.TaskWork, msg_id: int, attempt: int) -> None:
        """Parse, chunk, embed (progress recorded per batch), then the one final transaction."""
        pool, settings, task_id = self.runtime.pool, self.settings, work.task_id
        logger.info("task %s: %s (attempt %d)", task_id, work.filename, attempt)
        ids = {"task_id": str(task_id), "request_id": current_request_id()}
        chunks = await self.parser.prepare(work.filename, work.content, work.file_type, work.title, ids=ids)
        if not await tasks.set_task_total(pool, task_id, len(chunks), work.worker_id):
            raise tasks.TaskDropped(f"task {task_id} is no longer this worker's")

        async def progress(done: int) -> None:
            # A document deleted (or a task cancelled) mid-way: stop embedding it now, not at the end.
            if not await tasks.set_task_progress(pool, task_id, done, work.worker_id):
                raise tasks.TaskDropped(f"task {task_id} is no longer this worker's")

        async def write(base: np.ndarray | None, later: dict[int, np.ndarray]) -> bool:
            return await tasks.complete_task(pool, self.runtime.queue, work, msg_id, chunks, base, later)

        written = await write_for_generations(
            self.runtime, chunks, settings.embedding_batch_size, write, progress
        )
        if written:
            logger.info("task %s completed: %d chunks written", task_id, len(chunks))
            await housekeeping.pack_after_write(self.runtime, len(chunks))
        else:
            logger.info("task %s: document deleted or task taken over while processing; dropped", task_id)

    async def _after_giving_way(self, work: tasks.TaskWork, msg: Message) -> None:
        """The final write gave way to a delete of its document (rolled back, nothing written): once the
        delete ends, its message goes as when a delete wins before the write; if the delete rolled back,
        the task is retried later without counting a failure."""
        task_id = work.task_id
        logger.info("task %s: a delete of its document is waiting; its final write gave way", task_id)
        await self._stop_heartbeat(msg.msg_id)
        ended = False

        async def end() -> None:
            nonlocal ended
            ended = await tasks.end_after_giving_way(self.runtime.pool, self.runtime.queue, work, msg.msg_id)

        await self._until_recorded(f"end task {task_id} after its write gave way", end)
        if ended:
            logger.info("task %s: ended while its write waited (its document deleted); stopped", task_id)
            return
        # The delete rolled back, or its lock was another document's (hashtext keys collide).
        reason = "Its final write gave way to a delete of the document that did not happen; tried again."
        await self._retry(task_id, reason, msg, count_failure=False)

    async def _fail(
        self, task_id: UUID, work: tasks.TaskWork | None, reason: str, msg: Message, logged: str | None = None
    ) -> None:
        logger.info("task %s failed: %s", task_id, logged or reason)
        document_id = work.document_id if work else None
        pool, queue = self.runtime.pool, self.runtime.queue

        async def record() -> None:
            if not await tasks.fail_task(
                pool, queue, task_id, self.worker_id, document_id, reason, msg.msg_id, count_failure=True
            ):
                logger.info("task %s: taken over meanwhile; its failure here is not recorded", task_id)

        await self._until_recorded(f"record failure of task {task_id}", record)

    async def _retry(
        self, task_id: UUID, reason: str, msg: Message, count_failure: bool = True, logged: str | None = None
    ) -> None:
        """Leave the message for redelivery after a backoff; the next read fails it for good when its
        failures reach worker_max_attempts. `logged`: the reason as the log line says it."""
        logger.warning("task %s delivery %d failed transiently (%s)", task_id, msg.read_ct, logged or reason)
        # Stop extending first, or the heartbeat could overwrite the backoff with the full timeout.
        await self._stop_heartbeat(msg.msg_id)

        async def record() -> None:
            # The task back to queued and its backoff: ONE transaction, or a retry of this after a lost
            # commit would find the task no longer its own and leave the message hidden.
            async with transaction(self.runtime.pool) as c:
                failures = await tasks.record_retry(c, task_id, self.worker_id, reason, count_failure)
                if failures is None:
                    logger.warning("task %s is no longer this worker's: not retried from here", task_id)
                    return
                # A hand-back not counted as a failure waits longer each delivery (a full disk is not
                # cured in 5 s, and each try writes WAL on it again).
                delay = retry_delay_s(self.settings, max(1, failures if count_failure else int(msg.read_ct)))
                await self.runtime.queue.extend(msg.msg_id, delay, conn=c)
            logger.info("task %s: %d failures so far; retry in %d s", task_id, failures, delay)

        await self._until_recorded(f"schedule retry of task {task_id}", record)

    async def _until_recorded(self, what: str, write: Callable[[], Awaitable[None]]) -> None:
        """Retry a task's outcome while the database is away: left unwritten, the task would stay
        `processing` under this live worker (whose lock comes back with the database) until the message's
        visibility timeout. Bounded by that timeout and by shutdown."""
        deadline = time.monotonic() + self.settings.worker_visibility_timeout_s
        while True:
            try:
                await write()
                return
            except Exception as exc:
                if self.stopping.is_set() or time.monotonic() > deadline:
                    logger.warning("could not %s (%s); its message comes back after its timeout", what, exc)
                    return
                logger.warning("could not %s (%s); trying again", what, exc)
                await self._pause(1.0)


async def run_worker(settings: Settings, signals: StopSignals) -> None:
    """Run until SIGTERM/SIGINT; in-flight tasks finish (or are released) before returning. A stop while
    it starts raises StoppedBeforeReady once what it opened is closed: it never goes on to take tasks."""
    signals.check()  # stopped while its imports ran: not even the database is looked up
    with signals.in_loop() as stopping:
        async with contextlib.AsyncExitStack() as opened:
            runtime, lease = await unless_stopped(stopping, _start(settings, opened))
            await _run(runtime, settings, lease, stopping)


async def _start(settings: Settings, opened: contextlib.AsyncExitStack) -> tuple[Runtime, WorkerLease]:
    """Migrations, the pool, the model, the liveness lock; each closed by `opened` (a stop cancels this
    at any step: the steps in threads, a migration or the model's load, end on their own)."""
    opening = open_runtime(settings, migrate=True, load_embedder="documents")
    runtime = await opened.enter_async_context(opening)
    lease = WorkerLease(runtime_url(runtime.database_url, settings))
    opened.push_async_callback(lease.close)
    # Before the first task: the lock is what tells other workers this one is alive.
    await lease.acquire()
    return runtime, lease


async def _run(runtime: Runtime, settings: Settings, lease: WorkerLease, stopping: asyncio.Event) -> None:
    worker = Worker(runtime, lease, stopping)
    try:
        try:
            # Ready means ready to parse and chunk too (the child's imports and warm-up: seconds), as the
            # model is loaded by now. A stop asked for meanwhile is not kept waiting for them.
            await unless_stopped(stopping, worker.parser.start())
        except CodeChanged as exc:  # upgraded while it started (migrations, the model): restart on it
            logger.error("%s; exiting so that it restarts on the new code", exc)
            raise SystemExit(EXIT_CODE_CHANGED) from None
        with startup_heap_frozen():
            logger.info(
                "worker ready: id %s, queue %s, concurrency %d, visibility timeout %d s",
                lease.worker_id,
                settings.queue_name,
                settings.worker_concurrency,
                settings.worker_visibility_timeout_s,
            )
            await worker.run()
    finally:
        await worker.parser.close()
    logger.info("worker stopped")
    if worker.code_changed:
        raise SystemExit(EXIT_CODE_CHANGED)
