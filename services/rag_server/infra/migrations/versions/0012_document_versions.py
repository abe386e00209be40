"""Documents over time: a version number, when it was last replaced, and replacement tasks.

`documents.version` starts at 1 and grows by one each time a replacement's chunks are swapped in
(ingestion/tasks.complete_task: old chunks out, new chunks in, version + 1, ONE transaction), and
`replaced_at` says when. A replacement is an ordinary job_tasks row that also carries the new bytes
(`new_content`), the version it replaces (`replaces_version`) and, when the upload gave some, the
metadata to apply with it (`new_metadata`): until the swap the document's stored file, chunks and
metadata stay the old version's, so the old text stays searchable and a replacement that fails to parse
changes nothing. `new_content` is cleared when the swap commits.

Revision ID: 0012_document_versions
Revises: 0011_embedding_generations
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0012_document_versions"
down_revision = "0011_embedding_generations"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE documents
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN replaced_at timestamptz;
COMMENT ON COLUMN documents.version IS '1, 2, ...: bumped when a replacement''s chunks are swapped in';
ALTER TABLE job_tasks
    ADD COLUMN replaces_version integer,
    ADD COLUMN new_content bytea,
    ADD COLUMN new_metadata jsonb,
    ADD CONSTRAINT job_tasks_replacement_bytes
        CHECK (replaces_version IS NOT NULL OR (new_content IS NULL AND new_metadata IS NULL));
COMMENT ON COLUMN job_tasks.replaces_version IS 'a replacement: the document version it supersedes';
COMMENT ON COLUMN job_tasks.new_content IS 'a replacement''s bytes until the swap (then NULL)';
"""

DOWNGRADE = """
ALTER TABLE job_tasks DROP CONSTRAINT job_tasks_replacement_bytes,
    DROP COLUMN new_metadata, DROP COLUMN new_content, DROP COLUMN replaces_version;
ALTER TABLE documents DROP COLUMN replaced_at, DROP COLUMN version;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
