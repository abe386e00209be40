"""Building the native BM25 engine's pack (migration 0014, docs/decisions/0014-packed-postings.md), and
deciding when it is due. The pack is a copy of bm25_postings: it is rebuilt whole, never patched.

A pack runs in one transaction holding the writers' mutex (the bm25_stats row every chunk writer locks
first), so it sees every committed chunk and no writer changes postings under it: chunk writers wait
for it (3.5 s per 100k chunks here; reports/bench-bm25-packed.md). Readers do not wait: they keep
reading the previous pack in their snapshot until it commits.

Who runs it: a worker every RAG_BM25_PACK_INTERVAL_S when it is due (`pack_if_due`), `rag-server pack`,
and `rag-server bench search` on a freshly built database. Must see every collection: call it with the
system scope (workers, CLI).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from rag_server.config import Settings
from rag_server.infra.database import Executor, transaction
from rag_server.retrieval.bm25_native import INT4_MAX
from rag_server.retrieval.bm25_packed import packed_lists

logger = logging.getLogger(__name__)

# Advisory lock key: one pack at a time (a worker finding it taken skips: a second would redo the first).
PACK_LOCK = 7_220_014_001
# Each unpacked chunk costs every search a probe per query term (~80 us): past this many, repack.
UNPACKED_MAX = 100
# A pack groups every posting by (term, collection): its sort gets this much memory, not 4MB.
PACK_WORK_MEM = "256MB"

STATE_SQL = """
    SELECT k.watermark, coalesce(k.chunks, 0) AS packed_chunks, coalesce(k.postings, 0) AS postings,
           k.packed_at, k.seconds, coalesce(k.narrow, false) AS narrow, coalesce(k.deleted, 0) AS deleted,
           s.n_docs AS chunks,
           CASE WHEN k.watermark IS NULL THEN 0
                ELSE (SELECT count(*) FROM chunks c WHERE c.id > k.watermark) END AS newer,
           (SELECT count(*) FROM bm25_unpacked) AS unpacked
    FROM bm25_stats s LEFT JOIN bm25_pack k ON true
    WHERE s.id = 1
"""

# UPDATE, not SELECT ... FOR UPDATE: a writer in a REPEATABLE READ snapshot taken before the pack then
# fails on the row instead of writing at or below the watermark without seeing it.
PACK_STATEMENTS = (
    "UPDATE bm25_stats SET n_docs = n_docs WHERE id = 1",
    f"SET LOCAL work_mem = '{PACK_WORK_MEM}'",
    "DELETE FROM bm25_packed",
    "DELETE FROM bm25_unpacked",
)
WATERMARK_SQL = "SELECT coalesce(max(id), 0) FROM chunks"


def fill_sql(narrow: bool) -> str:
    return f"""
        INSERT INTO bm25_packed (collection_id, term, chunk_ids, tfs, lens)
        SELECT p.collection_id, p.term, {packed_lists("p", narrow)}
        FROM bm25_postings p
        WHERE p.chunk_id <= $1
        GROUP BY p.term, p.collection_id
    """


# The planner's row counts for the new rows, as a worker would otherwise wait for autovacuum's.
ANALYZE_SQL = "ANALYZE bm25_packed"
# Under the mutex every committed chunk is at or below the watermark: bm25_stats counts them, and none
# deleted is in the pack (migration 0016's count starts again). A packed list's length comes from its
# TOAST pointer, without reading it.
RECORD_SQL = """
    INSERT INTO bm25_pack (id, watermark, chunks, postings, seconds, narrow)
    VALUES (1, $1, (SELECT n_docs FROM bm25_stats WHERE id = 1),
            (SELECT coalesce(sum(length(chunk_ids) / CASE WHEN $3 THEN 4 ELSE 8 END), 0)
             FROM bm25_packed), $2, $3)
    ON CONFLICT (id) DO UPDATE SET watermark = EXCLUDED.watermark, chunks = EXCLUDED.chunks,
        postings = EXCLUDED.postings, packed_at = now(), seconds = EXCLUDED.seconds,
        narrow = EXCLUDED.narrow, deleted = 0
"""


@dataclass(frozen=True)
class PackState:
    """The pack against the chunks now. `watermark` None: never packed."""

    watermark: int | None
    packed_chunks: int
    postings: int  # postings in the pack
    packed_at: datetime | None
    seconds: float | None  # how long the last pack held the writers
    narrow: bool  # int4 chunk ids, int2 tfs and lengths (migration 0015), else int8 and int4
    chunks: int
    newer: int  # chunks above the watermark
    unpacked: int  # chunks at or below it written after the pack
    deleted: int  # chunks at or below it deleted since (migration 0016's count: it may run high)

    @property
    def changed(self) -> int:
        """Chunks the pack does not hold as they are now: newer, unpacked and deleted ones."""
        return self.newer + self.unpacked + self.deleted

    def describe(self) -> str:
        if self.watermark is None:
            return f"no pack yet ({self.chunks} chunks)"
        return (
            f"{self.packed_chunks} chunks, {self.postings} postings up to chunk id {self.watermark} "
            f"({'narrow' if self.narrow else 'wide'} entries), "
            f"built {self.packed_at:%Y-%m-%d %H:%M:%S %Z} in {self.seconds or 0:.1f} s; "
            f"{self.changed} chunks changed since ({self.newer} newer, {self.unpacked} rewritten "
            f"or written late, {self.deleted} deleted)"
        )

    def due(self, settings: Settings) -> bool:
        """RAG_BM25_PACK_MIN_CHUNKS chunks and no pack yet, RAG_BM25_PACK_REFRESH_SHARE changed, or more
        than UNPACKED_MAX unpacked chunks."""
        if self.watermark is None:
            return self.chunks >= settings.bm25_pack_min_chunks
        share = settings.bm25_pack_refresh_share * self.packed_chunks
        return self.unpacked > UNPACKED_MAX or (self.changed > 0 and self.changed >= share)


async def pack_state(conn: Executor) -> PackState:
    row = await conn.fetchrow(STATE_SQL)
    assert row is not None  # bm25_stats always holds its row
    return PackState(
        watermark=row["watermark"],
        packed_chunks=int(row["packed_chunks"]),
        postings=int(row["postings"]),
        packed_at=row["packed_at"],
        seconds=row["seconds"],
        narrow=row["narrow"],
        chunks=int(row["chunks"]),
        newer=int(row["newer"]),
        unpacked=int(row["unpacked"]),
        deleted=int(row["deleted"]),
    )


async def pack(conn: Executor, *, if_due: Settings | None = None) -> PackState | None:
    """Rebuild the pack from bm25_postings, in one transaction. With `if_due`, only when due by those
    settings (read under the lock), and None when not (or another pack is running); without, after
    any running pack."""
    async with transaction(conn) as c:
        if if_due is None:
            await c.execute("SELECT pg_advisory_xact_lock($1)", PACK_LOCK)
        else:
            locked = await c.fetchval("SELECT pg_try_advisory_xact_lock($1)", PACK_LOCK)
            if not locked or not (await pack_state(c)).due(if_due):
                return None
        started = time.perf_counter()
        for statement in PACK_STATEMENTS:
            await c.execute(statement)
        watermark = await c.fetchval(WATERMARK_SQL)
        narrow = await fill(c, watermark)
        await c.execute(RECORD_SQL, watermark, time.perf_counter() - started, narrow)
        await c.execute(ANALYZE_SQL)
        state = await pack_state(c)
    logger.info(
        "BM25 pack: %d chunks, %d postings at or below chunk id %d in %.1f s",
        state.packed_chunks,
        state.postings,
        watermark,
        state.seconds or 0.0,
    )
    return state


async def fill(conn: asyncpg.Connection, watermark: int) -> bool:
    """Copy the postings at or below `watermark` into the (emptied) pack, inside the caller's
    transaction: narrow when every chunk id, tf and length fits, else wide. Returns whether narrow. A
    chunk of more than 32,767 terms (an imported document never chunked) makes it wide, after a narrow
    attempt that its cast stopped."""
    if watermark <= INT4_MAX:  # a narrow pack's chunk ids are int4
        try:
            async with conn.transaction():  # a savepoint: only the narrow attempt is undone
                await conn.execute(fill_sql(True), watermark)
            return True
        except asyncpg.NumericValueOutOfRangeError:
            logger.info("BM25 pack: a tf or chunk length exceeds 32,767: packing wide")
    await conn.execute(fill_sql(False), watermark)
    return False


async def pack_if_due(conn: Executor, settings: Settings) -> PackState | None:
    """Pack when due; the state is read first without any lock, so a pack not due costs two counts."""
    if not (await pack_state(conn)).due(settings):
        return None
    return await pack(conn, if_due=settings)
