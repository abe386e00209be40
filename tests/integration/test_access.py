"""API keys, roles and collection isolation through the real app (issue 11).

One database: collections `alpha` and `beta` (a document, a batch and a chat session each), and keys of
every role. Every endpoint is walked with no key, an invalid key, a key of too low a role and a key of
the wrong collection; a table check makes sure a new route cannot be left out of the walk.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.client import AsyncClient
from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.batches import create_upload_batch
from rag_server.ingestion.pipeline import DirectDocument, incoming_file, ingest_documents_direct
from tests.integration.conftest import APP_BASE_URL

TEXT = "Zebrafish regenerate heart muscle after injury; the regeneration starts within days."


@dataclass
class World:
    keys: dict[str, str]  # key name -> the key
    ids: dict[str, str]  # alpha_doc, beta_doc, beta_batch, alpha_batch, admin_session...


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_without_any_key_the_loopback_api_is_open(app_client: httpx.AsyncClient) -> None:
    """Before the world below creates keys: open, as today, and /health says so."""
    assert (await app_client.get("/health")).json()["auth"] == "open"
    assert (await app_client.get("/collections")).status_code == 200
    # Clients that always send some key (OpenAI SDKs, Open WebUI) work too while the API is open.
    assert (await app_client.get("/collections", headers=bearer("sk-anything"))).status_code == 200


@pytest.fixture(scope="module")
async def world(runtime: Runtime, app: FastAPI, app_client: httpx.AsyncClient) -> World:
    alpha = await store.create_collection(runtime.pool, CreateCollection(name="alpha"))
    beta = await store.create_collection(runtime.pool, CreateCollection(name="beta"))
    ids: dict[str, str] = {"alpha": str(alpha.id), "beta": str(beta.id)}
    for name, collection in (("alpha", alpha), ("beta", beta)):
        (doc,) = await ingest_documents_direct(
            runtime,
            [DirectDocument(f"{name}.txt", f"{name} {TEXT}".encode(), {})],
            collection_id=collection.id,
        )
        ids[f"{name}_doc"] = str(doc)
        batch = await create_upload_batch(
            runtime.pool,
            runtime.queue,
            [incoming_file(f"{name}-queued.txt", f"{name} queued".encode())],
            collection.id,
        )
        ids[f"{name}_batch"] = str(batch.batch_id)
        ids[f"{name}_task"] = str(batch.tasks[0].task_id)
    created = {}
    for spec in (
        CreateKey(name="admin", role="admin"),
        CreateKey(name="editor-all", role="editor"),
        CreateKey(name="alpha-editor", role="editor", collections=["alpha"]),
        CreateKey(name="alpha-reader", role="reader", collections=["alpha"]),
        CreateKey(name="beta-reader", role="reader", collections=["beta"]),
    ):
        created[spec.name] = (await keys.create_key(runtime.pool, spec)).key
    # A session of the admin's and one of beta's reader.
    for owner in ("admin", "beta-reader"):
        r = await app_client.post("/chat/sessions", json={"title": owner}, headers=bearer(created[owner]))
        assert r.status_code == 201, r.text
        ids[f"{owner}_session"] = r.json()["id"]
    # A stored /v1 response in each collection, by its reader (beta's: by beta's reader).
    for name, owner in (("alpha", "alpha-reader"), ("beta", "beta-reader")):
        body = {"model": f"rag:{name}", "input": "zebrafish heart"}
        r = await app_client.post("/v1/responses", json=body, headers=bearer(created[owner]))
        assert r.status_code == 200 and r.json()["store"], r.text
        ids[f"{name}_response"] = r.json()["id"]
    return World(created, ids)


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # {alpha_doc}-style placeholders from World.ids
    role: str  # the lowest role that may do it
    json: Any = None
    collection_field: bool = False  # json/form names collections: the wrong-collection walk targets beta


# Every operation but /health and its probes (public); `test_the_walk_covers_every_operation` keeps
# this complete.
CALLS = [
    Call("GET", "/status", "reader"),
    Call("GET", "/metrics", "admin"),  # whole-database figures (unless RAG_METRICS_PUBLIC)
    Call("GET", "/collections", "reader"),
    Call("POST", "/collections", "admin", {"name": "gamma"}),
    Call("GET", "/collections/{target}", "reader"),
    Call("PATCH", "/collections/{target}", "admin", {"description": "x"}),
    Call("DELETE", "/collections/{target}", "admin"),
    Call("POST", "/keys", "admin", {"name": "made", "role": "reader"}),
    Call("GET", "/keys", "admin"),
    Call("PATCH", "/keys/{key_name}", "admin", {"collections": ["alpha", "beta"]}),
    Call("DELETE", "/keys/{key_name}", "admin"),
    Call("GET", "/admin/tasks", "admin"),
    Call("POST", "/admin/tasks/retry", "admin", {"batch_id": "{target_batch}"}),
    Call("POST", "/admin/tasks/cancel", "admin", {"batch_id": "{target_batch}"}),
    Call("POST", "/admin/tasks/{target_task}/retry", "admin"),
    Call("POST", "/admin/tasks/{target_task}/cancel", "admin"),
    Call("GET", "/admin/queue/archive", "admin"),
    Call("DELETE", "/admin/queue/archive", "admin"),
    Call("POST", "/upload", "editor", collection_field=True),
    Call("GET", "/tasks/{target_batch}/status", "reader"),
    Call("GET", "/documents?collection={target}", "reader"),
    Call("GET", "/documents/{target_doc}", "reader"),
    Call("GET", "/documents/{target_doc}/chunks", "reader"),
    Call("GET", "/documents/{target_doc}/download", "reader"),
    Call("DELETE", "/documents/{target_doc}", "editor"),
    Call("POST", "/documents/delete", "editor", {"metadata": {"team": "nobody"}}, True),
    Call("PATCH", "/documents/{target_doc}", "editor", {"metadata": {"team": "x"}}),
    Call(
        "POST",
        "/documents/metadata",
        "editor",
        {"documents": [{"id": str(UUID(int=1)), "metadata": {}}]},
        True,
    ),
    Call(
        "POST",
        "/documents/metadata/matching",
        "editor",
        {"metadata": {"team": "nobody"}, "set": {"team": "x"}},
        True,
    ),
    Call("PUT", "/documents/{target_doc}/file", "editor"),
    Call(
        "POST",
        "/documents/check-duplicates",
        "reader",
        {"files": [{"filename": "a.txt", "sha256": "a" * 64}]},
        True,
    ),
    Call("POST", "/search", "reader", {"query": "zebrafish heart"}, True),
    Call("POST", "/chat/sessions", "reader", {}),
    Call("GET", "/chat/sessions", "reader"),
    Call("GET", "/chat/sessions/{target_session}", "reader"),
    Call("PATCH", "/chat/sessions/{target_session}", "reader", {"title": "renamed"}),
    Call("DELETE", "/chat/sessions/{target_session}", "reader"),
    Call("GET", "/chat/history/{target_session}", "reader"),
    Call("GET", "/chat/sessions/{target_session}/export", "reader"),
    Call("POST", "/chat/clear", "reader", {"session_id": "{target_session}"}),
    Call("POST", "/query", "reader", {"query": "zebrafish heart"}, True),
    Call("POST", "/query/stream", "reader", {"query": "zebrafish heart"}, True),
    # The OpenAI-compatible API: the model id names the collection.
    Call("GET", "/v1/models", "reader"),
    Call("GET", "/v1/models/{target_model}", "reader"),
    Call(
        "POST",
        "/v1/chat/completions",
        "reader",
        {"model": "rag:{target}", "messages": [{"role": "user", "content": "zebrafish heart"}]},
    ),
    Call("POST", "/v1/responses", "reader", {"model": "rag:{target}", "input": "zebrafish heart"}),
    # A stored response: its key's own (beta's reader's; alpha's for the 401 walk).
    Call("GET", "/v1/responses/{target_response}", "reader"),
    Call("DELETE", "/v1/responses/{target_response}", "reader"),
    Call("GET", "/v1/responses/{target_response}/input_items", "reader"),
    Call("POST", "/v1/embeddings", "reader", {"model": "rag:{target}", "input": "zebrafish"}),
]


def _template(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "{}", path.split("?")[0])


def test_the_walk_covers_every_operation(app: FastAPI) -> None:
    spec = app.openapi()["paths"]
    operations = {
        (m.upper(), _template(p)) for p, item in spec.items() for m in item if not p.startswith("/health")
    }
    assert operations == {(c.method, _template(c.path)) for c in CALLS}


async def send(
    client: httpx.AsyncClient, call: Call, world: World, target: str, headers: dict[str, str]
) -> httpx.Response:
    """`target`: which collection's objects the call names (alpha or beta)."""
    values = {
        "target": target,
        "target_doc": world.ids[f"{target}_doc"],
        "target_batch": world.ids[f"{target}_batch"],
        "target_task": world.ids[f"{target}_task"],
        "target_session": world.ids["admin_session" if target == "beta" else "beta-reader_session"],
        "key_name": "beta-reader",
        "target_model": f"rag:{target}",
        "target_response": world.ids[f"{target}_response"],
    }
    path = call.path.format(**values)
    if call.path == "/upload":
        files = {"files": ("new.txt", b"zebrafish fin", "text/plain")}
        return await client.post(path, files=files, data={"collection": target}, headers=headers)
    if call.path.endswith("/file"):
        files = {"file": ("new.txt", b"zebrafish fin, again", "text/plain")}
        return await client.put(path, files=files, headers=headers)
    body = call.json
    if body is not None:
        body = {k: (v.format(**values) if isinstance(v, str) else v) for k, v in body.items()}
        if call.collection_field:
            body |= {"collections": [target]} if "query" in body else {"collection": target}
    return await client.request(call.method, path, json=body, headers=headers)


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c.method} {c.path}")
async def test_no_key_or_a_bad_one_is_401_everywhere_but_health(
    app_client: httpx.AsyncClient, world: World, call: Call
) -> None:
    for headers in (
        {},
        bearer("rag_" + "x" * 43),
        {"X-API-Key": "not-a-key"},
        {"Authorization": "Basic YTpi"},
    ):
        r = await send(app_client, call, world, "alpha", headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        # /v1 answers in OpenAI's error shape, which its clients parse.
        body = r.json()
        assert body["error"]["message"] if call.path.startswith("/v1/") else body["detail"]
    health = await app_client.get("/health")
    assert health.status_code == 200 and health.json()["auth"] == "api_key"
    # The probes answer without a key too (load balancers and Kubernetes send none).
    assert (await app_client.get("/health/live")).json() == {"status": "live"}
    assert (await app_client.get("/health/ready")).json()["status"] == "ready"


@pytest.mark.parametrize(
    "call", [c for c in CALLS if c.role != "reader"], ids=lambda c: f"{c.method} {c.path}"
)
async def test_a_role_too_low_is_403_and_changes_nothing(
    app_client: httpx.AsyncClient, world: World, call: Call
) -> None:
    weaker = "alpha-reader" if call.role == "editor" else "alpha-editor"
    r = await send(app_client, call, world, "alpha", bearer(world.keys[weaker]))
    assert r.status_code == 403, r.text
    assert "role" in r.json()["detail"]
    admin = bearer(world.keys["admin"])
    assert (await app_client.get(f"/documents/{world.ids['alpha_doc']}", headers=admin)).status_code == 200
    assert (await app_client.get("/collections/alpha", headers=admin)).status_code == 200


@pytest.mark.parametrize(
    "call",
    [
        c
        for c in CALLS
        if c.role != "admin" and c.path not in ("/chat/sessions", "/collections", "/v1/models", "/status")
    ],
    ids=lambda c: f"{c.method} {c.path}",
)
async def test_another_collections_objects_are_404_for_a_limited_key(
    app_client: httpx.AsyncClient, world: World, call: Call
) -> None:
    """alpha's editor names beta's collection, document, batch, or another key's chat session: 404, as
    if they did not exist (ids do not leak), and nothing of beta's changes."""
    r = await send(app_client, call, world, "beta", bearer(world.keys["alpha-editor"]))
    assert r.status_code == 404, r.text
    admin = bearer(world.keys["admin"])
    assert (await app_client.get(f"/documents/{world.ids['beta_doc']}", headers=admin)).status_code == 200
    session = world.ids["admin_session"]
    assert (await app_client.get(f"/chat/sessions/{session}", headers=admin)).status_code == 200
    response = world.ids["beta_response"]
    assert (await app_client.get(f"/v1/responses/{response}", headers=admin)).status_code == 200


async def test_status_names_the_calling_key_and_its_reach(
    app_client: httpx.AsyncClient, world: World
) -> None:
    limited = (await app_client.get("/status", headers=bearer(world.keys["alpha-editor"]))).json()
    assert limited["auth"] == "api_key"
    assert limited["key"] == {"name": "alpha-editor", "role": "editor", "all_collections": False}
    admin = (await app_client.get("/status", headers=bearer(world.keys["admin"]))).json()
    assert admin["key"] == {"name": "admin", "role": "admin", "all_collections": True}
    assert admin["llm"] == {"configured": False, "provider": "none", "model": None}
    assert set(admin["tasks"]) == {"queued", "processing"}
    # The web app splits uploads by these (Settings), so a batch is never refused for its count.
    assert admin["upload"] == {
        "max_files_per_upload": 1000,
        "max_file_bytes": 50 * 1024 * 1024,
        "max_request_bytes": 512 * 1024 * 1024,
    }


async def test_a_limited_key_sees_only_its_collections(app_client: httpx.AsyncClient, world: World) -> None:
    alpha_editor = bearer(world.keys["alpha-editor"])
    listed = (await app_client.get("/collections", headers=alpha_editor)).json()
    assert [c["name"] for c in listed["items"]] == ["alpha"] and listed["total"] == 1
    # Without a collection, requests go to `default`, which this key cannot reach.
    assert (
        await app_client.post("/search", json={"query": "zebrafish"}, headers=alpha_editor)
    ).status_code == 404
    both = {"query": "zebrafish heart", "collections": ["alpha", "beta"]}
    assert (await app_client.post("/search", json=both, headers=alpha_editor)).status_code == 404
    hits = (
        await app_client.post("/search", json={**both, "collections": ["alpha"]}, headers=alpha_editor)
    ).json()
    assert hits["results"] and {h["document_id"] for h in hits["results"]} == {world.ids["alpha_doc"]}
    # An unlimited key searching both sees both.
    everything = (
        await app_client.post("/search", json=both, headers=bearer(world.keys["editor-all"]))
    ).json()
    assert {h["document_id"] for h in everything["results"]} == {
        world.ids["alpha_doc"],
        world.ids["beta_doc"],
    }


async def test_chat_sessions_belong_to_their_key(app_client: httpx.AsyncClient, world: World) -> None:
    beta_reader, admin = bearer(world.keys["beta-reader"]), bearer(world.keys["admin"])
    own = (await app_client.get("/chat/sessions", headers=beta_reader)).json()
    assert [s["id"] for s in own["sessions"]] == [world.ids["beta-reader_session"]]
    # An admin lists its own by default, everyone's on request; anyone else may not ask.
    mine = (await app_client.get("/chat/sessions", headers=admin)).json()
    assert world.ids["beta-reader_session"] not in {s["id"] for s in mine["sessions"]}
    every = (await app_client.get("/chat/sessions?all_owners=true", headers=admin)).json()
    assert {world.ids["admin_session"], world.ids["beta-reader_session"]} <= {
        s["id"] for s in every["sessions"]
    }
    assert (await app_client.get("/chat/sessions?all_owners=true", headers=beta_reader)).status_code == 403
    # A temporary session (in server memory, not under row-level security) is its key's alone too.
    temp = (await app_client.post("/chat/sessions", json={"is_temporary": True}, headers=beta_reader)).json()
    other = bearer(world.keys["alpha-reader"])
    assert (await app_client.get(f"/chat/sessions/{temp['id']}", headers=other)).status_code == 404
    assert (await app_client.delete(f"/chat/sessions/{temp['id']}", headers=other)).status_code == 404
    assert (await app_client.get(f"/chat/sessions/{temp['id']}", headers=beta_reader)).status_code == 200
    # An answer in one's own session, from one's own collection.
    answer = await app_client.post(
        "/query",
        json={
            "query": "zebrafish heart",
            "session_id": world.ids["beta-reader_session"],
            "collections": ["beta"],
        },
        headers=beta_reader,
    )
    assert answer.status_code == 200, answer.text
    assert {s["document_id"] for s in answer.json()["sources"]} == {world.ids["beta_doc"]}


async def test_chat_sessions_are_searched_by_title_and_messages_within_the_key(
    app_client: httpx.AsyncClient, world: World
) -> None:
    """GET /chat/sessions?q=: each word in the title or a message (any case, accents folded); another
    key's session is never found, whatever it holds; a blank or too long `q`, or one of no word, is a 422."""
    # Keys no other test lists the sessions of.
    alpha, beta = bearer(world.keys["editor-all"]), bearer(world.keys["alpha-editor"])

    async def session(headers: dict[str, str], title: str) -> str:
        r = await app_client.post("/chat/sessions", json={"title": title}, headers=headers)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    titled = await session(alpha, "Café budget review")
    asked = await session(alpha, "Untitled budget")
    body = {"query": "how do zebrafish regenerate?", "session_id": asked, "collections": ["alpha"]}
    assert (await app_client.post("/query", json=body, headers=alpha)).status_code == 200
    theirs = await session(beta, "Café budget regenerate")  # matches the searches below, another key's

    async def found(q: str, headers: dict[str, str] = alpha) -> list[str]:
        r = await app_client.get("/chat/sessions", params={"q": q}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json()["sessions"])
        return [s["id"] for s in r.json()["sessions"]]

    assert await found("CAFE") == [titled]  # the title, case and accent ignored
    assert await found("ZEBRAFISH regen") == [asked]  # a question's words, beginnings of words
    assert await found("heart muscle") == [asked]  # the answer's (extractive: the passage)
    assert set(await found("budget")) == {titled, asked}
    assert await found("café zebrafish") == []  # every word must be found
    assert await found("café", beta) == [theirs]
    assert theirs not in await found("budget") and await found("nothing-like-this") == []
    # An admin finds its own (and open mode's); every key's only when it asks for every owner.
    admin = bearer(world.keys["admin"])
    assert theirs not in await found("café", admin)
    every = await app_client.get("/chat/sessions", params={"q": "café", "all_owners": "true"}, headers=admin)
    assert {theirs, titled} <= {s["id"] for s in every.json()["sessions"]}, every.text
    for bad in ("", "   ", "x" * 201, " ".join(f"w{i}" for i in range(11)), "?! :* \\"):  # no word: all
        r = await app_client.get("/chat/sessions", params={"q": bad}, headers=alpha)
        assert r.status_code == 422, (bad, r.text)


async def test_an_admin_reads_another_keys_session_but_does_not_answer_in_it(
    app_client: httpx.AsyncClient, world: World
) -> None:
    """An admin's answer could cite collections the owner may not read, and the owner would see it in
    their history: stored and temporary sessions refuse it (403) before anything is generated."""
    beta_reader, admin = bearer(world.keys["beta-reader"]), bearer(world.keys["admin"])
    temp = (await app_client.post("/chat/sessions", json={"is_temporary": True}, headers=beta_reader)).json()
    for session in (world.ids["beta-reader_session"], temp["id"]):
        before = (await app_client.get(f"/chat/history/{session}", headers=admin)).json()["messages"]
        body = {"query": "zebrafish heart", "session_id": session, "collections": ["alpha"]}
        for path in ("/query", "/query/stream"):
            refused = await app_client.post(path, json=body, headers=admin)
            assert refused.status_code == 403, refused.text
            assert "belongs to another API key" in refused.json()["detail"]
        after = await app_client.get(f"/chat/history/{session}", headers=beta_reader)
        assert after.status_code == 200 and after.json()["messages"] == before
    # The admin's own session, and a new one, still answer.
    own = {"query": "zebrafish heart", "session_id": world.ids["admin_session"], "collections": ["alpha"]}
    assert (await app_client.post("/query", json=own, headers=admin)).status_code == 200


async def test_both_headers_work_and_last_used_is_recorded(
    app_client: httpx.AsyncClient, world: World, runtime: Runtime
) -> None:
    key = world.keys["alpha-reader"]
    assert (await app_client.get("/collections", headers={"X-API-Key": key})).status_code == 200
    assert (await app_client.get("/collections", headers=bearer(key))).status_code == 200
    both = {"X-API-Key": key, **bearer(key)}
    assert (await app_client.get("/collections", headers=both)).status_code == 200
    # Two different keys: neither is taken (one of them, silently, was: an editor's and a reader's).
    two = {"X-API-Key": world.keys["alpha-editor"], **bearer(key)}
    refused = await app_client.get("/collections", headers=two)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", refused.text
    assert refused.json()["detail"] == (
        "two different API keys (Authorization: Bearer and X-API-Key): send one of them"
    )
    listed = {k.name: k for k in (await keys.list_keys(runtime.pool)).items}
    assert listed["alpha-reader"].last_used_at is not None
    assert listed["alpha-reader"].collections == ["alpha"] and listed["admin"].collections is None
    assert listed["alpha-reader"].key_prefix == key[:12]


async def test_only_the_hash_is_stored_and_keys_never_reach_the_logs(
    app_client: httpx.AsyncClient, world: World, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await runtime.pool.fetch("SELECT * FROM api_keys")
    dump = repr([dict(r) for r in stored])
    for key in world.keys.values():
        assert key not in dump and key[12:] not in dump
    hashes = {bytes(r["key_hash"]) for r in stored}
    assert {hashlib.sha256(k.encode()).digest() for k in world.keys.values()} <= hashes
    caplog.set_level(logging.DEBUG)
    secret = "rag_" + "s" * 43
    await app_client.get("/collections", headers=bearer(secret))
    await app_client.get("/collections", headers=bearer(world.keys["admin"]))
    await app_client.post("/search", json={"query": "zebrafish"}, headers=bearer(world.keys["alpha-reader"]))
    for key in (secret, *world.keys.values()):
        assert key not in caplog.text


async def test_admin_endpoints_manage_keys(app_client: httpx.AsyncClient, world: World) -> None:
    admin = bearer(world.keys["admin"])
    made = await app_client.post(
        "/keys", json={"name": "temp-reader", "role": "reader", "collections": ["beta"]}, headers=admin
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert made.json()["collections"] == ["beta"]
    assert (await app_client.get("/documents?collection=beta", headers=bearer(key))).status_code == 200
    listed = (await app_client.get("/keys", headers=admin)).json()
    assert "temp-reader" in {k["name"] for k in listed["items"]}
    assert all("key" not in k for k in listed["items"])
    again = await app_client.post("/keys", json={"name": "temp-reader", "role": "reader"}, headers=admin)
    assert again.status_code == 409
    limited_admin = {"name": "x", "role": "admin", "collections": ["beta"]}
    assert (await app_client.post("/keys", json=limited_admin, headers=admin)).status_code == 422
    unknown = {"name": "y", "role": "reader", "collections": ["nope"]}
    assert (await app_client.post("/keys", json=unknown, headers=admin)).status_code == 404
    # Without a key, a parameter the route does not take is still a 401 first.
    assert (await app_client.get("/keys", params={"nope": "1"})).status_code == 401
    # Misspelt, the limit was ignored: a key for every collection.
    misspelt = await app_client.post(
        "/keys", json={"name": "z", "role": "reader", "colections": ["beta"]}, headers=admin
    )
    assert misspelt.status_code == 422, misspelt.text
    assert [(e["type"], e["loc"]) for e in misspelt.json()["detail"]] == [
        ("extra_forbidden", ["body", "colections"])
    ]
    assert "z" not in {k["name"] for k in (await app_client.get("/keys", headers=admin)).json()["items"]}
    revoked = await app_client.delete("/keys/temp-reader", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await app_client.get("/documents?collection=beta", headers=bearer(key))).status_code == 401
    assert (await app_client.delete("/keys/temp-reader", headers=admin)).status_code == 404


async def test_keys_are_listed_a_page_at_a_time(
    app: FastAPI, app_client: httpx.AsyncClient, world: World
) -> None:
    """GET /keys answered every key at once (the Admin view loaded them all): it pages as the other
    listings do, `total` counting every key listed, and so does the Python client."""
    admin = bearer(world.keys["admin"])
    for i in range(5):
        made = await app_client.post("/keys", json={"name": f"paged-{i}", "role": "reader"}, headers=admin)
        assert made.status_code == 201, made.text
    everything = (await app_client.get("/keys", params={"limit": 500}, headers=admin)).json()
    names = [k["name"] for k in everything["items"]]
    assert names == sorted(names) and {f"paged-{i}" for i in range(5)} <= set(names)
    assert (everything["total"], everything["limit"], everything["offset"]) == (len(names), 500, 0)
    assert (await app_client.get("/keys", headers=admin)).json()["limit"] == 100  # the default page

    page = (await app_client.get("/keys", params={"limit": 2, "offset": 1}, headers=admin)).json()
    assert [k["name"] for k in page["items"]] == names[1:3]
    assert (page["total"], page["limit"], page["offset"]) == (len(names), 2, 1)
    walked = []
    for offset in range(0, len(names), 3):
        walked += (
            await app_client.get("/keys", params={"limit": 3, "offset": offset}, headers=admin)
        ).json()["items"]
    assert [k["name"] for k in walked] == names
    past = (await app_client.get("/keys", params={"offset": len(names)}, headers=admin)).json()
    assert past["items"] == [] and past["total"] == len(names)
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 2**31}, {"page": 2}):
        assert (await app_client.get("/keys", params=bad, headers=admin)).status_code == 422, bad

    # A revoked key counts only with include_revoked; the page is taken after that filter.
    revoked_too = {"limit": 1, "include_revoked": "true"}
    before = (await app_client.get("/keys", params=revoked_too, headers=admin)).json()["total"]
    assert (await app_client.delete("/keys/paged-0", headers=admin)).status_code == 200
    active = (await app_client.get("/keys", params={"limit": 1}, headers=admin)).json()
    assert active["total"] == len(names) - 1 and len(active["items"]) == 1
    with_revoked = (await app_client.get("/keys", params=revoked_too, headers=admin)).json()
    assert with_revoked["total"] == before and len(with_revoked["items"]) == 1

    transport = httpx.ASGITransport(app=app)
    async with AsyncClient(APP_BASE_URL, api_key=world.keys["admin"], transport=transport) as client:
        listed = await client.keys(limit=2, offset=2)
        assert [k.name for k in listed.items] == [n for n in names if n != "paged-0"][2:4]
        assert (listed.total, listed.limit, listed.offset) == (len(names) - 1, 2, 2)
        every = await client.keys(include_revoked=True, limit=500)
        assert "paged-0" in {k.name for k in every.items} and every.total == before


async def test_a_key_whose_collections_are_all_deleted_sees_nothing(
    app_client: httpx.AsyncClient, world: World
) -> None:
    admin = bearer(world.keys["admin"])
    assert (
        await app_client.post("/collections", json={"name": "short-lived"}, headers=admin)
    ).status_code == 201
    made = await app_client.post(
        "/keys", json={"name": "short", "role": "reader", "collections": ["short-lived"]}, headers=admin
    )
    key = bearer(made.json()["key"])
    assert (await app_client.delete("/collections/short-lived", headers=admin)).status_code == 204
    listed = (await app_client.get("/collections", headers=key)).json()
    assert listed["items"] == [] and listed["total"] == 0
    assert (await app_client.get("/documents?collection=alpha", headers=key)).status_code == 404


async def test_a_streamed_answer_is_written_under_the_keys_scope(
    app_client: httpx.AsyncClient, world: World
) -> None:
    """The stream runs after the route returned: its retrieval and its final write still carry the
    key's scope (a write without it would be refused by the policies)."""
    alpha_reader = bearer(world.keys["alpha-reader"])
    body = {"query": "zebrafish heart", "collections": ["alpha"]}
    async with app_client.stream("POST", "/query/stream", json=body, headers=alpha_reader) as r:
        assert r.status_code == 200
        text = "".join([chunk async for chunk in r.aiter_text()])
    assert "event: done" in text and "event: error" not in text
    assert world.ids["alpha_doc"] in text and world.ids["beta_doc"] not in text
    sessions = (await app_client.get("/chat/sessions", headers=alpha_reader)).json()["sessions"]
    [session] = [s for s in sessions if s["message_count"] == 2]
    history = await app_client.get(f"/chat/history/{session['id']}", headers=alpha_reader)
    assert [m["role"] for m in history.json()["messages"]] == ["user", "assistant"]
    other = bearer(world.keys["beta-reader"])
    assert (await app_client.get(f"/chat/history/{session['id']}", headers=other)).status_code == 404


async def test_an_editor_uploads_and_deletes_within_its_collections(
    app_client: httpx.AsyncClient, world: World
) -> None:
    editor = bearer(world.keys["alpha-editor"])
    files = {"files": ("fresh.txt", b"zebrafish scales regrow", "text/plain")}
    r = await app_client.post("/upload", files=files, data={"collection": "alpha"}, headers=editor)
    assert r.status_code == 202, r.text
    status = await app_client.get(f"/tasks/{r.json()['batch_id']}/status", headers=editor)
    assert status.status_code == 200
    document_id = r.json()["tasks"][0]["document_id"]
    assert (await app_client.delete(f"/documents/{document_id}", headers=editor)).status_code == 204
    assert (await app_client.get(f"/documents/{document_id}", headers=editor)).status_code == 404


async def test_a_bulk_delete_or_edit_never_reaches_another_collection(
    app_client: httpx.AsyncClient, world: World
) -> None:
    """alpha's editor names beta's document by id inside alpha, or every document by a metadata match
    that beta's also has: only alpha's own go."""
    editor, admin = bearer(world.keys["alpha-editor"]), bearer(world.keys["admin"])
    files = {"files": ("bulk.txt", b"zebrafish bulk", "text/plain")}
    metadata = '{"bulk": "yes"}'
    for collection in ("alpha", "beta"):
        r = await app_client.post(
            "/upload", files=files, data={"collection": collection, "metadata": metadata}, headers=admin
        )
        assert r.status_code == 202, r.text
    beta_doc = world.ids["beta_doc"]
    r = await app_client.post(
        "/documents/delete", json={"collection": "alpha", "ids": [beta_doc]}, headers=editor
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": [], "not_deleted": [beta_doc]}
    r = await app_client.post(
        "/documents/delete", json={"collection": "alpha", "metadata": {"bulk": "yes"}}, headers=editor
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["deleted"]) == 1
    beta = await app_client.get(
        "/documents", params={"collection": "beta", "metadata": metadata}, headers=admin
    )
    assert beta.json()["total"] == 1
    assert (await app_client.get(f"/documents/{beta_doc}", headers=admin)).status_code == 200
    # A bulk metadata edit in alpha naming beta's document leaves it alone.
    before = (await app_client.get(f"/documents/{beta_doc}", headers=admin)).json()["metadata"]
    edit = {"collection": "alpha", "documents": [{"id": beta_doc, "metadata": {"bulk": "taken"}}]}
    r = await app_client.post("/documents/metadata", json=edit, headers=editor)
    assert r.status_code == 200, r.text
    assert r.json() == {"updated": [], "not_updated": [beta_doc]}
    assert (await app_client.get(f"/documents/{beta_doc}", headers=admin)).json()["metadata"] == before
    # So does an edit of every document matching a selection: alpha's matching ones get it, beta's not.
    both = {"$contains": "Zebrafish regenerate"}  # alpha's text and beta's alike
    edit_all = {"collection": "alpha", "text": both, "set": {"bulk": "all"}}
    r = await app_client.post("/documents/metadata/matching", json=edit_all, headers=editor)
    assert r.status_code == 200, r.text
    assert r.json()["updated"] and r.json()["not_updated"] == []
    for doc in r.json()["updated"]:
        edited = (await app_client.get(f"/documents/{doc}", headers=admin)).json()
        assert edited["collection_id"] == world.ids["alpha"] and edited["metadata"]["bulk"] == "all"
    assert (await app_client.get(f"/documents/{beta_doc}", headers=admin)).json()["metadata"] == before
    # A selection naming nothing is refused, as a delete's: never the whole collection unasked.
    r = await app_client.post("/documents/metadata/matching", json={"set": {"a": 1}}, headers=editor)
    assert r.status_code == 422 and "name the documents to update" in r.text
