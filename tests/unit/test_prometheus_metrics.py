"""The failure reason classifier (on the sentences the code really writes) and the HTTP metrics
middleware (route templates, bounded labels, one registry per app), without a database."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from rag_server.config import Settings
from rag_server.infra.metrics import Metrics, MetricsMiddleware, observe_search
from rag_server.ingestion.operations import cancel_reason
from rag_server.ingestion.parsing import ParseError, parse_document
from rag_server.ingestion.pipeline_stats import (
    FAILURE_CLASS_NAMES,
    OTHER_FAILURE,
    classify_failure,
    failure_class_sql,
)
from rag_server.ingestion.worker import give_up_reason


def parse_failure(filename: str, content: bytes, file_type: str) -> str:
    with pytest.raises(ParseError) as caught:
        parse_document(filename, content, file_type)
    return str(caught.value)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (lambda: cancel_reason("admin"), "cancelled"),
        (lambda: cancel_reason(None), "cancelled"),
        (lambda: give_up_reason(Settings(worker_max_attempts=2), 2, 2, "The file is empty."), "gave_up"),
        (lambda: give_up_reason(Settings(worker_max_deliveries=3), 0, 4, None), "gave_up"),
        (lambda: parse_failure("a.txt", b"", "txt"), "parse"),
        (lambda: parse_failure("a.json", b"{nope", "json"), "parse"),
        (lambda: parse_failure("a.pdf", b"not a pdf", "pdf"), "parse"),
        (lambda: parse_failure("a.docx", b"not a docx", "docx"), "parse"),
        (lambda: parse_failure("a.xyz", b"x", "xyz"), "parse"),
        (lambda: parse_failure("a.pptx", b"not a pptx", "pptx"), "parse"),
        (lambda: parse_failure("a.xlsx", b"PK\x03\x04truncated", "xlsx"), "parse"),
        (lambda: parse_failure("a.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), "xlsx"), "parse"),
        (lambda: parse_failure("a.csv", b"", "csv"), "parse"),
        (lambda: "The embedding service refused this document: 400 Bad Request.", "embedding"),
        (lambda: "The database was unavailable (ConnectionResetError).", "database"),
        (lambda: "The document was deleted before processing finished.", "deleted"),
        (lambda: "Unexpected error while processing: division by zero.", "unexpected"),
        (lambda: "something nobody planned", OTHER_FAILURE),
        (lambda: None, OTHER_FAILURE),
    ],
)
def test_failure_reasons_fall_into_a_small_fixed_set_of_classes(reason: object, expected: str) -> None:
    assert callable(reason)
    assert classify_failure(reason()) == expected
    assert expected in FAILURE_CLASS_NAMES


def test_the_sql_classifier_binds_every_prefix_and_escapes_like_wildcards() -> None:
    case, params = failure_class_sql()
    assert case.count("WHEN") * 2 == len(params)
    assert all(p.endswith("%") for p in params[::2]) and set(params[1::2]) < set(FAILURE_CLASS_NAMES)
    assert "Cancelled by%" in params and "'" not in "".join(params)


def app_with_metrics() -> tuple[FastAPI, Metrics]:
    app = FastAPI()
    metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.entered = asyncio.Event()

    @app.get("/hang")
    async def hang() -> None:
        app.state.entered.set()
        await asyncio.Event().wait()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        observe_search("bm25", {"bm25": 2.0, "total": 3.0})  # what retrieval does inside a request
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app, metrics


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render([]).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_requests_are_labelled_by_route_template_with_bounded_values() -> None:
    app, metrics = app_with_metrics()
    other_app, other = app_with_metrics()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for item_id in (1, 2, 3):
            assert (await client.get(f"/items/{item_id}")).status_code == 200
        assert (await client.get("/items/x")).status_code == 422
        assert (await client.get("/nowhere/42")).status_code == 404
        assert (await client.request("BREW", "/items/1")).status_code == 405
        assert (await client.get("/boom")).status_code == 500
    got = samples(metrics)

    def count(route: str, method: str, status: str) -> float:
        labels = frozenset({"route": route, "method": method, "status": status}.items())
        return got.get(("rag_http_requests_total", labels), 0)

    assert count("/items/{item_id}", "GET", "200") == 3
    assert count("/items/{item_id}", "GET", "422") == 1
    assert count("unmatched", "GET", "404") == 1
    assert count("/items/{item_id}", "other", "405") == 1
    assert count("/boom", "GET", "500") == 1
    routes = {dict(labels)["route"] for name, labels in got if name == "rag_http_requests_total"}
    assert routes == {"/items/{item_id}", "unmatched", "/boom"}
    stage = frozenset({"mode": "bm25", "stage": "bm25"}.items())
    assert got[("rag_search_stage_duration_seconds_count", stage)] == 3
    assert got[("rag_search_stage_duration_seconds_sum", stage)] == pytest.approx(0.006)
    # Another app's registry saw none of it; outside a request nothing is recorded anywhere.
    observe_search("bm25", {"bm25": 1.0})
    assert not any(name == "rag_http_requests_total" for name, _ in samples(other))
    assert samples(metrics)[("rag_search_stage_duration_seconds_count", stage)] == 3
    assert other_app is not app


async def test_a_request_cancelled_before_its_answer_is_counted_as_client_closed() -> None:
    app, metrics = app_with_metrics()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        request = asyncio.create_task(client.get("/hang"))
        await app.state.entered.wait()
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
    labels = frozenset({"route": "/hang", "method": "GET", "status": "499"}.items())
    assert samples(metrics)[("rag_http_requests_total", labels)] == 1
