"""How the in-process app answers what goes wrong: a database that is unavailable is a 503, any other
unexpected exception a JSON 500 logged with its traceback, odd input a 4xx or cleaned — never a 5xx."""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import uuid4

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from rag_server.api.app import create_app
from rag_server.config import Settings
from rag_server.infra.embeddings import EmbeddingError
from tests.integration.conftest import APP_BASE_URL

DATABASE_DOWN = "the database is unavailable, retry shortly"
CONFLICT = "the request conflicted with a concurrent request; retry it"
DISK_FULL = "the database's disk is full: retry once space is freed on it"
# name: (what a route or store raises, the status, the detail; None: the JSON 500's "internal error").
FAILURES: dict[str, tuple[BaseException, int, str | None]] = {
    "refused": (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), 503, DATABASE_DOWN),
    "too-many-connections": (
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        503,
        DATABASE_DOWN,
    ),
    "admin-shutdown": (asyncpg.exceptions.AdminShutdownError("terminating connection"), 503, DATABASE_DOWN),
    # SQLSTATE class 40: the transaction lost to a concurrent one; the database is fine.
    "deadlock": (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), 503, CONFLICT),
    "serialization": (asyncpg.exceptions.SerializationError("could not serialize access"), 503, CONFLICT),
    "embedding-down": (
        EmbeddingError("The embedding service is unavailable: HTTP 503", transient=True),
        503,
        "the embedding service failed: The embedding service is unavailable: HTTP 503",
    ),
    "embedding-refuses": (
        EmbeddingError("The embedding service refused the request: HTTP 401", transient=False),
        503,
        "the embedding service failed: The embedding service refused the request: HTTP 401",
    ),
    # PostgreSQL's own disk is full (SQLSTATE 53100): the database answers, "unavailable" misled.
    "database-disk-full": (
        asyncpg.exceptions.DiskFullError('could not extend file "base/5/16765": No space left on device'),
        503,
        DISK_FULL,
    ),
    "disk-full": (OSError(errno.ENOSPC, "No space left on device"), 500, None),
    "bare-oserror": (OSError("something local broke"), 500, None),
    "undefined-table": (asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'), 500, None),
    "data-error": (asyncpg.exceptions._base.DataError("invalid input for query argument $1"), 500, None),
    "bug": (KeyError("missing"), 500, None),
}


@pytest.fixture(scope="module")
def failing_app(app: FastAPI) -> FastAPI:
    """The module's app with one extra route per failure, raising it as a route or a store would."""

    def raising(exc: BaseException) -> Callable[[], Awaitable[None]]:
        async def fail() -> None:
            raise exc

        return fail

    for name, (exc, _, _) in FAILURES.items():
        app.add_api_route(f"/test-failure/{name}", raising(exc), methods=["GET"])
    return app


@pytest.mark.parametrize("name", FAILURES)
async def test_unexpected_errors_are_json_503_only_for_an_unavailable_service(
    failing_app: FastAPI, app_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    exc, status, detail = FAILURES[name]
    with caplog.at_level(logging.WARNING, logger="rag_server.api.errors"):
        reply = await app_client.get(f"/test-failure/{name}")
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    if detail is not None:
        assert reply.json() == {"detail": detail}
        # When to try again: at once after a lost race, shortly when the database is down.
        retry_after = {CONFLICT: "1", DATABASE_DOWN: "5", DISK_FULL: "5"}.get(detail)
        assert reply.headers.get("retry-after") == retry_after, reply.headers
    else:
        assert reply.json() == {"detail": "internal error"}
        logged = [r for r in caplog.records if r.exc_info is not None]
        assert logged and logged[-1].exc_info is not None
        assert logged[-1].exc_info[1] is exc  # with its traceback


@pytest.fixture
async def closed_pool_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose database went away under it: its pool is closed after start-up."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await application.state.runtime.pool.close()
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=APP_BASE_URL) as client:
            yield client


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/health", None),
        ("GET", "/chat/sessions", None),
        ("POST", "/chat/sessions", {"title": "t"}),
        ("POST", "/search", {"query": "zebrafish", "search_type": "bm25"}),
        ("POST", "/query", {"query": "zebrafish"}),
    ],
)
async def test_routes_answer_503_when_the_database_is_unavailable(
    closed_pool_client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    reply = await closed_pool_client.request(method, path, json=body)
    assert reply.status_code == 503, reply.text
    assert reply.json() == {"detail": "the database is unavailable, retry shortly"}


async def test_a_nul_in_a_session_title_is_cleaned_and_a_lone_surrogate_refused(
    app_client: httpx.AsyncClient,
) -> None:
    # Escaped as a JSON client sends them; PostgreSQL text cannot hold NUL.
    reply = await app_client.post(
        "/chat/sessions",
        content=b'{"title": "a\\u0000b"}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 201, reply.text
    session = reply.json()
    assert session["title"] == "a b"
    refused = await app_client.post(
        "/chat/sessions",
        content=b'{"title": "a\\ud800b"}',
        headers={"content-type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    assert "lone surrogate" in refused.text
    renamed = await app_client.patch(
        f"/chat/sessions/{session['id']}",
        content=b'{"title": "c\\u0000d"}',
        headers={"content-type": "application/json"},
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "c d"
    # A NUL alone cleans to a blank title: refused as any blank one is.
    blank = await app_client.patch(
        f"/chat/sessions/{session['id']}",
        content=b'{"title": "\\u0000"}',
        headers={"content-type": "application/json"},
    )
    assert blank.status_code == 422 and "must not be blank" in blank.text, blank.text


@pytest.mark.parametrize("offset", [2**31, 2**63, 10**30])
async def test_an_offset_beyond_the_bound_is_a_422(app_client: httpx.AsyncClient, offset: int) -> None:
    reply = await app_client.get("/chat/sessions", params={"offset": offset})
    assert reply.status_code == 422, reply.text


async def test_a_query_parameter_a_route_does_not_take_is_a_422_naming_what_it_takes(
    app: FastAPI, app_client: httpx.AsyncClient
) -> None:
    # Misspelt: FastAPI ignores it, and the listing came back unfiltered.
    reply = await app_client.get("/documents", params={"metadata": '{"team": "a"}', "colection": "hr"})
    assert reply.status_code == 422, reply.text
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["query", "colection"] and error["input"] == "hr"
    # `metadata` and `text` are taken by dependencies of the route: they count as its own.
    assert error["msg"].startswith("not a query parameter of this route: it takes ")
    assert {"collection", "limit", "metadata", "offset", "text"} <= set(
        error["msg"].split(": it takes ")[1].split(", ")
    )
    assert (await app_client.get("/documents", params={"metadata": '{"team": "a"}'})).status_code == 200
    # One value given twice: FastAPI took the last (`collection=hr&collection=legal` listed legal).
    reply = await app_client.get("/documents", params=[("limit", "1"), ("limit", "2"), ("offset", "0")])
    assert reply.status_code == 422, reply.text
    assert [(e["loc"], e["msg"]) for e in reply.json()["detail"]] == [
        (["query", "limit"], "given 2 times: give it once")
    ]
    # Probes and scrapers may add parameters of their own.
    assert (await app_client.get("/health", params={"verbose": "1"})).status_code == 200
    # Declared, also where FastAPI declares none (no parameters); /upload's may be a list or a sentence.
    paths = app.openapi()["paths"]
    assert "HTTPValidationError" in str(paths["/status"]["get"]["responses"]["422"])
    assert "422" not in paths["/health"]["get"]["responses"]
    assert "ValidationErrors" in str(paths["/upload"]["post"]["responses"]["422"])
    assert "422" not in paths["/v1/models"]["get"]["responses"]
    # /v1 keeps OpenAI's leniency: its clients may send query parameters of OpenAI's or Azure's.
    assert (await app_client.get("/v1/models", params={"api-version": "2024-10-21"})).status_code == 200


async def test_every_route_taking_files_says_its_fields_are_form_fields(
    app: FastAPI, app_client: httpx.AsyncClient
) -> None:
    """The routes with a multipart body in the app's OpenAPI, not only the one whose path was "/upload"
    (the hint was chosen by that path: PUT /documents/{id}/file went without it)."""
    uploads = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
    ]
    assert {("POST", "/upload"), ("PUT", "/documents/{document_id}/file")} <= set(uploads)
    for method, path in uploads:
        url = re.sub(r"\{[^}/]+\}", str(uuid4()), path)
        reply = await app_client.request(method, url, params={"metadata": '{"team": "a"}'})
        assert reply.status_code == 422, (method, path, reply.text)
        (error,) = reply.json()["detail"]
        assert error["loc"] == ["query", "metadata"], (method, path)
        assert error["msg"].endswith(" (the upload's fields are form fields)"), (method, path, error)
    # Not on a route that takes no files.
    reply = await app_client.get("/documents", params={"colection": "hr"})
    assert reply.status_code == 422, reply.text
    assert "form fields" not in reply.json()["detail"][0]["msg"]


async def test_hostile_search_filters_are_a_4xx_or_cleaned(app_client: httpx.AsyncClient) -> None:
    cases = {
        b'{"query": "q", "filters": {"metadata": {"k\\u0000": "v\\u0000"}}}': 200,
        b'{"query": "q", "filters": {"metadata": {"k": "v\\udc00"}}}': 422,
        b'{"query": "q", "filters": {"file_types": ["t\\u0000xt"]}}': 200,
        b'{"query": "q\\u0000", "filters": {"metadata": {"n": NaN}}}': 422,  # jsonb has no NaN
        b'{"query": "q", "filters": {"metadata": {"n": 1e400}}}': 422,
    }
    for body, status in cases.items():
        reply = await app_client.post("/search", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == status, (body, reply.text)


async def test_text_over_or_under_its_limit_is_counted_in_characters(app_client: httpx.AsyncClient) -> None:
    # CleanText fields said "Value should have at most 200 items after validation".
    cases = [
        ("/chat/sessions", {"title": "a" * 201}, ["body", "title"], "at most 200 characters"),
        ("/collections", {"name": "c", "description": "d" * 2001}, ["body", "description"], "at most 2000"),
    ]
    for path, body, loc, message in cases:
        reply = await app_client.post(path, json=body)
        assert reply.status_code == 422, reply.text
        (error,) = reply.json()["detail"]
        assert error["type"].startswith("string_too_") and message in error["msg"], error
        assert loc is None or error["loc"] == loc


async def test_an_error_in_a_union_names_the_field_and_the_real_cause(app_client: httpx.AsyncClient) -> None:
    # A metadata value is text, a number, a boolean or a list of them: a string over its limit named
    # "function-after[functools.partial(<function max_length_validator at 0x7f...>, ...)]" in its
    # location, beside an error for each member the string is not (integer, number, boolean, list).
    # The match is checked as a whole (retrieval/metadata_match.py): the path inside it leads the sentence.
    cases = {
        "v" * 2001: "k: String should have at most 2000 characters",
        ("v" * 2001,): "k[0]: String should have at most 2000 characters",
        "": None,
        ("x",): None,
    }
    for value, sentence in cases.items():
        metadata = {"k": list(value) if isinstance(value, tuple) else value}
        reply = await app_client.post("/search", json={"query": "q", "filters": {"metadata": metadata}})
        if sentence is None:
            assert reply.status_code == 200, reply.text
            continue
        assert reply.status_code == 422, reply.text
        (error,) = reply.json()["detail"]
        assert error["msg"] == sentence, error
        assert error["loc"] == ["body", "filters", "metadata"]
    # A value of no member's type: said what it is and what would do.
    for metadata, sentence in (
        ({"k": {"x": 1}}, "k: 'x' is no operator ($eq, $gt, $gte, $in, $lt, $lte, $ne, $nin)"),
        ({"": 1}, "the key '': String should have at least 1 character"),
    ):
        reply = await app_client.post("/search", json={"query": "q", "filters": {"metadata": metadata}})
        assert reply.status_code == 422, reply.text
        assert [e["msg"] for e in reply.json()["detail"]] == [sentence]
    assert "0x" not in reply.text and "function" not in reply.text


async def test_an_error_echoes_at_most_200_characters_of_the_input(app_client: httpx.AsyncClient) -> None:
    # A 3 MB query came back whole in the 422; so did a whole body missing a field.
    for body in ({"query": "q" * 3_000_000}, {"querx": "q" * 3_000_000}):
        reply = await app_client.post("/search", json=body)
        assert reply.status_code == 422, reply.text
        assert len(reply.content) < 1_000
        for error in reply.json()["detail"]:  # querx: missing query, and an unknown field
            assert len(error["input"]) <= 203 and error["input"].endswith("..."), error
    reply = await app_client.post("/search", json={"query": "q", "filters": {"metadata": {"k" * 100_000: 1}}})
    assert reply.status_code == 422 and len(reply.content) < 1_000, reply.text[:1_000]


async def test_a_validators_own_sentence_comes_without_pydantics_prefix(
    app_client: httpx.AsyncClient,
) -> None:
    reply = await app_client.post("/chat/sessions", json={"is_temporary": True, "external_id": "mine"})
    assert reply.status_code == 422, reply.text
    (error,) = reply.json()["detail"]
    assert error["msg"] == "a temporary session cannot take an external_id (it is never stored)", error
