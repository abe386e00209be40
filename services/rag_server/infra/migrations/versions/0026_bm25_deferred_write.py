"""Native BM25: a document's final write indexes its chunks for BM25 at its end, so the writers' mutex
(the bm25_stats row) is held for the BM25 work only, not for the HNSW index's.

Every chunk INSERT fires the BM25 triggers (0002, 0014), which take the writers' mutex first, and a lock is
kept until the transaction ends. A document's final write inserts its chunks 4,096 rows per statement
(ingestion/chunks.py), so from the first statement on, every other document's final write, every delete
and the pack waited while the rest of the document went into the HNSW index, most of the write: 12,000
chunks took 36-43 s, 1.8 s of it without the HNSW index (the chunks' rows and BM25); a 73k-chunk file's
write took 18.5 minutes.

A transaction-local flag (`SELECT set_config('rag.bm25_defer', 'on', true)`, set by the chunk writer only
where `bm25_defer_end` exists) stops the two INSERT triggers from firing; `bm25_defer_end(document)`
clears it and does what they would have done, once, for every chunk of that document: the chunks at or
below the pack's watermark are noted as unpacked, then `bm25_index_add` (the mutex first, as before). The
caller holds the document's row, so its chunks are exactly the ones it wrote. A transaction that fails in
between rolls the flag back with everything else; a flag left on could only skip the indexing of this
transaction's own inserts, which `rag-server check` would report (BM25 against a recount).

Deletes and updates are unchanged: a replacement's delete of the old version's chunks still takes the
mutex at its start (the old postings go before the new rows can take their chunk indexes).

Native engine only: on ParadeDB the chunk writer finds no `bm25_defer_end` and writes as before.

Revision ID: 0026_bm25_deferred_write
Revises: 0025_bm25_cjk
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_on_native_bm25

revision = "0026_bm25_deferred_write"
down_revision = "0025_bm25_cjk"
branch_labels = None
depends_on = None

# Custom settings read before they were ever set give NULL with `missing_ok`, and '' after a SET LOCAL
# ended: only 'on' defers.
NOT_DEFERRED = "current_setting('rag.bm25_defer', true) IS DISTINCT FROM 'on'"

UPGRADE = f"""
DROP TRIGGER chunks_bm25_insert ON chunks;
CREATE TRIGGER chunks_bm25_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT WHEN ({NOT_DEFERRED}) EXECUTE FUNCTION bm25_chunks_changed();
DROP TRIGGER chunks_bm25_unpacked_insert ON chunks;
CREATE TRIGGER chunks_bm25_unpacked_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT WHEN ({NOT_DEFERRED}) EXECUTE FUNCTION bm25_note_unpacked();

CREATE FUNCTION bm25_defer_end(p_document uuid) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM set_config('rag.bm25_defer', 'off', true);
    -- The mutex first, as the INSERT triggers take it: the watermark read below cannot move under it.
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
    INSERT INTO bm25_unpacked (chunk_id, collection_id)
    SELECT c.id, c.collection_id FROM chunks c, bm25_pack k
    WHERE c.document_id = p_document AND c.id <= k.watermark
    ON CONFLICT (chunk_id) DO NOTHING;
    PERFORM bm25_index_add(array_agg(id ORDER BY id), array_agg(search_text ORDER BY id),
                           array_agg(collection_id ORDER BY id))
    FROM chunks WHERE document_id = p_document;
END
$fn$;
"""

DOWNGRADE = """
DROP FUNCTION bm25_defer_end(uuid);
DROP TRIGGER chunks_bm25_insert ON chunks;
CREATE TRIGGER chunks_bm25_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_changed();
DROP TRIGGER chunks_bm25_unpacked_insert ON chunks;
CREATE TRIGGER chunks_bm25_unpacked_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_note_unpacked();
"""


def upgrade() -> None:
    execute_on_native_bm25(UPGRADE)


def downgrade() -> None:
    execute_on_native_bm25(DOWNGRADE)
