"""`rag-server worker`: reads the pgmq queue and turns stored files into searchable chunks.

Delivery is at-least-once (pgmq `read` + visibility timeout); correctness comes from the final
transaction: chunks + task completed + message deleted commit together or not at all. Nothing is
written to `chunks` before that, so a worker killed at any point leaves nothing partial, and the
message reappears for another worker (on any host: only Postgres is shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from uuid import UUID

from rag_server.config import Settings
from rag_server.infra.database import is_transient_db_error
from rag_server.infra.embeddings import EmbeddingError
from rag_server.infra.queue import Message
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.ingestion import tasks
from rag_server.ingestion.parsing import ParseError
from rag_server.ingestion.pipeline import embed_chunks, prepare_chunks

logger = logging.getLogger(__name__)


def retry_delay_s(settings: Settings, attempt: int) -> int:
    return int(min(300.0, settings.worker_retry_backoff_s * 2 ** max(0, attempt - 1)))


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.stopping = asyncio.Event()
        self._heartbeats: dict[int, asyncio.Task[None]] = {}

    async def run(self) -> None:
        slots = [asyncio.create_task(self._slot(i)) for i in range(max(1, self.settings.worker_concurrency))]
        await self.stopping.wait()
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
                await self._sleep(max(1.0, self.settings.worker_poll_interval_s))
                continue
            if not messages:
                await self._sleep(self.settings.worker_poll_interval_s)
                continue
            await self.handle(messages[0])

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def handle(self, msg: Message) -> None:
        """Process one message; never raises except on cancellation."""
        heartbeat = asyncio.create_task(self._keep_invisible(msg.msg_id))
        self._heartbeats[msg.msg_id] = heartbeat
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
        with contextlib.suppress(KeyError, ValueError):
            await tasks.release_task(self.runtime.pool, UUID(str(payload["task_id"])))
        await self.runtime.queue.extend(msg.msg_id, 0)
        logger.info("released message %s for another worker", msg.msg_id)

    async def _stop_heartbeat(self, msg_id: int) -> None:
        heartbeat = self._heartbeats.pop(msg_id, None)
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _keep_invisible(self, msg_id: int) -> None:
        """Extend the visibility timeout while the task runs, so a large file is never picked twice."""
        vt = self.settings.worker_visibility_timeout_s
        while True:
            await asyncio.sleep(max(0.5, vt / 3))
            try:
                await self.runtime.queue.extend(msg_id, vt)
            except Exception as exc:
                logger.warning("could not extend message %s: %s", msg_id, exc)

    async def _process(self, msg: Message) -> None:
        pool, queue, settings = self.runtime.pool, self.runtime.queue, self.settings
        payload = msg.message if isinstance(msg.message, dict) else {}
        try:
            task_id = UUID(str(payload["task_id"]))
        except (KeyError, ValueError):
            logger.error("archiving malformed message %s: %r", msg.msg_id, msg.message)
            await queue.archive(msg.msg_id)
            return
        attempt = int(msg.read_ct)
        work: tasks.TaskWork | None = None
        try:
            work = await tasks.start_task(pool, task_id, attempt)
            if work is None:  # finished, failed or deleted meanwhile: the message is stale
                await queue.delete(msg.msg_id)
                return
            if attempt > settings.worker_max_attempts:
                reason = work.error or "Processing was interrupted too many times."
                await tasks.fail_task(
                    pool,
                    queue,
                    task_id,
                    work.document_id,
                    f"Gave up after {attempt - 1} attempts: {reason}",
                    msg.msg_id,
                )
                return
            await self._ingest(work, msg.msg_id, attempt)
        except ParseError as exc:
            await self._fail(task_id, work, str(exc), msg)
        except EmbeddingError as exc:
            if exc.transient:
                await self._retry(task_id, f"The embedding service is unavailable: {exc}.", msg)
            else:
                await self._fail(task_id, work, f"The embedding service refused this document: {exc}.", msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient_db_error(exc):
                await self._retry(task_id, f"The database was unavailable ({exc.__class__.__name__}).", msg)
                return
            # A bug, not the file's fault: retry a bounded number of times via read_ct, keep the reason.
            logger.exception("task %s failed unexpectedly", task_id)
            await self._retry(task_id, f"Unexpected error while processing: {exc}.", msg)

    async def _ingest(self, work: tasks.TaskWork, msg_id: int, attempt: int) -> None:
        """Parse, chunk, embed (progress recorded per batch), then the one final transaction."""
        pool, settings, task_id = self.runtime.pool, self.settings, work.task_id
        logger.info("task %s: %s (attempt %d)", task_id, work.filename, attempt)
        chunks = await prepare_chunks(settings, work.filename, work.content, work.file_type, work.title)
        await tasks.set_task_total(pool, task_id, len(chunks))

        async def progress(done: int) -> None:
            await tasks.set_task_progress(pool, task_id, done)

        vectors = await embed_chunks(self.runtime.embedder, chunks, settings.embedding_batch_size, progress)
        if await tasks.complete_task(pool, self.runtime.queue, work, msg_id, chunks, vectors):
            logger.info("task %s: %d chunks written", task_id, len(chunks))
        else:
            logger.info("task %s: document deleted while processing; dropped", task_id)

    async def _fail(self, task_id: UUID, work: tasks.TaskWork | None, reason: str, msg: Message) -> None:
        logger.info("task %s failed: %s", task_id, reason)
        document_id = work.document_id if work else None
        try:
            await tasks.fail_task(
                self.runtime.pool, self.runtime.queue, task_id, document_id, reason, msg.msg_id
            )
        except Exception as exc:
            logger.warning("could not record failure of task %s (%s); it will be retried", task_id, exc)

    async def _retry(self, task_id: UUID, reason: str, msg: Message) -> None:
        """Leave the message for redelivery after a backoff; the next read fails it for good when
        read_ct exceeds worker_max_attempts."""
        attempt = int(msg.read_ct)
        delay = retry_delay_s(self.settings, attempt)
        logger.warning(
            "task %s attempt %d failed transiently (%s); retry in %d s", task_id, attempt, reason, delay
        )
        # Stop extending first, or the heartbeat could overwrite the backoff with the full timeout.
        await self._stop_heartbeat(msg.msg_id)
        try:
            await tasks.record_retry(self.runtime.pool, task_id, reason)
            await self.runtime.queue.extend(msg.msg_id, delay)
        except Exception as exc:
            # The database is down: the message becomes visible when its current timeout expires.
            logger.warning("could not schedule retry of task %s: %s", task_id, exc)


async def run_worker(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; in-flight tasks finish (or are released) before returning."""
    async with open_runtime(settings, migrate=True, load_embedder=True) as runtime:
        worker = Worker(runtime)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stopping.set)
        logger.info(
            "worker ready: queue %s, concurrency %d, visibility timeout %d s",
            settings.queue_name,
            settings.worker_concurrency,
            settings.worker_visibility_timeout_s,
        )
        await worker.run()
        logger.info("worker stopped")
