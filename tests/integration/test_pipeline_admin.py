"""Pipeline administration through the real app, real workers and the CLI: stuck tasks are listed with
the reason, failed tasks are retried without uploading again (the stored bytes are processed anew), queued
tasks are cancelled (failed with who cancelled them, their message archived), the dead-message archive is
listed and purged; only admin keys reach any of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.recovery import WORKER_LOCK_CLASS
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.support.ingest import chunk_count, enqueue, query, task_row, wait_for
from tests.support.processes import Proc, process_env, rag_server_cli, start_worker

WAIT_S = 60  # a correctness bound on each wait, not a speed assertion
ADMIN = "ops-admin"


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


@pytest.fixture(scope="module")
async def headers(runtime: Runtime) -> dict[str, dict[str, str]]:
    """Bearer headers of an admin key and an editor key (from here on, the API needs a key)."""
    made = {}
    for name, role in ((ADMIN, "admin"), ("ops-editor", "editor")):
        key = (await keys.create_key(runtime.pool, CreateKey(name=name, role=role))).key  # type: ignore[arg-type]
        made[role] = {"Authorization": f"Bearer {key}"}
    return made


@pytest.fixture
def admin(app_client: httpx.AsyncClient, headers: dict[str, dict[str, str]]) -> Iterator[httpx.AsyncClient]:
    app_client.headers.update(headers["admin"])
    yield app_client
    app_client.headers.pop("Authorization", None)


def in_queue(database_url: str, msg_id: int) -> bool:
    return bool(query(database_url, "SELECT 1 FROM pgmq.q_ingest WHERE msg_id = %s", msg_id))


async def test_cancel_then_retry_after_the_embedding_service_recovers(
    runtime: Runtime,
    admin: httpx.AsyncClient,
    database_url: str,
    data_dir: Path,
    fake: FakeEmbeddingServer,
    tmp_path: Path,
    workers: list[Proc],
) -> None:
    # No worker yet: both tasks stay queued. The first is cancelled; the second fails once a worker
    # runs (the fake answers its first request with a 503, and one failure is the limit here).
    cancelled, flaky = await enqueue(
        runtime,
        [
            ("cancel-me.txt", b"Axolotls regrow limbs; this file is cancelled before any worker runs."),
            ("flaky.txt", b"FAIL503x1-opsretry the embedding service fails this once, then recovers."),
        ],
    )
    old_msg = task_row(database_url, cancelled.task_id)["msg_id"]
    r = await admin.post(f"/admin/tasks/{cancelled.task_id}/cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["error"]) == ("failed", f"Cancelled by {ADMIN}.")
    assert not in_queue(database_url, old_msg)
    doc = (await admin.get(f"/documents/{cancelled.document_id}")).json()
    assert (doc["status"], doc["error"]) == ("failed", f"Cancelled by {ADMIN}.")
    again = await admin.post(f"/admin/tasks/{cancelled.task_id}/cancel")
    assert again.status_code == 409 and "only a queued task can be cancelled" in again.json()["detail"]

    env = process_env(
        database_url,
        data_dir,
        **fake_ollama_env(fake),
        RAG_WORKER_POLL_INTERVAL_S="0.1",
        RAG_WORKER_MAX_ATTEMPTS="1",
        RAG_WORKER_RETRY_BACKOFF_S="0",
        RAG_EMBEDDING_RETRIES="0",
    )
    workers.append(start_worker(env, tmp_path / "worker.log"))
    failed = wait_for(
        lambda: (row := task_row(database_url, flaky.task_id))["status"] == "failed" and row,
        WAIT_S,
        "flaky task failed",
    )
    assert failed["error"].startswith("Gave up after 1 attempts")
    # The worker did nothing with the cancelled task.
    assert task_row(database_url, cancelled.task_id)["error"] == f"Cancelled by {ADMIN}."

    archived = (await admin.get("/admin/queue/archive")).json()
    by_task = {m["task_id"]: m for m in archived["items"]}
    assert by_task[str(flaky.task_id)]["error"] == failed["error"]
    assert by_task[str(cancelled.task_id)]["task_status"] == "failed"

    # The fake has recovered: retrying every failed task of the batch processes the stored bytes again.
    batch_id = str(task_row(database_url, flaky.task_id)["batch_id"])
    r = await admin.post("/admin/tasks/retry", json={"batch_id": batch_id, "status": "failed"})
    assert r.status_code == 200, r.text
    assert set(r.json()["done"]) == {str(cancelled.task_id), str(flaky.task_id)}
    assert r.json()["skipped"] == []
    # Their dead messages leave the archive with the retry (the new messages are live).
    archived = (await admin.get("/admin/queue/archive", params={"limit": 500})).json()
    assert not {str(cancelled.task_id), str(flaky.task_id)} & {m["task_id"] for m in archived["items"]}
    for ref in (cancelled, flaky):
        done = wait_for(
            lambda ref=ref: (row := task_row(database_url, ref.task_id))["status"] == "completed" and row,
            WAIT_S,
            "retried task completed",
        )
        assert (done["attempts"], done["failures"], done["error"]) == (1, 0, None)
        assert chunk_count(database_url, ref.document_id) == done["total_chunks"] > 0
        doc = (await admin.get(f"/documents/{ref.document_id}")).json()
        assert (doc["status"], doc["error"]) == ("ready", None)
    assert query(database_url, "SELECT count(*) AS n FROM pgmq.q_ingest")[0]["n"] == 0

    completed = await admin.post(f"/admin/tasks/{flaky.task_id}/retry")
    assert completed.status_code == 409
    assert completed.json()["detail"] == (
        f"task {flaky.task_id} is completed, not failed: only a failed task can be retried"
    )


async def test_a_retry_without_the_stored_bytes_is_refused(
    runtime: Runtime, admin: httpx.AsyncClient, database_url: str
) -> None:
    [task] = await enqueue(runtime, [("lost.txt", b"Tardigrades survive the vacuum of space.")])
    r = await admin.post(f"/admin/tasks/{task.task_id}/cancel")
    assert r.status_code == 200, r.text
    query(database_url, "DELETE FROM document_files WHERE document_id = %s RETURNING 1", task.document_id)

    r = await admin.post(f"/admin/tasks/{task.task_id}/retry")
    assert r.status_code == 409
    assert r.json()["detail"] == "the stored file of 'lost.txt' is missing from the database: upload it again"
    batch_id = str(task_row(database_url, task.task_id)["batch_id"])
    bulk = (await admin.post("/admin/tasks/retry", json={"batch_id": batch_id})).json()
    assert bulk["done"] == [] and [s["task_id"] for s in bulk["skipped"]] == [str(task.task_id)]
    assert task_row(database_url, task.task_id)["status"] == "failed"
    assert (await admin.post(f"/admin/tasks/{UUID(int=7)}/retry")).status_code == 404


async def test_stuck_tasks_are_listed_with_the_reason(
    runtime: Runtime, admin: httpx.AsyncClient, database_url: str
) -> None:
    # And a duplicate of two of them (the same bytes): listed as the task it follows reads.
    dead, alive, orphan, dead_again, orphan_again = await enqueue(
        runtime,
        [
            ("dead-worker.txt", b"Octopuses have three hearts."),
            ("live-worker.txt", b"Crows recognise human faces."),
            ("orphan.txt", b"Bees dance to share directions."),
            ("dead-worker-again.txt", b"Octopuses have three hearts."),
            ("orphan-again.txt", b"Bees dance to share directions."),
        ],
    )
    assert dead_again.status == orphan_again.status == "duplicate"
    with psycopg.connect(database_url, autocommit=True) as live_session:
        # A live worker: a session holds its liveness lock. 999999: a worker no session holds.
        live_session.execute("SELECT pg_advisory_lock(%s, 4242)", (WORKER_LOCK_CLASS,))
        for ref, worker_id in ((dead, 999999), (alive, 4242)):
            query(
                database_url,
                "UPDATE job_tasks SET status = 'processing', worker_id = %s WHERE id = %s RETURNING 1",
                worker_id,
                ref.task_id,
            )
        orphan_msg = task_row(database_url, orphan.task_id)["msg_id"]
        query(database_url, "SELECT pgmq.delete('ingest', %s::bigint)", orphan_msg)

        r = await admin.get("/admin/tasks", params={"stuck": "true", "limit": 500})
        assert r.status_code == 200, r.text
        stuck = {t["task_id"]: t["stuck"] for t in r.json()["items"]}
        assert stuck == {
            str(dead.task_id): "its worker 999999 is not running",
            str(orphan.task_id): "its queue message is missing",
        }
        assert r.json()["total"] == 2
        processing = (await admin.get("/admin/tasks", params={"status": "processing"})).json()
        assert {t["task_id"] for t in processing["items"]} == {
            str(dead.task_id),
            str(alive.task_id),
            str(dead_again.task_id),
        }

        refused = await admin.post(f"/admin/tasks/{alive.task_id}/cancel")
        assert refused.status_code == 409 and "being processed (worker 4242)" in refused.json()["detail"]
        assert (await admin.post(f"/admin/tasks/{alive.task_id}/retry")).status_code == 409
        # A duplicate listed queued or processing is not cancelled itself: the refusal names the task it
        # follows ("is duplicate: only a queued task can be cancelled", of a task listed as queued).
        refused = await admin.post(f"/admin/tasks/{orphan_again.task_id}/cancel")
        assert refused.status_code == 409, refused.json()
        assert f"which is queued: cancel task {orphan.task_id}" in refused.json()["detail"], refused.json()
        refused = await admin.post(f"/admin/tasks/{dead_again.task_id}/cancel")
        assert refused.status_code == 409, refused.json()
        said = refused.json()["detail"]
        assert f"follows task {dead.task_id}, which is processing: nothing to cancel" in said, said

    # A queued task whose message is lost gets a new one.
    r = await admin.post(f"/admin/tasks/{orphan.task_id}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["stuck"] is None and r.json()["msg_id"] != orphan_msg
    assert in_queue(database_url, r.json()["msg_id"])
    # Leave nothing for the modules' later tests to trip on.
    batch = str(task_row(database_url, orphan.task_id)["batch_id"])
    query(database_url, "UPDATE job_tasks SET status = 'queued' WHERE batch_id = %s RETURNING 1", batch)
    assert len((await admin.post("/admin/tasks/cancel", json={"batch_id": batch})).json()["done"]) == 5


async def test_a_retry_of_a_batch_names_the_task_its_failed_duplicate_follows(
    runtime: Runtime, admin: httpx.AsyncClient, database_url: str
) -> None:
    """A duplicate whose upload, in another batch, failed is listed failed in its own batch; a retry of
    that batch passed over it without a word (nothing done, nothing skipped). It is skipped, naming the
    task to retry."""
    content = b"Narwhal tusks are teeth that sense the water around them."
    [first] = await enqueue(runtime, [("narwhal.pptx", content)])
    [again] = await enqueue(runtime, [("narwhal.txt", content)])
    assert again.status == "duplicate"
    row = task_row(database_url, first.task_id)
    query(database_url, "SELECT pgmq.delete('ingest', %s::bigint)", row["msg_id"])
    failed = "UPDATE job_tasks SET status = 'failed', error = 'Broken.' WHERE id = %s RETURNING 1"
    query(database_url, failed, first.task_id)
    batch = str(task_row(database_url, again.task_id)["batch_id"])
    listed = (await admin.get("/admin/tasks", params={"batch_id": batch, "status": "failed"})).json()
    assert [t["task_id"] for t in listed["items"]] == [str(again.task_id)], listed
    result = (await admin.post("/admin/tasks/retry", json={"batch_id": batch})).json()
    assert result["done"] == [] and [s["task_id"] for s in result["skipped"]] == [str(again.task_id)], result
    assert f"retry task {first.task_id}" in result["skipped"][0]["reason"], result


async def test_the_archive_is_purged_by_age(
    runtime: Runtime, admin: httpx.AsyncClient, database_url: str
) -> None:
    tasks = await enqueue(runtime, [("old.txt", b"Ravens plan ahead."), ("new.txt", b"Rats laugh.")])
    batch = str(task_row(database_url, tasks[0].task_id)["batch_id"])
    assert len((await admin.post("/admin/tasks/cancel", json={"batch_id": batch})).json()["done"]) == 2
    listed = (await admin.get("/admin/queue/archive", params={"limit": 1})).json()
    assert listed["items"][0]["task_id"] in {str(t.task_id) for t in tasks}
    assert listed["total"] >= 2 and len(listed["items"]) == 1
    oldest = query(database_url, "SELECT min(msg_id) AS m FROM pgmq.a_ingest")[0]["m"]
    query(
        database_url,
        "UPDATE pgmq.a_ingest SET archived_at = now() - interval '10 days' WHERE msg_id = %s RETURNING 1",
        oldest,
    )
    r = await admin.delete("/admin/queue/archive", params={"older_than_days": 7})
    assert r.json() == {"deleted": 1}
    r = await admin.delete("/admin/queue/archive")
    assert r.json() == {"deleted": listed["total"] - 1}
    assert (await admin.get("/admin/queue/archive")).json()["total"] == 0


async def test_only_admin_keys_reach_pipeline_administration(
    app_client: httpx.AsyncClient, headers: dict[str, dict[str, str]]
) -> None:
    for method, path in (
        ("GET", "/admin/tasks"),
        ("POST", f"/admin/tasks/{UUID(int=1)}/retry"),
        ("GET", "/admin/queue/archive"),
        ("DELETE", "/admin/queue/archive"),
    ):
        r = await app_client.request(method, path, headers=headers["editor"])
        assert r.status_code == 403, (path, r.text)
        assert "it needs admin" in r.json()["detail"]


async def test_the_cli(runtime: Runtime, settings: Settings, database_url: str) -> None:
    queued, done = await enqueue(
        runtime,
        [("cli-a.txt", b"Sloths digest slowly."), ("cli-b.txt", b"Owls turn their heads far.")],
    )
    query(database_url, "UPDATE job_tasks SET status = 'completed' WHERE id = %s RETURNING 1", done.task_id)
    batch = str(task_row(database_url, queued.task_id)["batch_id"])

    listed = rag_server_cli(settings, "tasks", "list", "--batch", batch)
    assert listed.returncode == 0, listed.stderr
    assert str(queued.task_id) in listed.stdout and "2 of 2 tasks" in listed.stdout

    refused = rag_server_cli(settings, "tasks", "retry", str(done.task_id))
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("is completed, not failed: only a failed task can be retried")
    unnamed = rag_server_cli(settings, "tasks", "retry")
    assert unnamed.returncode == 1 and "error: name exactly one of" in unnamed.stderr
    # A model built from an argument inside the command: pydantic's many lines were printed whole.
    too_long = rag_server_cli(settings, "tasks", "retry", "--collection", "c" * 101)
    assert too_long.returncode == 1 and too_long.stderr.splitlines()[-1] == (
        f"error: collection '{'c' * 30}...': at most 100 characters, not 101"
    )

    cancelled = rag_server_cli(settings, "tasks", "cancel", "--batch", batch)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "1 cancelled, 0 skipped" in cancelled.stdout
    row: dict[str, Any] = task_row(database_url, queued.task_id)
    assert (row["status"], row["error"]) == ("failed", "Cancelled by an operator.")

    archive = rag_server_cli(settings, "queue", "archive")
    assert archive.returncode == 0 and str(queued.task_id) in archive.stdout
    purged = rag_server_cli(settings, "queue", "archive", "--purge")
    assert purged.returncode == 0 and "deleted 1 archived messages" in purged.stdout


async def test_the_cli_refuses_numbers_out_of_range_when_parsed(
    runtime: Runtime, settings: Settings, database_url: str
) -> None:
    """A number past int64 reached the database (asyncpg's DataError, a traceback), --limit 0 or below
    quietly listed 1 task: each is refused in one line (argparse's, after its usage), exit 2, nothing
    done."""
    await enqueue(runtime, [("range-a.txt", b"Moles dig."), ("range-b.txt", b"Voles too.")])
    archived = "SELECT count(*) AS n FROM pgmq.a_ingest"
    query(database_url, "SELECT pgmq.send('ingest', '{}'::jsonb)")
    query(database_url, "SELECT pgmq.archive('ingest', max(msg_id)) FROM pgmq.q_ingest")
    before = query(database_url, archived)[0]["n"]
    bounds = {"--limit": "1 to 10000", "--older-than-days": "0 to 36500"}
    for args in (
        ("tasks", "list", "--limit", "99999999999999999999"),
        ("tasks", "list", "--limit", "0"),
        ("tasks", "list", "--limit", "-5"),
        ("queue", "archive", "--limit", "0"),
        ("queue", "archive", "--purge", "--older-than-days", "999999999999"),
        ("queue", "archive", "--purge", "--older-than-days", "-1"),
    ):
        refused = rag_server_cli(settings, *args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        option, value = args[-2:]
        assert refused.stderr.splitlines()[-1] == (
            f"rag-server {args[0]} {args[1]}: error: argument {option}: takes a whole number from"
            f" {bounds[option]}, got {value!r}"
        )
        assert refused.stdout == "" and "Traceback" not in refused.stderr
    assert query(database_url, archived)[0]["n"] == before > 0
    listed = rag_server_cli(settings, "tasks", "list", "--limit", "1")
    assert listed.returncode == 0 and listed.stdout.splitlines()[-1].startswith("1 of "), listed.stdout


async def test_listing_an_unknown_batch_is_refused_as_retrying_it_is(
    runtime: Runtime, settings: Settings, database_url: str
) -> None:
    """`tasks list --batch` with a task's id (an id of the wrong kind) or a pruned batch's printed
    "0 of 0 tasks" and exit 0, as if the batch had none, where `tasks retry --batch` and `tasks list
    --collection nope` say there is no such thing: one `error:` line, exit 1."""
    (queued,) = await enqueue(runtime, [("unknown-batch.txt", b"Herons wait.")])
    listed = rag_server_cli(settings, "tasks", "list", "--batch", str(queued.task_id))
    assert listed.returncode == 1, listed.stdout + listed.stderr
    assert "Traceback" not in listed.stderr and "0 of 0 tasks" not in listed.stdout
    assert listed.stderr.splitlines()[-1].startswith(f"error: no upload batch {queued.task_id}")
