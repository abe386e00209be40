"""Two Chroma stores whose collections share a name (LangChain's `langchain`, the same `notes` here) make
the same document ids for the same keys. Importing the second into the collection of the first used to
update the first's documents from it, silently, as new versions; now it is refused before anything is
written (migration 0029 records each document's store), unless `--take-over` says so. The same store run
again still syncs.

The real chromadb package writes the stores; the importer runs in this process and as the CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.migrations import alembic_config
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.porting.models import ImportCounts, PortingError
from rag_server.porting.service import export_jsonl, import_chroma, import_jsonl_file
from tests.conftest import create_database
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.chroma_stores import update_chroma, write_chroma
from tests.support.processes import rag_server_cli

OURS = "Our install guide: run the installer, then sign in with your team account."
THEIRS = "Their install guide: unpack the archive and edit the configuration file by hand."


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


def two_stores(tmp_path: Path) -> tuple[Path, Path]:
    """Two directories, each with a Chroma collection `notes` holding a `guide.md` of its own."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    write_chroma(ours, [("1", OURS, {"source": "guide.md"})], seed=1)
    write_chroma(theirs, [("1", THEIRS, {"source": "guide.md"})], seed=2)
    return ours, theirs


async def run(runtime: Runtime, path: Path, collection: str, **options: bool) -> ImportCounts:
    return await import_chroma(
        runtime, path, collection=collection, quiet=True, report=lambda _: None, **options
    )


async def guide(runtime: Runtime, collection: str) -> tuple[int, list[str], str | None]:
    """The collection's guide.md: its version, chunk texts and the store recorded on it."""
    row = await runtime.pool.fetchrow(
        """
        SELECT d.version, d.import_source,
               array(SELECT c.text FROM chunks c WHERE c.document_id = d.id ORDER BY c.chunk_index) AS texts
        FROM documents d JOIN collections k ON k.id = d.collection_id
        WHERE k.name = $1 AND d.filename LIKE 'guide.md%'
        """,
        collection,
    )
    assert row is not None
    return row["version"], list(row["texts"]), row["import_source"]


async def test_another_store_of_the_same_name_is_refused_before_anything_is_written(
    runtime: Runtime, tmp_path: Path
) -> None:
    ours, theirs = two_stores(tmp_path)
    assert (await run(runtime, ours, "refused")).created == 1
    with pytest.raises(PortingError, match=r"1 of the 1 documents .* another store .* --take-over"):
        await run(runtime, theirs, "refused")
    version, texts, store = await guide(runtime, "refused")
    assert (version, texts) == (1, [OURS])
    assert store is not None and store.startswith("chroma:")
    # Into a collection of its own, the other store imports as ever.
    assert (await run(runtime, theirs, "theirs")).created == 1


async def test_take_over_updates_from_the_new_store_which_then_syncs(
    runtime: Runtime, tmp_path: Path
) -> None:
    ours, theirs = two_stores(tmp_path)
    await run(runtime, ours, "moved")
    _, _, first = await guide(runtime, "moved")
    assert (await run(runtime, theirs, "moved", take_over=True)).updated == 1
    version, texts, second = await guide(runtime, "moved")
    assert (version, texts) == (2, [THEIRS]) and second != first
    again = await run(runtime, theirs, "moved")  # the store it took over from is now the other one
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
    with pytest.raises(PortingError, match="another store"):
        await run(runtime, ours, "moved")


async def test_a_store_rebuilt_from_scratch_takes_over_its_unchanged_documents_too(
    runtime: Runtime, tmp_path: Path
) -> None:
    """A Chroma directory deleted and written again (a pipeline rebuilding its store) is another store to
    the import: --take-over once, and its later runs sync. A document it holds unchanged kept the old
    store's name, so every later run without --take-over was refused again."""
    ours = tmp_path / "ours"
    write_chroma(ours, [("1", OURS, {"source": "guide.md"}), ("2", THEIRS, {"source": "other.md"})], seed=1)
    await run(runtime, ours, "rebuilt")
    rebuilt = tmp_path / "rebuilt"
    changed = OURS + " Ask IT for a licence first."
    write_chroma(rebuilt, [("1", changed, {"source": "guide.md"}), ("2", THEIRS, {"source": "other.md"})])
    with pytest.raises(PortingError, match="2 of the 2 documents"):
        await run(runtime, rebuilt, "rebuilt")
    taken = await run(runtime, rebuilt, "rebuilt", take_over=True)
    assert (taken.updated, taken.unchanged) == (1, 1)
    again = await run(runtime, rebuilt, "rebuilt")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


async def test_two_stores_imported_at_once_never_overwrite_each_other(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Both imports pass the check before either writes: the second writer replaced the first's document.
    The check is made again under each batch's row locks, so one import writes and the other is refused."""
    ours, theirs = two_stores(tmp_path)
    for attempt in range(3):
        collection = f"race{attempt}"
        results = await asyncio.gather(
            run(runtime, ours, collection), run(runtime, theirs, collection), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, PortingError)]
        written = [r for r in results if isinstance(r, ImportCounts)]
        assert len(refused) == 1 and "another store" in str(refused[0]), results
        assert len(written) == 1 and written[0].created == 1
        version, texts, _ = await guide(runtime, collection)
        assert version == 1 and texts == ([OURS] if results[0] is written[0] else [THEIRS])


async def test_the_same_store_run_again_syncs_its_changes(runtime: Runtime, tmp_path: Path) -> None:
    ours, _ = two_stores(tmp_path)
    await run(runtime, ours, "synced")
    update_chroma(ours, "1", OURS + " Ask IT for a licence first.")
    assert (await run(runtime, ours, "synced")).updated == 1
    assert (await guide(runtime, "synced"))[:2] == (2, [OURS + " Ask IT for a licence first."])


async def test_a_document_imported_before_0029_is_claimed_by_its_next_import(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    ours, theirs = two_stores(tmp_path)
    await run(runtime, ours, "older")
    async with owner_connection(runtime.database_url) as owner:  # as a database imported before 0029
        await owner.execute("UPDATE documents SET import_source = NULL")
    assert (await run(runtime, ours, "older")).unchanged == 1
    assert (await guide(runtime, "older"))[2] is not None
    with pytest.raises(PortingError, match="another store"):
        await run(runtime, theirs, "older")


async def test_the_cli_refuses_in_one_line_and_takes_over_when_told(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    ours, theirs = two_stores(tmp_path)
    await run(runtime, ours, "cli")
    refused = rag_server_cli(settings, "import", "chroma", str(theirs), "--collection", "cli", "--quiet")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--take-over" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr
    assert (await guide(runtime, "cli"))[:2] == (1, [OURS])
    taken = rag_server_cli(
        settings, "import", "chroma", str(theirs), "--collection", "cli", "--quiet", "--take-over"
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert (await guide(runtime, "cli"))[:2] == (2, [THEIRS])


async def test_0029_adds_the_column_empty_and_its_downgrade_removes_it(
    pg_server: str, tmp_path: Path
) -> None:
    """A database imported before 0029 holds no store for its documents (the next import claims them);
    the downgrade drops the column and an upgrade again adds it back empty."""
    url = await create_database(pg_server, "store0029")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, "0028_bm25_split_words")
    conn = await asyncpg.connect(url)
    column = (
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'documents' AND column_name = $1"
    )
    try:
        await conn.execute(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " import_fingerprint) VALUES ('a.txt', 'txt', 'text/plain', 1, $1, 'ready', 'f')",
            "a" * 64,
        )
        await asyncio.to_thread(command.upgrade, cfg, "0029_import_source")
        assert await conn.fetchval("SELECT import_source FROM documents") is None
        await conn.execute("UPDATE documents SET import_source = 'chroma:x'")
        await asyncio.to_thread(command.downgrade, cfg, "0028_bm25_split_words")
        assert await conn.fetchval(column, "import_source") == 0
        assert await conn.fetchval("SELECT import_fingerprint FROM documents") == "f"
        await asyncio.to_thread(command.upgrade, cfg, "0029_import_source")
        assert await conn.fetchval("SELECT import_source FROM documents") is None
    finally:
        await conn.close()


async def test_an_export_keeps_each_documents_store_imported_into_a_fresh_database(
    runtime: Runtime, pg_server: str, fake: FakeEmbeddingServer, data_dir: Path, tmp_path: Path
) -> None:
    """An export did not hold the store each document came from (0029): imported into another database it
    was lost. The export writes it on each document's line; `import jsonl` records it again, and fills it
    on a copy imported before (an unchanged document, like the Chroma import's claim)."""
    ours, _ = two_stores(tmp_path)
    await run(runtime, ours, "exported")
    _, _, store = await guide(runtime, "exported")
    assert store is not None and store.startswith("chroma:")
    file = tmp_path / "exported.jsonl"
    await export_jsonl(runtime, "exported", file, quiet=True, report=lambda _: None)
    assert json.loads(file.read_text(encoding="utf-8").splitlines()[1])["import_source"] == store

    fresh = fake_embedding_settings(await create_database(pg_server, "fresh"), data_dir, fake)
    async with open_runtime(fresh, migrate=True) as other:
        counts = await import_jsonl_file(
            other, file, collection="restored", quiet=True, report=lambda _: None
        )
        assert counts.created == 1
        assert await guide(other, "restored") == (1, [OURS], store)
        async with owner_connection(other.database_url) as owner:  # as a copy imported before the fix
            await owner.execute("UPDATE documents SET import_source = NULL")
        again = await import_jsonl_file(other, file, collection="restored", quiet=True, report=lambda _: None)
        assert again.unchanged == 1
        assert await guide(other, "restored") == (1, [OURS], store)


async def test_an_export_line_without_a_store_still_imports(runtime: Runtime, tmp_path: Path) -> None:
    """A file exported before the lines held `import_source` (or one of an uploaded document: null)."""
    file = tmp_path / "older.jsonl"
    header = {"format": "rag-server-export", "version": 1, "collection": "x", "vectors": False}
    line = {
        "type": "document",
        "id": str(uuid.uuid4()),
        "filename": "guide.md",
        "chunks": [{"index": 0, "text": OURS}],
    }
    file.write_text(json.dumps(header) + "\n" + json.dumps(line) + "\n", encoding="utf-8")
    counts = await import_jsonl_file(runtime, file, collection="storeless", quiet=True, report=lambda _: None)
    assert counts.created == 1
    assert await guide(runtime, "storeless") == (1, [OURS], None)
