"""Schema migrations (Alembic). The only way the schema changes.

`upgrade_to_head` holds a Postgres advisory lock for the whole run, so a server, a worker and a
CLI starting at the same moment apply each migration exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rag_server.config import Settings
from rag_server.infra.database import plain_url, sqlalchemy_url

if TYPE_CHECKING:  # Alembic is imported when it runs: every CLI command imports this module
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent
# Any constant works; it only has to be the same in every process that migrates this database.
ADVISORY_LOCK_KEY = 0x5241_4753  # "RAGS"


def alembic_config(database_url: str, settings: Settings) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Not set_main_option: ConfigParser would try to interpolate '%' in passwords.
    cfg.attributes["sqlalchemy_url"] = sqlalchemy_url(database_url)
    cfg.attributes["settings"] = settings
    return cfg


def _migration_files() -> list[Path]:
    return sorted((MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def shipped_head() -> str:
    """The last migration's revision, known without importing Alembic (~1.5 s of a process's start):
    each revision is its file's name and they chain in the names' order (tests/unit/
    test_migration_files.py holds both, and that Alembic reads the same head)."""
    return _migration_files()[-1].stem


def head_revisions() -> frozenset[str]:
    """The migration heads this code ships."""
    return frozenset({shipped_head()})


def shipped_revisions() -> frozenset[str]:
    """Every migration this code ships."""
    return frozenset(path.stem for path in _migration_files())


def newer_schema(revisions: Iterable[str]) -> str | None:
    """What to say when the database is at a revision this code does not ship: a newer rag-server
    migrated it (Alembic only said "Can't locate revision", in a traceback). None when every one is known."""
    unknown = sorted(set(revisions) - shipped_revisions())
    if not unknown:
        return None
    return (
        f"the database is at revision {', '.join(unknown)}, which this rag-server does not have: a newer "
        "version migrated it. Run that version (or a newer one); going back is not supported, except by "
        "restoring a backup made before the upgrade"
    )


# The oldest PostgreSQL the migrations run on: 0033 recomputes a generated column with ALTER COLUMN ...
# SET EXPRESSION, new in 17 (the embedded server is 18, ParadeDB's image 18).
MIN_SERVER_VERSION_NUM = 170000


def unsupported_server(version_num: int) -> str | None:
    """Why a server of this `server_version_num` cannot be migrated, else None: said before a migration
    starts, not as the syntax error of one of them half-way through an upgrade."""
    if version_num >= MIN_SERVER_VERSION_NUM:
        return None
    major = version_num // 10000
    return (
        f"the database server is PostgreSQL {major}; rag-server needs PostgreSQL "
        f"{MIN_SERVER_VERSION_NUM // 10000} or later (with pgvector and pgmq): upgrade the server, or unset "
        "DATABASE_URL to use the embedded one"
    )


def upgrade_to_head(database_url: str, settings: Settings) -> None:
    """Blocking; call through asyncio.to_thread from async code."""
    from alembic import command

    command.upgrade(alembic_config(database_url, settings), "head")


# The SECURITY DEFINER functions of the schema (p: pg_proc) that are ours, not an extension's.
DEFINER_FUNCTIONS_WHERE = """
    p.prosecdef AND p.pronamespace = 'public'::regnamespace
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                    AND d.deptype = 'e')
"""

# True when a migration run would change nothing: the schema at `shipped_head()` ($2), the runtime role ($1)
# granted what `ensure_runtime_role` grants on every table and sequence of the two schemas and on our
# SECURITY DEFINER functions, and not what it revokes (alembic_version's writes, those functions from
# PUBLIC). Each privilege alone: given a list, has_*_privilege is true when any one is held. A database
# new, behind or ahead, a role dropped, a grant revoked or added: false, and Alembic runs.
_NOTHING_TO_MIGRATE = """
SELECT to_regclass('public.alembic_version') IS NOT NULL
   AND current_user <> $1
   AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 AND NOT rolsuper AND NOT rolbypassrls)
"""
_AT_HEAD_AND_GRANTED = f"""
SELECT (SELECT array_agg(version_num::text) FROM alembic_version) = ARRAY[$2::text]
   AND has_database_privilege($1, current_database(), 'CONNECT')
   AND NOT has_table_privilege($1, 'public.alembic_version', 'INSERT')
   AND NOT has_table_privilege($1, 'public.alembic_version', 'UPDATE')
   AND NOT has_table_privilege($1, 'public.alembic_version', 'DELETE')
   AND NOT EXISTS (
       SELECT 1 FROM pg_namespace n WHERE n.nspname IN ('public', 'pgmq')
          AND NOT has_schema_privilege($1, n.oid, 'USAGE'))
   AND NOT EXISTS (
       SELECT 1 FROM pg_proc p WHERE {DEFINER_FUNCTIONS_WHERE}
          AND (NOT has_function_privilege($1, p.oid, 'EXECUTE')
               OR has_function_privilege('public', p.oid, 'EXECUTE')))
   AND NOT EXISTS (
       SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'pgmq') AND c.relname <> 'alembic_version'
          AND CASE WHEN c.relkind = 'S' THEN NOT (has_sequence_privilege($1, c.oid, 'USAGE')
                                                  AND has_sequence_privilege($1, c.oid, 'SELECT'))
                   WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f')
                   THEN NOT (has_table_privilege($1, c.oid, 'SELECT')
                             AND has_table_privilege($1, c.oid, 'INSERT')
                             AND has_table_privilege($1, c.oid, 'UPDATE')
                             AND has_table_privilege($1, c.oid, 'DELETE'))
                   ELSE false END)
"""


async def migrate(database_url: str, settings: Settings) -> None:
    """`upgrade_to_head`, skipped when it would change nothing. Every CLI command, worker and in-process
    runtime opens the database through here: Alembic (with SQLAlchemy and psycopg) costs a process
    about 1.5 s to import and run, a check on one connection milliseconds. A configured runtime password
    is always set again (it cannot be compared), so then Alembic always runs."""
    if settings.runtime_db_password is None and await _nothing_to_migrate(database_url, settings):
        return
    await asyncio.to_thread(upgrade_to_head, database_url, settings)


async def _nothing_to_migrate(database_url: str, settings: Settings) -> bool:
    """Checked holding the migration lock shared, for the check's transaction: a process migrating (a
    newer version, say) holds it exclusively, and the schema it is changing is not taken as it was;
    then Alembic runs, waits for that process and finds what it left."""
    import asyncpg

    conn = await asyncpg.connect(plain_url(database_url))
    try:
        role = settings.runtime_db_user
        async with conn.transaction():
            return bool(
                await conn.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)", ADVISORY_LOCK_KEY)
                and await conn.fetchval(_NOTHING_TO_MIGRATE, role)
                and await conn.fetchval(_AT_HEAD_AND_GRANTED, role, shipped_head())
            )
    finally:
        await conn.close()


def migrate_before_loop(database_url: str, settings: Settings) -> None:
    """`migrate` where no event loop runs yet: `serve` and `up`, before they start their server's."""
    asyncio.run(migrate(database_url, settings))


def current_revision(database_url: str, settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
