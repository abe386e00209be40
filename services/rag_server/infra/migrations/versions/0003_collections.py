"""Collections: every document, chunk and upload batch belongs to one; `default` holds what existed before.

Dedup by sha256 becomes per collection. chunks.collection_id is denormalised (the document's, fixed for
the chunk's life, enforced by a composite foreign key) so both search legs filter it before LIMIT
without a join. The default collection has a fixed id: the column DEFAULTs point at it, so existing
rows move in without rewriting the tables (and without firing the BM25 triggers), and a writer that
names no collection writes into `default`.

Revision ID: 0003_collections
Revises: 0002_bm25
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

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


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    # Per-collection copies of the same bytes cannot stay: the oldest copy survives.
    execute_sql(DOWNGRADE)
