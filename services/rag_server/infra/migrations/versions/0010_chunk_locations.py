"""Where a chunk sits in its document, beyond the page: `chunks.heading_path` and `chunks.location`.

`heading_path` ("Guide > Install > Linux"; a slide's title; a sheet's name) is display context: the
indexed/embedded `search_text` already carries it, so neither BM25 engine (both index `search_text`)
nor the HNSW index changes. `location` is format-specific (`{"slide": 3, "part": "notes"}`,
`{"sheet": "Sheet1", "row_start": 12, "row_end": 30}`); NULL for chunks written before, and for formats
where the page says it all. Both are read only by chunk id, never filtered on: no index, no ANALYZE.

Revision ID: 0010_chunk_locations
Revises: 0009_request_ids
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0010_chunk_locations"
down_revision = "0009_request_ids"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE chunks
    ADD COLUMN heading_path text,
    ADD COLUMN location jsonb CHECK (location IS NULL OR jsonb_typeof(location) = 'object');
COMMENT ON COLUMN chunks.heading_path IS 'headings above the chunk, outermost first, joined by " > "';
COMMENT ON COLUMN chunks.location IS 'slide/part, sheet/rows: where the chunk sits beyond its page';
"""

DOWNGRADE = """
ALTER TABLE chunks DROP COLUMN location, DROP COLUMN heading_path;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
