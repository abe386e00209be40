"""Client-chosen chat session ids (migration 0006) through the real app on the embedded PostgreSQL.

A session id that is not a UUID is the caller's own name for a stored session: /query creates it on
first use and appends afterwards; every other chat route finds it (404 when unknown). Names are per API
key. The open-mode tests come first: the last test creates keys, after which the API is no longer open.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

TEXT = "Axolotls regenerate whole limbs; the blastema forms at the wound within days of the injury."
SHAPE = "client-chosen id of 1-128 characters"


@pytest.fixture(scope="module", autouse=True)
async def document(runtime: Runtime) -> uuid.UUID:
    (doc,) = await ingest_documents_direct(runtime, [DirectDocument("axolotl.txt", TEXT.encode(), {})])
    return doc


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def ask(client: httpx.AsyncClient, session_id: str, query: str = "How do axolotls regenerate?") -> Any:
    return await ok(await client.post("/query", json={"query": query, "session_id": session_id}))


async def test_an_external_id_is_created_by_the_first_query_and_continued_after(
    app_client: httpx.AsyncClient, document: uuid.UUID
) -> None:
    first = await ask(app_client, "sess1")
    assert first["external_id"] == "sess1"
    session_uuid = str(uuid.UUID(first["session_id"]))  # responses keep the server's UUID
    assert first["sources"][0]["document_id"] == str(document)
    second = await ask(app_client, "sess1", "And how fast?")
    assert (second["session_id"], second["external_id"]) == (session_uuid, "sess1")

    history = await ok(await app_client.get("/chat/history/sess1"))
    assert history["session_id"] == session_uuid
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "How do axolotls regenerate?"),
        ("assistant", first["answer"]),
        ("user", "And how fast?"),
        ("assistant", second["answer"]),
    ]
    by_uuid = await ok(await app_client.get(f"/chat/history/{session_uuid}"))
    assert by_uuid["messages"] == history["messages"]

    session = await ok(await app_client.get("/chat/sessions/sess1"))
    assert (session["id"], session["external_id"], session["message_count"]) == (session_uuid, "sess1", 4)
    listed = await ok(await app_client.get("/chat/sessions"))
    assert [s["external_id"] for s in listed["sessions"] if s["id"] == session_uuid] == ["sess1"]
    renamed = await ok(await app_client.patch("/chat/sessions/sess1", json={"title": "Axolotls"}))
    assert (renamed["id"], renamed["title"]) == (session_uuid, "Axolotls")
    cleared = await ok(await app_client.post("/chat/clear", json={"session_id": "sess1"}))
    assert cleared == {"session_id": session_uuid, "deleted": 4}
    await ok(await app_client.delete("/chat/sessions/sess1"), 204)
    assert (await app_client.get("/chat/sessions/sess1")).status_code == 404
    assert (await app_client.get(f"/chat/sessions/{session_uuid}")).status_code == 404


async def test_the_stream_creates_an_external_session_too(app_client: httpx.AsyncClient) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    body = {"query": "How do axolotls regenerate?", "session_id": "stream:1"}
    async with app_client.stream("POST", "/query/stream", json=body) as response:
        assert response.status_code == 200
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    sources, done = events[0][1], events[-1][1]
    assert events[0][0] == "sources" and events[-1][0] == "done"
    assert sources["external_id"] == "stream:1" and done["external_id"] == "stream:1"
    assert sources["session_id"] == done["session_id"]
    history = await ok(await app_client.get("/chat/history/stream:1"))
    assert history["session_id"] == done["session_id"]
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]


async def test_unknown_ids_are_404_and_never_created_outside_query(app_client: httpx.AsyncClient) -> None:
    before = (await ok(await app_client.get("/chat/sessions")))["total"]
    missing_uuid = str(uuid.uuid4())
    for response in (
        await app_client.get("/chat/history/nobody-used-this"),
        await app_client.get("/chat/sessions/nobody-used-this"),
        await app_client.patch("/chat/sessions/nobody-used-this", json={"title": "x"}),
        await app_client.delete("/chat/sessions/nobody-used-this"),
        await app_client.post("/chat/clear", json={"session_id": "nobody-used-this"}),
        # A UUID names the server's id: a client inventing one is not creating a session.
        await app_client.post("/query", json={"query": "axolotl", "session_id": missing_uuid}),
        await app_client.post("/query/stream", json={"query": "axolotl", "session_id": missing_uuid}),
    ):
        assert response.status_code == 404, response.text
    assert (await ok(await app_client.get("/chat/sessions")))["total"] == before


@pytest.mark.parametrize("bad", ["has space", "-dash-first", "x" * 129, "caf\u00e9", "a/b", "", "line\n"])
async def test_an_id_of_another_shape_is_a_422_saying_the_shape(
    app_client: httpx.AsyncClient, bad: str
) -> None:
    for response in (
        await app_client.post("/query", json={"query": "axolotl", "session_id": bad}),
        await app_client.post("/chat/clear", json={"session_id": bad}),
        await app_client.post("/chat/sessions", json={"external_id": bad}),
    ):
        assert response.status_code == 422, (bad, response.text)
        assert SHAPE in response.text


async def test_post_sessions_takes_an_external_id_once_per_key(app_client: httpx.AsyncClient) -> None:
    created = await ok(await app_client.post("/chat/sessions", json={"external_id": "named.1"}), 201)
    assert created["external_id"] == "named.1"
    again = await app_client.post("/chat/sessions", json={"external_id": "named.1"})
    assert again.status_code == 409 and "named.1" in again.json()["detail"]
    answer = await ask(app_client, "named.1")
    assert answer["session_id"] == created["id"]

    temporary = await app_client.post("/chat/sessions", json={"external_id": "t1", "is_temporary": True})
    assert temporary.status_code == 422 and "temporary session cannot take an external_id" in temporary.text
    as_uuid = await app_client.post("/chat/sessions", json={"external_id": str(uuid.uuid4())})
    assert as_uuid.status_code == 422 and "must not be a UUID" in as_uuid.text
    plain = await ok(await app_client.post("/chat/sessions", json={}), 201)
    assert plain["external_id"] is None


async def test_concurrent_first_queries_with_one_new_id_make_one_session(
    app_client: httpx.AsyncClient,
) -> None:
    questions = [f"How do axolotls regenerate, take {i}?" for i in range(6)]
    answers = await asyncio.gather(*(ask(app_client, "race-1", q) for q in questions))
    assert len({a["session_id"] for a in answers}) == 1
    history = await ok(await app_client.get("/chat/history/race-1"))
    assert history["session_id"] == answers[0]["session_id"]
    assert sorted(m["content"] for m in history["messages"] if m["role"] == "user") == sorted(questions)
    listed = await ok(await app_client.get("/chat/sessions", params={"limit": 200}))
    assert [s["id"] for s in listed["sessions"] if s["external_id"] == "race-1"] == [answers[0]["session_id"]]


async def test_the_database_holds_the_same_rules(runtime: Runtime) -> None:
    """Migration 0006: the shape is a CHECK, and one name per owner (NULL owner included) an index."""
    async with owner_connection(runtime.database_url) as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO chat_sessions (external_id) VALUES ('has space')")
        await conn.execute("INSERT INTO chat_sessions (external_id) VALUES ('db-1')")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO chat_sessions (external_id) VALUES ('db-1')")
        # Generated sessions (no external id) are not constrained by it.
        await conn.execute("INSERT INTO chat_sessions (external_id) VALUES (NULL), (NULL)")


async def test_external_ids_belong_to_their_key(runtime: Runtime, app_client: httpx.AsyncClient) -> None:
    """Runs last: once keys exist the API is no longer open."""
    await ask(app_client, "before-keys")
    await ask(app_client, "before-keys", "And how fast?")  # open mode: a session without an owner
    made = {
        name: (await keys.create_key(runtime.pool, CreateKey(name=name, role=role))).key
        for name, role in (("reader-a", "reader"), ("reader-b", "reader"), ("boss", "admin"))
    }

    def auth(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {made[name]}"}

    async def ask_as(name: str, query: str) -> Any:
        body = {"query": query, "session_id": "shared"}
        return await ok(await app_client.post("/query", json=body, headers=auth(name)))

    async def ask_as_with(name: str, session_id: str) -> Any:
        body = {"query": "How do axolotls regenerate?", "session_id": session_id}
        return await ok(await app_client.post("/query", json=body, headers=auth(name)))

    a = await ask_as("reader-a", "Question of A about axolotls")
    b = await ask_as("reader-b", "Question of B about axolotls")
    assert a["session_id"] != b["session_id"]
    for name, own, other in (("reader-a", a, b), ("reader-b", b, a)):
        history = await ok(await app_client.get("/chat/history/shared", headers=auth(name)))
        assert history["session_id"] == own["session_id"]
        assert history["messages"][0]["content"].startswith(f"Question of {name[-1].upper()}")
        hidden = await app_client.get(f"/chat/sessions/{other['session_id']}", headers=auth(name))
        assert hidden.status_code == 404
    # An admin sees every session by its UUID, but "shared" is a name only in its own namespace.
    boss = auth("boss")
    assert (await app_client.get("/chat/history/shared", headers=boss)).status_code == 404
    assert (await app_client.get(f"/chat/history/{a['session_id']}", headers=boss)).status_code == 200
    # A session named in open mode (before any key) is an admin's to continue
    # by that name: a client that keeps its session id across the switch to keys keeps its history.
    before = await ok(await app_client.get("/chat/history/before-keys", headers=boss))
    assert len(before["messages"]) == 4
    more = await ok(
        await app_client.post(
            "/query", json={"query": "And in mice?", "session_id": "before-keys"}, headers=boss
        )
    )
    assert more["session_id"] == before["session_id"]
    after = await ok(await app_client.get("/chat/history/before-keys", headers=boss))
    assert [m["content"] for m in after["messages"]][:4] == [m["content"] for m in before["messages"]]
    assert after["messages"][4]["content"] == "And in mice?" and len(after["messages"]) == 6
    # It is on the admin's own list too (it vanished from the app when the first key was made), and
    # not on a reader's.
    listed = await ok(await app_client.get("/chat/sessions", headers=boss))
    assert before["session_id"] in [s["id"] for s in listed["sessions"]]
    listed = await ok(await app_client.get("/chat/sessions", headers=auth("reader-b")))
    assert before["session_id"] not in [s["id"] for s in listed["sessions"]]
    # A reader's "before-keys" is its own: it starts empty, and the open-mode session is not reached.
    assert (await app_client.get("/chat/history/before-keys", headers=auth("reader-a"))).status_code == 404
    own = await ask_as_with("reader-a", "before-keys")
    assert own["session_id"] != before["session_id"]
