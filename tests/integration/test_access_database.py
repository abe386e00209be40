"""Access control below the API: row-level security as the runtime role in raw SQL, the keys CLI, and
the secure defaults of `rag-server serve` (issue 11)."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.config import Settings
from rag_server.infra.database import as_user, owner_connection
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.infra.scoped_pool import DbScope, bind_scope, reset_scope
from rag_server.ingestion.batches import create_upload_batch
from rag_server.ingestion.pipeline import DirectDocument, incoming_file, ingest_documents_direct
from rag_server.retrieval import bm25_packs
from tests.conftest import create_database
from tests.support.processes import free_port, settings_env, start_listening

# Every table whose rows belong to a collection (directly or through their parent) or to a key.
TABLES = [
    "collections",
    "documents",
    "document_files",
    "chunks",
    "chunk_vectors",
    "bm25_postings",
    "bm25_packed",
    "bm25_unpacked",
    "job_batches",
    "job_tasks",
    "chat_sessions",
    "chat_messages",
    "v1_responses",
    "api_keys",
    "api_key_collections",
]


@pytest.fixture(scope="module")
async def two_collections(runtime: Runtime) -> dict[str, Any]:
    made: dict[str, Any] = {}
    for name in ("red", "blue"):
        c = await store.create_collection(runtime.pool, CreateCollection(name=name))
        await ingest_documents_direct(
            runtime,
            [DirectDocument(f"{name}.txt", f"{name} zebrafish heart regeneration".encode(), {})],
            collection_id=c.id,
        )
        await create_upload_batch(
            runtime.pool, runtime.queue, [incoming_file(f"{name}-q.txt", name.encode())], c.id
        )
        made[name] = c.id
    # The native BM25 pack (0014) of both collections, then a rewritten chunk in each: unpacked rows.
    await bm25_packs.pack(runtime.pool)
    for name in ("red", "blue"):
        await runtime.pool.execute(
            "UPDATE chunks SET search_text = search_text || ' rewritten' WHERE collection_id = $1", made[name]
        )
    made["red_key"] = await keys.create_key(
        runtime.pool, CreateKey(name="red", role="reader", collections=["red"])
    )
    async with owner_connection(runtime.database_url) as owner:
        for name in ("red", "blue"):
            key_id = made["red_key"].id if name == "red" else None
            session = await owner.fetchval(
                "INSERT INTO chat_sessions (title, owner_key_id) VALUES ($1, $2) RETURNING id", name, key_id
            )
            await owner.execute(
                "INSERT INTO chat_messages (session_id, role, content) VALUES ($1, 'user', 'hi')", session
            )
        # Stored /v1 responses (0030): red's key's in red and in blue, and one of no key's in red.
        for n, (name, key_id) in enumerate(
            (("red", made["red_key"].id), ("blue", made["red_key"].id), ("red", None))
        ):
            await owner.execute(
                "INSERT INTO v1_responses (id, collection_id, owner_key_id, input, response)"
                " VALUES ($1, $2, $3, '[]', '{}')",
                f"resp_{n:032x}",
                made[name],
                key_id,
            )
    return made


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}


async def test_the_runtime_role_sees_only_its_scope_in_raw_sql(
    runtime: Runtime, settings: Settings, two_collections: dict[str, Any]
) -> None:
    red, blue = two_collections["red"], two_collections["blue"]
    key = two_collections["red_key"]
    conn = await asyncpg.connect(as_user(runtime.database_url, settings.runtime_db_user))
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, (SELECT count(*) FROM pg_tables WHERE tableowner = rolname)"
            " AS owns FROM pg_roles WHERE rolname = current_user"
        )
        assert dict(role) == {"rolsuper": False, "rolbypassrls": False, "owns": 0}
        # No settings at all: nothing.
        assert set((await _counts(conn)).values()) == {0}
        async with conn.transaction():
            scope = DbScope(collections=(red,), role="reader", key_id=key.id)
            await conn.execute(
                "SELECT set_config('rag.collections', $1, true), set_config('rag.role', $2, true),"
                " set_config('rag.key_id', $3, true)",
                *scope.settings(),
            )
            counts = await _counts(conn)
            assert counts["collections"] == 1 and counts["documents"] == 2 and counts["chunks"] >= 1
            assert counts["bm25_postings"] > 0 and counts["job_batches"] == 1 and counts["job_tasks"] == 1
            assert counts["bm25_packed"] > 0 and counts["bm25_unpacked"] == 1
            assert counts["document_files"] == 2  # the ingested document and the queued upload
            assert counts["chat_sessions"] == 1 and counts["chat_messages"] == 1
            assert counts["v1_responses"] == 1
            assert counts["api_keys"] == 0 and counts["api_key_collections"] == 0  # admins only
            for table in (
                "documents",
                "chunks",
                "bm25_postings",
                "bm25_packed",
                "bm25_unpacked",
                "job_batches",
            ):
                assert (
                    await conn.fetchval(f"SELECT count(*) FROM {table} WHERE collection_id = $1", blue) == 0
                )
            # Joining through to another collection's rows finds nothing either.
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM document_files f JOIN documents d ON d.id = f.document_id"
                    " WHERE d.collection_id = $1",
                    blue,
                )
                == 0
            )
            # A reader cannot write, even into its own collection; nobody writes beyond the scope.
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():  # a savepoint: the test goes on after the refusal
                    await conn.execute("INSERT INTO collections (name) VALUES ('sneaky')")
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('rag.collections', $1, true), set_config('rag.role', 'editor', true)",
                "{" + str(red) + "}",
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256,"
                        " status, collection_id) VALUES ('x.txt', 'txt', 'text/plain', 1, $1, 'ready', $2)",
                        "b" * 64,
                        blue,
                    )
            assert await conn.execute("DELETE FROM documents WHERE collection_id = $1", blue) == "DELETE 0"
        # The settings were transaction-local: gone with the transaction.
        assert set((await _counts(conn)).values()) == {0}
    finally:
        await conn.close()
    async with owner_connection(runtime.database_url) as owner:  # the owner still sees blue's rows
        assert await owner.fetchval("SELECT count(*) FROM documents WHERE collection_id = $1", blue) == 2


async def test_messages_go_only_into_the_writing_keys_own_session_while_it_is_live(
    runtime: Runtime, settings: Settings, two_collections: dict[str, Any]
) -> None:
    """Migration 0017's INSERT policy, in raw SQL as the runtime role: an admin reads every session but
    writes only into its own (or one made in open mode, without an owner); a revoked key writes none."""
    red_key = two_collections["red_key"]
    admin = await keys.create_key(runtime.pool, CreateKey(name="turns-admin", role="admin"))
    async with owner_connection(runtime.database_url) as owner:
        red_session = await owner.fetchval("SELECT id FROM chat_sessions WHERE owner_key_id = $1", red_key.id)
        open_session = await owner.fetchval("SELECT id FROM chat_sessions WHERE owner_key_id IS NULL")
    conn = await asyncpg.connect(as_user(runtime.database_url, settings.runtime_db_user))

    async def insert(scope: DbScope, session: Any) -> bool:
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('rag.collections', $1, true), set_config('rag.role', $2, true),"
                    " set_config('rag.key_id', $3, true)",
                    *scope.settings(),
                )
                await conn.execute(
                    "INSERT INTO chat_messages (session_id, role, content) VALUES ($1, 'user', 'x')", session
                )
                raise _RolledBack
        except asyncpg.InsufficientPrivilegeError:
            return False
        except _RolledBack:
            return True

    as_admin = DbScope(collections=None, role="admin", key_id=admin.id)
    as_red = DbScope(collections=(two_collections["red"],), role="reader", key_id=red_key.id)
    try:
        assert await insert(as_red, red_session)
        assert not await insert(as_admin, red_session)
        assert await insert(as_admin, open_session)
        assert not await insert(as_red, open_session)
        await keys.revoke_key(runtime.pool, "red")
        assert not await insert(as_red, red_session)
    finally:
        await conn.close()
        await runtime.pool.execute("UPDATE api_keys SET revoked_at = NULL WHERE id = $1", red_key.id)


async def test_a_stored_response_is_its_keys_in_its_collections(
    runtime: Runtime, settings: Settings, two_collections: dict[str, Any]
) -> None:
    """Migration 0030's policy, in raw SQL as the runtime role: a key reads and deletes only its own
    stored responses in collections it can read, and writes only its own into them."""
    red, blue, red_key = two_collections["red"], two_collections["blue"], two_collections["red_key"]
    conn = await asyncpg.connect(as_user(runtime.database_url, settings.runtime_db_user))
    try:
        async with conn.transaction():
            scope = DbScope(collections=(red,), role="reader", key_id=red_key.id)
            await conn.execute(
                "SELECT set_config('rag.collections', $1, true), set_config('rag.role', $2, true),"
                " set_config('rag.key_id', $3, true)",
                *scope.settings(),
            )
            assert [r["id"] for r in await conn.fetch("SELECT id FROM v1_responses")] == [f"resp_{0:032x}"]
            insert = "INSERT INTO v1_responses (id, collection_id, owner_key_id, input, response)"
            made = await conn.fetchval(
                insert + " VALUES ($1, $2, DEFAULT, '[]', '{}') RETURNING owner_key_id", f"resp_{9:032x}", red
            )
            assert made == red_key.id  # the writing key, filled in by the database
            for collection, owner in ((blue, red_key.id), (red, None)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():
                        await conn.execute(
                            insert + " VALUES ($1, $2, $3, '[]', '{}')", f"resp_{8:032x}", collection, owner
                        )
            assert (
                await conn.execute("DELETE FROM v1_responses WHERE id <> $1", f"resp_{9:032x}") == "DELETE 1"
            )
            raise _RolledBack
    except _RolledBack:
        pass
    finally:
        await conn.close()
    async with owner_connection(runtime.database_url) as owner:
        assert await owner.fetchval("SELECT count(*) FROM v1_responses") == 3
    # A key revoked while it answered stores nothing (as a chat turn, 0017).
    await keys.revoke_key(runtime.pool, "red")
    conn = await asyncpg.connect(as_user(runtime.database_url, settings.runtime_db_user))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('rag.collections', $1, true), set_config('rag.role', $2, true),"
                    " set_config('rag.key_id', $3, true)",
                    *DbScope(collections=(red,), role="reader", key_id=red_key.id).settings(),
                )
                await conn.execute(
                    "INSERT INTO v1_responses (id, collection_id, input, response)"
                    " VALUES ($1, $2, '[]', '{}')",
                    f"resp_{7:032x}",
                    red,
                )
    finally:
        await conn.close()
        await runtime.pool.execute("UPDATE api_keys SET revoked_at = NULL WHERE id = $1", red_key.id)


class _RolledBack(Exception):
    """Ends a transaction that succeeded, so the test leaves no row behind."""


async def test_a_pooled_connection_carries_nothing_from_one_scope_to_the_next(
    settings: Settings, two_collections: dict[str, Any]
) -> None:
    """Released connections are not reset (infra/database.py skips asyncpg's RESET ALL round trip):
    a scoped transaction's settings and advisory locks end with it, so the next user of the same
    connection, here one without a scope, sees no row and holds no lock."""
    red = two_collections["red"]
    one_connection = settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 1})
    async with open_runtime(one_connection, migrate=False, scope=None) as rt:
        token = bind_scope(DbScope(collections=(red,), role="reader"))
        try:
            async with rt.pool.acquire() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                assert await conn.fetchval("SELECT count(*) FROM documents") > 0
                await conn.execute("SELECT pg_advisory_xact_lock(4242)")
        finally:
            reset_scope(token)
        async with rt.pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection
            assert await conn.fetchval("SELECT current_setting('rag.collections', true)") in (None, "")
            assert await conn.fetchval("SELECT count(*) FROM documents") == 0
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            assert await conn.fetchval(held) == 0


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag_server", *args], env=env, capture_output=True, text=True, timeout=180
    )


async def test_keys_cli_prints_the_key_once_and_revokes(
    runtime: Runtime, settings: Settings, two_collections: dict[str, Any]
) -> None:
    env = settings_env(settings)
    created = _cli(
        env, "keys", "create", "--name", "cli-key", "--role", "editor", "--collections", "red,blue"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    lines = created.stdout.strip().splitlines()
    key = lines[-1]
    assert key.startswith("rag_") and len(key) > 40 and " " not in key
    assert created.stdout.count(key) == 1 and key not in created.stderr
    principal = await keys.authenticate(runtime.pool, key, open_allowed=False)
    assert principal.role == "editor" and set(principal.collections or ()) == {
        two_collections["red"],
        two_collections["blue"],
    }
    listing = _cli(env, "keys", "list")
    assert listing.returncode == 0 and "cli-key" in listing.stdout and key not in listing.stdout
    assert key[:12] in listing.stdout and key[12:] not in listing.stdout
    total = len(listing.stdout.strip().splitlines()) - 1  # every key, under the header
    page = _cli(env, "keys", "list", "--limit", "1", "--offset", "1").stdout.strip().splitlines()
    assert len(page) == 3 and page[1] == listing.stdout.splitlines()[2] and page[2] == f"keys 2-2 of {total}"
    assert _cli(env, "keys", "create", "--name", "cli-key", "--role", "reader").returncode == 1
    bad = _cli(env, "keys", "create", "--name", "boss", "--role", "admin", "--collections", "red")
    assert bad.returncode == 1 and "every collection" in bad.stderr
    bad_name = _cli(env, "keys", "create", "--name", "bad name", "--role", "reader")
    assert bad_name.returncode == 1 and bad_name.stderr.splitlines() == [
        "error: --name 'bad name': letters, digits, '_', '.', '@' and '-', starting with a letter or digit;"
        " up to 100"
    ]
    empty = _cli(env, "keys", "create", "--name", "x", "--role", "reader", "--collections", "red,")
    assert empty.returncode == 1 and empty.stderr.splitlines() == [
        "error: --collections (value 2) '': must not be empty"
    ]
    assert (
        _cli(env, "keys", "create", "--name", "x", "--role", "reader", "--collections", "nope").returncode
        == 1
    )
    revoked = _cli(env, "keys", "revoke", "cli-key")
    assert revoked.returncode == 0 and key not in revoked.stdout
    from rag_server.errors import UnauthenticatedError

    with pytest.raises(UnauthenticatedError):
        await keys.authenticate(runtime.pool, key, open_allowed=False)
    assert "cli-key" in _cli(env, "keys", "list", "--all").stdout
    assert _cli(env, "keys", "revoke", "cli-key").returncode == 1


def test_serve_on_all_interfaces_refuses_without_a_key_and_starts_with_the_bootstrap_key(
    pg_server: str, tmp_path: Path
) -> None:
    url = asyncio.run(create_database(pg_server, "exposed"))
    settings = Settings(database_url=url, data_dir=tmp_path)
    env = settings_env(settings)
    refused = subprocess.run(
        [sys.executable, "-m", "rag_server", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert refused.returncode == 2
    said = refused.stderr.splitlines()[-1]  # after the migrations' log lines: the CLI's one `error:` line
    assert said.startswith("error: refusing to serve on 0.0.0.0: no API key exists"), refused.stderr
    assert "rag-server keys create" in said

    bootstrap = "b" * 40
    child = start_listening(
        ["serve", "--host", "0.0.0.0"], {**env, "RAG_BOOTSTRAP_ADMIN_KEY": bootstrap}, tmp_path / "serve.log"
    )
    try:
        with httpx.Client(base_url=child.base_url) as client:
            assert client.get("/health").json()["auth"] == "api_key"
            assert client.get("/collections").status_code == 401
            assert (
                client.get("/collections", headers={"Authorization": f"Bearer {bootstrap}"}).status_code
                == 200
            )
    finally:
        child.stop()
    assert bootstrap not in child.log_tail(10_000)


async def test_the_cli_says_in_one_sentence_when_the_server_wants_a_key_or_is_not_there(
    settings: Settings, two_collections: dict[str, Any], live_app_url: str, tmp_path: Path
) -> None:
    env = settings_env(settings)
    paper = tmp_path / "paper.txt"
    paper.write_text("Zebrafish hearts regenerate.")
    refused = await asyncio.to_thread(_cli, env, "ingest", str(paper), "--url", live_app_url, "--no-wait")
    assert refused.returncode == 1
    assert "needs an API key" in refused.stderr and "RAG_API_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr
    key = await asyncio.to_thread(_cli, env, "keys", "create", "--name", "uploader", "--role", "editor")
    with_key = {**env, "RAG_API_KEY": key.stdout.strip().splitlines()[-1]}
    accepted = await asyncio.to_thread(
        _cli, with_key, "ingest", str(paper), "--url", live_app_url, "--no-wait"
    )
    assert accepted.returncode == 0, accepted.stderr
    gone = await asyncio.to_thread(_cli, env, "search", "zebrafish", "--url", "http://127.0.0.1:9")
    assert (
        gone.returncode == 1 and "cannot reach the server" in gone.stderr and "Traceback" not in gone.stderr
    )


async def test_a_changed_bootstrap_key_replaces_the_previous_one(
    runtime: Runtime, two_collections: dict[str, Any]
) -> None:
    from rag_server.errors import UnauthenticatedError

    first, second = "f" * 40, "s" * 40
    assert await keys.ensure_bootstrap_key(runtime.pool, first) is True
    assert await keys.ensure_bootstrap_key(runtime.pool, first) is False  # a restart changes nothing
    assert (await keys.authenticate(runtime.pool, first, open_allowed=False)).role == "admin"
    assert await keys.ensure_bootstrap_key(runtime.pool, second) is True
    with pytest.raises(UnauthenticatedError):
        await keys.authenticate(runtime.pool, first, open_allowed=False)
    assert (await keys.authenticate(runtime.pool, second, open_allowed=False)).role == "admin"


def _readme_key_commands() -> list[list[str]]:
    """The `rag-server` lines of the README's "Sharing it: API keys" block, in order, as printed."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Sharing it: API keys", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    prefix = ".venv/bin/rag-server "
    return [shlex.split(line.split("#", 1)[0])[1:] for line in block.splitlines() if line.startswith(prefix)]


async def test_the_readme_key_commands_run_as_printed(settings: Settings) -> None:
    """A reader following the README on a fresh database: each key command works in the order shown
    (a reader key for `papers` failed while `papers` did not exist)."""
    commands = _readme_key_commands()
    assert {("keys", "create"), ("keys", "list"), ("keys", "revoke")} <= {tuple(c[:2]) for c in commands}
    env = settings_env(settings)
    for args in commands:
        done = _cli(env, *args)
        assert done.returncode == 0, (args, done.stdout + done.stderr)
