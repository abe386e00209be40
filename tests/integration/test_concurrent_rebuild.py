"""helpers.rebuild_index_concurrently, the way migration 0027 changes ParadeDB's BM25 index without locking
`chunks`, run on the embedded PostgreSQL with a B-tree index in its place (pg_search cannot be installed
here; the statements around the index are PostgreSQL's own and the same for both).

What it promises: the table stays writable while the new index is built, the old index keeps its name
until the new one is valid, and a run stopped half-way leaves what the next run cleans up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from rag_server.config import Settings
from rag_server.infra.database import sqlalchemy_url
from rag_server.infra.migrations import ADVISORY_LOCK_KEY, upgrade_to_head
from rag_server.infra.migrations.helpers import (
    concurrent_rebuild_sql,
    execute_sql,
    rebuild_index_concurrently,
    scalar,
)
from tests.conftest import create_database

NEW_INDEX = "CREATE INDEX t_idx ON t (b)"


@pytest.fixture
async def url(pg_server: str) -> str:
    url = await create_database(pg_server, "rebuild")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (a int, b text)")
        conn.execute("INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 1000) AS i")
        conn.execute("CREATE INDEX t_idx ON t (a)")
    return url


def indexes(url: str) -> dict[str, tuple[str, bool]]:
    """t's indexes: name -> (definition, valid)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = 't'::regclass"
        ).fetchall()
    return {name: (definition, valid) for name, definition, valid in rows}


REBUILT = {"t_idx": ("CREATE INDEX t_idx ON public.t USING btree (b)", True)}


@contextmanager
def migration(url: str) -> Iterator[None]:
    """A migration's context as env.py makes it (one transaction per migration), `op` bound to it."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"transaction_per_migration": True})
            with Operations.context(context), context.begin_transaction(_per_migration=True):
                yield
    finally:
        engine.dispose()


def test_in_a_migration_the_work_before_is_committed_and_the_index_swapped(url: str) -> None:
    with migration(url):
        execute_sql("INSERT INTO t VALUES (0, 'written by the migration before the rebuild')")
        rebuild_index_concurrently(NEW_INDEX)
    assert indexes(url) == REBUILT
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM t WHERE a = 0").fetchone() == (1,)


async def test_writes_go_on_while_the_new_index_is_built(url: str) -> None:
    """A write open on the table (a worker's long final write) holds the build: CREATE INDEX CONCURRENTLY
    waits for it. Another write meanwhile does not wait, and the old index keeps its name."""
    long_write = await psycopg.AsyncConnection.connect(url)
    await long_write.execute("INSERT INTO t VALUES (-1, 'a write still open')")  # not committed yet
    done = threading.Event()

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in concurrent_rebuild_sql(NEW_INDEX):
                conn.execute(statement)  # type: ignore[arg-type]  # our own fixed SQL
        done.set()

    builder = threading.Thread(target=run)
    builder.start()
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as writer:
            for _ in range(600):
                waiting = await writer.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' "
                    "AND wait_event_type = 'Lock'"
                )
                if (await waiting.fetchone()) == (1,):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the build never waited for the open transaction")
            await writer.execute("SET lock_timeout = '2s'")
            await writer.execute("INSERT INTO t VALUES (1001, 'written during the build')")
            assert "t_idx" in indexes(url) and not done.is_set()
    finally:
        await long_write.rollback()
        await long_write.close()
        await asyncio.to_thread(builder.join, 60)
    assert done.is_set()
    assert indexes(url) == REBUILT


def test_a_run_stopped_half_way_is_cleaned_up_by_the_next(url: str) -> None:
    """What a stopped run can leave: the retired index (stopped after the swap) and an invalid new one
    (stopped during the build; here a unique build that failed, which PostgreSQL leaves invalid)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE INDEX t_idx_old ON t (a)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO t VALUES (1, 'a duplicate')")
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY t_idx_next ON t (a)")
    assert indexes(url)["t_idx_next"][1] is False
    with migration(url):
        rebuild_index_concurrently(NEW_INDEX)
    assert indexes(url) == REBUILT


def test_a_migrator_waiting_for_the_migration_lock_does_not_stop_the_build(url: str, tmp_path: Path) -> None:
    """A server and a worker started together both migrate: one runs 0027 under env.py's advisory lock,
    the other waits for that lock as env.py waits (`SELECT pg_advisory_lock(...)` in SQLAlchemy's implicit
    transaction). CREATE INDEX CONCURRENTLY waits for every transaction of the database holding a snapshot
    older than its own, the waiting one too, which waits for the lock: a deadlock, and one of the two
    processes fails to start."""
    data_dir = tmp_path
    failures: list[BaseException] = []

    def second_migrator() -> None:
        try:
            upgrade_to_head(url, Settings(database_url=url, data_dir=data_dir))
        except BaseException as exc:
            failures.append(exc)

    with migration(url):  # the first migrator: 0027's rebuild under env.py's lock
        execute_sql(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")  # session-level, as env.py's
        first = scalar("SELECT pg_backend_pid()")
        waiter = threading.Thread(target=second_migrator)
        waiter.start()
        try:
            with psycopg.connect(url, autocommit=True) as watch:
                for _ in range(600):
                    row = watch.execute(  # the second waits for the lock, or asked for it and goes on asking
                        "SELECT count(*) FROM pg_stat_activity WHERE (wait_event = 'advisory' OR "
                        "query = 'COMMIT') AND pid NOT IN (%s, pg_backend_pid())",
                        (first,),
                    ).fetchone()
                    if row == (1,):
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("the second migrator never asked for the lock")
            rebuild_index_concurrently(NEW_INDEX)
        finally:
            execute_sql(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_KEY})")
            waiter.join(60)
    assert not waiter.is_alive()
    assert failures == []
    assert indexes(url) == REBUILT  # the second then migrated the database beside t (head)
