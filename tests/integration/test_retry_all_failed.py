"""Every failed task retried at once (POST /admin/tasks/retry {"all": true}, `Client.retry_tasks(all=True)`,
`rag-server tasks retry --all`) against the real app on a socket: the failed tasks of every collection are
queued again in one call, those that cannot be are skipped with the reason, a body naming nothing or two
things is a 422, an editor key a 403; and `all` is every collection the caller's scope reaches, never
another's (row-level security)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.client import AsyncClient, Client, ClientError
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import DbScope, bind_scope, reset_scope
from rag_server.ingestion import operations_bulk, operations_models
from rag_server.ingestion.operations_models import RetrySelection
from tests.support.ingest import query, task_row
from tests.support.processes import rag_server_cli

COLLECTIONS = ("alpha", "beta", "gamma", "delta", "cli-a", "cli-b")


@pytest.fixture(scope="module")
async def made(runtime: Runtime, live_app_url: str) -> dict[str, Any]:
    """An admin key, an editor key and an editor key scoped to `gamma`; the collections."""
    admin = (await keys.create_key(runtime.pool, CreateKey(name="retry-admin", role="admin"))).key
    editor = (await keys.create_key(runtime.pool, CreateKey(name="retry-editor", role="editor"))).key
    ids = {}
    with Client(live_app_url, api_key=admin) as client:
        for name in COLLECTIONS:
            ids[name] = client.request("POST", "/collections", ok=201, json={"name": name}).json()["id"]
    scoped = CreateKey(name="retry-gamma", role="editor", collections=["gamma"])  # type: ignore[arg-type]
    return {
        "admin": admin,
        "editor": editor,
        "scoped": (await keys.create_key(runtime.pool, scoped)).key,
        "ids": ids,
    }


@pytest.fixture
def admin(live_app_url: str, made: dict[str, Any]) -> Iterator[Client]:
    with Client(live_app_url, api_key=made["admin"], retries=0) as client:
        yield client


def uploaded(client: Client, tmp_path: Path, collection: str, names: list[str]) -> dict[str, Any]:
    """name -> its task (TaskRef); no worker runs in this module: they stay queued."""
    paths = []
    for name in names:
        paths.append(tmp_path / name)
        paths[-1].write_text(f"{name}: words of its own, about {collection} and nothing else.")
    return {t.filename: t for t in client.upload(paths, collection=collection).tasks}


def fail(database_url: str, task_id: UUID, error: str = "Broken.") -> int:
    """The task failed as a worker fails one: its message archived, it and its document failed."""
    row = task_row(database_url, task_id)
    query(database_url, "SELECT pgmq.archive('ingest', %s::bigint)", row["msg_id"])
    query(
        database_url,
        "UPDATE job_tasks SET status = 'failed', error = %s, finished_at = now() WHERE id = %s RETURNING 1",
        error,
        task_id,
    )
    query(
        database_url,
        "UPDATE documents SET status = 'failed', error = %s WHERE id = %s RETURNING 1",
        error,
        row["document_id"],
    )
    return int(row["msg_id"])


def archived(database_url: str, msg_id: int) -> bool:
    return bool(query(database_url, "SELECT 1 FROM pgmq.a_ingest WHERE msg_id = %s", msg_id))


def in_queue(database_url: str, msg_id: int) -> bool:
    return bool(query(database_url, "SELECT 1 FROM pgmq.q_ingest WHERE msg_id = %s", msg_id))


def test_every_failed_task_of_every_collection_is_retried_in_one_call(
    admin: Client, database_url: str, tmp_path: Path
) -> None:
    alpha = uploaded(admin, tmp_path, "alpha", ["alpha-ok.txt", "alpha-lost.txt"])
    beta = uploaded(admin, tmp_path, "beta", ["beta-ok.txt", "beta-gone.txt", "beta-waits.txt"])
    old = {n: fail(database_url, t.task_id) for n, t in (alpha | beta).items() if n != "beta-waits.txt"}
    waiting_msg = task_row(database_url, beta["beta-waits.txt"].task_id)["msg_id"]
    # One whose stored file is gone, one whose document was deleted: neither can be retried.
    query(
        database_url,
        "DELETE FROM document_files WHERE document_id = %s RETURNING 1",
        alpha["alpha-lost.txt"].document_id,
    )
    admin.delete_document(str(beta["beta-gone.txt"].document_id))
    listed = admin.tasks(collection="beta", status="failed").items
    gone = [t for t in listed if t.task_id == beta["beta-gone.txt"].task_id]
    assert [(t.filename, t.document_id) for t in gone] == [("beta-gone.txt", None)]

    result = admin.retry_tasks(all=True)

    assert set(result.done) == {alpha["alpha-ok.txt"].task_id, beta["beta-ok.txt"].task_id}
    assert {s.task_id: s.reason for s in result.skipped} == {
        alpha["alpha-lost.txt"].task_id: (
            "the stored file of 'alpha-lost.txt' is missing from the database: upload it again"
        ),
        beta["beta-gone.txt"].task_id: (
            f"the document of task {beta['beta-gone.txt'].task_id} was deleted: upload the file again"
        ),
    }
    # Queued again as the API says it: a new live message each, the old one out of the archive.
    for name, collection in (("alpha-ok.txt", "alpha"), ("beta-ok.txt", "beta")):
        ref = (alpha | beta)[name]
        [task] = [t for t in admin.tasks(collection=collection, limit=500).items if t.task_id == ref.task_id]
        assert (task.status, task.error, task.failures, task.stuck) == ("queued", None, 0, None)
        assert task.msg_id is not None and task.msg_id != old[name] and in_queue(database_url, task.msg_id)
        assert not archived(database_url, old[name])
        assert admin.document(str(ref.document_id)).status == "queued"
    # The skipped ones are as they were; the queued task was not touched.
    assert task_row(database_url, alpha["alpha-lost.txt"].task_id)["status"] == "failed"
    assert archived(database_url, old["alpha-lost.txt"])
    assert task_row(database_url, beta["beta-gone.txt"].task_id)["status"] == "failed"
    assert task_row(database_url, beta["beta-waits.txt"].task_id)["msg_id"] == waiting_msg
    # Nothing failed is left to retry but those two: a second call queues nothing.
    again = admin.retry_tasks(all=True)
    assert again.done == [] and {s.task_id for s in again.skipped} == {s.task_id for s in result.skipped}


async def test_the_async_client_retries_a_collections_or_all(
    live_app_url: str, made: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    with Client(live_app_url, api_key=made["admin"]) as sync:
        tasks = uploaded(sync, tmp_path, "alpha", ["async-alpha.txt"])
        tasks |= uploaded(sync, tmp_path, "beta", ["async-beta.txt"])
    for ref in tasks.values():
        fail(database_url, ref.task_id)
    async with AsyncClient(live_app_url, api_key=made["admin"]) as client:
        only_beta = await client.retry_tasks(collection="beta")
        assert only_beta.done == [tasks["async-beta.txt"].task_id]
        assert task_row(database_url, tasks["async-alpha.txt"].task_id)["status"] == "failed"
        every = await client.retry_tasks(all=True)
        assert every.done == [tasks["async-alpha.txt"].task_id]
        listed = await client.tasks(status="queued", collection="alpha", limit=500)
        assert tasks["async-alpha.txt"].task_id in {t.task_id for t in listed.items}


ONE_OF = 'name exactly one of batch_id, collection and "all": true'


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({}, ONE_OF),
        ({"all": False}, ONE_OF),
        ({"all": True, "collection": "alpha"}, ONE_OF),
        ({"all": True, "batch_id": str(UUID(int=3))}, ONE_OF),
        ({"collection": "alpha", "batch_id": str(UUID(int=3))}, ONE_OF),
        ({"all": "true"}, "all"),  # strict: a JSON boolean
        ({"all": 1}, "all"),
        ({"all": True, "every": True}, "every"),
    ],
)
def test_a_body_naming_nothing_or_more_than_one_selection_is_a_422(
    admin: Client, made: dict[str, Any], live_app_url: str, body: dict[str, Any], said: str
) -> None:
    before = admin.tasks(status="queued", limit=1).total
    with pytest.raises(ClientError) as refused:
        admin.request("POST", "/admin/tasks/retry", json=body)
    assert refused.value.status == 422, str(refused.value)
    headers = {"Authorization": f"Bearer {made['admin']}"}
    response = httpx.post(f"{live_app_url}/admin/tasks/retry", json=body, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")
    assert said in str(response.json()["detail"]), response.json()
    assert admin.tasks(status="queued", limit=1).total == before


def test_an_editor_key_cannot_retry(live_app_url: str, made: dict[str, Any]) -> None:
    for key in ("editor", "scoped"):
        with Client(live_app_url, api_key=made[key], retries=0) as client:
            with pytest.raises(ClientError) as refused:
                client.retry_tasks(all=True)
            assert refused.value.status == 403, str(refused.value)
            assert "it needs admin" in str(refused.value)


async def test_all_is_the_failed_tasks_of_the_callers_collections_only(
    runtime: Runtime, live_app_url: str, made: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    """An admin key reaches every collection (a key limited to some cannot be an admin's: its 403 is
    above); the selection itself is bounded by row-level security, not by a filter of its own: under a
    scope of one collection (a scoped key's), `all` retries that collection's tasks, never another's."""
    with Client(live_app_url, api_key=made["admin"]) as client:
        mine = uploaded(client, tmp_path, "gamma", ["gamma.txt"])["gamma.txt"]
        other = uploaded(client, tmp_path, "delta", ["delta.txt"])["delta.txt"]
    old_other = fail(database_url, other.task_id)
    fail(database_url, mine.task_id)
    gamma = UUID(made["ids"]["gamma"])
    token = bind_scope(DbScope(collections=(gamma,), role="editor"))
    try:
        result = await operations_bulk.retry_tasks(runtime.pool, runtime.queue, RetrySelection(all=True))
    finally:
        reset_scope(token)
    assert result.done == [mine.task_id]
    assert other.task_id not in {s.task_id for s in result.skipped}
    row = task_row(database_url, other.task_id)
    assert (row["status"], row["msg_id"]) == ("failed", old_other) and archived(database_url, old_other)
    assert task_row(database_url, mine.task_id)["status"] == "queued"
    # Then the admin's `all` takes the other one.
    with Client(live_app_url, api_key=made["admin"]) as client:
        assert other.task_id in client.retry_tasks(all=True).done


async def test_a_retry_of_all_goes_in_slices_and_misses_none(
    runtime: Runtime,
    live_app_url: str,
    made: dict[str, Any],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More failed tasks than a slice holds (a slice of 2 here): every one is retried, each once."""
    monkeypatch.setattr(operations_bulk, "RETRY_SLICE", 2)
    with Client(live_app_url, api_key=made["admin"]) as client:
        tasks = uploaded(client, tmp_path, "alpha", [f"slice-{i}.txt" for i in range(5)])
    for ref in tasks.values():
        fail(database_url, ref.task_id)
    result = await operations_bulk.retry_tasks(runtime.pool, runtime.queue, RetrySelection(all=True))
    assert sorted(result.done) == sorted(t.task_id for t in tasks.values())
    assert len(result.done) == len(set(result.done))


def test_the_cli_retries_every_failed_task(
    admin: Client, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    a = uploaded(admin, tmp_path, "cli-a", ["cli-a.txt"])["cli-a.txt"]
    b = uploaded(admin, tmp_path, "cli-b", ["cli-b.txt"])["cli-b.txt"]
    for ref in (a, b):
        fail(database_url, ref.task_id)
    for args in (("--all", "--collection", "cli-a"), ("--all", str(a.task_id)), ()):
        refused = rag_server_cli(settings, "tasks", "retry", *args)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.strip() == (
            "error: name exactly one of TASK_ID, --batch, --collection and --all"
        ), refused.stderr
    assert task_row(database_url, a.task_id)["status"] == "failed"
    # cancel has no --all: argparse refuses it (exit 2).
    assert rag_server_cli(settings, "tasks", "cancel", "--all").returncode == 2

    retried = rag_server_cli(settings, "tasks", "retry", "--all")
    assert retried.returncode == 0, retried.stderr
    for ref in (a, b):
        assert f"task {ref.task_id} queued again" in retried.stdout
    assert [t.status for t in admin.tasks(collection="cli-a").items] == ["queued"]
    assert [t.status for t in admin.tasks(collection="cli-b").items] == ["queued"]


def test_the_listing_counts_the_failed_tasks_a_retry_would_queue_again(
    admin: Client, database_url: str, tmp_path: Path
) -> None:
    """GET /admin/tasks' `retryable` (the web app's "Retry all failed" asks about it): the failed tasks a
    retry queues again, not those it skips (document deleted, file missing, a duplicate listed failed)."""
    admin.request("POST", "/collections", ok=201, json={"name": "counted"})
    names = ["c-1.txt", "c-2.txt", "c-3.txt", "c-lost.txt", "c-gone.txt"]
    tasks = uploaded(admin, tmp_path, "counted", names)
    (tmp_path / "again").mkdir()  # the same bytes again: a duplicate, listed failed once c-1's task is
    duplicate = uploaded(admin, tmp_path / "again", "counted", ["c-1.txt"])["c-1.txt"]
    assert duplicate.status == "duplicate"
    for ref in tasks.values():
        fail(database_url, ref.task_id)
    query(
        database_url,
        "DELETE FROM document_files WHERE document_id = %s RETURNING 1",
        tasks["c-lost.txt"].document_id,
    )
    admin.delete_document(str(tasks["c-gone.txt"].document_id))
    listing = admin.tasks(collection="counted", status="failed", limit=1)
    assert (listing.total, listing.retryable) == (6, 3)
    assert admin.retry_tasks(collection="counted").done_count == 3
    after = admin.tasks(collection="counted", status="failed", limit=1)
    assert (after.total, after.retryable) == (2, 0)


def test_the_count_of_retryable_tasks_follows_replacements_and_counts_a_document_once(
    admin: Client, database_url: str, tmp_path: Path
) -> None:
    """`retryable` (operations._RETRYABLE) restates retry_locked's rules in SQL; the cases the test above
    leaves out (review M5): a failed replacement is retried while its document is at the version it
    replaces, not once another version landed; two failed tasks of one document are one retry (the second
    is refused: "already queued again")."""
    admin.request("POST", "/collections", ok=201, json={"name": "versions"})
    first = uploaded(admin, tmp_path, "versions", ["both.txt", "kept.txt", "moved.txt"])
    fail(database_url, first["both.txt"].task_id)  # failed, then a new file for it: two failed tasks
    for name in ("kept.txt", "moved.txt"):  # processed: ready at version 1
        query(
            database_url,
            "UPDATE job_tasks SET status = 'completed' WHERE id = %s RETURNING 1",
            first[name].task_id,
        )
        query(
            database_url,
            "UPDATE documents SET status = 'ready' WHERE id = %s RETURNING 1",
            first[name].document_id,
        )
    (tmp_path / "v2").mkdir()
    paths = []
    for name in ("both.txt", "kept.txt", "moved.txt"):
        paths.append(tmp_path / "v2" / name)
        paths[-1].write_text(f"{name}, its second version: other words.")
    second = {t.filename: t for t in admin.upload(paths, collection="versions", replace=True).tasks}
    assert all(t.replaces_version is not None for t in second.values())
    for ref in second.values():
        fail(database_url, ref.task_id)
    # A failed replacement leaves its document as it was (ready at version 1, or failed); another
    # version of moved.txt landed since: its failed replacement is out of date.
    for name, bump in (("kept.txt", 0), ("moved.txt", 1)):
        query(
            database_url,
            "UPDATE documents SET status = 'ready', error = NULL, version = version + %s"
            " WHERE id = %s RETURNING 1",
            bump,
            second[name].document_id,
        )
    listing = admin.tasks(collection="versions", status="failed", limit=1)
    assert (listing.total, listing.retryable) == (4, 2)
    retried = admin.retry_tasks(collection="versions")
    assert retried.done_count == listing.retryable
    assert {t.document_id for t in admin.tasks(collection="versions", status="queued").items} == {
        first["both.txt"].document_id,
        first["kept.txt"].document_id,
    }
    assert admin.tasks(collection="versions", status="failed", limit=1).retryable == 0


def test_a_retrys_answer_lists_a_bounded_number_of_tasks_and_counts_them_all(
    admin: Client, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer lists at most MAX_LISTED tasks of each kind, in id order (every id of a large store came
    back: review L7); its counts are all of them."""
    admin.request("POST", "/collections", ok=201, json={"name": "bounded"})
    tasks = uploaded(admin, tmp_path, "bounded", ["b-1.txt", "b-2.txt", "b-3.txt", "b-gone.txt"])
    for ref in tasks.values():
        fail(database_url, ref.task_id)
    admin.delete_document(str(tasks["b-gone.txt"].document_id))
    # raising=False: a server without the bound fails on its answer below, not here.
    monkeypatch.setattr(operations_models, "MAX_LISTED", 2, raising=False)

    result = admin.retry_tasks(collection="bounded")

    retried = sorted(tasks[n].task_id for n in ("b-1.txt", "b-2.txt", "b-3.txt"))
    assert (result.done, result.done_count, result.truncated) == (retried[:2], 3, True)
    assert [s.task_id for s in result.skipped] == [tasks["b-gone.txt"].task_id]
    assert result.skipped_count == 1
    assert {task_row(database_url, t)["status"] for t in retried} == {"queued"}
