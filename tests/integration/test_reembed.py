"""`rag-server reembed` (issue 15): from the local MiniLM (384-d, generation 1) to a fake OpenAI-compatible
model (64-d) through real worker subprocesses, one of them killed with SIGKILL mid-re-embed, while a loop
of searches runs in this process: no search fails, the switch is picked up without a restart (the fake
sees the queries), rollback returns to MiniLM, finalize drops the old vectors and their index."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import pytest

from rag_server.config import Settings
from rag_server.generations.active import ACTIVE_TTL_S
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval.models import SearchRequest
from rag_server.retrieval.service import embed_query, search
from rag_server.retrieval.vector import VectorSpace, exact_vector_leg, vector_sql
from tests.fakes.embedding_server import FakeEmbeddingServer
from tests.integration.test_eval import make_dataset
from tests.support.ingest import enqueue, query
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text

WORKER_ENV = {
    "RAG_WORKER_VISIBILITY_TIMEOUT_S": "3",  # a killed worker's message reappears within seconds
    "RAG_EMBEDDING_BATCH_SIZE": "4",  # the re-embed moves in small steps: "mid-re-embed" is easy to hit
    "RAG_CHUNK_SIZE": "128",
    "RAG_CHUNK_OVERLAP": "16",
    "RAG_WORKER_POLL_INTERVAL_S": "0.1",
}
NEW_MODEL = "fake-embed-64"
QUERY_PREFIX = "zebrafish probe"


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url, data_dir=data_dir, chunk_size=128, chunk_overlap=16, embedding_batch_size=4
    )


@pytest.fixture(scope="module")
def env(database_url: str, data_dir: Path) -> dict[str, str]:
    return process_env(database_url, data_dir, **WORKER_ENV)


@pytest.fixture(scope="module")
def new_model() -> Iterator[FakeEmbeddingServer]:
    server = FakeEmbeddingServer(dim=64).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("beir") / "tiny")


@dataclass
class SearchLoop:
    """Searches (vector and hybrid, alternately) until stopped; every exception is kept."""

    runtime: Runtime
    ok: int = 0
    failures: list[BaseException] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            request = SearchRequest(
                query=f"{QUERY_PREFIX} {n}", search_type="vector" if n % 2 else "hybrid", top_k=5
            )
            try:
                await search(self.runtime, request)
                self.ok += 1
            except Exception as exc:
                self.failures.append(exc)
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def searching(runtime: Runtime) -> AsyncIterator[SearchLoop]:
    loop, stop = SearchLoop(runtime), asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        await task


async def cli(env: dict[str, str], *args: str, command: str = "reembed", status: int = 0) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rag_server",
        command,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == status, out.decode() + err.decode()
    # What the command prints (its logs go to stderr); a refusal's error line is on stderr.
    return out.decode() if status == 0 else err.decode()


async def until(predicate: Callable[[], object], what: str) -> None:
    """Poll (up to 3 minutes) without blocking the event loop: the search loop runs on it."""
    for _ in range(1800):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def counts(url: str, generation: int = 2) -> dict[str, int]:
    row = query(
        url,
        "SELECT (SELECT count(*) FROM chunks) AS chunks,"
        " (SELECT count(*) FROM chunk_vectors WHERE generation_id = %s) AS vectors,"
        " (SELECT count(DISTINCT chunk_id) FROM chunk_vectors WHERE generation_id = %s) AS distinct_chunks,"
        " (SELECT count(embedding) FROM chunks) AS base_vectors",
        generation,
        generation,
    )[0]
    return {k: int(v) for k, v in row.items()}


def states(url: str) -> dict[int, str]:
    return {r["id"]: r["state"] for r in query(url, "SELECT id, state FROM embedding_generations")}


def task_status(url: str, task_id: UUID) -> str:
    return str(query(url, "SELECT status FROM job_tasks WHERE id = %s", task_id)[0]["status"])


def queries_seen(fake: FakeEmbeddingServer) -> int:
    return sum(1 for r in fake.requests for t in r["body"]["input"] if t.startswith(QUERY_PREFIX))


async def test_reembed_survives_a_kill_switches_live_rolls_back_and_finalizes(
    runtime: Runtime,
    database_url: str,
    env: dict[str, str],
    new_model: FakeEmbeddingServer,
    dataset: Path,
    tmp_path: Path,
    workers: list[Proc],
) -> None:
    docs = [DirectDocument(f"doc{i}.txt", long_text(900, seed=40 + i).encode(), {}) for i in range(4)]
    await ingest_documents_direct(runtime, docs)
    total = counts(database_url)["chunks"]
    assert 25 <= total <= 80, total
    model_args = [
        "--model",
        NEW_MODEL,
        "--dim",
        "64",
        "--provider",
        "openai",
        "--base-url",
        new_model.base_url,
    ]

    async with searching(runtime) as loop:
        out = await cli(env, *model_args, "--no-wait")
        assert "created generation 2" in out and "queued" in out, out
        assert states(database_url) == {1: "active", 2: "building"}
        # A document uploaded while the re-embed builds gets vectors of both models from its worker.
        [task] = await enqueue(runtime, [("during.txt", long_text(300, seed=99).encode())])

        new_model.delay_s = 0.3  # every batch of 4 takes a while: the kill lands mid-re-embed
        first = start_worker(env, tmp_path / "first.log")
        workers.append(first)
        await until(lambda: counts(database_url)["vectors"] >= 8, "the first worker's re-embed batches")
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait()
        killed_at = counts(database_url)
        assert killed_at["vectors"] < killed_at["chunks"], killed_at
        assert states(database_url)[2] == "building"  # nothing switched while vectors are missing

        new_model.delay_s = 0.0
        second = start_worker(env, tmp_path / "second.log")
        workers.append(second)
        out = await cli(env, *model_args, "--eval", str(dataset))  # resumes, waits, evaluates, switches
        assert "resuming generation 2" in out and "switched" in out, out
        # Both models' quality on the BEIR dataset, printed before the switch.
        evals = [line for line in out.splitlines() if "nDCG@10" in line]
        assert [line.split(":")[1].split()[0] for line in evals] == ["old", "new"], out
        assert out.index("nDCG@10") < out.index("switched")

        assert states(database_url) == {1: "retired", 2: "active"}
        await until(lambda: task_status(database_url, task.task_id) == "completed", "the upload's task")
        done = counts(database_url)
        # Every chunk (the uploaded document's too, written before or after the switch) has exactly one
        # vector of the new model, and still its old one.
        assert done["vectors"] == done["distinct_chunks"] == done["chunks"] > total, done
        assert done["base_vectors"] == done["chunks"]
        assert query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0

        # The running process follows the switch without a restart: its queries go to the new model.
        seen = queries_seen(new_model)
        await until(lambda: queries_seen(new_model) > seen + 2, "queries embedded by the new model")
        assert (await embed_query(runtime, "zebrafish")).shape == (64,)
        hits = await search(runtime, SearchRequest(query="zebrafish heart", search_type="vector", top_k=5))
        assert len(hits.results) == 5

        out = await cli(env, "--rollback")
        assert "rolled back" in out and states(database_url) == {1: "active", 2: "retired"}
        await asyncio.sleep(ACTIVE_TTL_S + 0.5)
        seen, ok = queries_seen(new_model), loop.ok
        await until(lambda: loop.ok > ok + 5, "searches after the rollback")
        assert queries_seen(new_model) == seen  # back on MiniLM
        assert (await embed_query(runtime, "zebrafish")).shape == (384,)

        # Forward again, then drop MiniLM's vectors and index for good.
        await cli(env, "--rollback")
        assert states(database_url) == {1: "retired", 2: "active"}
        out = await cli(env, "--finalize")
        assert "dropped generation 1" in out, out
        await asyncio.sleep(ACTIVE_TTL_S + 0.5)
        ok = loop.ok
        await until(lambda: loop.ok > ok + 5, "searches after finalize")

    assert loop.failures == [], loop.failures[:3]
    assert loop.ok > 20
    assert states(database_url) == {1: "dropped", 2: "active"}
    assert counts(database_url)["base_vectors"] == 0
    assert not query(database_url, "SELECT to_regclass('chunks_embedding_hnsw_idx') IS NOT NULL AS x")[0]["x"]
    assert query(database_url, "SELECT to_regclass('chunk_vectors_g2_hnsw') IS NOT NULL AS x")[0]["x"]
    hits = await search(runtime, SearchRequest(query="zebrafish heart", search_type="vector", top_k=5))
    assert len(hits.results) == 5
    # A floor compares with the new generation's vectors (chunk_vectors): -1 keeps all, 1 only the
    # chunks that hold every word.
    ranked = [h.chunk_id for h in hits.results]
    every_word = {
        r["id"]
        for r in query(
            database_url,
            "SELECT id FROM chunks"
            " WHERE to_tsvector('english', rag_bm25_text(search_text))"
            " @@ plainto_tsquery('english', rag_bm25_text(%s))",
            "zebrafish heart",
        )
    }
    for floor, kept in ((-1.0, ranked), (1.0, [i for i in ranked if i in every_word])):
        request = SearchRequest(query="zebrafish heart", search_type="vector", top_k=5, min_similarity=floor)
        assert [h.chunk_id for h in (await search(runtime, request)).results][: len(kept)] == kept
    # A floor between the 2nd and 3rd hit's similarity (the vector leg's score: generation 2's cosine)
    # keeps the first two and drops the 3rd unless it holds every word; whatever comes after reaches it.
    scores = [h.score for h in hits.results]
    assert scores[1] > scores[2], scores
    between = (scores[1] + scores[2]) / 2
    request = SearchRequest(query="zebrafish heart", search_type="vector", top_k=5, min_similarity=between)
    floored = (await search(runtime, request)).results
    assert [h.chunk_id for h in floored][:2] == ranked[:2]
    assert (ranked[2] in {h.chunk_id for h in floored}) == (ranked[2] in every_word)
    assert all(h.score >= between or h.chunk_id in every_word for h in floored), floored
    # The new generation's partial expression index is one the planner can use for the vector leg (on a
    # table this small it prefers the primary key and a sort; a large one makes the index cheaper).
    embedding = await embed_query(runtime, "zebrafish heart")
    async with owner_connection(database_url) as owner, owner.transaction():
        await owner.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        sql = vector_sql(None, None, VectorSpace(2, 64))[0]
        plan = "\n".join(r[0] for r in await owner.fetch(f"EXPLAIN {sql}", embedding, 5))
    assert "chunk_vectors_g2_hnsw" in plan, plan
    # The exact scan a weak answer is checked by reads the new generation's vectors too: the same order
    # as a sort over all of them.
    async with owner_connection(database_url) as owner:
        exact = await exact_vector_leg(owner, embedding, 5, space=VectorSpace(2, 64), up_to=10**9)
        everything = await owner.fetch(
            "SELECT chunk_id, 1 - ((embedding::vector(64)) <=> $1) AS s FROM chunk_vectors"
            " WHERE generation_id = 2 ORDER BY s DESC, chunk_id LIMIT 5",
            embedding,
        )
    assert [h.chunk_id for h in exact] == [r["chunk_id"] for r in everything]

    # A document ingested after finalize: its chunks carry only the new model's vectors.
    [late] = await enqueue(runtime, [("late.txt", long_text(200, seed=7).encode())])
    await until(lambda: task_status(database_url, late.task_id) == "completed", "the late document")
    # Direct ingestion (eval, benches) writes through the same generations.
    await ingest_documents_direct(
        runtime, [DirectDocument("direct.txt", long_text(200, seed=8).encode(), {})]
    )
    after = counts(database_url)
    assert after["vectors"] == after["chunks"] and after["base_vectors"] == 0
    assert second.stop() == 0, second.log_tail()
    status = await cli(env, "--status")
    assert "active" in status and NEW_MODEL in status and f"{after['chunks']}/{after['chunks']}" in status

    # A process configured with the new model starts on this database; /health and doctor report it.
    new_env = env | {
        "RAG_EMBEDDING_PROVIDER": "openai",
        "RAG_EMBEDDING_MODEL": NEW_MODEL,
        "RAG_EMBEDDING_DIM": "64",
        "RAG_EMBEDDING_BASE_URL": new_model.base_url,
    }
    report = json.loads(await cli(new_env, command="doctor"))
    assert report["embedding"] == {"model": NEW_MODEL, "dim": 64}
    assert [(g["id"], g["state"]) for g in report["embedding_generations"]][:2] == [
        (1, "dropped"),
        (2, "active"),
    ]


async def test_a_model_that_does_not_answer_right_is_refused_before_any_work(
    runtime: Runtime, database_url: str, env: dict[str, str], new_model: FakeEmbeddingServer
) -> None:
    before = states(database_url)
    wrong = ["--model", "wrong-dim", "--dim", "65", "--provider", "openai", "--base-url", new_model.base_url]
    out = await cli(env, *wrong, "--no-wait", status=1)
    assert "error: the new model failed" in out and "expected (1, 65)" in out, out
    after = states(database_url)
    [created] = set(after) - set(before)
    assert after[created] == "dropped" and {k: after[k] for k in before} == before
    assert query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0
    if "retired" not in before.values():
        out = await cli(env, "--rollback", status=1)
        assert "error: no retired embedding generation" in out, out


async def test_a_dimension_out_of_range_is_refused_when_parsed(
    runtime: Runtime, database_url: str, env: dict[str, str], new_model: FakeEmbeddingServer
) -> None:
    """--dim 0 read as "no --dim", a negative one reached the table's CHECK and one past int4 the
    database's integer: each is refused in one line before the database is opened."""
    before = states(database_url)
    for dim in ("0", "-5", "99999999999"):
        model = ["--model", "m", "--dim", dim, "--provider", "openai", "--base-url", new_model.base_url]
        err = await cli(env, *model, "--no-wait", status=2)
        assert err.splitlines()[-1] == (
            f"rag-server reembed: error: argument --dim: takes a whole number from 1 to 16000, got {dim!r}"
        )
        assert "Traceback" not in err
    assert states(database_url) == before
