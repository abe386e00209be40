"""Prometheus metrics of one API app: its own registry, the in-process metrics, the HTTP middleware.

Each app owns a `Metrics` (a CollectorRegistry of its own, never prometheus_client's global one), so
several apps in one process (the tests) never register a name twice or count each other's requests.
Figures that live in the database (queue, tasks, workers) are not kept here: the /metrics route reads
them at scrape time and hands them to `render` as metric families.

Domain code records through `observe_search` / `observe_llm`, which find the app's Metrics in a
ContextVar bound by `MetricsMiddleware` (for each request, and for the lifespan, whose tasks, e.g. the
MCP sessions, inherit it). Outside an app (worker, CLI, eval) nothing is bound and they do nothing, so
retrieval and chat never import the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. HTTP spans fast reads to streamed answers; search stages are milliseconds; LLM calls seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)

# A label value outside these would let a client mint new series (unbounded cardinality).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# The status label of a request cancelled before its response started (nginx's "client closed request").
CLIENT_CLOSED = 499


class _Snapshot(Collector):
    """Families read at scrape time (database figures), yielded by the next `generate_latest`."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class Metrics:
    """The registry and metric objects of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "rag_http_requests",
            "HTTP requests by route template, method and status (streams: counted when they end)",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "rag_http_request_duration_seconds",
            "HTTP request duration by route template and method, until the response ends (a streamed "
            "answer: its whole stream)",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.search_stage = Histogram(
            "rag_search_stage_duration_seconds",
            "Search stage durations by search mode (stage: embed = the query's embedding, vector, bm25, "
            "fuse, fetch, total)",
            ["mode", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.llm_duration = Histogram(
            "rag_llm_request_duration_seconds",
            "Chat LLM calls that succeeded, by provider, model and call (complete, or stream: until its "
            "last token)",
            ["provider", "model", "call"],
            buckets=LLM_BUCKETS,
            registry=r,
        )
        self.llm_errors = Counter(
            "rag_llm_errors",
            "Chat LLM calls that failed (the answer fell back to extractive), by kind: timeout or error",
            ["provider", "model", "call", "kind"],
            registry=r,
        )
        self._snapshot = _Snapshot()
        r.register(self._snapshot)

    def render(self, families: Iterable[Metric]) -> bytes:
        """The text exposition of every metric plus `families` (read at scrape time). No await
        between setting the snapshot and rendering it: concurrent scrapes cannot mix theirs."""
        self._snapshot.families = list(families)
        try:
            return generate_latest(self.registry)
        finally:
            self._snapshot.families = []

    def observe_search(self, mode: str, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.search_stage.labels(mode, stage).observe(ms / 1000)

    def observe_llm(self, llm: Any, call: str, seconds: float, error: BaseException | None) -> None:
        provider, model = type(llm).__name__, str(getattr(llm, "model", None) or "")
        if error is None:
            self.llm_duration.labels(provider, model, call).observe(seconds)
        else:
            kind = "timeout" if isinstance(error, TimeoutError) else "error"
            self.llm_errors.labels(provider, model, call, kind).inc()


_active: ContextVar[Metrics | None] = ContextVar("rag_metrics", default=None)


def active() -> Metrics | None:
    """The Metrics of the app serving the current request (None outside one)."""
    return _active.get()


def observe_search(mode: str, timings_ms: Mapping[str, float]) -> None:
    metrics = _active.get()
    if metrics is not None:
        metrics.observe_search(mode, timings_ms)


def observe_llm(llm: Any, call: str, started: float, error: BaseException | None = None) -> None:
    """`started`: time.perf_counter() when the call began."""
    metrics = _active.get()
    if metrics is not None:
        metrics.observe_llm(llm, call, time.perf_counter() - started, error)


def pool_families(pool: asyncpg.Pool) -> list[Metric]:
    """The asyncpg pool's connections: open ones in use or idle, and its maximum."""
    size, idle = pool.get_size(), pool.get_idle_size()
    connections = GaugeMetricFamily(
        "rag_db_pool_connections", "Database pool connections open, by state", labels=["state"]
    )
    connections.add_metric(["in_use"], size - idle)
    connections.add_metric(["idle"], idle)
    maximum = GaugeMetricFamily("rag_db_pool_max_connections", "Database pool size limit (RAG_DB_POOL_MAX)")
    maximum.add_metric([], pool.get_max_size())
    return [connections, maximum]


def _template(route: object) -> str | None:
    # path_format: the template without converters; a mount's is `/assets/{path}`.
    path = getattr(route, "path_format", None)
    return path or "/" if isinstance(path, str) else None


def route_template(scope: Scope, request_scope: Scope) -> str | None:
    """The matched route's path template (`/documents/{document_id}`), never the raw path; None when
    nothing matched. The one definition for metric labels and access lines.

    FastAPI names its own routes in the scope; a plain route (/mcp) or a mount (the web app's /assets)
    is found again by matching `request_scope`, the scope as it came in (routing changes root_path).
    """
    if scope.get("route") is not None:
        return _template(scope["route"])
    for route in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
        if route.matches(request_scope)[0] is Match.FULL:
            return _template(route)
    return None


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status; binds the app's
    Metrics for the request (and for the lifespan) so domain code can record into it.

    A streamed response (SSE) is recorded when it ends: its duration is the whole stream, and a
    client that disconnects mid-stream is still counted with the status it was sent."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _active.set(self.metrics)
        try:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            await self._http(scope, receive, send)
        finally:
            _active.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status: int | None = None  # until the response starts
        # Nothing sent yet: an exception becomes a 500 outside; a cancellation means the client left
        # (or the server shut down) before any answer.
        unanswered = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        request_scope = dict(scope)  # before routing changes it
        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            unanswered = CLIENT_CLOSED
            raise
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_template(scope, request_scope) or UNMATCHED_ROUTE
            code = str(status if status is not None else unanswered)
            self.metrics.http_requests.labels(route, method, code).inc()
            self.metrics.http_duration.labels(route, method).observe(time.perf_counter() - started)
