"""What POST /upload says about several bad files at once (QA): every empty file and every file over the
size limit is named in the one refusal, not just the first, and nothing of the upload is stored; several
files of one name are a 422 with replace=true (which would replace the document?) and, without it, are
accepted with a `warnings` sentence naming them. The real app in this process; no worker (nothing here
needs processing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from rag_server.client import Client
from rag_server.config import Settings
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings
from tests.support.ingest import query, upload
from tests.support.processes import rag_server_cli

MAX_UPLOAD = 10_000


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(
        database_url, data_dir, fake, max_upload_bytes=MAX_UPLOAD, max_upload_request_bytes=100 * MAX_UPLOAD
    )


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient) -> Iterator[TestClient]:
    yield sync_app_client


def stored(database_url: str) -> tuple[int, int, int, int]:
    """(documents, their files, batches, tasks): what an upload stores."""
    row = query(
        database_url,
        "SELECT (SELECT count(*) FROM documents) AS d, (SELECT count(*) FROM document_files) AS f,"
        " (SELECT count(*) FROM job_batches) AS b, (SELECT count(*) FROM job_tasks) AS t",
    )[0]
    return (row["d"], row["f"], row["b"], row["t"])


def test_every_empty_file_is_named_and_nothing_is_stored(client: TestClient, database_url: str) -> None:
    before = stored(database_url)
    files = [("fine.txt", b"some words")] + [(f"empty-{n:02}.txt", b"") for n in range(12)]
    r = upload(client, files)
    assert r.status_code == 422, r.text
    names = ", ".join(f"empty-{n:02}.txt" for n in range(10))
    assert r.json()["detail"] == (
        f"12 files are empty (0 bytes), with nothing in them to read: {names} and 2 others."
    )
    assert stored(database_url) == before
    # Two: both named.
    r = upload(client, [("a.txt", b""), ("fine.txt", b"words"), ("b.md", b"")])
    assert (r.status_code, r.json()["detail"]) == (
        422,
        "2 files are empty (0 bytes), with nothing in them to read: a.txt, b.md.",
    )
    assert stored(database_url) == before


def test_every_file_over_the_limit_is_named_and_sizes_win_over_empty_files(
    client: TestClient, database_url: str
) -> None:
    before = stored(database_url)
    files = [
        ("big-1.txt", b"x" * 3 * MAX_UPLOAD),
        ("fine.txt", b"words"),
        ("zero.txt", b""),
        ("big-2.txt", b"y" * (MAX_UPLOAD + 1)),
    ]
    r = upload(client, files)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        f"2 files are over the limit of {MAX_UPLOAD:,} bytes per file: big-1.txt ({3 * MAX_UPLOAD:,} bytes),"
        f" big-2.txt ({MAX_UPLOAD + 1:,} bytes). zero.txt is empty (0 bytes): there is nothing in it to read."
    )
    assert stored(database_url) == before


def test_one_name_twice_with_replace_is_a_422_naming_every_such_name(
    client: TestClient, database_url: str
) -> None:
    before = stored(database_url)
    files = [("twin.txt", b"one"), ("pair.md", b"# one"), ("twin.txt", b"two"), ("pair.md", b"# two")]
    r = upload(client, files, replace="true")
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("'pair.md', 'twin.txt' are given more than once in this upload"), (
        r.json()
    )
    assert stored(database_url) == before


def test_one_name_twice_without_replace_is_stored_with_a_warning(
    client: TestClient, settings: Settings, live_app_url: str, tmp_path: Path
) -> None:
    r = upload(client, [("warned.txt", b"first words"), ("other.txt", b"x"), ("warned.txt", b"other words")])
    assert r.status_code == 202, r.text
    body = r.json()
    assert [t["filename"] for t in body["tasks"]] == ["warned.txt", "other.txt", "warned.txt"]
    assert len({t["document_id"] for t in body["tasks"]}) == 3
    assert body["warnings"] == [
        "'warned.txt' is the name of more than one file of this upload: each file is a document of its own"
        " (one with the same bytes as another is a duplicate of it), and these documents share the name."
        " Send each name once (a folder's path in the name tells files apart) to find them by name later."
    ]
    assert upload(client, [("alone.txt", b"alone")]).json()["warnings"] == []
    # The client returns it; `rag-server ingest` prints it (two local names the server cleans to one).
    with Client(live_app_url) as api:
        (tmp_path / "a.txt").write_text("a")
        (tmp_path / "b.txt").write_text("b")
        answer = api.upload([("same.txt", tmp_path / "a.txt"), ("same.txt", tmp_path / "b.txt")])
    assert answer.warnings and answer.warnings[0].startswith("'same.txt' is the name of more than one file")
    for name, text in (("x\u0307.txt", "decomposed"), ("\u1e8b.txt", "composed")):
        (tmp_path / "cli").mkdir(exist_ok=True)
        (tmp_path / "cli" / name).write_text(text)
    done = rag_server_cli(settings, "ingest", "--url", live_app_url, "--no-wait", str(tmp_path / "cli"))
    assert "warning: '\u1e8b.txt' is the name of more than one file of this upload" in done.stderr, done
