"""Read replicas (infra/replicas.py) against a real streaming standby of this module's own embedded
cluster (pg_basebackup -R, tests/support/replica.py).

The proof that a read was served by the replica: with the standby's replay paused, rows written straight
on the primary are not in it. A key that wrote through the API reads its own writes (the primary); a
key that did not is served the paused replica's older state, until the lag bound or an outage moves
its reads to the primary.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.api.app import create_app
from rag_server.client import AsyncClient, ClientError
from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.config import Settings
from rag_server.infra.database import is_transient_db_error
from rag_server.infra.embedded_postgres import EmbeddedPostgres
from rag_server.infra.replicas import ReadAttempt, ReplicaPool, read_attempt
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import SYSTEM_SCOPE, bind_scope, reset_scope
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.read_after import READ_AFTER_HEADER
from tests.support.clusters import tcp_cluster
from tests.support.hangs import while_frozen
from tests.support.replica import Standby, start_standby

T = TypeVar("T")
# Far beyond any bound of the routing: a request past it hangs.
REQUEST_BOUND_S = 120.0
TEXT = "Axolotls regrow whole limbs; the blastema forms within days of the amputation."


@pytest.fixture(scope="module")
def primary_cluster() -> Iterator[EmbeddedPostgres]:
    """This module's own embedded cluster (pausing or stopping its standby concerns no other module),
    listening on TCP too (RAG_EMBEDDED_LISTEN's path)."""
    with tcp_cluster("ragr-") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def pg_server(primary_cluster: EmbeddedPostgres) -> str:
    return primary_cluster.uri


@pytest.fixture(scope="module")
def standby(primary_cluster: EmbeddedPostgres, runtime: Runtime) -> Iterator[Standby]:
    replica = start_standby(primary_cluster, primary_cluster.pgdata.parent / "replica")
    try:
        yield replica
    finally:
        with suppress(Exception):
            replica.stop()


@pytest.fixture(scope="module")
async def principals(runtime: Runtime) -> dict[str, dict[str, str]]:
    """Two editor keys: `writer` writes through the API in the tests, `other` only reads."""
    out = {}
    for name in ("writer", "other"):
        key = (await keys.create_key(runtime.pool, CreateKey(name=name, role="editor"))).key
        out[name] = {"Authorization": f"Bearer {key}"}
    return out


class Bounded(httpx.AsyncBaseTransport):
    """An in-process request that does not end within REQUEST_BOUND_S fails, its traceback showing where
    it waited (httpx's timeouts apply to sockets only, not to an ASGI app called in the same loop)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with asyncio.timeout(REQUEST_BOUND_S):
            return await self._inner.handle_async_request(request)


@asynccontextmanager
async def replica_app(
    settings: Settings, standby: Standby, runtime: Runtime, **options: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    database = urlsplit(settings.database_url).path.lstrip("/")
    configured = settings.model_copy(
        update={
            "read_database_urls": standby.url(database),
            "read_replica_check_interval_s": 0.2,
            "read_replica_timeout_s": 1.0,
            **options,
        }
    )
    app = create_app(configured, embedder=runtime.embedder)
    async with app.router.lifespan_context(app):
        transport = Bounded(httpx.ASGITransport(app=app, raise_app_exceptions=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60) as client:
            yield app, client


@asynccontextmanager
async def two_servers(
    settings: Settings, standby: Standby, runtime: Runtime
) -> AsyncIterator[tuple[tuple[FastAPI, httpx.AsyncClient], tuple[FastAPI, httpx.AsyncClient]]]:
    """Two server processes on the same database, both routing reads to the (healthy) replica: the
    second knows nothing of the first one's writers."""
    async with (
        replica_app(settings, standby, runtime, read_replica_max_lag_s=3600) as first,
        replica_app(settings, standby, runtime, read_replica_max_lag_s=3600) as second,
    ):
        await until(healthy(first[0]), "replica healthy")
        await until(healthy(second[0]), "replica healthy (second server)")
        yield first, second


async def off_loop(call: Callable[..., T], *args: Any) -> T:
    """A blocking call (libpq, pg_ctl) in a thread. On the loop itself it would also stop the apps under
    test, their replica checks and any transaction of theirs it might wait for, until it returned."""
    return await asyncio.to_thread(call, *args)


async def as_owner(database_url: str, *statements: tuple[str, Any]) -> None:
    """Each (sql, parameter) run as the database's owner (outside row-level security), committed."""

    def run() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for sql, parameter in statements:
                conn.execute(sql, (parameter,))

    await off_loop(run)


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` for up to 60 s (a generous bound for a loaded machine, not a timing assertion)."""
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not reached within 60 s")


def caught_up(runtime: Runtime, standby: Standby) -> Callable[[], Awaitable[bool]]:
    """The standby has replayed everything the primary has flushed (now)."""

    async def check() -> bool:
        target = await runtime.pool.raw.fetchval("SELECT pg_current_wal_flush_lsn()::text")
        return bool(await off_loop(standby.execute, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"))

    return check


def served_by_replica(
    app: FastAPI, client: httpx.AsyncClient, who: dict[str, str]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        routed = app.state.runtime.reads.routed
        before = routed["replica"]
        await collection_names(client, who)
        return bool(routed["replica"] > before)

    return check


def healthy(app: FastAPI, expected: bool = True) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all(s.healthy == expected for s in app.state.runtime.reads.status())

    return check


async def ok(response: Awaitable[httpx.Response]) -> Any:
    r = await response
    assert r.status_code < 300, (r.status_code, r.text)
    return r.json()


async def collection_names(client: httpx.AsyncClient, who: dict[str, str]) -> set[str]:
    return {c["name"] for c in (await ok(client.get("/collections", headers=who)))["items"]}


async def document_ids(client: httpx.AsyncClient, who: dict[str, str]) -> set[str]:
    return {d["id"] for d in (await ok(client.get("/documents", headers=who)))["items"]}


async def search_documents(client: httpx.AsyncClient, who: dict[str, str], query: str) -> set[str]:
    body = {"query": query, "search_type": "bm25", "top_k": 20}
    return {h["document_id"] for h in (await ok(client.post("/search", json=body, headers=who)))["results"]}


async def direct_writes(runtime: Runtime, name: str) -> str:
    """A collection and a searchable document written straight on the primary (by no API principal)."""
    await store.create_collection(runtime.pool, CreateCollection(name=name))
    (doc,) = await ingest_documents_direct(
        runtime, [DirectDocument(f"{name}.txt", f"{name} {TEXT}".encode(), {})]
    )
    return str(doc)


async def test_reads_come_from_the_replica_and_a_writer_reads_its_own_writes(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    writer, other = principals["writer"], principals["other"]
    async with two_servers(settings, standby, runtime) as ((app, client), (_, client2)):
        session = await ok(client.post("/chat/sessions", json={"title": "before"}, headers=other))
        await ok(client.post("/query", json={"query": "limbs", "session_id": session["id"]}, headers=other))
        await until(caught_up(runtime, standby), "standby caught up")
        # The routing's own view (its last check) must also have seen the replica replay `other`'s writes.
        await until(served_by_replica(app, client, other), "other's reads served by the replica")
        await off_loop(standby.pause)
        try:
            doc = await direct_writes(runtime, "direct")
            await as_owner(  # outside RLS
                settings.database_url,
                ("UPDATE chat_sessions SET title = 'after' WHERE id = %s", session["id"]),
                ("DELETE FROM chat_messages WHERE session_id = %s", session["id"]),
            )
            files = [("files", ("mine.txt", f"writer's own {TEXT}".encode(), "text/plain"))]
            response = await client.post("/upload", files=files, headers=writer)
            assert response.status_code == 202, response.text
            uploaded = response.json()["tasks"][0]["document_id"]

            # The writer's reads go to the primary: its own write, and everything before it.
            assert "direct" in await collection_names(client, writer)
            assert {doc, uploaded} <= await document_ids(client, writer)
            assert doc in await search_documents(client, writer, "direct axolotls")
            # The other key did not write since the pause: the paused replica serves it.
            assert "direct" not in await collection_names(client, other)
            assert not {doc, uploaded} & await document_ids(client, other)
            assert doc not in await search_documents(client, other, "direct axolotls")
            assert (await ok(client.get(f"/chat/sessions/{session['id']}", headers=other)))[
                "title"
            ] == "before"
            listed = (await ok(client.get("/chat/sessions", headers=other)))["sessions"]
            assert [s["title"] for s in listed if s["id"] == session["id"]] == ["before"]
            history = await ok(client.get(f"/chat/history/{session['id']}", headers=other))
            assert len(history["messages"]) == 2
            # Another server process serves the writer from the replica, unless the writer hands back
            # the position its write answered with.
            assert uploaded not in await document_ids(client2, writer)
            after = {**writer, READ_AFTER_HEADER: response.headers[READ_AFTER_HEADER]}
            assert {doc, uploaded} <= await document_ids(client2, after)
            assert uploaded not in await document_ids(client2, {**writer, READ_AFTER_HEADER: "not/an-lsn"})
        finally:
            await off_loop(standby.resume)
        await until(lambda: _has(collection_names(client, other), "direct"), "the replica replays the writes")
        assert doc in await search_documents(client, other, "direct axolotls")


async def test_row_level_security_holds_on_the_replica(
    settings: Settings, runtime: Runtime, standby: Standby
) -> None:
    """A key limited to one collection, served by the replica, sees that collection's rows only (a replica
    pool that bypassed row-level security would show the other one)."""
    ids = {}
    for name in ("narrow-mine", "narrow-theirs"):
        collection = await store.create_collection(runtime.pool, CreateCollection(name=name))
        document = DirectDocument(f"{name}.txt", f"{name} {TEXT}".encode(), {})
        (ids[name],) = await ingest_documents_direct(runtime, [document], collection_id=collection.id)
    mine, theirs = str(ids["narrow-mine"]), str(ids["narrow-theirs"])
    key = await keys.create_key(
        runtime.pool, CreateKey(name="narrow", role="reader", collections=["narrow-mine"])
    )
    narrow = {"Authorization": f"Bearer {key.key}"}
    async with replica_app(settings, standby, runtime, read_replica_max_lag_s=3600) as (app, client):
        await until(caught_up(runtime, standby), "standby caught up")
        await until(healthy(app), "replica healthy")
        routed = app.state.runtime.reads.routed
        before = routed["replica"]
        assert await collection_names(client, narrow) == {"narrow-mine"}
        listed = await ok(client.get("/documents", params={"collection": "narrow-mine"}, headers=narrow))
        assert {d["id"] for d in listed["items"]} == {mine}
        theirs_listed = await client.get("/documents", params={"collection": "narrow-theirs"}, headers=narrow)
        assert theirs_listed.status_code == 404
        body = {"query": "axolotls", "search_type": "bm25", "top_k": 50, "collections": ["narrow-mine"]}
        hits = (await ok(client.post("/search", json=body, headers=narrow)))["results"]
        assert {h["document_id"] for h in hits} == {mine}
        forbidden = {**body, "collections": ["narrow-theirs"]}
        assert (await client.post("/search", json=forbidden, headers=narrow)).status_code == 404
        assert (await client.get(f"/documents/{theirs}", headers=narrow)).status_code == 404
        assert routed["replica"] - before >= 5  # these reads were the replica's


async def test_a_finished_batch_holds_its_reader_to_the_workers_writes(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    """The worker's final write belongs to no key: seeing the batch finished must still make the
    caller's next reads include it."""
    writer = principals["writer"]
    async with replica_app(settings, standby, runtime, read_replica_max_lag_s=3600) as (app, client):
        await until(healthy(app), "replica healthy")
        files = [("files", ("finished.txt", f"finished {TEXT}".encode(), "text/plain"))]
        upload = await ok(client.post("/upload", files=files, headers=writer))
        batch, document = upload["batch_id"], upload["tasks"][0]["document_id"]
        await until(caught_up(runtime, standby), "standby caught up")
        app.state.runtime.reads._floors.clear()  # the upload's own floor has passed (as after the lag bound)
        await off_loop(standby.pause)
        try:
            # What the worker's final transaction does, as far as readers can tell.
            await as_owner(
                settings.database_url,
                ("UPDATE documents SET status = 'ready' WHERE id = %s", document),
                ("UPDATE job_tasks SET status = 'completed' WHERE batch_id = %s", batch),
            )
            status = await client.get(f"/tasks/{batch}/status", headers=writer)
            assert status.json()["done"] and READ_AFTER_HEADER in status.headers
            assert (await ok(client.get(f"/documents/{document}", headers=writer)))["status"] == "ready"
        finally:
            await off_loop(standby.resume)


class Alternating(httpx.AsyncBaseTransport):
    """A load balancer in front of two server processes: requests go to each in turn."""

    def __init__(self, *apps: FastAPI) -> None:
        self._backends = [Bounded(httpx.ASGITransport(app=app)) for app in apps]
        self._turn = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        backend = self._backends[self._turn % len(self._backends)]
        self._turn += 1
        return await backend.handle_async_request(request)


async def test_the_api_client_reads_its_own_writes_through_a_load_balancer(
    settings: Settings,
    runtime: Runtime,
    standby: Standby,
    principals: dict[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    key = principals["writer"]["Authorization"].removeprefix("Bearer ")
    path = tmp_path / "balanced.txt"
    path.write_text(f"balanced {TEXT}")
    async with two_servers(settings, standby, runtime) as ((app, _), (app2, _)):
        await until(caught_up(runtime, standby), "standby caught up")
        await off_loop(standby.pause)
        try:
            async with AsyncClient(
                "http://rag.test", api_key=key, transport=Alternating(app, app2)
            ) as client:
                uploaded = (await client.upload([path])).tasks[0].document_id  # served by the first
                assert uploaded is not None
                # The second process has never seen this key write; the client hands it the position.
                assert (await client.document(str(uploaded))).id == uploaded
            # A client that forgot the position is served by the paused replica there: not found yet.
            async with AsyncClient("http://rag.test", api_key=key, transport=Alternating(app2)) as forgetful:
                with pytest.raises(ClientError) as missing:
                    await forgetful.document(str(uploaded))
                assert missing.value.status == 404
        finally:
            await off_loop(standby.resume)


async def test_a_streamed_answer_tells_its_client_the_position_holding_it(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    writer = principals["writer"]
    async with two_servers(settings, standby, runtime) as ((_, client), (_, client2)):
        session = await ok(client.post("/chat/sessions", json={"title": "streamed"}, headers=writer))
        await until(caught_up(runtime, standby), "standby caught up")
        await off_loop(standby.pause)
        try:
            body = {"query": "How do axolotls regrow limbs?", "session_id": session["id"]}
            response = await client.post("/query/stream", json=body, headers=writer)
            assert response.status_code == 200, response.text
            done = json.loads(response.text.split("event: done\ndata: ", 1)[1].split("\n", 1)[0])
            # The answer was stored after the response's headers went out: `done` carries its position.
            assert done["read_after"] != response.headers[READ_AFTER_HEADER]
            holding = {**writer, READ_AFTER_HEADER: done["read_after"]}
            history = await ok(client2.get(f"/chat/history/{session['id']}", headers=holding))
            assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
            assert history["messages"][1]["id"] == done["message_id"]
            # Without it the second server answers from the paused replica: no messages there yet.
            stale = await ok(client2.get(f"/chat/history/{session['id']}", headers=writer))
            assert stale["messages"] == []
        finally:
            await off_loop(standby.resume)


async def test_a_stored_response_is_found_by_any_server_while_the_replica_lags(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    """A stored /v1 response (written on the primary) is read and continued at once: on the server that
    stored it (its key's reads go to the primary), and on another, whose replica lacks it (a miss there is
    looked for on the primary); `store: false` writes nothing and stays a read-only POST."""
    writer = principals["writer"]
    async with two_servers(settings, standby, runtime) as ((_, client), (app2, client2)):
        await until(caught_up(runtime, standby), "standby caught up")
        await off_loop(standby.pause)
        try:
            stored: list[str] = []
            for stream in (False, True):
                body = {"model": "rag:default", "input": "How do axolotls regrow limbs?", "stream": stream}
                r = await client.post("/v1/responses", json=body, headers=writer)
                assert r.status_code == 200, r.text
                if stream:
                    final = r.text.split("event: response.completed\ndata: ", 1)[1].split("\n", 1)[0]
                    stored.append(json.loads(final)["response"]["id"])
                else:
                    stored.append(r.json()["id"])
                assert (await ok(client.get(f"/v1/responses/{stored[-1]}", headers=writer)))["store"]
            routed = app2.state.runtime.reads.routed
            for response_id in stored:  # the writer has written nothing through the second server yet
                tried = routed["replica"]
                got = await ok(client2.get(f"/v1/responses/{response_id}", headers=writer))
                assert got["id"] == response_id and routed["replica"] > tried  # the replica was asked first
            for response_id in stored:
                more = {"model": "rag:default", "input": "And then?", "previous_response_id": response_id}
                assert (await ok(client2.post("/v1/responses", json=more, headers=writer)))["store"]
            unstored = {"model": "rag:default", "input": "Axolotls?", "store": False}
            r = await client.post("/v1/responses", json=unstored, headers=principals["other"])
            assert r.status_code == 200 and READ_AFTER_HEADER not in r.headers  # no write recorded
        finally:
            await off_loop(standby.resume)


async def _has(names: Awaitable[set[str]], name: str) -> bool:
    return name in await names


async def test_a_replica_behind_the_lag_bound_is_skipped(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    other = principals["other"]
    lagging = {"read_replica_max_lag_s": 1.0, "metrics_public": True}
    async with replica_app(settings, standby, runtime, **lagging) as (app, client):
        await until(healthy(app), "replica healthy")
        await off_loop(standby.pause)
        try:
            doc = await direct_writes(runtime, "lagging")
            # Past the bound the paused replica is skipped: the same key now reads the fresh rows.
            await until(healthy(app, expected=False), "replica marked lagging")
            assert "lagging" in await collection_names(client, other)
            assert doc in await document_ids(client, other)
            assert doc in await search_documents(client, other, "lagging axolotls")
            ready = (await client.get("/health/ready")).json()
            assert ready["status"] == "ready"
            assert ready["checks"]["read_replicas"]["detail"].startswith("degraded")
            metrics = (await client.get("/metrics", headers=other)).text
        finally:
            await off_loop(standby.resume)
        assert 'rag_read_replica_healthy{replica="0"} 0.0' in metrics
        await until(healthy(app), "replica healthy again")
        scraped = (await client.get("/metrics", headers=other)).text
        assert 'rag_read_replica_healthy{replica="0"} 1.0' in scraped
        assert "127.0.0.1" not in scraped  # labelled by index, never by URL


async def test_a_stopped_replica_is_skipped_and_used_again_when_back(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    other = principals["other"]
    # Checks 2 s apart: the reads straight after the stop come before any check notices it.
    options = {"read_replica_max_lag_s": 3600, "read_replica_check_interval_s": 2.0}
    async with replica_app(settings, standby, runtime, **options) as (app, client):
        await until(healthy(app), "replica healthy")
        before = await document_ids(client, other)  # pooled replica connections exist now
        await off_loop(standby.stop)
        try:
            # Straight after the stop, before a check noticed: every read still answers (the primary).
            assert await document_ids(client, other) == before
            assert await collection_names(client, other)
            await search_documents(client, other, "axolotls")
            doc = await direct_writes(runtime, "stopped")
            assert "stopped" in await collection_names(client, other)
            assert doc in await document_ids(client, other)
            assert doc in await search_documents(client, other, "stopped axolotls")
            await until(healthy(app, expected=False), "replica marked down")
            ready = await client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"]["read_replicas"]["detail"].startswith("degraded")
        finally:
            await off_loop(standby.start)
        await until(healthy(app), "replica back")
        await until(caught_up(runtime, standby), "standby caught up")
        # Used again: paused, it hides a fresh direct write from the key that did not write.
        await off_loop(standby.pause)
        try:
            await direct_writes(runtime, "after-restart")
            assert "after-restart" not in await collection_names(client, other)
        finally:
            await off_loop(standby.resume)


def answered_by(response: httpx.Response, fresh: str) -> str:
    """Who answered a collection listing: "the primary" when it lists `fresh`, a collection written on the
    primary while the replica's replay is paused; else "the replica", or the error."""
    if response.status_code != 200:
        return f"{response.status_code} {response.text}"
    return "the primary" if fresh in {c["name"] for c in response.json()["items"]} else "the replica"


async def test_reads_on_a_frozen_replica_give_up_on_it_within_the_bound_and_the_primary_answers(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    """The replica's pool is bound by RAG_API_DB_TIMEOUT_S like the primary's, its statements and its
    waits for a connection: reads sent to a frozen replica host (every backend and the main process
    stopped), more of them than its pool has connections, each give up on it after the bound, mark it
    down and are served by the primary (ReplicaPool's fallback), rather than waiting for the replica. It
    is used again once a check finds it answering.

    The whole server, not only its backends: with the main process running, a connection given up was
    replaced by a new, unfrozen one, and a read still waiting for the pool (late under load) was served
    by the replica, which the test then took for a read that had waited for the frozen host."""
    other = principals["other"]
    # No check during the test (the first is at start-up): only the reads can find the replica hanging.
    options = {"api_db_timeout_s": 2.0, "read_replica_max_lag_s": 3600, "read_replica_check_interval_s": 60}
    async with replica_app(settings, standby, runtime, **options) as (app, client):
        reads = app.state.runtime.reads
        pool = reads.replicas[0].pool.raw
        (replica_url,) = app.state.runtime.settings.read_replica_urls
        await off_loop(standby.pause)
        try:
            await direct_writes(runtime, "frozen")
            # Served by the paused replica: the fresh write is not there.
            assert "frozen" not in await collection_names(client, other)
            async with AsyncExitStack() as every:  # every connection the pool may hold open (then idle)
                for _ in range(pool.get_max_size()):
                    await every.enter_async_context(pool.acquire())
            routed = dict(reads.routed)
            n = pool.get_max_size() + 4
            many = asyncio.gather(*(client.get("/collections", headers=other) for _ in range(n)))
            ended, requests = await while_frozen(standby.url(), replica_url, many, whole=True)
        finally:
            await off_loop(standby.resume)
        served = [answered_by(r, fresh="frozen") for r in requests.result()]
        assert ended, f"the reads ended only once the replica answered: {served}"
        assert served == ["the primary"] * n
        assert reads.routed["replica"] == routed["replica"] + n
        assert reads.routed["fallback"] == routed["fallback"] + n
        assert not any(s.healthy for s in reads.status())  # down until a check finds it answering
        assert "frozen" in await collection_names(client, other)  # the primary, meanwhile
        await reads.check()  # the next check, without waiting for it
        await until(caught_up(runtime, standby), "standby caught up")
        await until(served_by_replica(app, client, other), "other's reads served by the replica again")
        assert "frozen" in await collection_names(client, other)  # replayed since the resume


def standby_value(standby: Standby, database: str, sql: str) -> Any:
    with psycopg.connect(standby.url(database), autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return None if row is None else row[0]


async def through_a_recovery_conflict(
    settings: Settings, standby: Standby, app: FastAPI, request: Callable[[], Awaitable[T]]
) -> T:
    """Run `request` (a BM25 search) while recovery cancels its read on the replica, for real: the read
    holds bm25_terms and waits for bm25_postings, which replay holds locked (the primary's open LOCK
    TABLE); the primary then locks bm25_terms too, so replay and the read wait for each other and the
    standby cancels the read (deadlock detected, a class 40 error). Returns the request's result after
    checking that it was sent to the replica and run again on the primary."""
    database = urlsplit(settings.database_url).path.lstrip("/")

    async def on_standby(sql: str) -> Any:
        return await off_loop(standby_value, standby, database, sql)

    async def replay_holds_postings() -> bool:
        locks = "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = "
        return bool(await on_standby(locks + "'bm25_postings'::regclass"))

    async def replica_read_waits() -> bool:
        return bool(await on_standby("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))

    async def flush_wal() -> None:
        # A lock's WAL record sits in the primary's buffers until something flushes them (the standby
        # would see it up to 15 s later, at the next running-transactions record): a commit does.
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as other:
            await other.execute("SELECT pg_current_xact_id()")

    routed = app.state.runtime.reads.routed
    async with await psycopg.AsyncConnection.connect(settings.database_url) as primary:
        await primary.execute("LOCK TABLE bm25_postings IN ACCESS EXCLUSIVE MODE")
        await flush_wal()
        await until(replay_holds_postings, "the standby replays the lock")
        before = dict(routed)
        answer = asyncio.create_task(request())
        await until(replica_read_waits, "the replica's read waits for bm25_postings")
        assert routed["replica"] > before["replica"]
        await primary.execute("LOCK TABLE bm25_terms IN ACCESS EXCLUSIVE MODE")
        await flush_wal()

        async def rerouted_or_answered() -> bool:
            return routed["rerun"] > before["rerun"] or answer.done()

        # The run again on the primary waits for this transaction's locks: release them.
        await until(rerouted_or_answered, "the request runs again on the primary")
        await primary.rollback()
    result = await asyncio.wait_for(answer, REQUEST_BOUND_S)
    assert routed["rerun"] > before["rerun"]
    assert not await replica_read_waits()
    # A cancelled read leaves the replica in use: it is healthy, only that read moved.
    assert all(s.healthy for s in app.state.runtime.reads.status())
    return result


async def test_a_read_cancelled_by_recovery_on_the_replica_runs_again_on_the_primary(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    options = {"read_replica_max_lag_s": 3600, "metrics_public": True}
    async with replica_app(settings, standby, runtime, **options) as (app, client):
        doc = await direct_writes(runtime, "conflict")
        await until(caught_up(runtime, standby), "standby caught up")
        await until(healthy(app), "replica healthy")
        query = {"query": "conflict axolotls blastema", "search_type": "bm25", "top_k": 20}
        body = json.dumps(query).encode()

        async def in_pieces() -> AsyncIterator[bytes]:
            # Several ASGI body messages (more_body): the run on the primary must get them all again.
            for start in range(0, len(body), 16):
                yield body[start : start + 16]

        headers = {**principals["other"], "Content-Type": "application/json"}
        response = await through_a_recovery_conflict(
            settings, standby, app, lambda: client.post("/search", content=in_pieces(), headers=headers)
        )
        assert response.status_code == 200, response.text  # not the replica's 503
        assert doc in {h["document_id"] for h in response.json()["results"]}
        scraped = (await client.get("/metrics")).text
        assert 'rag_read_routing_total{target="rerun"} 1.0' in scraped, scraped


async def test_an_mcp_search_cancelled_on_the_replica_runs_again_on_the_primary(
    settings: Settings, runtime: Runtime, standby: Standby, principals: dict[str, dict[str, str]]
) -> None:
    """An MCP tool answers a failure as a tool error (HTTP 200), which the middleware cannot see: the
    tool itself runs again on the primary."""
    async with replica_app(settings, standby, runtime, read_replica_max_lag_s=3600) as (app, client):
        doc = await direct_writes(runtime, "mcp-conflict")
        await until(caught_up(runtime, standby), "standby caught up")
        await until(healthy(app), "replica healthy")

        async def mcp_search() -> CallToolResult:
            # 127.0.0.1: a loopback server's MCP transport accepts only loopback Host headers.
            async with Client(streamable_http_client("http://127.0.0.1/mcp", http_client=client)) as mcp:
                arguments = {"query": "conflict axolotls blastema", "mode": "bm25", "top_k": 20}
                return await mcp.call_tool("search", arguments, read_timeout_seconds=REQUEST_BOUND_S)

        client.headers.update(principals["other"])
        result = await through_a_recovery_conflict(settings, standby, app, mcp_search)
        assert not result.is_error, result.content
        assert doc in {hit["document_id"] for hit in (result.structured_content or {})["results"]}


async def test_a_replica_connection_lost_at_commit_marks_the_read_for_the_primary(
    settings: Settings, runtime: Runtime, standby: Standby
) -> None:
    """The read's statements went through and only its COMMIT failed (the replica's backend was
    terminated): the request is still marked to run again on the primary, and the replica is down
    until its next check."""
    async with replica_app(settings, standby, runtime, read_replica_max_lag_s=3600) as (app, _client):
        await until(healthy(app), "replica healthy")
        reads = app.state.runtime.reads
        pool = reads.pool_for(SYSTEM_SCOPE)
        assert isinstance(pool, ReplicaPool)
        attempt, token = ReadAttempt(), bind_scope(SYSTEM_SCOPE)
        try:
            with read_attempt(attempt), pytest.raises(Exception) as failed:
                async with pool.acquire(readonly=True) as conn:
                    assert await conn.fetchval("SELECT pg_is_in_recovery()")  # on the standby
                    pid = await conn.fetchval("SELECT pg_backend_pid()")
                    await off_loop(standby.execute, f"SELECT pg_terminate_backend({pid}, 10000)")
        finally:
            reset_scope(token)
        assert is_transient_db_error(failed.value), repr(failed.value)
        assert attempt.replica_failed, repr(failed.value)
        assert not any(s.healthy for s in reads.status())  # its connection died: down until a check
        await until(healthy(app), "a check finds the replica up again")
