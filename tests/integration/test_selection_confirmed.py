"""POST /documents/delete and /documents/metadata/matching act on the set the caller confirmed: the
selection is matched again once its documents are locked (one edited meanwhile so that it no longer
matches is left alone), and with `expected_count` nothing is changed unless that set is that many (409
`selection_changed`). Through the real API client, against the real app on a socket (no worker: the
documents stay queued, which both routes act on as on ready ones)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from rag_server.client import AsyncClient, ClientError

T = TypeVar("T")


@pytest.fixture
async def client(live_app_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(live_app_url) as c:
        yield c


async def _upload(client: AsyncClient, tmp_path: Path, suite: str, count: int) -> list[str]:
    """`count` documents of the default collection with metadata {"suite": suite}, ids in name order."""
    paths = []
    for i in range(count):
        paths.append(tmp_path / f"{suite}-{i}.txt")
        paths[-1].write_bytes(f"{suite} document {i} says something of its own.".encode())
    uploaded = await client.upload(paths, metadata={"suite": suite})
    by_name = {t.filename: str(t.document_id) for t in uploaded.tasks}
    return [by_name[p.name] for p in paths]


async def _ids(client: AsyncClient, metadata: dict[str, Any]) -> list[str]:
    return sorted(str(d.id) for d in (await client.documents(metadata=metadata, limit=500)).items)


async def test_a_delete_of_another_count_than_confirmed_deletes_nothing(
    client: AsyncClient, tmp_path: Path
) -> None:
    ids = await _upload(client, tmp_path, "confirm-delete", 3)
    selection = {"suite": "confirm-delete"}
    # A document uploaded after the user confirmed 2 (say): the selection holds 3.
    with pytest.raises(ClientError) as err:
        await client.delete_documents(metadata=selection, expected_count=2)
    assert (err.value.status, err.value.code) == (409, "selection_changed")
    assert "the selection now holds 3 documents, not the 2 confirmed" in str(err.value)
    assert "nothing was deleted" in str(err.value)
    assert await _ids(client, selection) == sorted(ids)
    with pytest.raises(ClientError, match="holds 3 documents, not the 4 confirmed") as err:
        await client.delete_documents(metadata=selection, expected_count=4)
    assert await _ids(client, selection) == sorted(ids)

    # With ids, what counts is what would be deleted: an id of no document (or of one not matching) does
    # not, as it is reported in `not_deleted`.
    nowhere = str(uuid4())
    named = [ids[0], ids[1], nowhere]
    with pytest.raises(ClientError, match="holds 2 documents, not the 3 confirmed") as err:
        await client.delete_documents(ids=named, metadata=selection, expected_count=3)
    assert await _ids(client, selection) == sorted(ids)
    both = await client.delete_documents(ids=named, metadata=selection, expected_count=2)
    assert sorted(map(str, both.deleted)) == sorted(ids[:2])
    assert [str(i) for i in both.not_deleted] == [nowhere]
    assert await _ids(client, selection) == [ids[2]]

    last = await client.delete_documents(metadata=selection, expected_count=1)
    assert [str(i) for i in last.deleted] == [ids[2]]
    # Nothing left matches: 0 is a count like another.
    none = await client.delete_documents(metadata=selection, expected_count=0)
    assert none.deleted == [] and none.not_deleted == []
    with pytest.raises(ClientError, match="holds 0 documents, not the 1 confirmed"):
        await client.delete_documents(metadata=selection, expected_count=1)


async def test_a_metadata_edit_of_another_count_than_confirmed_writes_nothing(
    client: AsyncClient, tmp_path: Path
) -> None:
    ids = await _upload(client, tmp_path, "confirm-edit", 3)
    selection = {"suite": "confirm-edit"}
    with pytest.raises(ClientError) as err:
        await client.update_matching(values={"checked": True}, metadata=selection, expected_count=2)
    assert (err.value.status, err.value.code) == (409, "selection_changed")
    assert "the selection now holds 3 documents, not the 2 confirmed; nothing was updated" in str(
        err.value
    ).replace(" (documents were added, changed or deleted meanwhile)", "")
    for i in ids:
        assert (await client.document(i)).metadata == selection
    assert await _ids(client, {"checked": True}) == []

    done = await client.update_matching(
        values={"checked": True}, metadata=selection, expected_count=3, mode="merge"
    )
    assert sorted(map(str, done.updated)) == sorted(ids) and done.not_updated == []
    for i in ids:
        assert (await client.document(i)).metadata == {**selection, "checked": True}

    # Ids named: those still matching count; the others come back in `not_updated`, as without the check.
    named = [ids[0], str(uuid4())]
    with pytest.raises(ClientError, match="holds 1 document, not the 2 confirmed"):
        await client.update_matching(values={"round": 2}, ids=named, metadata=selection, expected_count=2)
    one = await client.update_matching(values={"round": 2}, ids=named, metadata=selection, expected_count=1)
    assert [str(i) for i in one.updated] == [ids[0]] and [str(i) for i in one.not_updated] == [named[1]]
    assert await _ids(client, {"round": 2}) == [ids[0]]


async def test_expected_count_is_a_count(live_app_url: str) -> None:
    async with httpx.AsyncClient(base_url=live_app_url, timeout=60) as http:
        for bad in (-1, True, 1.5, 10**10, "two"):
            for path, extra in (("/documents/delete", {}), ("/documents/metadata/matching", {"set": {}})):
                body = {"metadata": {"suite": "x"}, "expected_count": bad, **extra}
                r = await http.post(path, json=body)
                assert r.status_code == 422, (path, bad, r.text)
                assert r.json()["detail"][0]["loc"][:2] == ["body", "expected_count"], r.text
        spec = (await http.get("/openapi.json")).json()
    for path in ("/documents/delete", "/documents/metadata/matching"):
        operation = spec["paths"][path]["post"]
        assert "409" in operation["responses"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        field = spec["components"]["schemas"][schema]["properties"]["expected_count"]
        assert "409" in field["description"] and "selection_changed" in field["description"]


async def _while_a_document_row_is_held(
    database_url: str, document_id: str, change: str, request: Awaitable[T]
) -> T:
    """`request` (an API call) sent while another transaction holds `document_id`'s row, having made
    `change` to it (SQL, `$1` the id) and not yet committed: the request reads the selection before the
    change (it matched then), and is let go once it waits for that row's lock, by the commit. This is
    "edited between the selection's read and its lock", made to happen every time."""
    holder = await asyncpg.connect(database_url)
    watcher = await asyncpg.connect(database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(change, UUID(document_id))
        sent = asyncio.ensure_future(request)
        try:
            for _ in range(600):  # at most 30 s; a statement waiting for a row lock of the documents table
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%FROM documents%FOR UPDATE%'"
                )
                if waiting or sent.done():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the request never waited for the document's row")
            assert not sent.done(), "the request ended before it waited for the held row"
        finally:
            await tx.commit()
        return await sent
    finally:
        await holder.close()
        await watcher.close()


MOVE = 'UPDATE documents SET metadata = \'{"suite": "moved"}\', updated_at = now() WHERE id = $1'


async def test_a_document_changed_before_its_lock_so_that_it_no_longer_matches_is_not_deleted(
    client: AsyncClient, tmp_path: Path, database_url: str
) -> None:
    ids = await _upload(client, tmp_path, "race-delete", 3)
    deleted = await _while_a_document_row_is_held(
        database_url, ids[0], MOVE, client.delete_documents(metadata={"suite": "race-delete"})
    )
    assert sorted(map(str, deleted.deleted)) == sorted(ids[1:])
    assert (await client.document(ids[0])).metadata == {"suite": "moved"}
    # The same with the count the user confirmed: the 3 they saw are 2 once locked, nothing is deleted.
    again = await _upload(client, tmp_path, "race-delete-count", 3)
    selection = {"suite": "race-delete-count"}
    with pytest.raises(ClientError, match="holds 2 documents, not the 3 confirmed") as err:
        await _while_a_document_row_is_held(
            database_url, again[0], MOVE, client.delete_documents(metadata=selection, expected_count=3)
        )
    assert err.value.code == "selection_changed"
    assert await _ids(client, selection) == sorted(again[1:])
    assert (await client.document(again[0])).metadata == {"suite": "moved"}


async def test_a_document_changed_before_its_lock_so_that_it_no_longer_matches_is_not_edited(
    client: AsyncClient, tmp_path: Path, database_url: str
) -> None:
    ids = await _upload(client, tmp_path, "race-edit", 3)
    selection = {"suite": "race-edit"}
    edited = await _while_a_document_row_is_held(
        database_url,
        ids[0],
        MOVE,
        client.update_matching(values={"seen": 1}, metadata=selection, expected_count=2),
    )
    assert sorted(map(str, edited.updated)) == sorted(ids[1:]) and edited.not_updated == []
    assert (await client.document(ids[0])).metadata == {"suite": "moved"}
    assert await _ids(client, {"seen": 1}) == sorted(ids[1:])
