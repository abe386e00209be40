"""GET /metrics through the real app: after a real worker subprocess processes an upload, and after
searches and answers, the figures move (requests by route template, search stages, LLM calls, tasks by
status, failures by reason class, queue, throughput, live workers); access needs an admin key once keys
exist, unless RAG_METRICS_PUBLIC."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from rag_server.api.app import create_app
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline_stats import classify_failure, failure_class_sql
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.fakes.llm_server import Behaviour, FakeLLM
from tests.integration.conftest import APP_BASE_URL
from tests.support.ingest import upload, wait_batch
from tests.support.processes import Proc, settings_env, start_worker
from tests.support.sample_files import long_text

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer, fake_llm: FakeLLM) -> Settings:
    return fake_embedding_settings(
        database_url,
        data_dir,
        fake,
        worker_poll_interval_s=0.1,
        llm_provider="openai",
        llm_base_url=fake_llm.base_url,
        llm_model="fake-model",
        llm_max_retries=0,
    )


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient) -> TestClient:
    return sync_app_client


def scrape(client: TestClient, **headers: str) -> Samples:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a labelled counter appears once it has counted something)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def gauge(samples: Samples, name: str, **labels: str) -> float:
    """A sample that must be there (a gauge always is): absent fails, instead of reading as 0."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} missing from /metrics"
    return samples[key]


def total(samples: Samples, name: str) -> float:
    """Summed over every label set."""
    return sum(v for (n, _), v in samples.items() if n == name)


def test_an_upload_processed_by_a_worker_moves_the_pipeline_figures(
    client: TestClient, settings: Settings, workers: list[Proc], tmp_path: Path
) -> None:
    before = scrape(client)
    assert value(before, "rag_database_up") == 1
    assert gauge(before, "rag_ingest_workers_alive") == 0
    assert value(before, "rag_db_pool_max_connections") == settings.db_pool_max

    files = [("otters.txt", long_text(600, seed=3).encode()), ("broken.json", b"{not json")]
    response = upload(client, files)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    queued = scrape(client)
    tasks = "rag_ingest_tasks"
    assert value(queued, tasks, status="queued") == value(before, tasks, status="queued") + 2
    visible = "rag_ingest_queue_messages"
    assert value(queued, visible, state="visible") == value(before, visible, state="visible") + 2
    assert gauge(queued, "rag_ingest_queue_oldest_visible_message_age_seconds") > 0

    workers.append(start_worker(settings_env(settings), tmp_path / "worker.log"))
    status = wait_batch(client, batch_id)
    assert status["counts"] == {**status["counts"], "completed": 1, "failed": 1}, status
    chunks = next(t["total_chunks"] for t in status["tasks"] if t["filename"] == "otters.txt")
    after = scrape(client)
    assert value(after, tasks, status="completed") == value(before, tasks, status="completed") + 1
    assert value(after, tasks, status="failed") == value(before, tasks, status="failed") + 1
    assert value(after, tasks, status="queued") == value(before, tasks, status="queued")
    failed = "rag_ingest_failed_tasks"
    assert value(after, failed, reason="parse") == value(before, failed, reason="parse") + 1
    assert value(after, visible, state="visible") == value(before, visible, state="visible")
    assert value(after, "rag_ingest_recent_completed_tasks") >= 1
    assert value(after, "rag_ingest_recent_chunks") >= chunks > 0
    assert value(after, "rag_ingest_throughput_chunks_per_second") > 0
    assert value(after, "rag_ingest_workers_alive") == 1
    # Requests by route template: the batch id is never a label value.
    requests = "rag_http_requests_total"
    assert value(after, requests, route="/upload", method="POST", status="202") == 1
    assert value(after, requests, route="/tasks/{batch_id}/status", method="GET", status="200") >= 1
    assert not any(batch_id in str(labels) for _, labels in after)
    assert value(after, "rag_http_request_duration_seconds_count", route="/upload", method="POST") == 1

    workers[0].stop()
    assert gauge(scrape(client), "rag_ingest_workers_alive") == 0


def test_searches_move_the_request_counter_and_the_stage_histograms(client: TestClient) -> None:
    before = scrape(client)
    for search_type in ("hybrid", "bm25"):
        r = client.post("/search", json={"query": "otters river", "search_type": search_type})
        assert r.status_code == 200, r.text
    after = scrape(client)
    requests = "rag_http_requests_total"
    post_search = {"route": "/search", "method": "POST", "status": "200"}
    assert value(after, requests, **post_search) == value(before, requests, **post_search) + 2
    stage = "rag_search_stage_duration_seconds_count"
    for name in ("embed", "vector", "bm25", "fuse", "fetch", "total"):
        assert (
            value(after, stage, mode="hybrid", stage=name)
            == value(before, stage, mode="hybrid", stage=name) + 1
        )
    assert (
        value(after, stage, mode="bm25", stage="bm25") == value(before, stage, mode="bm25", stage="bm25") + 1
    )
    assert value(after, stage, mode="bm25", stage="embed") == 0
    # An unknown path is one series, whatever the path.
    assert client.get("/no/such/path/123").status_code == 404
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(scrape(client), requests, **unmatched) == value(after, requests, **unmatched) + 1


def test_llm_calls_and_failures_are_counted(client: TestClient, fake_llm: FakeLLM) -> None:
    fake_llm.reset()
    before = scrape(client)
    # otters.txt is random words: without a floor the question gets sources and the LLM is asked.
    r = client.post("/query", json={"query": "what do otters eat?", "min_similarity": -1})
    assert r.status_code == 200 and r.json()["llm_error"] is None, r.text
    answered = scrape(client)
    durations = "rag_llm_request_duration_seconds_count"
    assert total(answered, durations) > total(before, durations)
    assert {dict(labels)["model"] for name, labels in answered if name == durations} == {"fake-model"}
    fake_llm.behaviour = Behaviour(fail_status=500)
    try:
        r = client.post("/query", json={"query": "what do otters eat?", "min_similarity": -1})
        assert r.status_code == 200 and r.json()["llm_error"], r.text
    finally:
        fake_llm.reset()
    failed = scrape(client)
    assert total(failed, "rag_llm_errors_total") > total(answered, "rag_llm_errors_total")
    assert total(failed, durations) == total(answered, durations)


async def test_the_failure_classes_in_sql_agree_with_python(runtime: Runtime) -> None:
    reasons = [
        "Cancelled by admin.",
        "Gave up after 5 attempts: boom",
        "The embedding service refused this document: 400.",
        "The PDF is damaged or not a PDF and could not be read (x).",
        "The file is empty.",
        "The document was deleted before processing finished.",
        "Unexpected error while processing: KeyError.",
        "The database was unavailable (ConnectionError).",
        "100% something_else",
    ]
    case, params = failure_class_sql()
    rows = await runtime.pool.fetch(
        f"SELECT error, {case} AS reason FROM unnest(${len(params) + 1}::text[]) AS error", *params, reasons
    )
    assert {r["error"]: r["reason"] for r in rows} == {r: classify_failure(r) for r in reasons}
    assert classify_failure(reasons[-1]) == "other"


def test_metrics_need_an_admin_key_once_keys_exist_unless_public(
    client: TestClient, settings: Settings
) -> None:
    """Last in this module: from here on the API needs keys."""
    admin = client.post("/keys", json={"name": "admin", "role": "admin"}).json()["key"]
    reader = client.post(
        "/keys", json={"name": "reader", "role": "reader"}, headers={"Authorization": f"Bearer {admin}"}
    ).json()["key"]
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    samples = scrape(client, Authorization=f"Bearer {admin}")
    assert value(samples, "rag_ingest_tasks", status="completed") >= 1
    public = create_app(settings.model_copy(update={"metrics_public": True}))
    with TestClient(public, base_url=APP_BASE_URL) as other:
        # Its own registry: none of the first app's requests.
        fresh = scrape(other)
        assert value(fresh, "rag_http_requests_total", route="/upload", method="POST", status="202") == 0
        assert value(fresh, "rag_ingest_tasks", status="completed") >= 1
        assert other.get("/status").status_code == 401
