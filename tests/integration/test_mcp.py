"""The MCP server through the SDK's own client: streamable HTTP at /mcp of the real app on a socket, and
stdio (`python -m rag_server mcp`). Open mode first; the tests at the end create keys (the module's
database is then secured) and check that a key limited to one collection sees nothing of another."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, TextContent

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.mcp_server import tools
from tests.support.processes import settings_env

TOOLS = {"ask", "get_document", "list_collections", "list_documents", "search"}
# Long enough for several 128-token chunks: each sentence names its number, so a chunk range is checkable.
HERON_TEXT = " ".join(
    f"Observation {i}: the grey heron waits motionless in shallow water before striking at fish."
    for i in range(60)
)


@dataclass
class Docs:
    ids: dict[str, str]  # file name -> document id


@pytest.fixture(scope="module")
async def docs(runtime: Runtime) -> Docs:
    alpha = await store.create_collection(runtime.pool, CreateCollection(name="alpha"))
    beta = await store.create_collection(runtime.pool, CreateCollection(name="beta"))
    ids: dict[str, str] = {}
    for name, text, collection_id in (
        ("zebrafish.txt", "Zebrafish regenerate heart muscle after cryoinjury within weeks.", None),
        ("herons.txt", HERON_TEXT, None),
        ("alpha.txt", "Alpha notes: axolotls regrow whole limbs, bone and nerves included.", alpha.id),
        ("beta.txt", "Beta notes: axolotls regrow limbs; planarians regrow whole bodies.", beta.id),
    ):
        kwargs: dict[str, Any] = {} if collection_id is None else {"collection_id": collection_id}
        metadata = {"kind": "bird"} if name == "herons.txt" else {}
        (doc_id,) = await ingest_documents_direct(
            runtime, [DirectDocument(name, text.encode(), metadata)], **kwargs
        )
        ids[name] = str(doc_id)
    return Docs(ids)


@asynccontextmanager
async def mcp_http(base_url: str, key: str | None = None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as client,
    ):
        yield client


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_http_tools_search_and_cite(live_app_url: str, docs: Docs) -> None:
    async with mcp_http(live_app_url) as client:
        listed = (await client.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        # Clients that check arguments before sending learn that a misspelt one is refused.
        assert all(t.input_schema["additionalProperties"] is False for t in listed)
        hits = data(await client.call_tool("search", {"query": "zebrafish heart regeneration"}))["results"]
        assert hits[0]["document_name"] == "zebrafish.txt"
        assert hits[0]["document_id"] == docs.ids["zebrafish.txt"]
        assert {"chunk_id", "page", "score"} <= hits[0].keys()
        bm25 = data(await client.call_tool("search", {"query": "heron", "mode": "bm25", "top_k": 2}))
        assert bm25["mode"] == "bm25"
        assert 1 <= len(bm25["results"]) <= 2
        assert {h["document_name"] for h in bm25["results"]} == {"herons.txt"}
        alpha = data(await client.call_tool("search", {"query": "axolotls limbs", "collection": "alpha"}))
        assert {h["document_name"] for h in alpha["results"]} == {"alpha.txt"}
        # A floor says when nothing matches: search alone ranks whatever there is.
        off_topic = {"query": "Who won the football world cup in 2014?"}
        assert data(await client.call_tool("search", off_topic))["results"]
        floored = await client.call_tool("search", {**off_topic, "min_similarity": 0.3})
        assert data(floored)["results"] == []
        kept = await client.call_tool("search", {"query": "zebrafish heart", "min_similarity": 0.3})
        assert data(kept)["results"][0]["document_name"] == "zebrafish.txt"


async def test_http_search_marks_the_matched_words_when_asked(live_app_url: str, docs: Docs) -> None:
    # POST /search's `highlight`: where each hit's text holds a word the query matched, as BM25 reads it.
    async with mcp_http(live_app_url) as client:
        asked = {"query": "herons striking", "mode": "hybrid", "top_k": 1, "highlight": True}
        (hit,) = data(await client.call_tool("search", asked))["results"]
        assert hit["document_name"] == "herons.txt"
        marked = {hit["text"][start:end] for start, end in hit["highlights"]}
        assert marked == {"heron", "striking"}
        (plain,) = data(await client.call_tool("search", {**asked, "highlight": False}))["results"]
        assert plain.get("highlights") is None
        refused = await client.call_tool("search", {**asked, "highlight": "yes"})
        assert refused.is_error


@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")])
async def test_http_serves_handshake_era_and_modern_clients(
    live_app_url: str, docs: Docs, mode: str, version: str
) -> None:
    # The SDK's client discovers the stateless 2026-07-28 protocol (the other tests); most assistants'
    # clients (the TypeScript SDK 1.x) still open with the initialize handshake.
    async with (
        create_mcp_http_client() as http,
        Client(streamable_http_client(f"{live_app_url}/mcp", http_client=http), mode=mode) as client,
    ):
        assert client.session.protocol_version == version
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        hits = data(await client.call_tool("search", {"query": "zebrafish heart regeneration"}))["results"]
        assert hits[0]["document_name"] == "zebrafish.txt"
        refused = await client.call_tool("search", {"query": "x", "collection": "nope"})
        assert refused.is_error and "nope" in error_text(refused)


async def test_http_ask_is_cited_and_stores_nothing(live_app_url: str, runtime: Runtime, docs: Docs) -> None:
    async with mcp_http(live_app_url) as client:
        answer = data(
            await client.call_tool("ask", {"question": "How do zebrafish regenerate heart muscle?"})
        )
    assert answer["answer_mode"] == "extractive"  # no LLM configured in the tests
    assert "[1]" in answer["answer"]
    assert answer["sources"][0]["document_name"] == "zebrafish.txt"
    assert answer["sources"][0]["document_id"] == docs.ids["zebrafish.txt"]
    async with owner_connection(runtime.database_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM chat_sessions") == 0
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == 0


async def test_http_list_and_read_documents(live_app_url: str, docs: Docs) -> None:
    async with mcp_http(live_app_url) as client:
        collections = data(await client.call_tool("list_collections", {}))
        assert [c["name"] for c in collections["collections"]] == ["alpha", "beta", "default"]
        assert [c["document_count"] for c in collections["collections"]] == [1, 1, 2]
        page = data(await client.call_tool("list_collections", {"limit": 1, "offset": 1}))
        assert [c["name"] for c in page["collections"]] == ["beta"] and page["total"] == 3
        listing = data(await client.call_tool("list_documents", {}))
        assert {d["filename"] for d in listing["documents"]} == {"zebrafish.txt", "herons.txt"}
        assert listing["total"] == 2
        beta = data(await client.call_tool("list_documents", {"collection": "beta", "limit": 1}))
        assert [d["id"] for d in beta["documents"]] == [docs.ids["beta.txt"]]
        herons = data(await client.call_tool("list_documents", {"name": "HERON"}))
        assert [d["filename"] for d in herons["documents"]] == ["herons.txt"] and herons["total"] == 1
        birds = data(await client.call_tool("list_documents", {"metadata": {"kind": "bird"}}))
        assert [d["filename"] for d in birds["documents"]] == ["herons.txt"] and birds["total"] == 1
        cryo = data(await client.call_tool("list_documents", {"text": {"$contains": "cryoinjury"}}))
        assert [d["filename"] for d in cryo["documents"]] == ["zebrafish.txt"] and cryo["total"] == 1
        unfiltered = data(await client.call_tool("search", {"query": "heart muscle"}))["results"]
        assert "zebrafish.txt" in {h["document_name"] for h in unfiltered}
        filtered = {"query": "heart muscle", "filters": {"text": {"$not_contains": "Zebrafish"}}}
        hits = data(await client.call_tool("search", filtered))["results"]
        assert hits and {h["document_name"] for h in hits} == {"herons.txt"}
        whole = data(await client.call_tool("get_document", {"document_id": docs.ids["herons.txt"]}))
        count = whole["document"]["chunk_count"]
        assert count >= 4
        assert [c["chunk_index"] for c in whole["chunks"]] == list(range(count))
        assert "Observation 0:" in whole["text"] and "Observation 59:" in whole["text"]
        part = data(
            await client.call_tool(
                "get_document", {"document_id": docs.ids["herons.txt"], "start": 1, "end": 3}
            )
        )
    assert [c["chunk_index"] for c in part["chunks"]] == [1, 2]
    assert part["document"]["filename"] == "herons.txt"
    assert part["text"] == "\n\n".join(c["text"] for c in whole["chunks"][1:3])
    assert "Observation 0:" not in part["text"]


async def test_http_a_document_is_named_as_the_rest_api_names_it(live_app_url: str, docs: Docs) -> None:
    """list_documents and get_document called a document's file `name`, GET /documents `filename`: an
    assistant given both, or code moving from one to the other, read a key the other has not."""
    async with httpx.AsyncClient(base_url=live_app_url) as rest:
        reply = await rest.get("/documents", params={"collection": "default"})
        assert reply.status_code == 200, reply.text
    rest_documents = {d["id"]: d for d in reply.json()["items"]}
    async with mcp_http(live_app_url) as client:
        listing = data(await client.call_tool("list_documents", {}))["documents"]
        read = data(await client.call_tool("get_document", {"document_id": docs.ids["herons.txt"], "end": 1}))
    assert (
        {d["id"] for d in listing}
        == set(rest_documents)
        == {docs.ids["zebrafish.txt"], docs.ids["herons.txt"]}
    )
    for document in [*listing, read["document"]]:
        # Every field the tools give is the REST API's, under its name and with its value.
        assert document == {k: rest_documents[document["id"]][k] for k in document}
        assert "filename" in document and "name" not in document
    assert read["document"]["filename"] == "herons.txt"


async def test_http_get_document_finds_text_in_its_chunks(
    live_app_url: str, docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    herons = {"document_id": docs.ids["herons.txt"]}
    async with mcp_http(live_app_url) as client:
        whole = data(await client.call_tool("get_document", herons))["chunks"]

        async def found(text: dict[str, Any], **window: int) -> dict[str, Any]:
            return data(await client.call_tool("get_document", {**herons, "text": text, **window}))

        def indexes(part: dict[str, Any]) -> list[int]:
            return [c["chunk_index"] for c in part["chunks"]]

        one = {"$contains": "Observation 42:"}
        hit = await found(one)
        expected = [c["chunk_index"] for c in whole if "Observation 42:" in c["text"]]
        assert expected and indexes(hit) == expected and hit["matches"] == len(expected)
        assert hit["text"] == "\n\n".join(c["text"] for c in hit["chunks"])
        assert hit["end"] == len(whole)  # everything asked for was read
        # Within a window of chunk indexes only, and negations too.
        inside = await found({"$not_contains": "Observation 0:"}, start=0, end=2)
        assert indexes(inside) == [i for i in (0, 1) if "Observation 0:" not in whole[i]["text"]]
        assert (await found(one, start=expected[-1] + 1))["matches"] == 0
        none = await found({"$contains": "kingfisher"})
        assert none["chunks"] == [] and none["matches"] == 0 and none["text"] == ""
        # Without `text`, `matches` stays unset.
        assert data(await client.call_tool("get_document", herons))["matches"] is None
        # More matches than one read returns: `end` is after the last one returned, so that
        # start = end reads on, and the pages together are every match once.
        monkeypatch.setattr(tools, "MAX_CHUNKS_PER_READ", 2)
        every = {"$contains": "heron"}
        pages, start = [], 0
        for _ in whole:  # bounded: a page that does not advance fails, it does not spin
            page = await found(every, start=start)
            pages.append(indexes(page))
            if page["matches"] == len(page["chunks"]):
                break
            assert page["end"] == page["chunks"][-1]["chunk_index"] + 1 > start
            start = page["end"]
        assert [len(p) for p in pages[:-1]] == [2] * (len(pages) - 1)
        assert [i for p in pages for i in p] == list(range(len(whole)))
        refused = await client.call_tool("get_document", {**herons, "text": {"$regex": "her.n"}})
    assert refused.is_error and "$regex" in error_text(refused), error_text(refused)


async def test_http_errors_are_tool_errors(live_app_url: str, docs: Docs) -> None:
    async with mcp_http(live_app_url) as client:
        unknown = await client.call_tool("search", {"query": "zebrafish", "collection": "nope"})
        assert unknown.is_error and "nope" in error_text(unknown)
        missing = await client.call_tool(
            "get_document", {"document_id": "00000000-0000-0000-0000-000000000001"}
        )
        assert missing.is_error and "00000000-0000-0000-0000-000000000001" in error_text(missing)
        # A window that ends before it starts read no chunks without a word.
        backwards = await client.call_tool(
            "get_document", {"document_id": docs.ids["herons.txt"], "start": 5, "end": 2}
        )
        assert backwards.is_error and "end (2)" in error_text(backwards), error_text(backwards)
        invalid = await client.call_tool("search", {"query": "zebrafish", "top_k": 1000})
        assert invalid.is_error and "top_k" in error_text(invalid)
        no_query = await client.call_tool("search", {})
        assert no_query.is_error and "query" in error_text(no_query)
        # Refused by the request the tool builds (a collection reference is at most 100 characters):
        # one readable line, not pydantic's text with its type tags and documentation link.
        long_name = await client.call_tool("search", {"query": "zebrafish", "collection": "x" * 150})
        assert long_name.is_error, error_text(long_name)
        assert "at most 100 characters" in error_text(long_name), error_text(long_name)
        assert "errors.pydantic.dev" not in error_text(long_name) and "input_value" not in error_text(
            long_name
        )
        # The server is still there after the errors.
        assert data(await client.call_tool("search", {"query": "zebrafish"}))["results"]


@pytest.mark.parametrize(
    ("tool", "arguments", "said"),
    [
        ("search", {"query": ""}, "invalid arguments: query: String should have at least 1 character"),
        ("search", {"query": "x", "top_k": 0}, "invalid arguments: top_k: Input should be greater than"),
        ("search", {"query": "x", "mode": "fuzzy"}, "invalid arguments: mode: Input should be 'hybrid'"),
        # JSON's true is no number (pydantic read it as 1: one hit, a page of one).
        ("search", {"query": "x", "top_k": True}, "invalid arguments: top_k: a number, not true/false"),
        ("search", {"query": "   "}, "invalid arguments: query: must not be blank"),
        ("list_documents", {"limit": True}, "invalid arguments: limit: a number, not true/false"),
        ("list_collections", {"offset": False}, "invalid arguments: offset: a number, not true/false"),
        # get_document's chunk range too: start true read chunk 1 on, end false no chunk.
        (
            "get_document",
            {"document_id": "00000000-0000-4000-8000-000000000000", "start": True},
            "invalid arguments: start: a number, not true/false",
        ),
        (
            "get_document",
            {"document_id": "00000000-0000-4000-8000-000000000000", "end": False},
            "invalid arguments: end: a number, not true/false",
        ),
        ("search", {}, "invalid arguments: query: Field required"),
        ("list_documents", {"status": "bogus"}, "invalid arguments: status: Input should be 'queued'"),
        # Refused by the request a tool builds, named as the tool's argument (they said `collections.0`,
        # and `query` for ask's `question`).
        ("search", {"query": "x", "collection": ""}, "invalid arguments: collection: String should have"),
        ("ask", {"question": "x", "collection": ""}, "invalid arguments: collection: String should have"),
        ("ask", {"question": "   "}, "invalid arguments: question: "),
        # list_documents looked up "" (no collection '') and echoed a name of any length whole.
        ("list_documents", {"collection": ""}, "invalid arguments: collection: String should have"),
        ("list_documents", {"collection": "c" * 5000}, "collection: String should have at most 100"),
        ("list_documents", {"name": ""}, "invalid arguments: name: String should have at least 1 character"),
        ("list_documents", {"metadata": {"kind": {"x": 1}}}, "invalid arguments: metadata: kind: 'x' is no"),
        (
            "search",
            {"query": "x", "filters": {"file_type": ["md"]}},
            "filters.file_type: Extra inputs are not",
        ),
        # Not ignored: a misspelt collection searched `default`, a misspelt top_k returned 10 hits.
        (
            "search",
            {"query": "x", "colection": "beta", "topk": 3},
            "invalid arguments: unknown arguments colection, topk (this tool takes: collection, filters,",
        ),
        ("list_documents", {"colection": "beta"}, "invalid arguments: unknown argument colection (this"),
        (
            "get_document",
            {"document_id": "nope"},
            "invalid arguments: document_id: Input should be a valid UUID",
        ),
    ],
)
async def test_http_arguments_refused_by_a_tools_schema_are_one_readable_line(
    live_app_url: str, docs: Docs, tool: str, arguments: dict[str, Any], said: str
) -> None:
    # The SDK validates a call against the tool's signature before it runs; its refusal was pydantic's
    # text: "1 validation error for searchArguments ... [type=..., input_value=...] For further
    # information visit https://errors.pydantic.dev/...".
    async with mcp_http(live_app_url) as client:
        result = await client.call_tool(tool, arguments)
    text = error_text(result)
    assert result.is_error, text
    assert text == f"Error executing tool {tool}: {text.split(': ', 1)[1]}" and said in text, text
    assert "errors.pydantic.dev" not in text and "input_value" not in text and "\n" not in text, text


def stdio_params(settings: Settings, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "rag_server", "mcp"], env={**settings_env(settings), **env}
    )


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
async def test_http_methods_other_than_post_are_405(live_app_url: str, method: str) -> None:
    # GET asks for a server-to-client SSE stream; a stateless JSON server has none to offer (MCP's
    # streamable HTTP: 405). It answered 200 text/event-stream and never sent a byte: the timeout
    # only keeps that from hanging the test.
    async with httpx.AsyncClient(base_url=live_app_url, timeout=10) as http:
        reply = await http.request(method, "/mcp", headers={"Accept": "text/event-stream, application/json"})
    assert reply.status_code == 405, reply.text
    assert reply.headers["allow"] == "POST"
    assert "POST" in reply.json()["detail"]


async def test_stdio_lists_tools_and_searches(settings: Settings, docs: Docs) -> None:
    async with Client(stdio_params(settings), read_timeout_seconds=120) as client:
        listed = (await client.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        # Clients that check arguments before sending learn that a misspelt one is refused.
        assert all(t.input_schema["additionalProperties"] is False for t in listed)
        hits = data(await client.call_tool("search", {"query": "zebrafish heart regeneration"}))["results"]
        assert hits[0]["document_name"] == "zebrafish.txt"
        # The system scope: every collection.
        beta = data(await client.call_tool("list_documents", {"collection": "beta"}))
        assert [d["filename"] for d in beta["documents"]] == ["beta.txt"]


# --- secured: from here on keys exist ------------------------------------------------------------


@pytest.fixture(scope="module")
async def secured(runtime: Runtime, docs: Docs) -> dict[str, str]:
    made = {}
    for spec in (
        CreateKey(name="admin", role="admin"),
        CreateKey(name="alpha-reader", role="reader", collections=["alpha"]),
    ):
        made[spec.name] = (await keys.create_key(runtime.pool, spec)).key
    return made


async def test_http_without_a_valid_key_is_401(live_app_url: str, secured: dict[str, str]) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx.AsyncClient(base_url=live_app_url) as http:
        two = {"Authorization": f"Bearer {secured['admin']}", "X-API-Key": "rag_another"}
        for headers in ({}, {"Authorization": "Bearer rag_not-a-key"}, {"X-API-Key": "rag_nope"}, two):
            r = await http.post("/mcp", json=body, headers=headers)
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"] == "Bearer"
            assert "key" in r.json()["detail"]
            assert r.json()["error"]["message"] == r.json()["detail"]
    async with mcp_http(live_app_url, secured["admin"]) as client:
        beta = data(await client.call_tool("search", {"query": "planarians", "collection": "beta"}))
        assert [h["document_name"] for h in beta["results"]] == ["beta.txt"]


async def test_the_sdk_client_says_why_a_key_is_refused(live_app_url: str, secured: dict[str, str]) -> None:
    """The 401's body was `{"detail": ...}`, which the SDK's client does not read: it raised "Server
    returned an error response" and the reason was lost. A JSON-RPC error in the body it reports."""
    for key in ("rag_not-a-key", None):
        with pytest.raises(BaseException) as refused:
            async with mcp_http(live_app_url, key) as client:
                await client.list_tools()
        errors = [refused.value]
        while isinstance(errors[-1], BaseExceptionGroup):
            errors.append(errors[-1].exceptions[0])
        assert isinstance(errors[-1], MCPError), errors
        assert "API key" in str(errors[-1]), errors[-1]


async def test_http_a_key_limited_to_alpha_sees_nothing_of_beta(
    live_app_url: str, secured: dict[str, str], docs: Docs
) -> None:
    async with mcp_http(live_app_url, secured["alpha-reader"]) as client:
        alpha = data(await client.call_tool("search", {"query": "axolotls limbs", "collection": "alpha"}))
        assert {h["document_name"] for h in alpha["results"]} == {"alpha.txt"}
        for name, args in (
            ("search", {"query": "axolotls limbs planarians", "collection": "beta"}),
            ("search", {"query": "zebrafish heart"}),  # `default` is not the key's either
            ("ask", {"question": "What regrows?", "collection": "beta"}),
            ("list_documents", {"collection": "beta"}),
            ("get_document", {"document_id": docs.ids["beta.txt"]}),
        ):
            result = await client.call_tool(name, args)
            assert result.is_error, (name, args, result.structured_content)
            assert "beta.txt" not in error_text(result)
        listed = data(await client.call_tool("list_documents", {"collection": "alpha"}))
        assert [d["filename"] for d in listed["documents"]] == ["alpha.txt"]
        # What it may read, and a refusal that says where to look.
        collections = data(await client.call_tool("list_collections", {}))
        assert [c["name"] for c in collections["collections"]] == ["alpha"] and collections["total"] == 1
        default = await client.call_tool("search", {"query": "zebrafish heart"})
        assert error_text(default).endswith(
            "no collection 'default': list_collections names the collections this key can read"
        ), error_text(default)


async def test_stdio_runs_under_rag_api_key(settings: Settings, secured: dict[str, str]) -> None:
    params = stdio_params(settings, RAG_API_KEY=secured["alpha-reader"])
    async with Client(params, read_timeout_seconds=120) as client:
        alpha = data(await client.call_tool("search", {"query": "axolotls", "collection": "alpha"}))
        assert {h["document_name"] for h in alpha["results"]} == {"alpha.txt"}
        beta = await client.call_tool("list_documents", {"collection": "beta"})
        assert beta.is_error


async def test_stdio_stops_at_once_when_its_key_is_revoked(
    settings: Settings, runtime: Runtime, secured: dict[str, str]
) -> None:
    # The key is checked at every tool call, not only at start-up: a revoked key stops as over HTTP.
    made = await keys.create_key(
        runtime.pool, CreateKey(name="stdio-bot", role="reader", collections=["alpha"])
    )
    async with Client(stdio_params(settings, RAG_API_KEY=made.key), read_timeout_seconds=120) as client:
        alpha = data(await client.call_tool("search", {"query": "axolotls", "collection": "alpha"}))
        assert {h["document_name"] for h in alpha["results"]} == {"alpha.txt"}
        await keys.revoke_key(runtime.pool, "stdio-bot")
        for tool, arguments in (
            ("search", {"query": "axolotls", "collection": "alpha"}),
            ("list_collections", {}),
        ):
            refused = await client.call_tool(tool, arguments)
            assert refused.is_error, refused
            assert error_text(refused).endswith("RAG_API_KEY: the API key is not valid (unknown or revoked)")


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("", "RAG_API_KEY: it is empty: set it to an API key (`rag-server keys create`), or unset it"),
        ("rag_wrong", "RAG_API_KEY: the API key is not valid (unknown or revoked)"),
    ],
)
async def test_stdio_refuses_a_bad_key_at_start_in_one_line(
    settings: Settings, secured: dict[str, str], key: str, said: str
) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rag_server", "mcp"],
        env={**settings_env(settings), "RAG_API_KEY": key},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == f"rag-server mcp: {said}", (
        done.stderr
    )
