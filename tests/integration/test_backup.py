"""`rag-server backup` and `rag-server restore` as users run them: a round trip into a new embedded data
directory gives the same searches, bytes, BM25 statistics, chat, keys and queue; a backup taken while a
worker writes restores to a consistent state; a database holding data and a bad file are refused."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rag_server.access.keys import authenticate, create_key
from rag_server.access.models import CreateKey
from rag_server.chat import sessions
from rag_server.config import Settings
from rag_server.infra.backup import backup, restore
from rag_server.infra.backup_archive import MANIFEST_NAME, BackupError, libpq_target
from rag_server.infra.embedded_postgres import ensure_embedded_postgres
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval.models import SearchRequest
from rag_server.retrieval.service import search
from tests.conftest import create_database
from tests.support.ingest import enqueue, query, wait_for
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text, pdf_with_text

DOCS = {
    "zebrafish.md": "# Regeneration\n\nZebrafish regenerate cardiac muscle after injury; cardiomyocytes "
    "proliferate and restore the ventricle.",
    "insulin.txt": "Insulin resistance in type 2 diabetes raises blood glucose; metformin lowers hepatic "
    "glucose output.",
    "mice.txt": "Knockout mice lacking the gene showed reduced tumour growth and longer survival.",
}
PDF_PAGES = [
    "Glaciers retreat as summers warm; meltwater raises the river.",
    "Cardiac surgery outcomes improved with early mobilisation.",
    "Tumour suppressor genes in mice and their survival curves.",
]
QUERIES = ["heart regeneration after injury", "glucose metformin", "tumour survival in mice"]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag_server", *args], env=env, capture_output=True, text=True, timeout=300
    )


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(sql)


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = process_env("unused", data_dir)
    del env["DATABASE_URL"]
    return env


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    # Short path: an embedded server's unix socket lives under it (sun_path is 108 bytes).
    root = Path(tempfile.mkdtemp(prefix="ragb-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def source(runtime: Runtime) -> dict[str, Any]:
    """The source database: documents (one PDF with pages), a chat, an API key, a task still queued."""
    docs = [DirectDocument(n, t.encode(), {"source": "test"}) for n, t in DOCS.items()]
    docs.append(DirectDocument("glaciers.pdf", pdf_with_text(PDF_PAGES), {}))
    await ingest_documents_direct(runtime, docs)
    chat = await sessions.create_session(runtime.pool, title="t", search_type="hybrid", llm_model=None)
    for i in range(2):
        await sessions.append_exchange(
            runtime.pool,
            chat.id,
            question=f"question {i}",
            answer=f"answer {i}",
            answer_metadata={"sources": [i]},
            title_if_missing=None,
        )
    key = await create_key(runtime.pool, CreateKey(name="backup-test", role="reader"))
    [task] = await enqueue(runtime, [("queued.txt", b"Volcanic ash grounded the northern flights.")])
    return {"key": key.key, "task_id": task.task_id, "session_id": chat.id}


async def searches(rt: Runtime) -> dict[tuple[str, str], list[tuple[int, float]]]:
    out = {}
    for q in QUERIES:
        for kind in ("bm25", "vector", "hybrid"):
            reply = await search(rt, SearchRequest(query=q, search_type=kind, top_k=10))
            out[(q, kind)] = [(hit.chunk_id, hit.score) for hit in reply.results]
    return out


def snapshot(url: str, session_id: Any) -> dict[str, Any]:
    return {
        "bytes": query(url, "SELECT document_id, content FROM document_files ORDER BY document_id"),
        "stats": query(url, "SELECT * FROM bm25_stats"),
        "postings": query(url, "SELECT count(*) AS n, sum(tf) AS tf FROM bm25_postings"),
        "terms": query(url, "SELECT count(*) AS n FROM bm25_terms"),
        "chat": query(
            url,
            "SELECT id, role, content, metadata FROM chat_messages WHERE session_id = %s ORDER BY id",
            session_id,
        ),
        "queue": query(url, "SELECT msg_id, message FROM pgmq.q_ingest ORDER BY msg_id"),
    }


@pytest.fixture(scope="module")
async def restored(
    runtime: Runtime, source: dict[str, Any], scratch: Path
) -> AsyncIterator[tuple[Runtime, Path]]:
    """The source backed up with the CLI (DATABASE_URL) and restored with it into a new, empty embedded
    data directory (no DATABASE_URL: the command creates the cluster)."""
    assert runtime.settings.database_url
    file = scratch / "source.backup"
    made = cli("backup", str(file), env=process_env(runtime.settings.database_url, scratch / "src"))
    assert made.returncode == 0, made.stderr
    assert "backup written to" in made.stdout and "1 queue messages" in made.stdout
    data_dir = scratch / "restored"
    done = cli("restore", str(file), env=embedded_env(data_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restore complete" in done.stdout and "5 documents" in done.stdout, done.stdout
    embedded = ensure_embedded_postgres(data_dir / "pg")  # attaches to the cluster the restore started
    try:
        settings = Settings(database_url=embedded.uri, data_dir=data_dir)
        async with open_runtime(settings, embedder=runtime.embedder) as rt:
            yield rt, file
    finally:
        embedded.stop()


async def test_a_restore_gives_the_same_searches_bytes_statistics_chat_keys_and_queue(
    runtime: Runtime, source: dict[str, Any], restored: tuple[Runtime, Path], workers: list[Proc]
) -> None:
    rt, file = restored
    assert stat.S_IMODE(file.stat().st_mode) == 0o600  # every document, chat and key hash: owner only
    before, after = await searches(runtime), await searches(rt)
    assert before.keys() == after.keys()
    for case, hits in before.items():
        assert hits, case
        assert [h[0] for h in after[case]] == [h[0] for h in hits], case
        assert [h[1] for h in after[case]] == pytest.approx([h[1] for h in hits], abs=1e-6), case
    assert snapshot(rt.database_url, source["session_id"]) == snapshot(
        runtime.database_url, source["session_id"]
    )
    assert len(query(rt.database_url, "SELECT DISTINCT page FROM chunks WHERE page IS NOT NULL")) == 3
    # The key authenticates through the runtime role's pool: the role exists and is granted again.
    principal = await authenticate(rt.pool, source["key"], open_allowed=False)
    assert principal.name == "backup-test"

    # The queue resumes: a worker on the restored database completes the task that was waiting.
    env = process_env(rt.database_url, rt.settings.data_dir)
    workers.append(start_worker(env, rt.settings.data_dir / "worker.log"))
    task = source["task_id"]
    wait_for(
        lambda: (
            query(rt.database_url, "SELECT status FROM job_tasks WHERE id = %s", task)[0]["status"]
            == "completed"
        ),
        120,
        "the restored queued task",
    )
    assert query(rt.database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0
    [doc] = query(rt.database_url, "SELECT status, chunk_count FROM documents WHERE filename = 'queued.txt'")
    assert doc == {"status": "ready", "chunk_count": 1}


async def test_a_backup_taken_while_a_worker_writes_restores_consistent(
    pg_server: str, scratch: Path, workers: list[Proc]
) -> None:
    url = await create_database(pg_server, "bsrc")
    settings = Settings(database_url=url, data_dir=scratch / "busy")
    async with open_runtime(settings) as rt:
        await enqueue(rt, [(f"f{i:02}.txt", long_text(1500, seed=i).encode()) for i in range(20)])
    workers.append(start_worker(process_env(url, scratch / "busy"), scratch / "busy-worker.log"))
    done = "SELECT count(*) AS n FROM job_tasks WHERE status = 'completed'"
    wait_for(lambda: query(url, done)[0]["n"] >= 3, 120, "the worker's first documents")
    file = scratch / "busy.backup"
    manifest = await backup(url, settings, file, report=lambda _: None)
    workers[-1].stop()
    assert 0 < manifest.counts["documents"] - manifest.counts["queue messages"] < 20, manifest.counts

    target = await create_database(pg_server, "bdst")
    await restore(target, settings, file, force=False, report=lambda _: None)
    docs = query(target, "SELECT id, status, chunk_count FROM documents")
    assert len(docs) == 20
    indexes = {
        r["document_id"]: r["ix"]
        for r in query(
            target,
            "SELECT document_id, array_agg(chunk_index ORDER BY chunk_index) AS ix FROM chunks GROUP BY 1",
        )
    }
    for doc in docs:
        if doc["status"] == "ready":
            assert indexes[doc["id"]] == list(range(doc["chunk_count"])) and doc["chunk_count"] > 0
        else:
            assert doc["status"] in ("queued", "processing") and doc["id"] not in indexes
    tasks = query(target, "SELECT status, msg_id FROM job_tasks")
    messages = {r["msg_id"] for r in query(target, "SELECT msg_id FROM pgmq.q_ingest")}
    pending = {t["msg_id"] for t in tasks if t["status"] in ("queued", "processing")}
    assert pending == messages  # every unfinished task has its message, and no message is an orphan
    assert len(pending) == sum(doc["status"] != "ready" for doc in docs)


async def test_a_restore_refuses_a_database_with_data_and_a_bad_file(
    runtime: Runtime, restored: tuple[Runtime, Path], scratch: Path
) -> None:
    _, file = restored
    assert runtime.settings.database_url
    env = process_env(runtime.settings.database_url, scratch / "src")
    refused = cli("restore", str(file), env=env)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: the database") and "already holds data" in line and "--force" in line
    assert query(runtime.database_url, "SELECT count(*) AS n FROM documents")[0]["n"] == 5  # untouched

    missing = cli("restore", str(scratch / "nothing.backup"), env=env)
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"error: {scratch / 'nothing.backup'}: no such file or directory"
    ]

    garbage = scratch / "garbage.backup"
    garbage.write_bytes(b"not a backup at all" * 100)
    truncated = scratch / "truncated.backup"
    truncated.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    future = with_manifest(file, scratch / "future.backup", lambda m: m | {"schema_revision": "9999_future"})
    for bad, words in ((garbage, "not a rag-server backup"), (truncated, "damaged"), (future, "newer")):
        with pytest.raises(BackupError, match=words):
            await restore(runtime.database_url, runtime.settings, bad, force=True, report=lambda _: None)
    assert query(runtime.database_url, "SELECT count(*) AS n FROM documents")[0]["n"] == 5


def with_manifest(file: Path, copy: Path, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    """A copy of the backup `file` whose manifest is `change`d (the dump as it was)."""
    with tarfile.open(file) as src, tarfile.open(copy, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member)
            assert data is not None
            raw = data.read()
            if member.name == MANIFEST_NAME:
                raw = json.dumps(change(json.loads(raw))).encode()
                member.size = len(raw)
            dst.addfile(member, io.BytesIO(raw))
    return copy


async def test_a_backup_of_an_older_version_counting_fewer_tables_restores(
    runtime: Runtime, source: dict[str, Any], pg_server: str, scratch: Path
) -> None:
    """A manifest holds the counts its version took: one written before "stored responses" were counted
    lacks them. The restore compared every count it takes now with the manifest's, and refused every
    backup written before ("the backup recorded otherwise"). It compares the counts both know."""
    assert runtime.settings.database_url
    file = scratch / "counted.backup"
    manifest = await backup(runtime.settings.database_url, runtime.settings, file, report=lambda _: None)
    assert "stored responses" in manifest.counts

    def without_stored_responses(m: dict[str, Any]) -> dict[str, Any]:
        return m | {"counts": {k: v for k, v in m["counts"].items() if k != "stored responses"}}

    older = with_manifest(file, scratch / "older.backup", without_stored_responses)
    target = await create_database(pg_server, "bolder")
    restored = await restore(target, runtime.settings, older, force=False, report=lambda _: None)
    assert restored.counts["documents"] == manifest.counts["documents"]
    # A count that differs still fails the restore.
    wrong = with_manifest(
        file, scratch / "wrong.backup", lambda m: m | {"counts": m["counts"] | {"documents": 99}}
    )
    with pytest.raises(BackupError, match="recorded otherwise"):
        await restore(target, runtime.settings, wrong, force=True, report=lambda _: None)


def test_the_password_goes_to_the_environment_not_the_command_line() -> None:
    url, env = libpq_target("postgresql://owner:s%40cret@db.example:5432/rag")
    assert url == "postgresql://owner@db.example:5432/rag" and env["PGPASSWORD"] == "s@cret"


async def test_an_older_backup_is_migrated_forward_and_force_replaces_data(
    pg_server: str, scratch: Path
) -> None:
    from alembic import command

    from rag_server.infra.migrations import alembic_config, current_revision

    old = await create_database(pg_server, "bold")
    settings = Settings(database_url=old, data_dir=scratch / "old")
    await asyncio.to_thread(command.upgrade, alembic_config(old, settings), "0006_chat_external_ids")
    execute(
        old,
        "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status)"
        " VALUES ('a.txt', 'txt', 'text/plain', 1, repeat('a', 64), 'failed')",
    )
    file = scratch / "old.backup"
    manifest = await backup(old, settings, file, report=lambda _: None)
    assert manifest.schema_revision == "0006_chat_external_ids"

    target = await create_database(pg_server, "bnew")
    await restore(target, settings, file, force=False, report=lambda _: None)
    head = await asyncio.to_thread(current_revision, target, settings)
    assert head != manifest.schema_revision and head is not None
    assert query(target, "SELECT failures FROM job_tasks") == []  # 0007's column exists
    with pytest.raises(BackupError, match="already holds data"):
        await restore(target, settings, file, force=False, report=lambda _: None)
    execute(target, "UPDATE documents SET filename = 'changed.txt'")
    await restore(target, settings, file, force=True, report=lambda _: None)
    assert query(target, "SELECT filename FROM documents") == [{"filename": "a.txt"}]


async def test_a_non_superuser_owner_restores_over_extensions_its_administrator_created(
    pg_server: str, restored: tuple[Runtime, Path], scratch: Path
) -> None:
    """Production: DATABASE_URL is the database's owner, not a superuser, and the extensions were created
    by an administrator beforehand (the owner may not comment on them)."""
    from rag_server.infra.database import as_user, with_database

    _, file = restored
    role, database = f"owner_{uuid.uuid4().hex[:8]}", f"bown_{uuid.uuid4().hex[:8]}"
    execute(pg_server, f"CREATE ROLE {role} LOGIN PASSWORD 'pw' CREATEROLE")
    try:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database} OWNER {role}")
        execute(with_database(pg_server, database), "CREATE EXTENSION vector")
        owner_url = as_user(with_database(pg_server, database), role, "pw")
        settings = Settings(database_url=owner_url, data_dir=scratch / "owner")
        await restore(owner_url, settings, file, force=False, report=lambda _: None)
        assert query(owner_url, "SELECT count(*) AS n FROM documents")[0]["n"] == 5
        assert query(owner_url, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [
            {"tableowner": role}
        ]
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


async def test_a_backup_refuses_a_queue_whose_messages_pg_dump_would_leave_out(
    pg_server: str, scratch: Path
) -> None:
    """pgmq installed as an extension before 1.6 makes its queue tables extension members: pg_dump skips
    their rows. Simulated by making the queue table a member of another extension."""
    url = await create_database(pg_server, "bext")
    settings = Settings(database_url=url, data_dir=scratch / "ext")
    async with open_runtime(settings) as rt:
        await enqueue(rt, [("waiting.txt", b"A task whose message must not be lost.")])
    execute(url, "ALTER EXTENSION vector ADD TABLE pgmq.q_ingest")
    with pytest.raises(BackupError, match="would leave its messages out"):
        await backup(url, settings, scratch / "ext.backup", report=lambda _: None)
    assert not (scratch / "ext.backup").exists()


def test_a_backup_into_a_folder_or_nowhere_is_refused_before_the_dump(
    runtime: Runtime, scratch: Path
) -> None:
    """A folder was dumped whole, then os.replace failed (IsADirectoryError) and left `<folder>.partial`,
    a dump's size, beside it."""
    assert runtime.settings.database_url
    env = process_env(runtime.settings.database_url, scratch / "src")
    folder = scratch / "a-folder"
    folder.mkdir()
    nowhere = scratch / "nowhere" / "x.backup"
    for target, line in (
        (folder, f"error: {folder} is a folder: name the file to write, e.g. {folder / 'rag.ragbackup'}"),
        (nowhere, f"error: the folder {nowhere.parent} does not exist"),
    ):
        refused = cli("backup", str(target), env=env)
        assert refused.returncode == 1 and refused.stderr.splitlines() == [line], refused.stderr
        assert refused.stdout == ""  # not even "backing up": no dump was started
    assert list(folder.iterdir()) == [] and not nowhere.parent.exists()
    assert not list(scratch.glob("*.partial")) and not list(scratch.glob(".rag-backup-*"))


def test_a_restore_of_no_file_creates_no_cluster(scratch: Path) -> None:
    """The file was checked only after the embedded cluster was created in the empty RAG_DATA_DIR (and
    left running)."""
    data_dir = scratch / "never"
    try:
        refused = cli("restore", str(scratch), env=embedded_env(data_dir))
        assert refused.returncode == 1
        said = f"error: {scratch} is a folder: name a file written by `rag-server backup`"
        assert refused.stderr.splitlines() == [said]
        assert not data_dir.exists()
    finally:
        if (data_dir / "pg" / "postmaster.pid").exists():  # without the check: stop what it started
            ensure_embedded_postgres(data_dir / "pg").stop()


def test_a_restore_of_a_file_that_is_no_backup_creates_no_cluster(
    restored: tuple[Runtime, Path], scratch: Path
) -> None:
    """Only the file's existence was checked first: a file that is no backup, or one cut short, was
    found out after the embedded cluster was created in the empty RAG_DATA_DIR (and left running)."""
    _, file = restored
    garbage = scratch / "garbage-early.backup"
    garbage.write_bytes(b"not a backup at all" * 100)
    cut = scratch / "cut-early.backup"
    cut.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    for bad, said in ((garbage, "is not a rag-server backup"), (cut, "is damaged")):
        data_dir = scratch / f"never-{bad.stem}"
        try:
            refused = cli("restore", str(bad), env=embedded_env(data_dir))
            assert refused.returncode == 1
            assert not data_dir.exists(), refused.stderr
            [line] = refused.stderr.splitlines()
            assert line.startswith(f"error: {bad} {said}"), line
        finally:
            if (data_dir / "pg" / "postmaster.pid").exists():  # without the check: stop what it started
                ensure_embedded_postgres(data_dir / "pg").stop()


async def test_a_backup_whose_write_fails_leaves_nothing(
    runtime: Runtime, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the file is written: a sentence, and no `.partial` (nor the dump) left."""
    target = scratch / "full-disk.backup"

    def full_disk(self: tarfile.TarFile, *args: Any, **kwargs: Any) -> None:
        assert self.fileobj is not None
        self.fileobj.write(b"\0" * 2**20)  # part of the dump went out first
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tarfile.TarFile, "add", full_disk)
    with pytest.raises(BackupError, match=re.escape(f"could not write {target}: No space left on device")):
        await backup(runtime.database_url, runtime.settings, target, report=lambda _: None)
    left = await asyncio.to_thread(lambda: [p.name for p in scratch.iterdir()])
    assert not [name for name in left if name.startswith(("full-disk.backup", ".rag-backup-"))], left
