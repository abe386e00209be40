"""An import killed with SIGKILL between two of its batches (one transaction each) leaves only whole
documents behind, and the same command run again finishes the rest: nothing lost, nothing twice."""

from __future__ import annotations

import json
import re
import signal
import uuid
from pathlib import Path

from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.integrity import check_integrity
from tests.support.ingest import query, wait_for
from tests.support.processes import settings_env, start

DOCUMENTS = 600  # 1,200 chunks to embed: about five batches of 256 (porting/jsonl.py BATCH_CHUNKS)
WORDS = ["heron", "turbine", "sourdough", "glacier", "moraine", "lichen", "estuary", "basalt", "orchard"]


def write_export(path: Path, documents: int = DOCUMENTS) -> None:
    """A version-1 export without vectors (so the import embeds, batch by batch): unique texts."""
    header = {
        "format": "rag-server-export",
        "version": 1,
        "collection": "field-notes",
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
        "embedding_dim": 384,
        "vectors": False,
        "exported_at": "2026-12-01T00:00:00+00:00",
    }
    lines = [json.dumps(header)]
    for i in range(documents):
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)]
        chunks = [
            {"index": j, "text": f"Note {i}, part {j}: " + " ".join(words[j * 6 : j * 6 + 6]) + "."}
            for j in range(2)
        ]
        doc_id = uuid.uuid5(uuid.NAMESPACE_URL, f"note-{i}")
        lines.append(
            json.dumps({"type": "document", "id": str(doc_id), "filename": f"note-{i}.txt", "chunks": chunks})
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def imported(database_url: str) -> int:
    rows = query(
        database_url,
        "SELECT count(*) AS n FROM documents d JOIN collections c ON c.id = d.collection_id"
        " WHERE c.name = 'crash'",
    )
    return int(rows[0]["n"])


async def test_an_import_killed_between_batches_finishes_when_run_again(
    settings: Settings, runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "notes.jsonl"
    write_export(source)
    command = ["import", "jsonl", str(source), "--collection", "crash", "--quiet"]
    env = settings_env(settings)

    first = start(command, env, tmp_path / "first.log")
    try:
        wait_for(lambda: imported(database_url) > 0, timeout=240, what="the first batch committed")
        first.popen.send_signal(signal.SIGKILL)
    finally:
        first.popen.wait()
    committed = imported(database_url)
    assert 0 < committed < DOCUMENTS, (committed, first.log())
    # Only whole documents: each batch is one transaction.
    partial = query(
        database_url,
        """
        SELECT d.id FROM documents d JOIN collections c ON c.id = d.collection_id
        LEFT JOIN chunks ch ON ch.document_id = d.id
        WHERE c.name = 'crash' GROUP BY d.id, d.chunk_count
        HAVING count(ch.id) <> 2 OR d.chunk_count <> 2
        """,
    )
    assert partial == []

    again = start(command, env, tmp_path / "again.log")
    assert again.popen.wait(timeout=600) == 0, again.log()
    summary = again.log()
    counts = re.search(r"(\d+) created, 0 updated, (\d+) unchanged", summary)
    assert counts is not None, summary
    created, unchanged = int(counts[1]), int(counts[2])
    # A batch whose COMMIT was on its way at the kill may have landed after the count above.
    assert created + unchanged == DOCUMENTS and unchanged >= committed and created > 0, summary

    rows = query(
        database_url,
        """
        SELECT count(DISTINCT d.id) AS documents, count(ch.id) AS chunks,
               count(DISTINCT (ch.document_id, ch.chunk_index)) AS distinct_chunks,
               count(DISTINCT ch.text) AS distinct_texts
        FROM documents d JOIN collections c ON c.id = d.collection_id JOIN chunks ch ON ch.document_id = d.id
        WHERE c.name = 'crash'
        """,
    )
    expected = {"documents": DOCUMENTS, "chunks": 2 * DOCUMENTS}
    assert rows[0] == {**expected, "distinct_chunks": 2 * DOCUMENTS, "distinct_texts": 2 * DOCUMENTS}
    async with owner_connection(runtime.database_url) as conn:
        report = await check_integrity(conn, settings.queue_name, quiescent=True)
    assert report.violations == []


async def test_an_import_stopped_by_ctrl_c_says_what_it_kept(
    settings: Settings, runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """Ctrl-C mid-import exited 130 without a word: nothing said that the batches written stay, nor
    that the same command writes the rest."""
    source = tmp_path / "notes.jsonl"
    # Ten times the other test's: its ~5 batches could all commit between the first one seen and SIGINT.
    write_export(source, documents=10 * DOCUMENTS)
    command = ["import", "jsonl", str(source), "--collection", "interrupted", "--quiet"]
    # A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so would
    # the import (Python keeps an ignored SIGINT): the child gets it back as a terminal's Ctrl-C is.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        first = start(command, settings_env(settings), tmp_path / "first.log")
    finally:
        signal.signal(signal.SIGINT, inherited)
    try:
        wait_for(
            lambda: (
                int(
                    query(
                        database_url,
                        "SELECT count(*) AS n FROM documents d JOIN collections c ON c.id = d.collection_id"
                        " WHERE c.name = 'interrupted'",
                    )[0]["n"]
                )
                > 0
            ),
            timeout=240,
            what="the first batch committed",
        )
        first.popen.send_signal(signal.SIGINT)
    finally:
        status = first.popen.wait(timeout=120)
    assert status == 130, first.log()
    assert "interrupted: the documents written into interrupted are kept" in first.log(), first.log()
    assert "Traceback" not in first.log(), first.log()
