"""Two `rag-server import` processes started at once into one new collection share it: the one that
created it and then fails must not take it away while the other is still embedding its first batch
(nothing of it is in the collection yet). Each running import holds the collection's import lock
shared; the failed one's cleanup takes it exclusive with a try, and keeps the collection when it cannot.

Both imports are real CLI processes on one database; the fake embedding server holds each one's first
batch (HOLD-<tag>) so the two overlap where the race was, and rejects the failing one's (REJECT400)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from rag_server.collections.store import delete_collection
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.porting.service import import_jsonl_file
from rag_server.porting.store import IMPORT_LOCK_CLASS, ensure_collection
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import wait_for
from tests.support.processes import Proc, settings_env, start


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


def export_file(path: Path, text: str) -> Path:
    """A version-1 export without vectors (the import embeds its one document: the fake holds it)."""
    header = {"format": "rag-server-export", "version": 1, "collection": "x", "vectors": False}
    doc = {
        "type": "document",
        "id": str(uuid.uuid4()),
        "filename": f"{path.stem}.txt",
        "chunks": [{"index": 0, "text": text}],
    }
    path.write_text(json.dumps(header) + "\n" + json.dumps(doc) + "\n", encoding="utf-8")
    return path


async def held(fake: FakeEmbeddingServer, tag: str, proc: Proc) -> None:
    """Until the import's first batch waits at the fake's HOLD-<tag> (it has its collection by then)."""

    def holding() -> bool:
        assert proc.popen.poll() is None, proc.log()
        return fake.held[tag] > 0

    await asyncio.to_thread(wait_for, holding, 240, f"{tag} embedding")


async def documents(runtime: Runtime, collection: str) -> list[str] | None:
    """The collection's document names; None: no such collection."""
    row = await runtime.pool.fetchrow(
        "SELECT array(SELECT d.filename FROM documents d WHERE d.collection_id = k.id ORDER BY 1) AS names"
        " FROM collections k WHERE k.name = $1",
        collection,
    )
    return None if row is None else list(row["names"])


async def test_a_failed_import_keeps_the_new_collection_another_import_is_writing_into(
    settings: Settings, runtime: Runtime, fake: FakeEmbeddingServer, tmp_path: Path
) -> None:
    """The failing import created the collection; the other found it and was embedding its first batch.
    The failed one deleted the collection (it was still empty), and the other's write then failed."""
    failing = export_file(tmp_path / "failing.jsonl", "The heron waits at dawn. HOLD-shareda REJECT400")
    going = export_file(tmp_path / "going.jsonl", "The turbine turns at dusk. HOLD-sharedb")
    env = settings_env(settings)
    command = ["import", "jsonl", "--collection", "shared", "--quiet"]
    first = start([*command, str(failing)], env, tmp_path / "first.log")
    second: Proc | None = None
    try:
        await held(fake, "shareda", first)  # it created `shared`, and embeds
        second = start([*command, str(going)], env, tmp_path / "second.log")
        await held(fake, "sharedb", second)  # it found `shared`, and embeds
        fake.release("shareda")  # the first import fails: the embedding service refuses its text
        assert await asyncio.to_thread(first.popen.wait, 120) == 1, first.log()
        assert "created collection shared" in first.log(), first.log()
        assert "kept the collection shared this import created: another import" in first.log(), first.log()
        assert await documents(runtime, "shared") == []
        fake.release("sharedb")
        assert await asyncio.to_thread(second.popen.wait, 120) == 0, second.log()
    finally:
        fake.release("shareda")
        fake.release("sharedb")
        for proc in (first, second):
            if proc is not None:
                proc.kill()
    assert "1 created" in second.log(), second.log()
    assert await documents(runtime, "shared") == ["going.txt"]

    # Alone, a failed import still takes away the collection it created.
    alone = start([*command[:3], "alone", "--quiet", str(failing)], env, tmp_path / "alone.log")
    assert await asyncio.to_thread(alone.popen.wait, 120) == 1, alone.log()
    assert "removed the collection alone this import created" in alone.log(), alone.log()
    # The embedding service's refusal is one sentence (it was Python's traceback of EmbeddingError).
    assert "Traceback" not in alone.log(), alone.log()
    assert alone.log().strip().splitlines()[-1].startswith("error: "), alone.log()
    assert await documents(runtime, "alone") is None


async def test_an_import_that_found_the_collection_as_a_cleanup_removed_it_makes_it_again(
    runtime: Runtime, tmp_path: Path
) -> None:
    """An import looks its collection up, then takes its lock: a failed import's cleanup may delete the
    collection between the two. The import waits for the cleanup's transaction, finds the collection gone,
    and makes it again (it wrote into a deleted collection: a ForeignKeyViolationError)."""
    file = export_file(tmp_path / "late.jsonl", "The glacier retreats in summer.")
    collection_id, created = await ensure_collection(runtime.pool, "late")
    assert created
    async with runtime.pool.acquire() as cleanup:  # a cleanup that took the lock, deleting `late`
        assert await cleanup.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2::uuid::text))", IMPORT_LOCK_CLASS, collection_id
        )
        importing = asyncio.create_task(
            import_jsonl_file(runtime, file, collection="late", quiet=True, report=lambda _: None)
        )
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            f" AND classid = {IMPORT_LOCK_CLASS}::oid"
        )
        async with asyncio.timeout(60):
            while not await runtime.pool.fetchval(waiting):
                assert not importing.done(), importing
                await asyncio.sleep(0.05)
        await cleanup.execute("DELETE FROM collections WHERE id = $1", collection_id)
    counts = await asyncio.wait_for(importing, 120)
    assert counts.created == 1
    assert await documents(runtime, "late") == ["late.txt"]
    assert await runtime.pool.fetchval("SELECT id FROM collections WHERE name = 'late'") != collection_id


async def test_a_collection_deleted_while_an_import_embeds_ends_it_with_one_sentence(
    settings: Settings, runtime: Runtime, fake: FakeEmbeddingServer, tmp_path: Path
) -> None:
    """An admin deletes the collection while an import embeds a batch for it: the batch's write found no
    collection row (a ForeignKeyViolationError traceback). It now holds the row as an upload does (KEY
    SHARE), so the delete and the write take turns, and the import ends in one `error:` line."""
    file = export_file(tmp_path / "doomed.jsonl", "The comet returns. HOLD-doomed")
    command = ["import", "jsonl", "--collection", "doomed", "--quiet", str(file)]
    proc = start(command, settings_env(settings), tmp_path / "doomed.log")
    try:
        await held(fake, "doomed", proc)
        await delete_collection(runtime.pool, runtime.queue, "doomed", force=True)
        fake.release("doomed")
        assert await asyncio.to_thread(proc.popen.wait, 120) == 1, proc.log()
    finally:
        fake.release("doomed")
        proc.kill()
    assert "Traceback" not in proc.log(), proc.log()
    last = proc.log().strip().splitlines()[-1]
    assert last.startswith("error: the collection was deleted while this import ran"), proc.log()
    assert await documents(runtime, "doomed") is None
