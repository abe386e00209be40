"""Packed postings for the native BM25 engine (docs/decisions/0014-packed-postings.md).

A pack copies every term's postings, per collection, into one row of three byte arrays (chunk ids,
term frequencies, chunk lengths; big-endian, by chunk id), so a query reads a common term's list in a
few TOAST pages and sums it in the server instead of running PostgreSQL's executor once per posting.

    bm25_pack      one row: the last pack's watermark (every chunk with a larger id is newer than it)
    bm25_packed    (term, collection_id) -> chunk ids int8, tfs int4, lens int4: big-endian bytea arrays
    bm25_unpacked  chunks at or below the watermark written after the pack (a writer that drew its id
                   before the pack and inserted after it, or new text for a packed chunk): their
                   packed entries are stale, their postings are read from bm25_postings

bm25_postings stays the whole truth (the triggers of 0002/0003 are unchanged); a pack is a copy that
`rag-server pack` and the workers refresh. Chunks deleted after a pack stay in it until the next one:
a query checks its best chunks against `chunks`. Native engine only.

Revision ID: 0014_bm25_packs
Revises: 0013_collection_search_settings
"""

from __future__ import annotations

from alembic import context

from rag_server.infra.migrations.helpers import execute_sql, scalar

revision = "0014_bm25_packs"
down_revision = "0013_collection_search_settings"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE bm25_pack (
    id         integer PRIMARY KEY CHECK (id = 1),
    watermark  bigint NOT NULL,
    chunks     bigint NOT NULL,
    postings   bigint NOT NULL,
    packed_at  timestamptz NOT NULL DEFAULT now(),
    seconds    double precision NOT NULL
);

-- No foreign key to collections: a copy, rebuilt whole, whose deleted chunks are checked at search
-- time; a key check per row while writers wait would also lock collection rows in the wrong order
-- (a collection's deletion locks its row, then waits for the writers' mutex the pack holds).
CREATE TABLE bm25_packed (
    term          text NOT NULL,
    collection_id uuid NOT NULL,
    chunk_ids     bytea NOT NULL,
    tfs           bytea NOT NULL,
    lens          bytea NOT NULL,
    PRIMARY KEY (term, collection_id)
);
-- Already dense binary: compressing would cost every read a decompression for little space.
ALTER TABLE bm25_packed ALTER chunk_ids SET STORAGE EXTERNAL, ALTER tfs SET STORAGE EXTERNAL,
    ALTER lens SET STORAGE EXTERNAL;

CREATE TABLE bm25_unpacked (
    chunk_id      bigint PRIMARY KEY,
    collection_id uuid NOT NULL
);

-- A chunk written at or below the watermark is recorded in bm25_unpacked. The watermark is read under
-- the writers' mutex (the bm25_stats row, which a pack holds while it runs), taken here first: these
-- triggers may fire before the postings' own (the order is by name), and a pack must not fall between
-- reading the watermark and the postings' write.
CREATE FUNCTION bm25_note_unpacked() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM bm25_unpacked u USING old_chunks o WHERE u.chunk_id = o.id;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
        INSERT INTO bm25_unpacked (chunk_id, collection_id)
        SELECT n.id, n.collection_id FROM new_chunks n, bm25_pack k WHERE n.id <= k.watermark
        ON CONFLICT (chunk_id) DO NOTHING;
        RETURN NULL;
    END IF;
    -- UPDATE: only chunks whose indexed text changed (a metadata or vector update takes no lock).
    IF NOT EXISTS (
        SELECT 1 FROM new_chunks n JOIN old_chunks o ON o.id = n.id WHERE o.search_text <> n.search_text
    ) THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
    INSERT INTO bm25_unpacked (chunk_id, collection_id)
    SELECT n.id, n.collection_id FROM new_chunks n JOIN old_chunks o ON o.id = n.id, bm25_pack k
    WHERE n.id <= k.watermark AND o.search_text <> n.search_text
    ON CONFLICT (chunk_id) DO NOTHING;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION bm25_pack_truncated() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
    TRUNCATE bm25_packed, bm25_unpacked, bm25_pack;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER chunks_bm25_unpacked_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_note_unpacked();
CREATE TRIGGER chunks_bm25_unpacked_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_note_unpacked();
CREATE TRIGGER chunks_bm25_unpacked_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_note_unpacked();
CREATE TRIGGER chunks_bm25_pack_truncate AFTER TRUNCATE ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_pack_truncated();
"""

DOWNGRADE = """
DROP TRIGGER chunks_bm25_unpacked_insert ON chunks;
DROP TRIGGER chunks_bm25_unpacked_update ON chunks;
DROP TRIGGER chunks_bm25_unpacked_delete ON chunks;
DROP TRIGGER chunks_bm25_pack_truncate ON chunks;
DROP FUNCTION bm25_note_unpacked();
DROP FUNCTION bm25_pack_truncated();
DROP TABLE bm25_unpacked, bm25_packed, bm25_pack;
"""


def _native_bm25() -> bool:
    return bool(scalar("SELECT to_regclass('bm25_postings') IS NOT NULL"))


def upgrade() -> None:
    if _native_bm25():
        # The same row-level security as bm25_postings (0004): a key reads its collections' rows only.
        access = context.script.get_revision("0004_access").module
        policies = [access._collection_policies(table) for table in ("bm25_packed", "bm25_unpacked")]
        execute_sql(UPGRADE + "".join(policies))


def downgrade() -> None:
    if _native_bm25():
        execute_sql(DOWNGRADE)
