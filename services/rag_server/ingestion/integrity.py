"""`rag-server check`: the database's invariants, verified from its rows (operators and the chaos run).

Each check is one query that returns the rows breaking an invariant, so an empty answer means it holds:
- tasks: a failed task says why; a `processing` task's worker is alive; a `queued` task has its message;
  with `quiescent` (nothing may be running: the chaos run waits for that) no task is unfinished;
- chunks: each document's chunk indexes are exactly 0..n-1 and n = documents.chunk_count; only ready
  documents have chunks; a completed task wrote its document's chunks;
- native BM25: bm25_stats, bm25_terms and bm25_postings equal a recount from the chunks' text
  (the triggers' own formulas: to_tsvector('english', search_text), tf = positions); the pack holds
  what bm25_postings holds for the chunks it covers;
- queue: no message whose task is finished or missing (complete/fail delete or archive it in the task's
  own transaction). On a live system a document deleted while queued leaves its message until a worker
  reads it, so without `quiescent` only a message visible for over ORPHAN_VISIBLE_S counts;
- embedding generations (once `reembed` made a second): every chunk of a ready document has a vector
  of each active or retired generation;
- chat: every question has its answer right after it and every answer its question (the server writes
  both in ONE transaction; system messages aside).
Run with the owner's or the system scope's view: under a key's scope rows it cannot see look missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_server.infra import queue as infra_queue
from rag_server.infra.database import Executor
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
    FROM chunks c CROSS JOIN LATERAL unnest(to_tsvector('english', c.search_text)) AS t
    {where}
), lens AS (SELECT chunk_id, sum(tf)::integer AS doc_len FROM toks GROUP BY chunk_id)
"""


_RECOUNT = recount_sql()
BM25_CHECKS = {
    "bm25 stats": f"""{_RECOUNT}
        SELECT NULL::uuid, 'bm25_stats n_docs ' || s.n_docs || ', total_len ' || s.total_len
               || '; recount ' || r.n || ', ' || r.len
        FROM bm25_stats s,
             (SELECT (SELECT count(*) FROM chunks) AS n,
                     (SELECT coalesce(sum(doc_len), 0) FROM lens) AS len) r
        WHERE s.n_docs <> r.n OR s.total_len <> r.len""",
    "bm25 terms": f"""{_RECOUNT}
        SELECT NULL::uuid, 'term ' || quote_literal(coalesce(b.term, r.term)) || ': df '
               || coalesce(b.df::text, 'missing') || ', recount ' || coalesce(r.df::text, 'none')
        FROM bm25_terms b FULL JOIN (SELECT term, count(*) AS df FROM toks GROUP BY term) r ON r.term = b.term
        WHERE b.df IS DISTINCT FROM r.df""",
    "bm25 postings": f"""{_RECOUNT}
        , expected AS (
            SELECT toks.term, toks.chunk_id, toks.tf, lens.doc_len, toks.collection_id
            FROM toks JOIN lens USING (chunk_id))
        , wrong AS (
            (SELECT 'extra' AS kind, * FROM (SELECT term, chunk_id, tf, doc_len, collection_id
                                            FROM bm25_postings EXCEPT SELECT * FROM expected) x)
            UNION ALL
            (SELECT 'missing', * FROM (SELECT * FROM expected EXCEPT SELECT term, chunk_id, tf, doc_len,
                                       collection_id FROM bm25_postings) y))
        SELECT NULL::uuid, kind || ' posting: term ' || quote_literal(term) || ', chunk ' || chunk_id
               || ', tf ' || tf || ', doc_len ' || doc_len FROM wrong""",
    # The pack (0014) holds exactly the postings of every live chunk at or below its watermark that
    # was not written again since (bm25_unpacked); deleted chunks' entries may stay until the next pack,
    # but only while it counts them (0016: with none counted, searches do not check for them).
    # Entries are big-endian and never negative: left-padded to 8 or 4 bytes, they read as bigint, int.
    "bm25 pack": """
        WITH k AS (SELECT watermark, deleted, CASE WHEN narrow THEN 4 ELSE 8 END AS id_bytes,
                          CASE WHEN narrow THEN 2 ELSE 4 END AS value_bytes FROM bm25_pack)
        , packed AS (
            SELECT b.collection_id, b.term,
                   ('x' || lpad(encode(substring(b.chunk_ids FROM i * k.id_bytes + 1 FOR k.id_bytes),
                                       'hex'), 16, '0'))::bit(64)::bigint AS chunk_id,
                   ('x' || lpad(encode(substring(b.tfs FROM i * k.value_bytes + 1 FOR k.value_bytes),
                                       'hex'), 8, '0'))::bit(32)::int AS tf,
                   ('x' || lpad(encode(substring(b.lens FROM i * k.value_bytes + 1 FOR k.value_bytes),
                                       'hex'), 8, '0'))::bit(32)::int AS doc_len
            FROM k, bm25_packed b, generate_series(0, length(b.chunk_ids) / k.id_bytes - 1) AS i)
        , held AS (
            SELECT * FROM packed p
            WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.id = p.chunk_id)
              AND NOT EXISTS (SELECT 1 FROM bm25_unpacked u WHERE u.chunk_id = p.chunk_id))
        , expected AS (
            SELECT p.collection_id, p.term, p.chunk_id, p.tf, p.doc_len FROM bm25_postings p, k
            WHERE p.chunk_id <= k.watermark
              AND NOT EXISTS (SELECT 1 FROM bm25_unpacked u WHERE u.chunk_id = p.chunk_id))
        , wrong AS (
            (SELECT 'wrong' AS kind, * FROM (SELECT * FROM held EXCEPT ALL SELECT * FROM expected) x)
            UNION ALL
            (SELECT 'missing', * FROM (SELECT * FROM expected EXCEPT ALL SELECT * FROM held) y)
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
    stale = "true" if quiescent else f"q.vt < clock_timestamp() - interval '{ORPHAN_VISIBLE_S} seconds'"
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

COUNTS = {
    "documents": "SELECT count(*) FROM documents",
    "chunks": "SELECT count(*) FROM chunks",
    "tasks": "SELECT count(*) FROM job_tasks",
    "chat messages": "SELECT count(*) FROM chat_messages",
}


async def check_integrity(conn: Executor, queue_name: str, *, quiescent: bool = False) -> IntegrityReport:
    """Every invariant above; `quiescent`: nothing may still be queued or running (a stopped pipeline)."""
    # Settings.queue_name's pattern allows only [a-z0-9_]: safe as an identifier.
    queue_table = infra_queue.queue_table(queue_name)
    report = IntegrityReport()
    checks = _task_checks(quiescent, queue_table) | CHUNK_CHECKS | _queue_checks(quiescent, queue_table)
    if await conn.fetchval("SELECT to_regclass('bm25_stats') IS NOT NULL"):
        checks |= BM25_CHECKS
    else:
        report.skipped.append("BM25 recount (pg_search keeps its own index)")
    if await conn.fetchval("SELECT count(*) > 1 FROM embedding_generations"):
        checks |= GENERATION_CHECKS
    else:
        report.skipped.append("vectors per embedding generation (only generation 1 exists)")
    checks |= CHAT_CHECKS
    for name, sql in COUNTS.items():
        report.counts[name] = int(await conn.fetchval(sql))
    report.counts["queue messages"] = int(await conn.fetchval(f"SELECT count(*) FROM {queue_table}"))
    for check, sql in checks.items():
        rows = await conn.fetch(f"SELECT * FROM ({sql}) v LIMIT {SAMPLE + 1}")
        for row in rows[:SAMPLE]:
            report.violations.append(Violation(check, str(row[1])))
        if len(rows) > SAMPLE:
            report.violations.append(Violation(check, f"... and more (first {SAMPLE} shown)"))
    return report
