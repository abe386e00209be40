"""A JSON body nested ~1,000 levels deep (QA: `{"$and": [{"$and": [...]}]}` as a search filter) was a 400
"There was an error parsing the body" on every route: Python's JSON decoder gives up on the nesting
(RecursionError) before any field is checked, and FastAPI answers any error reading a body so. Now a
4xx whose detail says why, in one place for every JSON body (api/errors.py); /v1 in OpenAI's shape. Over
a socket (the real app served from this process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_server.config import Settings
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings

DEPTH = 1_200


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


def nested(depth: int) -> str:
    """`{"$and": [{"$and": [... {"team": "a"} ...]}]}`, `depth` levels of $and."""
    return '{"$and": [' * depth + '{"team": "a"}' + "]}" * depth


def body(route: str, match: str) -> str:
    return {
        "/search": f'{{"query": "q", "filters": {{"metadata": {match}}}}}',
        "/query": f'{{"query": "q", "filters": {{"metadata": {match}}}}}',
        "/documents/delete": f'{{"collection": "default", "metadata": {match}}}',
        "/documents/metadata/matching": (
            f'{{"collection": "default", "metadata": {match}, "set": {{"a": 1}}}}'
        ),
    }[route]


@pytest.mark.parametrize("route", ["/search", "/query", "/documents/delete", "/documents/metadata/matching"])
def test_a_body_nested_a_thousand_levels_deep_is_a_422_saying_so(live_app_url: str, route: str) -> None:
    r = httpx.post(
        live_app_url + route, content=body(route, nested(DEPTH)), headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/json")
    detail: Any = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith("The JSON body is nested too deeply to be read"), (
        detail
    )
    # Five levels, which the decoder reads: the match's own rule, as before.
    r = httpx.post(
        live_app_url + route, content=body(route, nested(5)), headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "nested deeper than 4 levels" in str(r.json()["detail"]), r.text


def test_openai_routes_answer_it_in_openais_shape(live_app_url: str) -> None:
    deep = '{"model": "rag:default", "messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * DEPTH
    deep += "]" * DEPTH + "}"
    r = httpx.post(
        live_app_url + "/v1/chat/completions", content=deep, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("The JSON body is nested too deeply to be read"), r.json()


def test_a_match_in_the_query_string_says_why_too(live_app_url: str) -> None:
    """GET /documents?metadata=: bounded at 4,000 characters, read by pydantic's own parser."""
    r = httpx.get(live_app_url + "/documents", params={"metadata": nested(300)})
    assert r.status_code == 422, r.text
    assert "recursion" in str(r.json()["detail"]).lower() or "deeper" in str(r.json()["detail"]), r.json()
