"""Schema migrations (Alembic). The only way the schema changes.

`upgrade_to_head` holds a Postgres advisory lock for the whole run, so a server, a worker and a
CLI starting at the same moment apply each migration exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from rag_server.config import Settings
from rag_server.infra.database import sqlalchemy_url

if TYPE_CHECKING:  # Alembic is imported when it runs: every CLI command imports this module
    from alembic.config import Config
    from alembic.script import ScriptDirectory

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


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR))


def head_revisions() -> frozenset[str]:
    """The migration heads this code ships."""
    return frozenset(_scripts().get_heads())


def shipped_revisions() -> frozenset[str]:
    """Every migration this code ships."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


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


def upgrade_to_head(database_url: str, settings: Settings) -> None:
    """Blocking; call through asyncio.to_thread from async code."""
    from alembic import command

    command.upgrade(alembic_config(database_url, settings), "head")


def current_revision(database_url: str, settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
