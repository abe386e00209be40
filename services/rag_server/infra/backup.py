"""`rag-server backup FILE` / `rag-server restore FILE`: the whole database with PostgreSQL's own tools.

Backup: as the tables' owner (row-level security does not apply to it: ENABLE, not FORCE), one
REPEATABLE READ transaction exports its snapshot; the manifest's counts are read in it and `pg_dump -Fc
--snapshot` dumps exactly that state, so a backup taken while workers write is one consistent moment
(every ingestion step is one transaction: a document is in it with all its chunks or with none).

Restore: into a new or empty database (one holding data only with `force`: dropped and created again),
`pg_restore --single-transaction --no-owner --no-privileges` (all or nothing; objects owned by the
restoring role), then the migrations: a no-op at the same revision, forward from an older one, and they
create and grant the runtime role (roles are cluster-wide, not in a database's dump). Then ANALYZE.
"""

from __future__ import annotations

import asyncio
import datetime
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from rag_server import __version__
from rag_server.config import Settings
from rag_server.infra import admin
from rag_server.infra.backup_archive import (
    BackupError,
    Manifest,
    libpq_target,
    open_backup,
    pg_tool,
    run_tool,
    write_backup,
)
from rag_server.infra.database import plain_url, with_database
from rag_server.infra.migrations import MIGRATIONS_DIR, upgrade_to_head
from rag_server.paths import output_file_problem

Report = Callable[[str], None]

COUNTED_TABLES = {
    "documents": "documents",
    "chunks": "chunks",
    "chat sessions": "chat_sessions",
    "chat messages": "chat_messages",
    "stored responses": "v1_responses",
    "API keys": "api_keys",
    "tasks": "job_tasks",
}


async def database_counts(conn: asyncpg.Connection, queue_name: str) -> dict[str, int]:
    """Rows of the tables a user cares about, and the messages in the ingestion queue (0: absent)."""
    queue_table = f"pgmq.{admin.quote_ident('q_' + queue_name)}"
    return await admin.row_counts(conn, {**COUNTED_TABLES, "queue messages": queue_table})


async def check_queue_dumpable(conn: asyncpg.Connection, queue_name: str) -> None:
    """pg_dump leaves out the rows of an extension's member tables: a pgmq installed as an extension
    whose queue tables are members (pgmq before 1.6) would lose every queued task's message."""
    queue_table = f"pgmq.{admin.quote_ident('q_' + queue_name)}"
    member = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_depend WHERE classid = 'pg_class'::regclass"
        " AND objid = to_regclass($1) AND deptype = 'e')",
        queue_table,
    )
    if member:
        raise BackupError(
            f"the queue table {queue_table} belongs to an extension, so pg_dump would leave its messages"
            " out: upgrade pgmq to 1.6 or later (queue tables are no longer extension members) first"
        )


def summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {label}" for label, n in counts.items())


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB" if nbytes >= 2**20 else f"{nbytes / 1024:.0f} kB"


# --- backup ---


def backup_target(path: Path) -> Path:
    """`path` resolved, where a backup file can be written (an existing file is replaced), else a
    BackupError: checked before the dump, which a folder or a missing one failed only at its end."""
    target = path.resolve()
    if problem := output_file_problem(target, "rag.ragbackup"):
        raise BackupError(problem)
    return target


async def backup(owner_url: str, settings: Settings, target: Path, report: Report) -> Manifest:
    """Dump the database at `owner_url` into the backup file `target`."""
    started = time.monotonic()
    url, env = libpq_target(owner_url)
    target = await asyncio.to_thread(backup_target, target)
    conn = await asyncpg.connect(plain_url(owner_url))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            revision = await conn.fetchval(
                "SELECT version_num FROM alembic_version"
                if await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
                else "SELECT NULL::text"
            )
            if revision is None:
                raise BackupError("the database has no rag-server schema: nothing to back up")
            await check_queue_dumpable(conn, settings.queue_name)
            manifest = Manifest(
                app_version=__version__,
                schema_revision=revision,
                created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                server_version=str(await conn.fetchval("SHOW server_version")),
                counts=await database_counts(conn, settings.queue_name),
            )
            report(f"backing up {_describe(owner_url)} (schema {revision}): {summary(manifest.counts)}")
            try:  # the dump goes beside the target (same file system: the final rename is atomic)
                with tempfile.TemporaryDirectory(dir=target.parent, prefix=".rag-backup-") as tmp:
                    dump = Path(tmp) / "database.pgdump"
                    args = [pg_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "-f", str(dump)]
                    await asyncio.to_thread(run_tool, [*args, "--dbname", url], env)
                    await asyncio.to_thread(write_backup, target, manifest, dump)
            except OSError as exc:  # e.g. a full disk: a sentence, and nothing left (write_backup's cleanup)
                raise BackupError(f"could not write {target}: {exc.strerror or exc}") from exc
    finally:
        await conn.close()
    elapsed = time.monotonic() - started
    report(f"backup written to {target}: {_size(target.stat().st_size)} in {elapsed:.1f} s")
    return manifest


def _describe(url: str) -> str:
    parts = urlsplit(plain_url(url))
    return f"database {parts.path.lstrip('/') or '?'} on {parts.hostname or 'the local socket'}"


# --- restore ---


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}


async def restore(
    owner_url: str, settings: Settings, source: Path, *, force: bool, report: Report
) -> Manifest:
    """Restore the backup file `source` into the database at `owner_url` (created when missing)."""
    started = time.monotonic()
    with open_backup(source) as (manifest, tar, member):
        if manifest.schema_revision not in known_revisions():
            raise BackupError(
                f"the backup is from a newer rag-server (schema {manifest.schema_revision}, version "
                f"{manifest.app_version}): upgrade rag-server to restore it"
            )
        report(
            f"restoring {source} (taken {manifest.created_at}, schema {manifest.schema_revision}): "
            f"{summary(manifest.counts)}"
        )
        await prepare_target(owner_url, settings.queue_name, force, report)
        url, env = libpq_target(owner_url)
        args = [pg_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--no-owner"]
        args += ["--no-privileges", "--dbname", url]
        with tempfile.TemporaryDirectory(prefix="rag-restore-") as tmp:
            tar.extract(member, tmp, filter="data")
            dump = str(Path(tmp) / member.name)
            listing = Path(tmp) / "restore.list"
            toc = await asyncio.to_thread(run_tool, [args[0], "--list", dump], env)
            await asyncio.to_thread(listing.write_text, restorable(toc))
            await asyncio.to_thread(run_tool, [*args, f"--use-list={listing}", dump], env)
    report("data restored; migrating and granting the runtime role")
    await asyncio.to_thread(upgrade_to_head, owner_url, settings)
    conn = await asyncpg.connect(plain_url(owner_url))
    try:
        await conn.execute("ANALYZE")  # planner statistics are not part of the dump
        counts = await database_counts(conn, settings.queue_name)
    finally:
        await conn.close()
    # The counts both versions take: an older backup's manifest lacks a table counted since (stored
    # responses), and a count dropped since is not taken now.
    shared = manifest.counts.keys() & counts.keys()
    if any(counts[label] != manifest.counts[label] for label in shared):
        raise BackupError(f"the restored database holds {summary(counts)}, the backup recorded otherwise")
    report(f"restore complete in {time.monotonic() - started:.1f} s: {summary(counts)}")
    return manifest


def restorable(toc: str) -> str:
    """The archive's table of contents without the extensions' comments: only an extension's owner may
    set one, and a target whose administrator created the extensions up front would refuse them."""
    return "".join(line for line in toc.splitlines(keepends=True) if "COMMENT - EXTENSION " not in line)


async def prepare_target(owner_url: str, queue_name: str, force: bool, report: Report) -> None:
    """Leave an empty database at `owner_url`: create it, keep it (empty), or replace it."""
    name = urlsplit(plain_url(owner_url)).path.lstrip("/")
    if not name:
        raise BackupError("the database URL names no database")
    # The database cannot be dropped from a session inside it: work from another one on the server.
    maintenance = with_database(owner_url, "template1" if name == "postgres" else "postgres")
    if not await admin.database_exists(maintenance, name):
        report(f"creating database {name}")
        await admin.create_database(maintenance, name)
        return
    async with admin.connection(owner_url) as conn:
        held = await held_data(conn, queue_name)
    if held is None:
        return
    if held and not force:
        raise BackupError(
            f"the database {name} already holds data ({held}); restore refuses to replace it without --force"
        )
    report(f"replacing database {name}" + (f" ({held})" if held else " (schema only, no data)"))
    await admin.drop_database(maintenance, name)
    await admin.create_database(maintenance, name)


async def held_data(conn: asyncpg.Connection, queue_name: str) -> str | None:
    """None: no tables (extensions' aside); "": a rag-server schema with no data in it; else what it holds."""
    tables = await conn.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg\\_toast%'"
        # An extension's own tables (a production image creates its extensions up front) are no data.
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
        " AND d.objid = c.oid AND d.deptype = 'e')"
    )
    if not tables:
        return None
    if not await admin.has_app_meta(conn):
        return f"{tables} tables that are not a rag-server schema"
    held = {label: n for label, n in (await database_counts(conn, queue_name)).items() if n}
    # `default` is made by the migrations: only the other collections are data.
    has_collections = await conn.fetchval("SELECT to_regclass('public.collections') IS NOT NULL")
    if has_collections and (extra := int(await conn.fetchval("SELECT count(*) FROM collections")) - 1):
        held["collections"] = extra
    return summary(held)
