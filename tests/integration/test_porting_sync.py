"""Imports over time: running one again is a sync FROM THE SOURCE (what users did here since stays,
what the source changed comes in as a new version that chat history shows as such), an export imported
back into its own collection is the same documents (never a copy), and what an export says about a
document (name, type, heading paths, locations) comes back with it.

The real application in this process, a real `rag-server worker` subprocess for uploads and
replacements, the CLI as subprocesses; embeddings from the fake Ollama server (tests/fakes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.porting.models import ImportCounts
from rag_server.porting.service import export_jsonl, import_chroma, import_jsonl_file
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.chroma_stores import update_chroma, write_chroma
from tests.support.processes import Proc, rag_server_cli, settings_env, start_worker

HERON = [
    "The grey heron hunts fish in shallow wetlands at dawn.",
    "Herons build large nests called heronries in tall trees.",
]
TURBINE = "Wind turbines convert the kinetic energy of moving air into electricity."
SOURDOUGH = "Sourdough bread rises with wild yeast and lactobacilli bacteria."
USERS_SOURDOUGH = b"Our own sourdough notes: feed the starter twice a day in summer."
NEW_HERON = "Herons roost together in colonies beside quiet lakes."

NOTES_MD = b"""# Field guide

## Wetlands

The grey heron hunts fish in shallow wetlands at dawn.

## Forests

Woodpeckers drum on dead trunks to claim their territory.
"""
PEOPLE_CSV = b"name,city\nAda,London\nGrace,Arlington\n"


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake, worker_poll_interval_s=0.1)


@pytest.fixture(scope="module")
def worker(settings: Settings, runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One worker for the module (after `runtime`: the database is migrated)."""
    proc = start_worker(settings_env(settings), tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()


async def wait_done(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    for _ in range(1200):
        status = (await client.get(f"/tasks/{batch_id}/status")).json()
        if status["done"]:
            return dict(status)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"batch {batch_id} not done: {status}")


async def documents_of(runtime: Runtime, collection: str) -> dict[str, dict[str, Any]]:
    """filename -> the document's row (id, version, replaced_at, metadata, types) and chunk texts."""
    rows = await runtime.pool.fetch(
        """
        SELECT d.id, d.filename, d.version, d.replaced_at, d.metadata, d.file_type, d.content_type,
               array(SELECT c.text FROM chunks c WHERE c.document_id = d.id ORDER BY c.chunk_index) AS texts
        FROM documents d JOIN collections k ON k.id = d.collection_id WHERE k.name = $1
        """,
        collection,
    )
    return {
        r["filename"]: {**dict(r), "metadata": dict(r["metadata"]), "texts": list(r["texts"])} for r in rows
    }


def counted(counts: ImportCounts) -> tuple[int, int, int]:
    return counts.created, counts.updated, counts.unchanged


async def cited(client: httpx.AsyncClient, session: str) -> list[dict[str, Any]]:
    messages = (await client.get(f"/chat/history/{session}")).json()["messages"]
    return [s for m in messages for s in m["sources"]]


async def test_a_re_run_keeps_users_changes_and_brings_source_changes_as_new_versions(
    runtime: Runtime, app_client: httpx.AsyncClient, worker: Proc, tmp_path: Path
) -> None:
    source = tmp_path / "chroma"
    write_chroma(
        source,
        [
            ("heron-0", HERON[0], {"source": "heron.txt", "start_index": 0}),
            ("heron-1", HERON[1], {"source": "heron.txt", "start_index": 100}),
            ("turbine-0", TURBINE, {"source": "turbine.txt"}),
            ("sourdough-0", SOURDOUGH, {"source": "sourdough.txt"}),
        ],
    )

    async def run() -> ImportCounts:
        return await import_chroma(runtime, source, collection="sync", quiet=True, report=lambda _: None)

    assert counted(await run()) == (3, 0, 0)
    docs = await documents_of(runtime, "sync")
    heron, turbine, sourdough = (str(docs[f"{n}.txt"]["id"]) for n in ("heron", "turbine", "sourdough"))
    answer = await app_client.post(
        "/query", json={"query": "heron", "collections": ["sync"], "filters": {"document_ids": [heron]}}
    )
    assert answer.status_code == 200, answer.text
    session = answer.json()["session_id"]
    before = await cited(app_client, session)
    assert before and all((s["document_version"], s["stale"]) == (1, False) for s in before), answer.json()

    # Users' own changes: a metadata key by PATCH, a new file by PUT (version 2 once the worker swaps it).
    patched = await app_client.patch(
        f"/documents/{turbine}", json={"metadata": {"owner": "ops"}, "mode": "merge"}
    )
    assert patched.status_code == 200, patched.text
    put = await app_client.put(
        f"/documents/{sourdough}/file", files={"file": ("sourdough.txt", USERS_SOURDOUGH, "text/plain")}
    )
    assert put.status_code == 202, put.text
    assert (await wait_done(app_client, put.json()["batch_id"]))["tasks"][0]["status"] == "completed"
    edited = await documents_of(runtime, "sync")
    assert edited["sourdough.txt"]["version"] == 2

    # The source did not change: nothing is written, and both changes stay.
    again = await run()
    assert (*counted(again), again.chunks) == (0, 0, 3, 0), again
    assert await documents_of(runtime, "sync") == edited
    assert edited["turbine.txt"]["metadata"] == {"source": "turbine.txt", "owner": "ops"}
    assert edited["sourdough.txt"]["texts"] == [USERS_SOURDOUGH.decode()]

    # The source changed one record: that document comes in from the source as a new version.
    update_chroma(source, "heron-1", NEW_HERON)
    assert counted(await run()) == (0, 1, 2)
    synced = await documents_of(runtime, "sync")
    assert synced["heron.txt"]["texts"] == [HERON[0], NEW_HERON]
    assert synced["heron.txt"]["version"] == 2 and synced["heron.txt"]["replaced_at"] is not None
    assert {n: synced[n] for n in ("turbine.txt", "sourdough.txt")} == {
        n: edited[n] for n in ("turbine.txt", "sourdough.txt")
    }
    sources = await cited(app_client, session)
    assert sources and all(
        (s["document_version"], s["current_version"], s["stale"]) == (1, 2, True) for s in sources
    ), sources
    assert counted(await run()) == (0, 0, 3)


async def test_a_document_imported_before_fingerprints_is_compared_once(
    runtime: Runtime, app_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    source = tmp_path / "chroma"
    write_chroma(
        source,
        [("turbine-0", TURBINE, {"source": "turbine.txt"}), ("sourdough-0", SOURDOUGH, {"source": "s.txt"})],
    )

    async def run() -> ImportCounts:
        return await import_chroma(runtime, source, collection="legacy", quiet=True, report=lambda _: None)

    assert counted(await run()) == (2, 0, 0)
    fingerprints = (
        "SELECT d.import_fingerprint FROM documents d JOIN collections k ON k.id = d.collection_id"
        " WHERE k.name = 'legacy' ORDER BY d.filename"
    )
    recorded = [r["import_fingerprint"] for r in await runtime.pool.fetch(fingerprints)]
    assert all(recorded)
    # As an import before migration 0018 left them: no fingerprint.
    async with owner_connection(runtime.database_url) as conn:
        await conn.execute(
            "UPDATE documents SET import_fingerprint = NULL"
            " WHERE collection_id = (SELECT id FROM collections WHERE name = 'legacy')"
        )
    assert counted(await run()) == (0, 0, 2)
    assert [r["import_fingerprint"] for r in await runtime.pool.fetch(fingerprints)] == recorded
    # From then on users' changes stay.
    turbine = str((await documents_of(runtime, "legacy"))["turbine.txt"]["id"])
    patched = await app_client.patch(f"/documents/{turbine}", json={"metadata": {"owner": "ops"}})
    assert patched.status_code == 200, patched.text
    assert counted(await run()) == (0, 0, 2)
    assert (await documents_of(runtime, "legacy"))["turbine.txt"]["metadata"] == {"owner": "ops"}


@pytest.fixture(scope="module")
async def uploaded(app_client: httpx.AsyncClient, worker: Proc) -> dict[str, str]:
    """Collection `up`: a Markdown file in a folder (heading paths) and a CSV (row locations), uploaded and
    parsed."""
    assert (await app_client.post("/collections", json={"name": "up"})).status_code == 201
    files = [
        ("files", ("guides/notes.md", NOTES_MD, "text/markdown")),  # a name with its folder
        ("files", ("people.csv", PEOPLE_CSV, "text/csv")),
    ]
    r = await app_client.post("/upload", files=files, data={"collection": "up"})
    assert r.status_code == 202, r.text
    status = await wait_done(app_client, r.json()["batch_id"])
    assert [t["status"] for t in status["tasks"]] == ["completed", "completed"], status
    return {t["filename"]: t["document_id"] for t in status["tasks"]}


CHUNK_PLACE = """
SELECT d.filename, c.chunk_index, c.text, c.page, c.heading_path, c.location
FROM chunks c JOIN documents d ON d.id = c.document_id JOIN collections k ON k.id = d.collection_id
WHERE k.name = $1 ORDER BY d.filename, c.chunk_index
"""


async def test_an_export_keeps_names_types_headings_and_locations(
    runtime: Runtime, app_client: httpx.AsyncClient, uploaded: dict[str, str], tmp_path: Path
) -> None:
    file = tmp_path / "typed.jsonl"
    await export_jsonl(runtime, "up", file, quiet=True, report=lambda _: None)
    lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()[1:]]
    by_name = {d["filename"]: d for d in lines}
    assert (by_name["people.csv"]["file_type"], by_name["people.csv"]["content_type"]) == (
        "csv",
        "text/csv; charset=utf-8",
    )
    assert any(c["heading_path"] for c in by_name["guides/notes.md"]["chunks"]), by_name["guides/notes.md"]
    assert all(c["location"] for c in by_name["people.csv"]["chunks"]), by_name["people.csv"]

    counts = await import_jsonl_file(runtime, file, collection="typed", quiet=True, report=lambda _: None)
    assert counted(counts) == (2, 0, 0)
    source, copy = await documents_of(runtime, "up"), await documents_of(runtime, "typed")
    assert sorted(copy) == ["guides/notes.md", "people.csv"]  # the folder kept
    for name in copy:
        assert copy[name]["file_type"] == source[name]["file_type"]
        assert copy[name]["texts"] == source[name]["texts"]
        # Its bytes are the chunk texts: served as text, whatever the file was.
        assert copy[name]["content_type"] == "text/plain; charset=utf-8"
    rows = [dict(r) for r in await runtime.pool.fetch(CHUNK_PLACE, "up")]
    assert [dict(r) for r in await runtime.pool.fetch(CHUNK_PLACE, "typed")] == rows
    assert any(r["heading_path"] for r in rows) and any(r["location"] for r in rows)

    download = await app_client.get(f"/documents/{copy['people.csv']['id']}/download")
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert download.text == "\n\n".join(copy["people.csv"]["texts"])
    # ... and saved under a name that says so, not as a CSV file it is not.
    assert 'filename="people.csv.txt"' in download.headers["content-disposition"]


async def test_an_export_imported_back_into_its_own_collection_is_the_same_documents(
    settings: Settings,
    runtime: Runtime,
    app_client: httpx.AsyncClient,
    uploaded: dict[str, str],
    tmp_path: Path,
) -> None:
    file = tmp_path / "up.jsonl"
    done = await asyncio.to_thread(
        rag_server_cli, settings, "export", "--collection", "up", str(file), "--with-vectors", timeout_s=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    before = await documents_of(runtime, "up")

    def back(collection: str) -> str:
        run = rag_server_cli(
            settings, "import", "jsonl", str(file), "--collection", collection, "--quiet", timeout_s=300
        )
        assert run.returncode == 0 and "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
        return run.stdout

    out = await asyncio.to_thread(back, "up")
    assert "0 created, 0 updated, 2 unchanged" in out, out
    assert await documents_of(runtime, "up") == before  # no copy, nothing rewritten

    # Changed here after the export: an uploaded file is never written over by the export's chunk
    # text (its original bytes would be gone, and the same file uploaded again would not be a duplicate).
    people = uploaded["people.csv"]
    original = (await app_client.get(f"/documents/{people}/download")).content
    patched = await app_client.patch(f"/documents/{people}", json={"metadata": {"owner": "hr"}})
    assert patched.status_code == 200, patched.text
    out = await asyncio.to_thread(back, "up")
    assert "0 created, 0 updated, 1 unchanged" in out and ": kept as it is" in out, out
    kept = (await documents_of(runtime, "up"))["people.csv"]
    assert (kept["id"], kept["version"], kept["metadata"]) == (UUID(people), 1, {"owner": "hr"})
    download = await app_client.get(f"/documents/{people}/download")
    assert download.content == original and download.headers["content-type"].startswith("text/csv")
    assert 'filename="people.csv"' in download.headers["content-disposition"]  # its own file: its name
    assert len(await documents_of(runtime, "up")) == 2

    # Into another collection: a copy, the same one on every re-run.
    assert "2 created, 0 updated, 0 unchanged" in await asyncio.to_thread(back, "up-copy")
    assert "0 created, 0 updated, 2 unchanged" in await asyncio.to_thread(back, "up-copy")
    copy = await documents_of(runtime, "up-copy")
    assert sorted(copy) == ["guides/notes.md", "people.csv"]  # the folder kept
    assert {str(d["id"]) for d in copy.values()}.isdisjoint(uploaded.values())
