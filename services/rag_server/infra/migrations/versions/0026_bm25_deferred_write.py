"""Native BM25: a document's final write indexes its chunks for BM25 at its end, so the writers' mutex
(the bm25_stats row) is held for the BM25 work only, not for the HNSW index's.

Every chunk INSERT fires the BM25 triggers (0002, 0014), which take the writers' mutex first, and a lock is
kept until the transaction ends. A document's final write inserts its chunks 4,096 rows per statement
(ingestion/chunks.py), so from the first statement on, every other document's final write, every delete
and the pack waited while the rest of the document went into the HNSW index, most of the write: 12,000
chunks took 36-43 s, 1.8 s of it without the HNSW index (the chunks' rows and BM25); a 73k-chunk file's
write took 18.5 minutes.

A transaction-local flag (`SELECT set_config('rag.bm25_defer', 'on', true)`, set by the chunk writer only
where `bm25_defer_end` exists) stops the INSERT and DELETE triggers that write BM25 tables from firing;
`bm25_defer_end(document, removed chunk ids, batch)` clears it and, under the mutex, does what they would have
done, once: a replacement's old chunks (their ids, from the writer's DELETE ... RETURNING) out of the
postings, the unpacked list and the pack's count of deleted chunks; then every chunk of the document,
noted as unpacked at or below the pack's watermark, into the postings (`bm25_index_add`). The caller
holds the document's row, so its chunks are exactly the ones it wrote. A transaction that fails in
between rolls the flag back with everything else; a flag left on could only skip the BM25 work of this
transaction's own inserts and deletes, which `rag-server check` would report (BM25 against a recount).

Imports write through the same `write_chunks` (a batch of documents in one transaction: the lock comes
at its first document's end and stays to commit). Other deletes (a document's), updates and the
synthetic bench corpus (`insert_chunks` directly) are unchanged: their triggers fire as before.

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

# The triggers a final write defers: (name, event, transition table, function). Every one of them that
# writes a BM25 table: none may take a row lock there before the mutex (the pack, holding the mutex,
# deletes every bm25_unpacked row: a writer holding one of them first would deadlock with it).
DEFERRED_TRIGGERS = (
    ("chunks_bm25_insert", "INSERT", "NEW TABLE AS new_chunks", "bm25_chunks_changed"),
    ("chunks_bm25_unpacked_insert", "INSERT", "NEW TABLE AS new_chunks", "bm25_note_unpacked"),
    ("chunks_bm25_delete", "DELETE", "OLD TABLE AS old_chunks", "bm25_chunks_changed"),
    ("chunks_bm25_unpacked_delete", "DELETE", "OLD TABLE AS old_chunks", "bm25_note_unpacked"),
    ("chunks_bm25_pack_deleted", "DELETE", "OLD TABLE AS old_chunks", "bm25_pack_note_deleted"),
)


def triggers(when: str) -> str:
    """Each trigger redefined in place: DROP TRIGGER would take ACCESS EXCLUSIVE on `chunks`, and queued
    behind a write in flight (an older worker finishing a big document during an upgrade) it would stop
    every search until that write commits. CREATE OR REPLACE TRIGGER takes SHARE ROW EXCLUSIVE."""
    return "".join(
        f"""
CREATE OR REPLACE TRIGGER {name} AFTER {event} ON chunks
    REFERENCING {table}
    FOR EACH STATEMENT {when}EXECUTE FUNCTION {function}();"""
        for name, event, table, function in DEFERRED_TRIGGERS
    )


# What the deferred triggers would have done, in their order, once: the old version's chunks (a
# replacement's, `p_removed`) out of the postings, the unpacked list and the pack's deleted count; the
# document's chunks now (the new ones) noted unpacked at or below the watermark, and into the postings.
END_FUNCTION = """
CREATE FUNCTION bm25_defer_end(p_document uuid, p_removed bigint[], p_batch integer) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    ids bigint[];
    texts text[];
    colls uuid[];
    last_index integer := -1;
BEGIN
    PERFORM set_config('rag.bm25_defer', 'off', true);
    -- The mutex first, as the triggers take it: the watermark read below cannot move under it.
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
    IF coalesce(cardinality(p_removed), 0) > 0 THEN
        PERFORM bm25_index_remove(p_removed, NULL);
        DELETE FROM bm25_unpacked WHERE chunk_id = ANY (p_removed);
        UPDATE bm25_pack k SET deleted = k.deleted + d.n
        FROM (SELECT count(*) AS n FROM unnest(p_removed) AS r (id), bm25_pack p WHERE r.id <= p.watermark) d
        WHERE d.n > 0;
    END IF;
    INSERT INTO bm25_unpacked (chunk_id, collection_id)
    SELECT c.id, c.collection_id FROM chunks c, bm25_pack k
    WHERE c.document_id = p_document AND c.id <= k.watermark
    ON CONFLICT (chunk_id) DO NOTHING;
    -- p_batch chunks at a time (the writer's INSERT_BATCH_ROWS): a 73k-chunk document's texts are never
    -- one array (memory; a value's 1 GB bound).
    LOOP
        SELECT array_agg(id ORDER BY chunk_index), array_agg(search_text ORDER BY chunk_index),
               array_agg(collection_id ORDER BY chunk_index), max(chunk_index)
        INTO ids, texts, colls, last_index
        FROM (SELECT id, search_text, collection_id, chunk_index FROM chunks
              WHERE document_id = p_document AND chunk_index > last_index
              ORDER BY chunk_index LIMIT p_batch) AS part;
        EXIT WHEN ids IS NULL;
        PERFORM bm25_index_add(ids, texts, colls);
    END LOOP;
END
$fn$;
"""


def upgrade() -> None:
    execute_on_native_bm25(triggers(f"WHEN ({NOT_DEFERRED}) ") + END_FUNCTION)


def downgrade() -> None:
    execute_on_native_bm25("DROP FUNCTION bm25_defer_end(uuid, bigint[], integer);" + triggers(""))
