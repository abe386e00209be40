"""One chaos run: start everything, upload and chat while injecting faults, wait for quiescence, verify."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psycopg

from rag_server.config import Settings
from rag_server.infra import admin
from rag_server.ingestion.integrity import check_integrity
from rag_server.ingestion.preparation import prepare_chunks_sync
from tests.chaos.cluster import CrashableCluster
from tests.chaos.faults import Injector, schedule
from tests.chaos.services import FlakyEmbedder, Stack
from tests.chaos.traffic import Uploader, make_documents, sha256
from tests.fakes.embedding_server import fake_ollama_env
from tests.fakes.llm_server import FakeLLM
from tests.support.processes import free_port, process_env


@dataclass
class ChaosConfig:
    documents: int = 200
    duration_s: float = 120.0  # the fault phase; uploads are spread over its first 60 %
    worker_kills: int = 20
    pg_crashes: int = 3
    embedder_outages: int = 4
    server_kills: int = 3  # alternately mid-stream and mid-upload
    quiesce_timeout_s: float = 300.0
    upload_mb: int = 8
    seed: int = 1
    keep: bool = False  # keep the directory (database, logs) for inspection


# What the workers and the local chunking share: the expected chunks are the pipeline's own.
OVERRIDES: dict[str, object] = {
    "chunk_size": 128,
    "embedding_batch_size": 4,
    "worker_poll_interval_s": 0.2,
    "worker_recovery_interval_s": 1,
    "worker_retry_backoff_s": 0.5,
    "worker_max_attempts": 10,
    "worker_max_deliveries": 60,
    "embedding_retries": 0,
    "llm_timeout_s": 30,
    "llm_max_retries": 0,
}


@dataclass
class ChaosResult:
    figures: dict[str, object] = field(default_factory=dict)
    injected: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    failed_reasons: Counter[str] = field(default_factory=Counter)
    directory: Path | None = None

    def lines(self) -> list[str]:
        out = [f"{name}: {value}" for name, value in self.figures.items()]
        out += [f"faults injected: {kind} x{n}" for kind, n in sorted(self.injected.items())]
        out += [f"failed task ({n}): {reason}" for reason, n in self.failed_reasons.most_common()]
        out += [f"VIOLATION {v}" for v in self.violations]
        out.append("chaos: OK" if not self.violations else f"chaos: {len(self.violations)} violation(s)")
        return out


def run_chaos(config: ChaosConfig) -> ChaosResult:
    root = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))  # short: the socket path is limited
    result = ChaosResult(directory=root)
    cluster = CrashableCluster.create(root / "pg")
    embedder = FlakyEmbedder(dim=16, delay_s=0.02).start()
    llm = FakeLLM().start()
    stack: Stack | None = None
    try:
        url = asyncio.run(admin.create_database(cluster.uri, "chaos"))
        env = process_env(
            url,
            root / "data",
            **fake_ollama_env(embedder),
            **{f"RAG_{k.upper()}": str(v) for k, v in OVERRIDES.items()},
            RAG_LLM_PROVIDER="openai",
            RAG_LLM_BASE_URL=llm.base_url,
            RAG_LLM_MODEL="fake-model",
        )
        (root / "logs").mkdir()
        stack = Stack(env, root / "logs", free_port())
        started = time.monotonic()
        _run(config, result, cluster, embedder, llm, stack, url)
        result.figures["total time"] = f"{time.monotonic() - started:.0f} s"
        stack.wait_workers_ready()  # a worker restarted last may still be starting (no SIGTERM handler yet)
        codes = stack.stop()
        result.violations += [f"{name} exited {code} on SIGTERM" for name, code in codes.items() if code != 0]
        return result
    finally:
        if stack is not None:
            stack.stop()
        llm.stop()
        embedder.stop()
        try:
            cluster.stop()
        except Exception as exc:  # crashed and not started again: nothing left to stop
            result.figures["cluster stop"] = str(exc)
        if not config.keep and not result.violations:
            shutil.rmtree(root, ignore_errors=True)


def _run(
    config: ChaosConfig,
    result: ChaosResult,
    cluster: CrashableCluster,
    embedder: FlakyEmbedder,
    llm: FakeLLM,
    stack: Stack,
    url: str,
) -> None:
    rng = random.Random(config.seed)
    stack.start_server()  # migrates the new database first
    for _ in range(2):
        stack.start_worker()
    stack.wait_workers_ready()
    files = make_documents(config.documents, config.seed)
    uploader = Uploader(stack.base_url, files, pace_s=config.duration_s * 0.6 / max(1, config.documents))
    injector = Injector(cluster, embedder, llm, stack, url, rng, upload_mb=config.upload_mb)
    kills = config.server_kills
    events = schedule(
        rng,
        {
            "worker_kill": config.worker_kills,
            "pg_crash": config.pg_crashes,
            "embedder_outage": config.embedder_outages,
            "server_kill_streaming": (kills + 1) // 2,
            "server_kill_uploading": kills // 2,
        },
    )
    fault_start = time.monotonic()
    uploader.start()
    gap = config.duration_s / max(1, len(events))
    for event in events:
        time.sleep(rng.uniform(0.5, 1.5) * gap)
        injector.inject(event)
    uploader.join(config.quiesce_timeout_s)
    uploader.stopping.set()
    result.figures["fault phase"] = f"{time.monotonic() - fault_start:.0f} s"
    result.injected = injector.injected
    result.figures["seconds per fault kind"] = {k: round(v, 1) for k, v in injector.seconds.items()}
    result.violations += uploader.refused
    result.figures["upload attempts refused or cut"] = dict(uploader.failures)
    if not stack.healthy():
        result.violations.append("the server is not healthy after the fault phase")
    quiet_start = time.monotonic()
    if not _wait_quiescent(url, config.quiesce_timeout_s):
        result.violations.append(f"tasks still unfinished after {config.quiesce_timeout_s:.0f} s")
    result.figures["time to quiescence"] = f"{time.monotonic() - quiet_start:.0f} s"
    expected = _expected_chunks(files, url)
    asyncio.run(_verify(url, result, uploader.acknowledged, expected, injector))
    result.figures["documents uploaded"] = f"{len(uploader.acknowledged)} of {len(files)} acknowledged"


def _wait_quiescent(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM job_tasks WHERE status IN ('queued', 'processing')"
                ).fetchone()
            if row is not None and row[0] == 0:
                return True
        except psycopg.Error:
            pass
        time.sleep(1)
    return False


def _expected_chunks(files: list[tuple[str, bytes]], url: str) -> dict[str, int]:
    """Chunk counts a clean run gives each file: the workers' own parse + chunk, with their settings."""
    settings = Settings(database_url=url, **OVERRIDES)  # type: ignore[arg-type]
    return {sha256(data): len(prepare_chunks_sync(settings, name, data, "txt")) for name, data in files}


async def _verify(
    url: str, result: ChaosResult, acknowledged: set[str], expected: dict[str, int], injector: Injector
) -> None:
    conn = await asyncpg.connect(url)
    try:
        report = await check_integrity(conn, Settings(database_url=url).queue_name, quiescent=True)
        result.violations += [f"[{v.check}] {v.detail}" for v in report.violations]
        result.figures |= {f"{k} in the database": v for k, v in report.counts.items()}
        docs = {
            r["sha256"]: r
            for r in await conn.fetch(
                "SELECT d.sha256, d.filename, d.status, d.error, d.chunk_count,"
                " (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS stored FROM documents d"
            )
        }
        for sha in sorted(acknowledged):
            doc = docs.get(sha)
            if doc is None:
                result.violations.append(f"an acknowledged upload is missing (sha256 {sha[:12]})")
            elif doc["status"] == "ready" and not doc["chunk_count"] == doc["stored"] == expected[sha]:
                result.violations.append(
                    f"{doc['filename']}: {doc['stored']} chunks stored, chunk_count {doc['chunk_count']},"
                    f" a clean run makes {expected[sha]}"
                )
        for sha, what in injector.killed_uploads.items():
            if sha in docs:
                result.violations.append(f"an upload cut short by a server kill was stored ({what})")
        await _verify_chat(conn, result, injector)
        rows = await conn.fetch("SELECT status, error FROM job_tasks")
        result.figures["tasks"] = dict(Counter(r["status"] for r in rows))
        result.failed_reasons.update(r["error"] for r in rows if r["status"] == "failed")
        ready = sum(1 for sha in acknowledged if sha in docs and docs[sha]["status"] == "ready")
        result.figures["documents ready"] = f"{ready} of {len(acknowledged)} acknowledged"
    finally:
        await conn.close()


async def _verify_chat(conn: asyncpg.Connection, result: ChaosResult, injector: Injector) -> None:
    for killed in injector.killed_streams:
        stored = await conn.fetchval(
            "SELECT count(*) FROM chat_messages m JOIN chat_sessions s ON s.id = m.session_id"
            " WHERE s.external_id = $1",
            killed.session,
        )
        if not killed.saw_done and stored != 2 * killed.answered_turns:
            result.violations.append(
                f"chat session {killed.session}: {stored} messages after {killed.answered_turns} answered"
                " turns and one answer killed mid-stream"
            )
    result.figures["chat turns killed mid-stream"] = len(injector.killed_streams)
