"""Collections: every document, chunk and upload batch belongs to one; `default` holds what existed before.

Dedup by sha256 becomes per collection. chunks.collection_id is denormalised (the document's, fixed for
the chunk's life, enforced by a composite foreign key) so both search legs filter it before LIMIT
without a join. The native BM25 engine carries it once more, in every posting, so a scoped BM25 scan
reads the postings index alone (pg_search, where installed, is left as it is). The default collection
has a fixed id: the column DEFAULTs point at it, so existing
rows move in without rewriting the tables (and without firing the BM25 triggers), and a writer that
names no collection writes into `default`.

Revision ID: 0003_collections
Revises: 0002_bm25
"""

from __future__ import annotations

from alembic import context

from rag_server.infra.migrations.helpers import execute_sql, scalar

revision = "0003_collections"
down_revision = "0002_bm25"
branch_labels = None
depends_on = None

# Also rag_server.collections.models.DEFAULT_COLLECTION_ID (migrations do not import the domain).
DEFAULT_ID = "00000000-0000-0000-0000-000000000001"

UPGRADE = f"""
CREATE TABLE collections (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{{0,62}}$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO collections (id, name) VALUES ('{DEFAULT_ID}', 'default');

ALTER TABLE documents
    ADD COLUMN collection_id uuid NOT NULL DEFAULT '{DEFAULT_ID}' REFERENCES collections (id),
    DROP CONSTRAINT documents_sha256_key,
    ADD CONSTRAINT documents_collection_sha256_key UNIQUE (collection_id, sha256),
    -- The target of the chunks' composite key: a chunk's collection is its document's.
    ADD CONSTRAINT documents_id_collection_key UNIQUE (id, collection_id);

ALTER TABLE chunks
    ADD COLUMN collection_id uuid NOT NULL DEFAULT '{DEFAULT_ID}',
    ADD CONSTRAINT chunks_document_collection_fkey FOREIGN KEY (document_id, collection_id)
        REFERENCES documents (id, collection_id) ON DELETE CASCADE;
CREATE INDEX chunks_collection_idx ON chunks (collection_id);

ALTER TABLE job_batches
    ADD COLUMN collection_id uuid NOT NULL DEFAULT '{DEFAULT_ID}' REFERENCES collections (id);
CREATE INDEX job_batches_collection_idx ON job_batches (collection_id);
"""

# The new columns have no statistics until analyzed: the planner then guesses 0.5% of the rows per
# collection and prefers chunks_collection_idx + sort over the HNSW index (about 25x slower at 20k).
ANALYZE = """
ANALYZE chunks;
ANALYZE documents;
ANALYZE job_batches;
"""

# Native BM25 only. Existing postings belong to `default`, like their chunks (no rewrite: a constant
# DEFAULT). INCLUDE keeps a scoped scan of a term's postings index-only.
NATIVE_UPGRADE = f"""
ALTER TABLE bm25_postings
    ADD COLUMN collection_id uuid NOT NULL DEFAULT '{DEFAULT_ID}',
    DROP CONSTRAINT bm25_postings_pkey,
    ADD CONSTRAINT bm25_postings_pkey PRIMARY KEY (term, chunk_id) INCLUDE (tf, doc_len, collection_id);

DROP FUNCTION bm25_index_add(bigint[], text[]);

-- 0002's bm25_index_add, plus each chunk's collection (a third parallel array) written into its postings.
CREATE FUNCTION bm25_index_add(p_ids bigint[], p_texts text[], p_collections uuid[]) RETURNS void
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
        SELECT d.id AS chunk_id, d.collection_id, to_tsvector('english', d.search_text) AS tsv
        FROM unnest(p_ids, p_texts, p_collections) AS d (id, search_text, collection_id)
    ), toks AS (
        SELECT docs.chunk_id, docs.collection_id, t.lexeme AS term, cardinality(t.positions) AS tf
        FROM docs CROSS JOIN LATERAL unnest(docs.tsv) AS t
    ), lens AS (
        SELECT chunk_id, sum(tf)::integer AS doc_len FROM toks GROUP BY chunk_id
    ), postings AS (
        INSERT INTO bm25_postings (term, chunk_id, tf, doc_len, collection_id)
        SELECT toks.term, toks.chunk_id, toks.tf, lens.doc_len, toks.collection_id
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

-- Same function (the triggers keep pointing at it), now passing the collections.
CREATE OR REPLACE FUNCTION bm25_chunks_changed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM bm25_index_add(array_agg(id), array_agg(search_text), array_agg(collection_id))
        FROM new_chunks;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM bm25_index_remove(array_agg(id), array_agg(search_text)) FROM old_chunks;
    ELSIF TG_OP = 'UPDATE' THEN
        -- Only rows whose indexed text (or id) changed are re-indexed: remove old, add new. A chunk's
        -- collection cannot change on its own (the composite key to its document holds it).
        PERFORM bm25_index_remove(array_agg(o.id), array_agg(o.search_text))
        FROM old_chunks o
        WHERE NOT EXISTS (
            SELECT 1 FROM new_chunks n WHERE n.id = o.id AND n.search_text = o.search_text
        );
        PERFORM bm25_index_add(array_agg(n.id), array_agg(n.search_text), array_agg(n.collection_id))
        FROM new_chunks n
        WHERE NOT EXISTS (
            SELECT 1 FROM old_chunks o WHERE o.id = n.id AND o.search_text = n.search_text
        );
    END IF;
    RETURN NULL;
END
$fn$;

ANALYZE bm25_postings;
"""

NATIVE_DOWNGRADE = """
DROP FUNCTION bm25_index_add(bigint[], text[], uuid[]);
ALTER TABLE bm25_postings
    DROP CONSTRAINT bm25_postings_pkey,
    DROP COLUMN collection_id,
    ADD CONSTRAINT bm25_postings_pkey PRIMARY KEY (term, chunk_id) INCLUDE (tf, doc_len);
"""

DOWNGRADE = """
ALTER TABLE job_batches DROP COLUMN collection_id;
ALTER TABLE chunks DROP COLUMN collection_id;
DELETE FROM documents d WHERE EXISTS (
    SELECT 1 FROM documents o WHERE o.sha256 = d.sha256 AND o.created_at < d.created_at
);
ALTER TABLE documents
    DROP CONSTRAINT documents_id_collection_key,
    DROP CONSTRAINT documents_collection_sha256_key,
    DROP COLUMN collection_id,
    ADD CONSTRAINT documents_sha256_key UNIQUE (sha256);
DROP TABLE collections;
"""


def native_bm25() -> bool:
    """Whether 0002 chose the native engine (its tables exist) rather than pg_search."""
    return bool(scalar("SELECT to_regclass('bm25_postings') IS NOT NULL"))


def upgrade() -> None:
    execute_sql(UPGRADE)
    if native_bm25():
        execute_sql(NATIVE_UPGRADE)
    execute_sql(ANALYZE)


def downgrade() -> None:
    if native_bm25():
        v2 = context.script.get_revision("0002_bm25").module
        execute_sql(NATIVE_DOWNGRADE + v2.INDEX_ADD + v2.CHUNKS_CHANGED)
    # Per-collection copies of the same bytes cannot stay: the oldest copy survives.
    execute_sql(DOWNGRADE)
