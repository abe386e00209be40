"""GET /metrics: Prometheus' text format. The app's own metrics (HTTP, search stages, LLM) plus the
figures read from the database at scrape time (pool, queue, tasks, failures, throughput, workers), so
what the workers do shows here without a worker exposing a port."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rag_server.api.deps import RuntimeDep, require
from rag_server.api.errors import error_responses
from rag_server.infra.database import is_transient_db_error
from rag_server.infra.metrics import CONTENT_TYPE, Metrics, pool_families
from rag_server.infra.replicas import ReadRouting
from rag_server.infra.scoped_pool import SYSTEM_SCOPE, bind_scope, reset_scope
from rag_server.ingestion.pipeline_stats import THROUGHPUT_WINDOW_S, PipelineStats, read_pipeline_stats

_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def metrics_router(public: bool) -> APIRouter:
    """`public` (RAG_METRICS_PUBLIC): no key needed, for a scraper on a private network; otherwise an
    admin key, since the figures cover every collection."""
    if public:
        router = APIRouter(tags=["health"])
    else:
        router = APIRouter(
            tags=["health"], dependencies=[require("admin")], responses=error_responses(401, 403)
        )
    # 503: checking a key needs the database (a public /metrics answers through an outage).
    responses = {**_TEXT, **error_responses(503)}
    router.add_api_route("/metrics", scrape, methods=["GET"], response_class=Response, responses=responses)
    return router


async def scrape(request: Request, runtime: RuntimeDep) -> Response:
    """Every metric, in Prometheus' text format. A database outage still answers: `rag_database_up`
    0 and no database figures."""
    metrics: Metrics = request.app.state.metrics
    families = pool_families(runtime.pool.raw)
    # Whole-pipeline figures: every collection's tasks, whoever scrapes (the key's scope would hide some).
    token = bind_scope(SYSTEM_SCOPE)
    try:
        stats: PipelineStats | None = await read_pipeline_stats(runtime.pool, runtime.queue)
    except Exception as exc:
        if not is_transient_db_error(exc):
            raise
        stats = None
    finally:
        reset_scope(token)
    up = GaugeMetricFamily("rag_database_up", "1 when the database answered this scrape's queries")
    up.add_metric([], 0 if stats is None else 1)
    families.append(up)
    if stats is not None:
        families += pipeline_families(stats)
    if runtime.reads is not None:
        families += replica_families(runtime.reads)
    return Response(metrics.render(families), media_type=CONTENT_TYPE)


def _gauge(name: str, doc: str, values: Mapping[str, float] | float, label: str = "") -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label] if label else None)
    if isinstance(values, Mapping):
        for value_label, value in values.items():
            family.add_metric([value_label], value)
    else:
        family.add_metric([], values)
    return family


def pipeline_families(stats: PipelineStats) -> list[Metric]:
    window = f"the last {THROUGHPUT_WINDOW_S} s"
    q = stats.queue
    return [
        _gauge(
            "rag_ingest_queue_messages",
            "Messages in the ingestion queue: visible (waiting for a worker) or invisible (taken, or "
            "waiting out a retry backoff)",
            {"visible": q.visible, "invisible": q.invisible},
            "state",
        ),
        _gauge(
            "rag_ingest_queue_oldest_visible_message_age_seconds",
            "Age of the oldest message waiting for a worker (0: none waits)",
            q.oldest_visible_age_s,
        ),
        _gauge("rag_ingest_tasks", "Ingestion tasks by status (every collection)", stats.tasks, "status"),
        _gauge(
            "rag_ingest_failed_tasks",
            "Failed ingestion tasks by reason class (parse, embedding, database, gave_up, cancelled, "
            "deleted, unexpected, other)",
            stats.failures,
            "reason",
        ),
        _gauge("rag_ingest_recent_completed_tasks", f"Tasks completed in {window}", stats.recent_tasks),
        _gauge(
            "rag_ingest_recent_chunks", f"Chunks written by tasks completed in {window}", stats.recent_chunks
        ),
        _gauge(
            "rag_ingest_throughput_chunks_per_second",
            f"Chunks written per second, averaged over {window}",
            stats.chunks_per_second,
        ),
        _gauge(
            "rag_ingest_workers_alive",
            "Worker processes alive (each holds its liveness lock in this database)",
            stats.workers_alive,
        ),
        _pruned(stats.pruned),
    ]


def _pruned(counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(
        "rag_retention_pruned_rows",
        "Rows removed by retention (RAG_TASK_RETENTION_DAYS, RAG_CHAT_RETENTION_DAYS) since the database was "
        "created: batches, tasks, archived_messages, chat_sessions, chat_messages, stored_responses",
        labels=["kind"],
    )
    for kind, n in counts.items():
        family.add_metric([kind], n)
    return family


def replica_families(reads: ReadRouting) -> list[Metric]:
    """Per replica (label: its index in RAG_READ_DATABASE_URLS, never the URL) and where reads went."""
    states = reads.status()
    healthy = {str(s.index): float(s.healthy) for s in states}
    lag = {str(s.index): s.lag_s for s in states if s.lag_s is not None}
    routed = CounterMetricFamily("rag_read_routing", "Read-only calls by where they ran", labels=["target"])
    for target, count in reads.routed.items():
        routed.add_metric([target], count)
    return [
        _gauge(
            "rag_read_replica_healthy",
            "1: the replica serves reads (up, in recovery, within the lag bound)",
            healthy,
            "replica",
        ),
        _gauge(
            "rag_read_replica_lag_seconds",
            "How far behind the primary the replica was at its last check",
            lag,
            "replica",
        ),
        routed,
    ]
