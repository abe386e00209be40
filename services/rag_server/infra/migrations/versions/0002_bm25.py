"""BM25 over the chunks table: ParadeDB pg_search when installed, else the native engine.

Native engine: an inverted index in plain tables, maintained by statement-level triggers on
`chunks` (transition tables), tokenised by Postgres's own `english` text search configuration.

    bm25_postings (term, chunk_id) -> tf, doc_len   doc_len denormalised: scoring needs no join
    bm25_terms    term -> df                        document frequency
    bm25_stats    one row: n_docs, total_len        N and the sum of document lengths

tf is the number of positions of a lexeme in to_tsvector('english', search_text); doc_len is the
sum of tf over the chunk's lexemes. Every writer first locks the bm25_stats row, which serialises
index maintenance between concurrent writers (statistics stay exact) and orders every later lock
behind that one (no deadlocks, whatever order transactions touch terms in).

Revision ID: 0002_bm25
Revises: 0001_foundation
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql, scalar, set_meta_sql

revision = "0002_bm25"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

# ParadeDB 0.25.x syntax: the key field first, the text field cast to a stemming tokenizer.
PG_SEARCH_INDEX = """
CREATE INDEX chunks_bm25_idx ON chunks
    USING paradedb (id, (search_text::pdb.simple('stemmer=english')))
    WITH (key_field = 'id');
"""

# The two functions migration 0003 redefines (its downgrade restores these).
INDEX_ADD = """
-- Add chunks to the index. Callers pass parallel arrays (from a transition table).
CREATE FUNCTION bm25_index_add(p_ids bigint[], p_texts text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    added_len bigint;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    -- The writers' mutex: taken first, so every other lock below is taken in its shadow.
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;

    WITH docs AS (
        SELECT d.id AS chunk_id, to_tsvector('english', d.search_text) AS tsv
        FROM unnest(p_ids, p_texts) AS d (id, search_text)
    ), toks AS (
        SELECT docs.chunk_id, t.lexeme AS term, cardinality(t.positions) AS tf
        FROM docs CROSS JOIN LATERAL unnest(docs.tsv) AS t
    ), lens AS (
        SELECT chunk_id, sum(tf)::integer AS doc_len FROM toks GROUP BY chunk_id
    ), postings AS (
        INSERT INTO bm25_postings (term, chunk_id, tf, doc_len)
        SELECT toks.term, toks.chunk_id, toks.tf, lens.doc_len
        FROM toks JOIN lens USING (chunk_id)
    ), df AS (
        -- Sorted: concurrent upserts of the same terms lock them in one order.
        INSERT INTO bm25_terms AS bt (term, df)
        SELECT term, count(*) FROM toks GROUP BY term ORDER BY term
        ON CONFLICT (term) DO UPDATE SET df = bt.df + EXCLUDED.df
    )
    SELECT coalesce(sum(doc_len), 0) INTO added_len FROM lens;

    UPDATE bm25_stats
    SET n_docs = n_docs + cardinality(p_ids), total_len = total_len + added_len
    WHERE id = 1;
END
$fn$;
"""

CHUNKS_CHANGED = """
CREATE OR REPLACE FUNCTION bm25_chunks_changed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM bm25_index_add(array_agg(id), array_agg(search_text)) FROM new_chunks;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM bm25_index_remove(array_agg(id), array_agg(search_text)) FROM old_chunks;
    ELSIF TG_OP = 'UPDATE' THEN
        -- Only rows whose indexed text (or id) changed are re-indexed: remove old, add new.
        PERFORM bm25_index_remove(array_agg(o.id), array_agg(o.search_text))
        FROM old_chunks o
        WHERE NOT EXISTS (
            SELECT 1 FROM new_chunks n WHERE n.id = o.id AND n.search_text = o.search_text
        );
        PERFORM bm25_index_add(array_agg(n.id), array_agg(n.search_text))
        FROM new_chunks n
        WHERE NOT EXISTS (
            SELECT 1 FROM old_chunks o WHERE o.id = n.id AND o.search_text = n.search_text
        );
    END IF;
    RETURN NULL;
END
$fn$;
"""

NATIVE_SCHEMA = f"""
CREATE TABLE bm25_postings (
    term     text   NOT NULL,
    chunk_id bigint NOT NULL,
    tf       integer NOT NULL CHECK (tf > 0),
    doc_len  integer NOT NULL,
    -- INCLUDE lets a query read a term's postings with an index-only scan.
    PRIMARY KEY (term, chunk_id) INCLUDE (tf, doc_len)
) WITH (fillfactor = 90);

CREATE TABLE bm25_terms (
    term text PRIMARY KEY,
    df   integer NOT NULL CHECK (df >= 0)
);

CREATE TABLE bm25_stats (
    id        integer PRIMARY KEY CHECK (id = 1),
    n_docs    bigint NOT NULL CHECK (n_docs >= 0),
    total_len bigint NOT NULL CHECK (total_len >= 0)
);
INSERT INTO bm25_stats (id, n_docs, total_len) VALUES (1, 0, 0);

{INDEX_ADD}
-- Remove chunks from the index; the lexemes are recomputed from the text they were indexed with.
CREATE FUNCTION bm25_index_remove(p_ids bigint[], p_texts text[]) RETURNS void
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

{CHUNKS_CHANGED}
CREATE FUNCTION bm25_chunks_truncated() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
    TRUNCATE bm25_postings, bm25_terms;
    UPDATE bm25_stats SET n_docs = 0, total_len = 0 WHERE id = 1;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER chunks_bm25_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_changed();
CREATE TRIGGER chunks_bm25_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_changed();
CREATE TRIGGER chunks_bm25_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_changed();
CREATE TRIGGER chunks_bm25_truncate AFTER TRUNCATE ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_truncated();

-- Chunks that existed before this migration.
SELECT bm25_index_add(array_agg(id ORDER BY id), array_agg(search_text ORDER BY id)) FROM chunks;
"""


def upgrade() -> None:
    if scalar("SELECT 1 FROM pg_extension WHERE extname = 'pg_search'"):
        execute_sql(PG_SEARCH_INDEX)
        engine = "pg_search"
    else:
        execute_sql(NATIVE_SCHEMA)
        engine = "native"
    set_meta_sql("bm25_engine", engine)


def downgrade() -> None:
    execute_sql(
        """
        DROP INDEX IF EXISTS chunks_bm25_idx;
        DROP TRIGGER IF EXISTS chunks_bm25_insert ON chunks;
        DROP TRIGGER IF EXISTS chunks_bm25_delete ON chunks;
        DROP TRIGGER IF EXISTS chunks_bm25_update ON chunks;
        DROP TRIGGER IF EXISTS chunks_bm25_truncate ON chunks;
        DROP FUNCTION IF EXISTS bm25_chunks_changed(), bm25_chunks_truncated(),
            bm25_index_add(bigint[], text[]), bm25_index_remove(bigint[], text[]);
        DROP TABLE IF EXISTS bm25_postings, bm25_terms, bm25_stats;
        DELETE FROM app_meta WHERE key = 'bm25_engine';
        """
    )
