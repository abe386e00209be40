"""Chunks deleted since the native BM25 pack (docs/decisions/0014-packed-postings.md, "Deleted chunks").

A pack still holds the chunks deleted after it, so a search checks its best packed chunks against
`chunks`: one statement per search. `bm25_pack.deleted` counts the chunks at or below the watermark
deleted since the pack (a trigger on DELETE; a pack resets it), and a search whose snapshot sees 0 skips
the check: nothing in the pack is gone. The count can only run high (a late-written chunk, never
packed, counts when deleted), which costs the check, never a dead hit. A pack built before this
migration starts from a bound: chunks packed, less the live ones at or below the watermark, plus the
unpacked ones (= deleted plus rewritten packed chunks). Native engine only.

Revision ID: 0016_bm25_pack_deleted
Revises: 0015_bm25_pack_narrow
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_on_native_bm25

revision = "0016_bm25_pack_deleted"
down_revision = "0015_bm25_pack_narrow"
branch_labels = None
depends_on = None

# First, chunk writers wait (an older process may still serve during an upgrade): a deletion committing
# between the first count and the trigger's creation would be counted by neither, and taking bm25_pack
# before chunks would deadlock with a writer whose 0014 trigger reads bm25_pack. In the trigger, the
# writers' mutex (the bm25_stats row) first, as every chunk writer and the pack take it: a pack then
# either holds the deletion already (and resets the count) or comes after it. A DELETE of no chunk
# (a cascade from a document without any) takes no lock.
UPGRADE = """
LOCK TABLE chunks IN SHARE ROW EXCLUSIVE MODE;
ALTER TABLE bm25_pack ADD COLUMN deleted bigint NOT NULL DEFAULT 0;
UPDATE bm25_pack k SET deleted = greatest(0, k.chunks
    - (SELECT count(*) FROM chunks c WHERE c.id <= k.watermark)
    + (SELECT count(*) FROM bm25_unpacked));

CREATE FUNCTION bm25_pack_note_deleted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM old_chunks) THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
    UPDATE bm25_pack k SET deleted = k.deleted + d.n
    FROM (SELECT count(*) AS n FROM old_chunks o, bm25_pack p WHERE o.id <= p.watermark) d
    WHERE d.n > 0;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER chunks_bm25_pack_deleted AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_pack_note_deleted();
"""

DOWNGRADE = """
DROP TRIGGER chunks_bm25_pack_deleted ON chunks;
DROP FUNCTION bm25_pack_note_deleted();
ALTER TABLE bm25_pack DROP COLUMN deleted;
"""


def upgrade() -> None:
    execute_on_native_bm25(UPGRADE)


def downgrade() -> None:
    execute_on_native_bm25(DOWNGRADE)
