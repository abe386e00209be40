"""`rag-server documents list|show|update|delete` as an operator runs it: a subprocess on the module's
database."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
from uuid import UUID

import pytest

from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.support.processes import settings_env

NO_SUCH_ID = "00000000-0000-0000-0000-000000000000"


async def rag_server(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rag_server", *args],
        env=settings_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
async def ids(runtime: Runtime) -> dict[str, UUID]:
    """`notes`: three documents from an old source, one from a new one; `default`: one from the old."""
    notes = await store.create_collection(runtime.pool, CreateCollection(name="notes"))
    docs = [
        DirectDocument(f"{name}.txt", f"{name} is a note about herons.".encode(), {"source": source})
        for name, source in (("alpha", "old"), ("beta", "old"), ("gamma", "old"), ("delta", "new"))
    ]
    made = await ingest_documents_direct(runtime, docs, collection_id=notes.id)
    (elsewhere,) = await ingest_documents_direct(
        runtime, [DirectDocument("epsilon.txt", b"epsilon, also old", {"source": "old"})]
    )
    return {d.filename: i for d, i in zip(docs, made, strict=True)} | {"epsilon.txt": elsewhere}


async def test_list_filters_by_name_and_metadata(settings: Settings, ids: dict[str, UUID]) -> None:
    listed = await rag_server(
        settings,
        "documents",
        "list",
        "--collection",
        "notes",
        "--metadata",
        '{"source": "old"}',
        "--sort",
        "name",
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "status", "chunks", "type", "name"]
    assert [line.split()[-1] for line in lines[1:-1]] == ["alpha.txt", "beta.txt", "gamma.txt"]
    assert lines[-1] == "3 of 3 documents"
    named = await rag_server(settings, "documents", "list", "--collection", "notes", "--name", "ELTA")
    assert named.stdout.splitlines()[-1] == "1 of 1 documents" and "delta.txt" in named.stdout
    # Chroma's operators, and a refusal as one `error:` line naming where.
    either = await rag_server(
        settings, "documents", "list", "--collection", "notes", "--metadata", '{"source": {"$in": ["new"]}}'
    )
    assert either.stdout.splitlines()[-1] == "1 of 1 documents" and "delta.txt" in either.stdout
    refused = await rag_server(
        settings, "documents", "list", "--collection", "notes", "--metadata", '{"source": {"$gt": "a"}}'
    )
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.strip() == "error: --metadata: source.$gt: a number, not a text"
    # Chroma's where_document, on the documents' chunks.
    worded = await rag_server(
        settings, "documents", "list", "--collection", "notes", "--text", '{"$contains": "gamma is"}'
    )
    assert worded.stdout.splitlines()[-1] == "1 of 1 documents" and "gamma.txt" in worded.stdout


async def test_show_prints_the_details_and_the_chunks_or_those_matching(
    settings: Settings, ids: dict[str, UUID]
) -> None:
    alpha = str(ids["alpha.txt"])
    shown = await rag_server(settings, "documents", "show", alpha)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:3] == [f"id        {alpha}", "name      alpha.txt", "status    ready, version 1, 1 chunk"]
    assert 'metadata  {"source": "old"}' in lines
    assert lines[-4:] == ["[chunk 1]", "alpha is a note about herons.", "", "chunks 1-1 of 1"]
    found = await rag_server(settings, "documents", "show", alpha, "--text", '{"$contains": "herons"}')
    assert found.stdout.splitlines()[-1] == "matching chunks 1-1 of 1"
    missed = await rag_server(settings, "documents", "show", alpha, "--text", '{"$contains": "Herons"}')
    assert missed.stdout.splitlines()[-1] == "matching chunks none of 0"
    assert "[chunk" not in missed.stdout
    past = await rag_server(settings, "documents", "show", alpha, "--offset", "5")
    assert past.stdout.splitlines()[-1] == "chunks none of 1"
    unknown = await rag_server(settings, "documents", "show", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: no document"), unknown.stderr


async def test_update_sets_metadata_on_what_it_lists_and_stays_in_its_collection(
    settings: Settings, ids: dict[str, UUID]
) -> None:
    async def names(*args: str) -> list[str]:
        listed = await rag_server(settings, "documents", "list", "--sort", "name", *args)
        assert listed.returncode == 0, listed.stderr
        return [line.split()[-1] for line in listed.stdout.splitlines()[1:-1]]

    old = ("documents", "update", "--collection", "notes", "--metadata", '{"source": "old"}')
    reviewed = ("--metadata", '{"reviewed": true}')
    refused = await rag_server(settings, *old, "--set", '{"reviewed": true}')
    assert refused.returncode == 1 and "add --yes to update" in refused.stderr
    dry = await rag_server(settings, *old, "--set", '{"reviewed": true}', "--dry-run")
    assert dry.stdout.splitlines()[-1] == "3 documents would be updated (--dry-run)", dry.stdout
    assert await names("--collection", "notes", *reviewed) == []
    done = await rag_server(settings, *old, "--set", '{"reviewed": true}', "--yes")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "updated 3 documents", done.stdout
    assert await names("--collection", "notes", *reviewed) == ["alpha.txt", "beta.txt", "gamma.txt"]
    # Merged: the source is kept. `default`'s document of the same source is untouched.
    assert await names("--collection", "notes", "--metadata", '{"source": "old", "reviewed": true}') == [
        "alpha.txt",
        "beta.txt",
        "gamma.txt",
    ]
    assert await names(*reviewed) == []
    # A null removes the key; --replace makes the value the whole metadata.
    one = await rag_server(
        settings, "documents", "update", str(ids["alpha.txt"]), "--collection", "notes", "--set",
        '{"reviewed": null}', "--yes",
    )  # fmt: skip
    assert one.stdout.splitlines()[-1] == "updated 1 document", one.stdout
    assert await names("--collection", "notes", *reviewed) == ["beta.txt", "gamma.txt"]
    assert await names("--collection", "notes", "--metadata", '{"source": "old"}') == [
        "alpha.txt",
        "beta.txt",
        "gamma.txt",
    ]
    replaced = await rag_server(
        settings, "documents", "update", str(ids["delta.txt"]), "--collection", "notes", "--set",
        '{"owner": "ana"}', "--replace", "--yes",
    )  # fmt: skip
    assert replaced.stdout.splitlines()[-1] == "updated 1 document", replaced.stdout
    assert await names("--collection", "notes", "--metadata", '{"owner": "ana"}') == ["delta.txt"]
    assert await names("--collection", "notes", "--metadata", '{"source": "new"}') == []
    # Another collection's document, named by id, is not reached.
    elsewhere = await rag_server(
        settings, "documents", "update", str(ids["epsilon.txt"]), "--collection", "notes", "--set",
        '{"owner": "ana"}', "--yes",
    )  # fmt: skip
    assert (elsewhere.returncode, elsewhere.stdout) == (1, ""), elsewhere.stdout
    assert elsewhere.stderr == (
        f"error: no document {ids['epsilon.txt']} in the collection 'notes': nothing updated\n"
    )
    assert await names("--metadata", '{"owner": "ana"}') == []
    unknown = await rag_server(
        settings, "documents", "update", NO_SUCH_ID, "--collection", "notes", "--set", '{"owner": "ana"}',
        "--yes",
    )  # fmt: skip
    assert (unknown.returncode, unknown.stdout) == (1, ""), unknown.stdout
    assert unknown.stderr == f"error: no document {NO_SUCH_ID} in the collection 'notes': nothing updated\n"


async def test_delete_lists_first_asks_and_stays_in_its_collection(
    settings: Settings, ids: dict[str, UUID]
) -> None:
    old = ("documents", "delete", "--collection", "notes", "--metadata", '{"source": "old"}')
    # No terminal, neither --yes nor --dry-run: nothing to ask, nothing done.
    refused = await rag_server(settings, *old)
    assert refused.returncode == 1 and "add --yes" in refused.stderr
    dry = await rag_server(settings, *old, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == "3 documents would be deleted (--dry-run)"
    assert str(ids["alpha.txt"]) in dry.stdout and "epsilon" not in dry.stdout
    # An id that is no document of the collection is an error, with --dry-run too, and among others it
    # stops the command before anything is deleted; an id that the metadata leaves out is not.
    for named in ((NO_SUCH_ID,), (str(ids["alpha.txt"]), NO_SUCH_ID, str(ids["epsilon.txt"]))):
        for how in ("--yes", "--dry-run"):
            missing = await rag_server(settings, "documents", "delete", *named, "--collection", "notes", how)
            assert (missing.returncode, missing.stdout) == (1, ""), missing.stdout
            assert missing.stderr.splitlines() == [
                f"error: no document{'s' if len(named) > 1 else ''} {', '.join(named[1:] or named)} in the "
                "collection 'notes': nothing deleted"
            ]
    left_out = await rag_server(settings, "documents", "delete", str(ids["delta.txt"]), *old[2:], "--yes")
    assert left_out.returncode == 0, left_out.stderr
    assert left_out.stdout.splitlines()[-1] == "no document matches: nothing deleted"
    # One of them by id, with the metadata too; then the rest by metadata alone.
    one = await rag_server(settings, "documents", "delete", str(ids["alpha.txt"]), *old[2:], "--yes")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[-1] == "deleted 1 document"
    rest = await rag_server(settings, *old, "--yes")
    assert rest.stdout.splitlines()[-1] == "deleted 2 documents", rest.stdout
    # A selection that matches nothing (any more) is no error: nothing to do.
    again = await rag_server(settings, *old, "--yes")
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "no document matches: nothing deleted"
    gone = await rag_server(
        settings, "documents", "delete", str(ids["alpha.txt"]), "--collection", "notes", "--yes"
    )
    assert (gone.returncode, gone.stdout) == (1, ""), gone.stdout
    assert (
        gone.stderr == f"error: no document {ids['alpha.txt']} in the collection 'notes': nothing deleted\n"
    )
    left = await rag_server(settings, "documents", "list", "--collection", "notes")
    assert left.stdout.splitlines()[-1] == "1 of 1 documents" and "delta.txt" in left.stdout
    # `default`'s document of the same source is still there.
    kept = await rag_server(settings, "documents", "list", "--metadata", '{"source": "old"}')
    assert "epsilon.txt" in kept.stdout


async def test_the_end_of_input_at_the_question_is_a_no(settings: Settings, ids: dict[str, UUID]) -> None:
    # Ctrl-D on a terminal: the question reads the end of its input.
    master, terminal = pty.openpty()
    try:
        os.write(master, b"\x04")
        asked = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "rag_server",
                "documents",
                "delete",
                str(ids["delta.txt"]),
                "--collection",
                "notes",
            ],
            env=settings_env(settings),
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(master)
        os.close(terminal)
    assert asked.returncode == 1 and asked.stderr == "", asked.stderr
    assert "Delete 1 document? [y/N]" in asked.stdout and asked.stdout.splitlines()[-1] == "nothing deleted"
    left = await rag_server(settings, "documents", "list", "--collection", "notes")
    assert "delta.txt" in left.stdout


async def test_a_reader_that_stops_early_is_no_traceback(settings: Settings, ids: dict[str, UUID]) -> None:
    # `rag-server documents list | head -1`: the pipe closes before the listing is written.
    def list_into_a_closed_pipe() -> tuple[int, bytes]:
        listing = subprocess.Popen(
            [sys.executable, "-m", "rag_server", "documents", "list", "--collection", "notes"],
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert listing.stdout is not None and listing.stderr is not None
        listing.stdout.close()
        stderr = listing.stderr.read()
        return listing.wait(120), stderr

    code, stderr = await asyncio.to_thread(list_into_a_closed_pipe)
    assert (code, stderr) == (128 + signal.SIGPIPE, b"")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("documents", "delete", "--yes"), "name the documents to delete"),
        (("documents", "delete", "--metadata", "{source: old}", "--yes"), "--metadata is not JSON"),
        (("documents", "delete", "--metadata", '{"a": {"b": 1}}', "--yes"), "error: --metadata:"),
        (("documents", "delete", "--text", '{"$regex": "a"}', "--yes"), "error: --text: '$regex' is no"),
        (("documents", "list", "--text", "heron"), "--text is not JSON"),
        (("documents", "delete", "not-a-uuid", "--yes"), "invalid UUID value"),
        (("documents", "list", "--collection", "nope"), "no collection 'nope'"),
        (("documents", "list", "--limit", "0"), "--limit"),
        (("documents", "show", "not-a-uuid"), "invalid UUID value"),
        (("documents", "show", "00000000-0000-0000-0000-000000000000", "--limit", "201"), "--limit"),
        (("documents", "show", "00000000-0000-0000-0000-000000000000", "--text", "{}"), "error: --text:"),
        (("documents", "update", "--set", '{"a": 1}', "--yes"), "name the documents to update"),
        (("documents", "update", "--text", '{"$contains": "a"}', "--set", "[1]"), "--set must be a JSON"),
        (("documents", "update", "--text", '{"$contains": "a"}', "--set", "{a}"), "--set is not JSON"),
        (("documents", "update", "--text", '{"$contains": "a"}', "--yes"), "--set"),
    ],
)
async def test_bad_arguments_are_one_error_line(
    settings: Settings, ids: dict[str, UUID], args: tuple[str, ...], said: str
) -> None:
    result = await rag_server(settings, *args)
    assert result.returncode != 0
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
