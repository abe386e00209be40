"""`rag-server check`: the database's invariants, verified from its rows (operators and the chaos run).

Each check is one query that returns the rows breaking an invariant, so an empty answer means it holds:
- tasks: a failed task says why; a `processing` task's worker is alive; a `queued` task has its message;
  with `quiescent` (nothing may be running: the chaos run waits for that) no task is unfinished;
- chunks: each document's chunk indexes are exactly 0..n-1 and n = documents.chunk_count; only ready
  documents have chunks; a completed task wrote its document's chunks;
- native BM25: bm25_stats, bm25_terms and bm25_postings equal a recount from the chunks' text
  (the triggers' own formulas: to_tsvector('english', rag_bm25_text(search_text)), tf = positions);
  the pack holds what bm25_postings holds for the chunks it covers;
- queue: no message whose task is finished or missing (complete/fail delete or archive it in the task's
  own transaction). On a live system a document deleted while queued leaves its message until a worker
  reads it, so without `quiescent` only a message visible for over ORPHAN_VISIBLE_S counts;
- embedding generations (once `reembed` made a second): every chunk of a ready document has a vector
  of each active or retired generation;
- chat: every question has its answer right after it and every answer its question (the server writes
  both in ONE transaction; system messages aside).
Run with the owner's or the system scope's view: under a key's scope rows it cannot see look missing.
Every check reads one snapshot (REPEATABLE READ, READ ONLY); the BM25 recount is computed once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from rag_server.infra import admin
from rag_server.infra import queue as infra_queue
from rag_server.infra.database import Executor
from rag_server.infra.scoped_pool import ScopedPool
from rag_server.ingestion.recovery import worker_alive_sql

# A live system's stale message is read and dropped by a worker within its poll interval.
ORPHAN_VISIBLE_S = 60
# Violations listed per check at most (the count is always exact).
SAMPLE = 20


@dataclass(frozen=True)
class Violation:
    check: str
    detail: str


@dataclass
class IntegrityReport:
    violations: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def lines(self) -> list[str]:
        figures = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        out = [f"checked: {figures}"]
        out += [f"skipped: {why}" for why in self.skipped]
        out += [f"VIOLATION [{v.check}] {v.detail}" for v in self.violations]
        out.append("integrity: OK" if self.ok else f"integrity: {len(self.violations)} violation(s)")
        return out


def _task_checks(quiescent: bool, queue_table: str) -> dict[str, str]:
    unfinished = (
        "SELECT id, 'task ' || id || ' is still ' || status FROM job_tasks"
        " WHERE status IN ('queued', 'processing')"
        if quiescent
        else "SELECT NULL::uuid, NULL::text WHERE false"
    )
    return {
        "task without reason": """
            SELECT id, 'task ' || id || ' (' || filename || ') failed without a readable reason'
            FROM job_tasks WHERE status = 'failed' AND coalesce(btrim(error), '') = ''""",
        "task stuck": f"""
            SELECT id, 'task ' || id || ' is processing by worker ' || coalesce(worker_id::text, 'none')
                   || ', which is not running' FROM job_tasks t
            WHERE status = 'processing' AND (worker_id IS NULL OR NOT {worker_alive_sql("t.worker_id")})
            UNION ALL
            SELECT id, 'task ' || id || ' is queued without a queue message' FROM job_tasks t
            WHERE status = 'queued'
              AND NOT EXISTS (SELECT 1 FROM {queue_table} q WHERE q.msg_id = t.msg_id)""",
        "task unfinished": unfinished,
        "completed task": """
            SELECT t.id, 'task ' || t.id || ' completed with ' || t.total_chunks
                   || ' chunks but its document is ' || d.status || ' with '
                   || (SELECT count(*) FROM chunks c WHERE c.document_id = d.id)
            FROM job_tasks t JOIN documents d ON d.id = t.document_id
            WHERE t.status = 'completed' AND t.finished_at = (
                    SELECT max(t2.finished_at) FROM job_tasks t2
                    WHERE t2.document_id = d.id AND t2.status IN ('completed', 'failed'))
              AND (d.status <> 'ready'
                   OR t.total_chunks <> (SELECT count(*) FROM chunks c WHERE c.document_id = d.id))""",
    }


CHUNK_CHECKS = {
    "chunk indexes": """
        SELECT d.id, 'document ' || d.id || ' (' || d.filename || '): ' || count(c.id) || ' chunks, indexes '
               || coalesce(min(c.chunk_index), -1) || '..' || coalesce(max(c.chunk_index), -1) || ', '
               || count(DISTINCT c.chunk_index) || ' distinct, chunk_count ' || d.chunk_count
        FROM documents d LEFT JOIN chunks c ON c.document_id = d.id
        GROUP BY d.id
        HAVING count(c.id) <> d.chunk_count
            OR (count(c.id) > 0 AND (min(c.chunk_index) <> 0 OR max(c.chunk_index) <> count(c.id) - 1
                                     OR count(DISTINCT c.chunk_index) <> count(c.id)))""",
    "chunks of unready document": """
        SELECT d.id, 'document ' || d.id || ' is ' || d.status || ' but has chunks' FROM documents d
        WHERE d.status <> 'ready' AND EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)""",
}


def recount_sql(where: str = "") -> str:
    """The recount's CTEs `toks` and `lens`: what bm25_index_add would write for the chunks `where`
    selects (alias c; default every chunk) now. Also how the bench's bulk build writes its postings."""
    return f"""
WITH toks AS (
    SELECT c.id AS chunk_id, c.collection_id, t.lexeme AS term, cardinality(t.positions) AS tf
    FROM chunks c CROSS JOIN LATERAL unnest(to_tsvector('english', rag_bm25_text(c.search_text))) AS t
    {where}
), lens AS (SELECT chunk_id, sum(tf)::integer AS doc_len FROM toks GROUP BY chunk_id)
"""


# The recount's checks: each reads `toks` and `lens` of recount_sql(). They run as ONE statement
# (recount_checks_sql), so PostgreSQL tokenises every chunk once (a CTE read several times is materialised)
# instead of once per check: to_tsvector is most of their cost (about 5 s per 40k chunks).
BM25_RECOUNT_CHECKS = {
    "bm25 stats": """
        SELECT NULL::uuid, 'bm25_stats n_docs ' || s.n_docs || ', total_len ' || s.total_len
               || '; recount ' || r.n || ', ' || r.len
        FROM bm25_stats s,
             (SELECT (SELECT count(*) FROM chunks) AS n,
                     (SELECT coalesce(sum(doc_len), 0) FROM lens) AS len) r
        WHERE s.n_docs <> r.n OR s.total_len <> r.len""",
    "bm25 terms": """
        SELECT NULL::uuid, 'term ' || quote_literal(coalesce(b.term, r.term)) || ': df '
               || coalesce(b.df::text, 'missing') || ', recount ' || coalesce(r.df::text, 'none')
        FROM bm25_terms b FULL JOIN (SELECT term, count(*) AS df FROM toks GROUP BY term) r ON r.term = b.term
        WHERE b.df IS DISTINCT FROM r.df""",
    # What `bm25_postings EXCEPT expected` and `expected EXCEPT bm25_postings` list, by one hash join on
    # the key instead of two sorts of every posting: (term, chunk_id) is unique on both sides (the
    # primary key; a tsvector's lexemes), so a row of either side is in the other's EXCEPT exactly when
    # no row there has its key and values. A posting with a wrong value is listed as extra and missing.
    "bm25 postings": """
        SELECT NULL::uuid, w.kind || ' posting: term ' || quote_literal(w.term) || ', chunk ' || w.chunk_id
               || ', tf ' || w.tf || ', doc_len ' || w.doc_len
        FROM bm25_postings b
        FULL JOIN (SELECT toks.term, toks.chunk_id, toks.tf, lens.doc_len, toks.collection_id
                   FROM toks JOIN lens USING (chunk_id)) e ON e.term = b.term AND e.chunk_id = b.chunk_id
        CROSS JOIN LATERAL (VALUES ('extra', b.term, b.chunk_id, b.tf, b.doc_len),
                                   ('missing', e.term, e.chunk_id, e.tf, e.doc_len))
                           AS w (kind, term, chunk_id, tf, doc_len)
        WHERE (b.tf, b.doc_len, b.collection_id) IS DISTINCT FROM (e.tf, e.doc_len, e.collection_id)
          AND w.term IS NOT NULL""",
}


def recount_checks_sql(limit: int) -> str:
    """BM25_RECOUNT_CHECKS in one statement over one recount: rows (check, id, detail), at most `limit`
    per check."""
    parts = [
        f"SELECT {_literal(name)} AS name, v.* FROM ({sql}) v LIMIT {limit}"
        for name, sql in BM25_RECOUNT_CHECKS.items()
    ]
    return recount_sql() + "\n" + "\nUNION ALL\n".join(f"({part})" for part in parts)


def _literal(name: str) -> str:
    """A check's name (ours: no quote in it) as an SQL literal."""
    return "'" + name.replace("'", "''") + "'"


def _big_endian(data: str, index: str, width: int) -> str:
    """SQL: entry `index` of the bytea `data`, an unsigned big-endian integer of `width` bytes, as bigint.
    get_byte arithmetic: about 10x cheaper than substring + hex + bit casts per entry."""
    return " | ".join(
        f"(get_byte({data}, {index} * {width} + {j})::bigint << {8 * (width - 1 - j)})" for j in range(width)
    )


def _pack_entry(data: str, narrow: int, wide: int) -> str:
    return f"CASE WHEN k.narrow THEN {_big_endian(data, 'i', narrow)} ELSE {_big_endian(data, 'i', wide)} END"


PACK_CHECKS = {
    # The pack (0014) holds exactly the postings of every live chunk at or below its watermark that
    # was not written again since (bm25_unpacked); deleted chunks' entries may stay until the next pack,
    # but only while it counts them (0016: with none counted, searches do not check for them).
    # Entries are big-endian and never negative: ids 4 (narrow) or 8 bytes, tf and length 2 or 4 (read
    # through bit(32) like int4 bytes). The byte arrays are stored out of line (TOAST): `|| ''` reads
    # each once, in a subquery kept apart (OFFSET 0); get_byte on the stored column would fetch its
    # TOAST chunks again for every entry (most of this check's time before).
    "bm25 pack": f"""
        WITH k AS (SELECT watermark, deleted, narrow, CASE WHEN narrow THEN 4 ELSE 8 END AS id_bytes
                   FROM bm25_pack)
        , packed AS (
            SELECT b.collection_id, b.term, {_pack_entry("b.ids", 4, 8)} AS chunk_id,
                   ({_pack_entry("b.tfs", 2, 4)})::bit(32)::int AS tf,
                   ({_pack_entry("b.lens", 2, 4)})::bit(32)::int AS doc_len
            FROM k, (SELECT p.collection_id, p.term, p.chunk_ids || ''::bytea AS ids,
                            p.tfs || ''::bytea AS tfs, p.lens || ''::bytea AS lens
                     FROM bm25_packed p OFFSET 0) b,
                 generate_series(0, length(b.ids) / k.id_bytes - 1) AS i)
        , held AS (
            SELECT * FROM packed p
            WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.id = p.chunk_id)
              AND NOT EXISTS (SELECT 1 FROM bm25_unpacked u WHERE u.chunk_id = p.chunk_id))
        , expected AS (
            SELECT p.collection_id, p.term, p.chunk_id, p.tf, p.doc_len FROM bm25_postings p, k
            WHERE p.chunk_id <= k.watermark
              AND NOT EXISTS (SELECT 1 FROM bm25_unpacked u WHERE u.chunk_id = p.chunk_id))
        -- held EXCEPT ALL expected ('wrong') and expected EXCEPT ALL held ('missing') in one aggregate
        -- of both sides instead of two set operations over each: a row held h times and expected e
        -- times is listed |h - e| times, as the one whose side has more.
        , counted AS (
            SELECT collection_id, term, chunk_id, tf, doc_len, sum(h) AS h, sum(e) AS e
            FROM (SELECT *, 1 AS h, 0 AS e FROM held UNION ALL SELECT *, 0, 1 FROM expected) sides
            GROUP BY collection_id, term, chunk_id, tf, doc_len
            HAVING sum(h) <> sum(e))
        , wrong AS (
            (SELECT CASE WHEN h > e THEN 'wrong' ELSE 'missing' END AS kind,
                    collection_id, term, chunk_id, tf, doc_len
             FROM counted, generate_series(1, abs(h - e)))
            UNION ALL
            (SELECT 'uncounted deleted', p.* FROM packed p, k
             WHERE k.deleted = 0 AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = p.chunk_id)))
        SELECT NULL::uuid, kind || ' entry in the BM25 pack: term ' || quote_literal(term) || ', chunk '
               || chunk_id || ', tf ' || tf || ', doc_len ' || doc_len FROM wrong""",
}


# Every chunk of a ready document has a vector of each generation that searches use or may use again
# (active, retired); a building one is still being backfilled. Generation 1's is chunks.embedding.
GENERATION_CHECKS = {
    "missing vectors": """
        SELECT d.id, 'document ' || d.id || ' (' || d.filename || '): ' || count(*)
               || ' chunk(s) without a vector of embedding generation ' || g.id || ' (' || g.state || ')'
        FROM embedding_generations g
        JOIN documents d ON d.status = 'ready'
        JOIN chunks c ON c.document_id = d.id
        WHERE g.state IN ('active', 'retired')
          AND CASE WHEN g.id = 1 THEN c.embedding IS NULL
                   ELSE NOT EXISTS (SELECT 1 FROM chunk_vectors v
                                    WHERE v.generation_id = g.id AND v.chunk_id = c.id) END
        GROUP BY d.id, d.filename, g.id, g.state""",
}


def _queue_checks(quiescent: bool, queue_table: str) -> dict[str, str]:
    # now(): the check's transaction start, when its snapshot was taken (a message a worker dropped since
    # is still in it; the clock at this statement, after the BM25 checks, would shorten the grace).
    stale = "true" if quiescent else f"q.vt < now() - interval '{ORPHAN_VISIBLE_S} seconds'"
    return {
        "orphan message": f"""
            SELECT t.id, 'message ' || q.msg_id || ' (read ' || q.read_ct || ' times) for task '
                   || coalesce(q.message ->> 'task_id', '?') || ', which is ' || coalesce(t.status, 'missing')
            FROM {queue_table} q LEFT JOIN job_tasks t ON t.id::text = q.message ->> 'task_id'
            WHERE (t.id IS NULL OR t.status NOT IN ('queued', 'processing')) AND {stale}
              -- a re-embed's backfill message has no task (rag_server.generations)
              AND q.message ->> 'kind' IS DISTINCT FROM 'reembed'""",
    }


# Not in the sessions a LlamaIndex chat memory made (`chat_store`, migration 0021): the chat service writes
# a question and its answer in one transaction, a chat memory one message at a time.
CHAT_CHECKS = {
    "half-written chat": """
        WITH m AS (
            SELECT session_id, id, role,
                   lag(role) OVER w AS before, lead(role) OVER w AS after
            FROM chat_messages
            WHERE role <> 'system' AND session_id IN (SELECT id FROM chat_sessions WHERE NOT chat_store)
            WINDOW w AS (PARTITION BY session_id ORDER BY id))
        SELECT session_id, 'session ' || session_id || ': ' || role || ' message ' || id
               || CASE role WHEN 'user' THEN ' has no answer after it' ELSE ' has no question before it' END
        FROM m
        WHERE (role = 'user' AND after IS DISTINCT FROM 'assistant')
           OR (role = 'assistant' AND before IS DISTINCT FROM 'user')""",
}

# label -> table (admin.row_counts: one a database migrated by an older version lacks counts 0).
COUNTS = {
    "documents": "documents",
    "chunks": "chunks",
    "tasks": "job_tasks",
    "chat messages": "chat_messages",
    "stored responses": "v1_responses",
}


async def check_integrity(conn: Executor, queue_name: str, *, quiescent: bool = False) -> IntegrityReport:
    """Every invariant above; `quiescent`: nothing may still be queued or running (a stopped pipeline).
    All checks read one snapshot (see _snapshot)."""
    async with _snapshot(conn) as c:
        return await _check(c, queue_name, quiescent)


@asynccontextmanager
async def _snapshot(conn: Executor) -> AsyncIterator[asyncpg.Connection]:
    """One REPEATABLE READ READ ONLY transaction for the whole check: every figure and check describes one
    moment (a writer committing between two statements cannot pair documents from before with chunks
    from after: test_integrity's snapshot test), and a future check spanning statements stays exact
    (each of today's compares tables within one statement). Read-only (a check never
    writes; it may then also run on a standby), hence one statement for the recount rather than a
    temporary table, which needs a writable transaction. Inside the caller's transaction (tests break
    rows and check them uncommitted): that transaction as it is."""
    if isinstance(conn, ScopedPool):
        async with conn.acquire(isolation="repeatable_read", readonly=True) as pooled:
            yield pooled
    elif conn.is_in_transaction():
        yield conn
    else:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn


async def _check(conn: asyncpg.Connection, queue_name: str, quiescent: bool) -> IntegrityReport:
    # Settings.queue_name's pattern allows only [a-z0-9_]: safe as an identifier.
    queue_table = infra_queue.queue_table(queue_name)
    report = IntegrityReport()
    report.counts = await admin.row_counts(conn, {**COUNTS, "queue messages": queue_table})
    found: dict[str, list[str]] = {}  # check -> details, in the order run

    async def run(checks: dict[str, str]) -> None:
        for check, sql in checks.items():
            rows = await conn.fetch(f"SELECT * FROM ({sql}) v LIMIT {SAMPLE + 1}")
            found[check] = [str(row[1]) for row in rows]

    await run(_task_checks(quiescent, queue_table) | CHUNK_CHECKS | _queue_checks(quiescent, queue_table))
    if await conn.fetchval("SELECT to_regclass('bm25_stats') IS NOT NULL"):
        found.update({check: [] for check in BM25_RECOUNT_CHECKS})
        # One statement answers the recount's checks: each chunk is tokenised once.
        for name, _, detail in await conn.fetch(recount_checks_sql(SAMPLE + 1)):
            found[name].append(str(detail))
        await run(PACK_CHECKS)
    else:
        report.skipped.append("BM25 recount (pg_search keeps its own index)")
    if await conn.fetchval("SELECT count(*) > 1 FROM embedding_generations"):
        await run(GENERATION_CHECKS)
    else:
        report.skipped.append("vectors per embedding generation (only generation 1 exists)")
    await run(CHAT_CHECKS)
    for check, details in found.items():
        report.violations += [Violation(check, detail) for detail in details[:SAMPLE]]
        if len(details) > SAMPLE:
            report.violations.append(Violation(check, f"... and more (first {SAMPLE} shown)"))
    return report
