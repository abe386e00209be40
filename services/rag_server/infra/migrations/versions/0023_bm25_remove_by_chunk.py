"""Native BM25: a chunk's postings are removed by its id (an index on bm25_postings.chunk_id), not by
its lexemes recomputed from the deleted text.

0002's bm25_index_remove ran to_tsvector on every deleted chunk again and then looked each posting up
in the primary key (term, chunk_id): one index descent per posting, about 70 per chunk. Deleting 1,000
documents (10,000 chunks, 692k postings) of 40,000 chunks through delete_documents took 4.3 s (0.43 ms
per chunk), 4.5 of 4.7 s in that function under EXPLAIN ANALYZE; with the index 1.0 s (0.10 ms per chunk).
The index is small (btree deduplication: 18 MB next to the key's 224 MB there) and appended to in chunk
id order; a writer's BM25 trigger costs about 8% more (2,000 chunks: 3.9 -> 4.2 s). It removes exactly
what was stored: postings of lexemes the text no longer yields (another `english` dictionary) go too,
and df counts what went. Same lock (the bm25_stats row first), same statistics; the function keeps its
signature (p_texts is no longer read) so the triggers of 0002/0003 stay as they are. Native engine only.

Building the index locks bm25_postings against writes (SHARE) for its duration: about 1 s per 3M
postings here; chunk writers wait, searches do not.

Revision ID: 0023_bm25_remove_by_chunk
Revises: 0022_activity_and_name_order
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql, scalar

revision = "0023_bm25_remove_by_chunk"
down_revision = "0022_activity_and_name_order"
branch_labels = None
depends_on = None

UPGRADE = """
-- Searches must not use it: with it the planner took it for bm25_native's lookups of a few terms in
-- many chunks (heap fetches of every posting of each chunk instead of index-only probes), 8.0 -> 13.1 ms
-- median at 30k chunks without a pack. Its predicate (true of every row: the CHECK tf > 0) is in no
-- search, so only a statement that says it too can use the index: bm25_index_remove below.
CREATE INDEX bm25_postings_chunk_idx ON bm25_postings (chunk_id) WHERE tf > 0;

CREATE OR REPLACE FUNCTION bm25_index_remove(p_ids bigint[], p_texts text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    emptied text[];
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    -- The writers' mutex first, as every chunk writer and the pack take it.
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;

    -- Every posting of these chunks, by bm25_postings_chunk_idx (tf > 0: its predicate; p_texts: no
    -- longer needed).
    WITH gone AS (
        DELETE FROM bm25_postings p WHERE p.chunk_id = ANY (p_ids) AND p.tf > 0
        RETURNING p.term, p.chunk_id, p.doc_len
    ), counts AS (
        SELECT term, count(*) AS n FROM gone GROUP BY term
    ), updated AS (
        UPDATE bm25_terms bt SET df = bt.df - counts.n
        FROM counts WHERE bt.term = counts.term
        RETURNING bt.term, bt.df
    ), lens AS (
        SELECT DISTINCT chunk_id, doc_len FROM gone
    ), stats AS (
        UPDATE bm25_stats
        SET n_docs = n_docs - cardinality(p_ids),
            total_len = total_len - (SELECT coalesce(sum(doc_len), 0) FROM lens)
        WHERE id = 1
    )
    SELECT array_agg(term) INTO emptied FROM updated WHERE df = 0;

    IF emptied IS NOT NULL THEN
        DELETE FROM bm25_terms WHERE term = ANY (emptied) AND df = 0;
    END IF;
END
$fn$;
"""

# 0002's definition, as it was.
DOWNGRADE = """
DROP INDEX bm25_postings_chunk_idx;

CREATE OR REPLACE FUNCTION bm25_index_remove(p_ids bigint[], p_texts text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    emptied text[];
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;

    WITH toks AS (
        SELECT d.id AS chunk_id, t.lexeme AS term
        FROM unnest(p_ids, p_texts) AS d (id, search_text)
        CROSS JOIN LATERAL unnest(to_tsvector('english', d.search_text)) AS t
    ), gone AS (
        DELETE FROM bm25_postings p USING toks
        WHERE p.term = toks.term AND p.chunk_id = toks.chunk_id
        RETURNING p.term, p.chunk_id, p.doc_len
    ), counts AS (
        SELECT term, count(*) AS n FROM gone GROUP BY term
    ), updated AS (
        UPDATE bm25_terms bt SET df = bt.df - counts.n
        FROM counts WHERE bt.term = counts.term
        RETURNING bt.term, bt.df
    ), lens AS (
        SELECT DISTINCT chunk_id, doc_len FROM gone
    ), stats AS (
        UPDATE bm25_stats
        SET n_docs = n_docs - cardinality(p_ids),
            total_len = total_len - (SELECT coalesce(sum(doc_len), 0) FROM lens)
        WHERE id = 1
    )
    SELECT array_agg(term) INTO emptied FROM updated WHERE df = 0;

    IF emptied IS NOT NULL THEN
        DELETE FROM bm25_terms WHERE term = ANY (emptied) AND df = 0;
    END IF;
END
$fn$;
"""


def _native_bm25() -> bool:
    return bool(scalar("SELECT to_regclass('bm25_postings') IS NOT NULL"))


def upgrade() -> None:
    if _native_bm25():
        execute_sql(UPGRADE)


def downgrade() -> None:
    if _native_bm25():
        execute_sql(DOWNGRADE)
