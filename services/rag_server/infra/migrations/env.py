"""Alembic environment: online migrations only, serialised by an advisory lock."""

from __future__ import annotations

from alembic import context
from psycopg.errors import LockNotAvailable
from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.exc import OperationalError

from rag_server.infra.capabilities import SchemaMismatchError
from rag_server.infra.embeddings import check_new_database_dim
from rag_server.infra.migrations import ADVISORY_LOCK_KEY, newer_schema, unsupported_server
from rag_server.infra.migrations.helpers import migration_settings
from rag_server.infra.migrations.runtime_role import ensure_runtime_role

config = context.config
# The longest a blocked `SELECT pg_advisory_lock()` of a waiting process lives (then it asks again): under
# deadlock_timeout (1 s by default), so CREATE INDEX CONCURRENTLY never waits on it long enough to be
# taken for a deadlock.
LOCK_WAIT_MS = 200


def take_migration_lock(connection: Connection) -> None:
    """The session-level migration lock, waited for in short statements: a blocked `SELECT
    pg_advisory_lock()` holds its snapshot, and CREATE INDEX CONCURRENTLY (0027) waits for every
    transaction of the database with an older one: the migration running and the one waiting for it
    deadlocked (a server and a worker started together: one of them failed)."""
    while True:
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
        try:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
        except OperationalError as exc:
            connection.rollback()
            if not isinstance(exc.orig, LockNotAvailable):
                raise
            continue
        connection.commit()  # the lock is the session's: it outlives the transaction
        return


def run_migrations_online() -> None:
    url = config.attributes.get("sqlalchemy_url")
    if not url:
        raise RuntimeError("run migrations with `rag-server migrate`, which supplies the database URL")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Session-level lock: a second process waits here, then finds the schema at head.
        take_migration_lock(connection)
        try:
            context.configure(connection=connection, transaction_per_migration=True)
            heads = context.get_context().get_current_heads()
            version_num = int(connection.exec_driver_sql("SHOW server_version_num").scalar_one())
            if said := unsupported_server(version_num) or newer_schema(heads):
                raise SchemaMismatchError(said)
            if not heads:  # a new database: 0001 fixes its vectors' size for good
                check_new_database_dim(migration_settings())
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
            settings = migration_settings()
            password = settings.runtime_db_password
            ensure_runtime_role(
                connection.connection.driver_connection,
                settings.runtime_db_user,
                password.get_secret_value() if password is not None else None,
            )
            connection.commit()
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_KEY})")
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
run_migrations_online()
