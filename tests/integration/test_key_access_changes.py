"""PATCH /keys/{name}: an admin changes an existing key's role and collections; the key keeps its secret
and its next request has the new access (authentication reads the key on every request)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey, UpdateKey
from rag_server.client import AsyncClient, Client, ClientError
from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.config import Settings
from rag_server.errors import ConflictError
from rag_server.infra.database import transaction
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.support.processes import settings_env

TEXT = "Zebrafish regenerate heart muscle after injury; the regeneration starts within days."


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def made(runtime: Runtime) -> dict[str, str]:
    """Collections alpha, beta and gamma (a document each), an admin key and a few limited ones."""
    ids: dict[str, str] = {}
    for name in ("alpha", "beta", "gamma"):
        collection = await store.create_collection(runtime.pool, CreateCollection(name=name))
        (doc,) = await ingest_documents_direct(
            runtime,
            [DirectDocument(f"{name}.txt", f"{name} {TEXT}".encode(), {})],
            collection_id=collection.id,
        )
        ids[f"{name}_doc"], ids[name] = str(doc), str(collection.id)
    for spec in (
        CreateKey(name="boss", role="admin"),
        CreateKey(name="ed", role="editor", collections=["alpha"]),
        CreateKey(name="reed", role="reader", collections=["alpha"]),
    ):
        ids[spec.name] = (await keys.create_key(runtime.pool, spec)).key
    return ids


async def patch(client: httpx.AsyncClient, made: dict[str, str], name: str, body: object) -> httpx.Response:
    return await client.patch(f"/keys/{name}", json=body, headers=bearer(made["boss"]))


async def searched(client: httpx.AsyncClient, key: str, collections: list[str]) -> httpx.Response:
    body = {"query": "zebrafish heart", "collections": collections}
    return await client.post("/search", json=body, headers=bearer(key))


async def test_a_collection_granted_is_seen_at_the_next_request_and_one_removed_is_gone_at_once(
    app_client: httpx.AsyncClient, made: dict[str, str]
) -> None:
    ed = made["ed"]
    assert (await app_client.get(f"/documents/{made['beta_doc']}", headers=bearer(ed))).status_code == 404
    assert (await searched(app_client, ed, ["beta"])).status_code == 404

    r = await patch(app_client, made, "ed", {"collections": ["alpha", made["beta"]]})  # a name and an id
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "ed" and body["role"] == "editor" and body["collections"] == ["alpha", "beta"]
    assert body["revoked_at"] is None and "key" not in body
    assert body == next(
        k
        for k in (await app_client.get("/keys", headers=bearer(made["boss"]))).json()["items"]
        if k["name"] == "ed"
    )

    assert (await app_client.get(f"/documents/{made['beta_doc']}", headers=bearer(ed))).status_code == 200
    hits = (await searched(app_client, ed, ["alpha", "beta"])).json()["results"]
    assert {h["document_id"] for h in hits} == {made["alpha_doc"], made["beta_doc"]}
    listed = (await app_client.get("/collections", headers=bearer(ed))).json()
    assert [c["name"] for c in listed["items"]] == ["alpha", "beta"]

    # alpha taken away: its documents are a 404 at once; beta stays; gamma was never reachable.
    r = await patch(app_client, made, "ed", {"collections": ["beta"]})
    assert r.status_code == 200 and r.json()["collections"] == ["beta"], r.text
    assert (await app_client.get(f"/documents/{made['alpha_doc']}", headers=bearer(ed))).status_code == 404
    assert (await searched(app_client, ed, ["alpha"])).status_code == 404
    hits = (await searched(app_client, ed, ["beta"])).json()["results"]
    assert hits and {h["document_id"] for h in hits} == {made["beta_doc"]}
    for doc in ("alpha_doc", "gamma_doc"):
        assert (await app_client.get(f"/documents/{made[doc]}", headers=bearer(ed))).status_code == 404
    assert (await app_client.get("/documents?collection=gamma", headers=bearer(ed))).status_code == 404
    listed = (await app_client.get("/collections", headers=bearer(ed))).json()
    assert [c["name"] for c in listed["items"]] == ["beta"]
    # Only the role changing keeps the collections.
    r = await patch(app_client, made, "ed", {"role": "editor"})
    assert r.status_code == 200 and r.json()["collections"] == ["beta"], r.text


async def test_the_role_changes_at_the_next_request(
    app_client: httpx.AsyncClient, made: dict[str, str]
) -> None:
    reed = bearer(made["reed"])

    async def upload() -> int:
        files = {"files": ("new.txt", b"zebrafish fins regrow", "text/plain")}
        return (
            await app_client.post("/upload", files=files, data={"collection": "alpha"}, headers=reed)
        ).status_code

    assert await upload() == 403
    r = await patch(app_client, made, "reed", {"role": "editor"})
    assert r.status_code == 200 and r.json()["role"] == "editor" and r.json()["collections"] == ["alpha"]
    assert await upload() == 202
    assert (await patch(app_client, made, "reed", {"role": "reader"})).status_code == 200
    assert await upload() == 403
    assert (await app_client.get("/keys", headers=reed)).status_code == 403


async def test_refusals_change_nothing(app_client: httpx.AsyncClient, made: dict[str, str]) -> None:
    before = (await app_client.get("/keys", headers=bearer(made["boss"]))).json()["items"]
    cases = [
        ("ed", {"role": "admin", "collections": ["alpha"]}, 422, None),
        ("boss", {"collections": ["alpha"]}, 422, None),  # an admin key with collections
        ("ed", {}, 422, None),
        ("ed", {"role": None}, 422, None),  # (`"collections": null` is every collection)
        ("ed", {"colections": ["beta"]}, 422, None),
        ("ed", {"collections": []}, 422, None),
        ("ed", {"role": "owner"}, 422, None),
        ("ed", {"collections": ["beta", "nope"]}, 404, "collection_not_found"),
        ("nobody", {"role": "reader"}, 404, None),
    ]
    for name, body, status, code in cases:
        r = await patch(app_client, made, name, body)
        assert r.status_code == status, (body, r.text)
        assert r.json().get("code") == code, r.text
    assert "nope" in (await patch(app_client, made, "ed", {"collections": ["nope"]})).json()["detail"]
    # A revoked key is not changed (its name may be taken again by a new key).
    made_gone = await app_client.post(
        "/keys", json={"name": "gone", "role": "reader"}, headers=bearer(made["boss"])
    )
    assert (await app_client.delete("/keys/gone", headers=bearer(made["boss"]))).status_code == 200
    r = await patch(app_client, made, "gone", {"role": "editor"})
    assert r.status_code == 404 and "no active key named 'gone'" in r.json()["detail"], r.text
    assert (await app_client.get("/collections", headers=bearer(made_gone.json()["key"]))).status_code == 401
    after = (await app_client.get("/keys", headers=bearer(made["boss"]))).json()["items"]
    access = lambda items: [(k["name"], k["role"], k["collections"]) for k in items]  # noqa: E731
    assert access(after) == access(before)


async def test_a_key_made_admin_reaches_everything_and_the_last_admin_stays_one(
    app_client: httpx.AsyncClient, made: dict[str, str], runtime: Runtime
) -> None:
    boss = bearer(made["boss"])
    refused = await patch(app_client, made, "boss", {"role": "editor", "collections": ["alpha"]})
    assert refused.status_code == 409, refused.text
    assert "last active admin key" in refused.json()["detail"]
    assert (await app_client.get("/keys", headers=boss)).status_code == 200  # still an admin
    # Leaving admin without naming collections: which ones is not guessed.
    made_admin = await app_client.post(
        "/keys", json={"name": "second", "role": "reader", "collections": ["gamma"]}, headers=boss
    )
    second = bearer(made_admin.json()["key"])
    r = await patch(app_client, made, "second", {"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin" and r.json()["collections"] is None, r.text
    assert (await app_client.get(f"/documents/{made['alpha_doc']}", headers=second)).status_code == 200
    needs = await patch(app_client, made, "second", {"role": "reader"})
    assert needs.status_code == 422 and "needs `collections`" in needs.json()["detail"], needs.text
    # Two admins now: one may be demoted (here: the other demotes it, from its own request).
    r = await app_client.patch(
        "/keys/boss", json={"role": "reader", "collections": ["gamma"]}, headers=second
    )
    assert r.status_code == 200 and r.json()["collections"] == ["gamma"], r.text
    assert (await app_client.get("/keys", headers=boss)).status_code == 403
    hits = (await searched(app_client, made["boss"], ["gamma"])).json()["results"]
    assert {h["document_id"] for h in hits} == {made["gamma_doc"]}
    # ... and now the other is the last one: also refused demoting itself.
    r = await app_client.patch(
        "/keys/second", json={"role": "editor", "collections": ["gamma"]}, headers=second
    )
    assert r.status_code == 409, r.text
    # Put back for the tests after this one: boss the only admin again.
    await keys.update_key(runtime.pool, "boss", UpdateKey(role="admin"))
    await keys.revoke_key(runtime.pool, "second")


async def test_two_admins_demoting_each_other_at_once_leave_one(
    made: dict[str, str], runtime: Runtime
) -> None:
    """The second demotion waits on the first one's locks, then sees one admin left: a 409, not none."""
    await keys.create_key(runtime.pool, CreateKey(name="other-admin", role="admin"))
    demote = UpdateKey(role="reader", collections=["alpha"])
    async with runtime.pool.acquire() as conn, transaction(conn) as c:
        await keys.update_key(c, "other-admin", demote)
        second = asyncio.create_task(keys.update_key(runtime.pool, "boss", demote))
        waiting = """SELECT count(*) FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND query LIKE '%FOR NO KEY UPDATE%'"""
        while not await runtime.pool.fetchval(waiting):
            assert not second.done(), second
            await asyncio.sleep(0.05)
    with pytest.raises(ConflictError, match="last active admin key"):
        await second
    listed = {k.name: k.role for k in (await keys.list_keys(runtime.pool)).items}
    assert listed["boss"] == "admin" and listed["other-admin"] == "reader"


async def test_keys_update_on_the_command_line(made: dict[str, str], settings: Settings) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rag_server", "keys", "update", *args],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=180,
        )

    done = await asyncio.to_thread(cli, "reed", "--role", "editor", "--collections", "alpha, gamma")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "key 'reed' is now an editor key for alpha, gamma"
    for args, says in (
        (("reed", "--collections", "nope"), "error: no collection 'nope'"),
        (("nobody", "--role", "reader"), "error: no active key named 'nobody'"),
        (
            ("boss", "--role", "reader", "--collections", "alpha"),
            "error: 'boss' is the last active admin key",
        ),
        (("reed",), "error: give a role, collections or both"),
    ):
        refused = await asyncio.to_thread(cli, *args)
        assert refused.returncode != 0 and refused.stdout == "", refused.stdout + refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(says), refused.stderr


async def test_the_clients_update_a_key(
    app_client: httpx.AsyncClient, made: dict[str, str], live_app_url: str
) -> None:
    def sync_update() -> str:
        with Client(live_app_url, api_key=made["boss"]) as client:
            updated = client.update_key("reed", role="reader", collections=["beta"])
            assert (updated.role, updated.collections) == ("reader", ["beta"])
            with pytest.raises(ClientError) as refused:
                client.update_key("reed", collections=["nope"])
            assert refused.value.status == 404 and refused.value.code == "collection_not_found"
            return updated.name

    assert await asyncio.to_thread(sync_update) == "reed"
    async with AsyncClient(live_app_url, api_key=made["boss"]) as aclient:
        updated = await aclient.update_key("reed", collections=["alpha", "beta"])
        assert updated.collections == ["alpha", "beta"] and updated.role == "reader"
        with pytest.raises(ClientError) as refused:
            await aclient.update_key("boss", role="reader", collections=["alpha"])
        assert refused.value.status == 409 and "last active admin key" in str(refused.value)
        widened = await aclient.update_key("reed", collections="every")  # sent as null
        assert widened.collections is None and widened.role == "reader"
        kept = await aclient.update_key("reed", role="editor")  # collections left out: kept
        assert kept.collections is None and kept.role == "editor"


async def test_a_key_of_every_collection_keeps_it_and_one_made_admin_keeps_no_list(
    app_client: httpx.AsyncClient, made: dict[str, str], runtime: Runtime
) -> None:
    boss = bearer(made["boss"])
    every = await app_client.post("/keys", json={"name": "all-reader", "role": "reader"}, headers=boss)
    r = await patch(app_client, made, "all-reader", {"role": "editor"})
    assert r.status_code == 200 and r.json()["collections"] is None, r.text
    hits = (await searched(app_client, every.json()["key"], ["alpha", "gamma"])).json()["results"]
    assert {h["document_id"] for h in hits} == {made["alpha_doc"], made["gamma_doc"]}
    # Limited, then admin, then limited again: only the last list counts, nothing of the first is left.
    assert (
        await patch(app_client, made, "all-reader", {"collections": ["alpha", "beta"]})
    ).status_code == 200
    assert (await patch(app_client, made, "all-reader", {"role": "admin"})).json()["collections"] is None
    links = (
        "SELECT count(*) FROM api_key_collections kc JOIN api_keys k ON k.id = kc.key_id WHERE k.name = $1"
    )
    assert await runtime.pool.fetchval(links, "all-reader") == 0
    r = await patch(app_client, made, "all-reader", {"role": "reader", "collections": ["gamma"]})
    assert r.status_code == 200 and r.json()["collections"] == ["gamma"], r.text
    assert (await searched(app_client, every.json()["key"], ["alpha"])).status_code == 404


async def test_a_limited_key_given_every_collection_reaches_them_all_and_its_list_is_gone(
    app_client: httpx.AsyncClient, made: dict[str, str], runtime: Runtime, settings: Settings
) -> None:
    """`"collections": null` widens a limited key to every collection, as a key created without any (the
    field left out keeps the key's own)."""
    boss = bearer(made["boss"])
    limited = await app_client.post(
        "/keys", json={"name": "widened", "role": "reader", "collections": ["alpha"]}, headers=boss
    )
    key = limited.json()["key"]
    assert (await searched(app_client, key, ["gamma"])).status_code == 404
    kept = await patch(app_client, made, "widened", {"role": "editor"})
    assert kept.json()["collections"] == ["alpha"], kept.text

    r = await patch(app_client, made, "widened", {"collections": None})
    assert r.status_code == 200 and r.json()["collections"] is None, r.text
    hits = (await searched(app_client, key, ["alpha", "gamma"])).json()["results"]
    assert {h["document_id"] for h in hits} == {made["alpha_doc"], made["gamma_doc"]}
    links = (
        "SELECT count(*) FROM api_key_collections kc JOIN api_keys k ON k.id = kc.key_id WHERE k.name = $1"
    )
    assert await runtime.pool.fetchval(links, "widened") == 0

    # The command line's flag, back to a list and to every collection again; never both at once.
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rag_server", "keys", "update", "widened", *args]
        return subprocess.run(
            command, env=settings_env(settings), capture_output=True, text=True, timeout=180
        )

    narrowed = await asyncio.to_thread(cli, "--collections", "beta")
    assert narrowed.stdout.strip() == "key 'widened' is now an editor key for beta", narrowed.stderr
    widened = await asyncio.to_thread(cli, "--every-collection")
    assert widened.stdout.strip() == "key 'widened' is now an editor key for every collection", widened.stderr
    both = await asyncio.to_thread(cli, "--every-collection", "--collections", "beta")
    assert both.returncode != 0 and "not allowed with argument" in both.stderr, both.stderr
