"""`rag-server ingest` waiting for its files while someone deletes their collection (Admin's Delete, or
`rag-server collections delete NAME --force`): the delete takes the documents, their tasks and the upload
batch with it, so the next poll of the batch is a 404. The run should end saying what happened (the
collection was deleted), not that the batch was removed because it had finished "after a while".

Seen by QA on 2026-12-06 (twice, a 1.5 MB and a 400 kB text file): the run ends with

    error: the server answered 404 to GET /tasks/<batch>/status: no upload batch <batch> (finished
    batches are removed after a while)

though the batch never finished (it was at 2,944 of 5,675 chunks)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from rag_server.client import ClientError
from rag_server.ingestion.cli import ingest_paths
from tests.support.ingest import query


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient) -> TestClient:
    return sync_app_client


def test_ingest_says_its_collection_was_deleted_not_that_its_batch_finished(
    client: TestClient,
    database_url: str,
    live_app_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert client.post("/collections", json={"name": "doomed"}).status_code == 201
    path = tmp_path / "waiting.txt"
    path.write_text("A file no worker reads: its task stays queued while the ingest waits. " * 20)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["code"] = ingest_paths(
                [str(path)], base_url=live_app_url, collection="doomed", timeout_s=30
            )
        except ClientError as exc:  # what the CLI prints as "error: ..."
            outcome["error"] = str(exc)

    waiting = threading.Thread(target=run, daemon=True)
    waiting.start()
    # No worker runs in this module: the task is queued until the collection goes.
    for _ in range(200):
        if query(database_url, "SELECT count(*) AS n FROM job_tasks WHERE filename = 'waiting.txt'")[0]["n"]:
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the ingest never uploaded its file")
    assert client.delete("/collections/doomed", params={"force": "true"}).status_code == 204
    waiting.join(timeout=30)
    assert not waiting.is_alive(), "the ingest still waits for a batch whose collection was deleted"
    said = str(outcome.get("error", "")) + capsys.readouterr().err
    assert "finished batches are removed" not in said, said
    assert "deleted" in said, said
