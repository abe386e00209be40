"""Which source store an imported document came from: `documents.import_source`.

An imported document's id is made from the collection, the source's origin (`chroma:<collection name>`)
and the document's key, so that running the import again updates it (0018). Two Chroma directories whose
collections share a name (LangChain's `langchain`, LlamaIndex's `quickstart`) gave the same ids for the
same keys (a `source` such as `README.md`, a record id such as `0`), and importing the second into the
collection of the first silently updated the first's documents from it, as new versions. The importer
now records the store that wrote each document (a Chroma collection's own id: `chroma:<uuid>`) and,
before writing anything, refuses an import whose documents another store wrote, unless told to take
them over (`--take-over`). NULL: a document not imported, imported from a source without such an
identity, or imported before this migration (the next import of it records its store).

Revision ID: 0029_import_source
Revises: 0028_bm25_split_words
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0029_import_source"
down_revision = "0028_bm25_split_words"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE documents ADD COLUMN import_source text;
COMMENT ON COLUMN documents.import_source IS
    'imported documents: the source store that wrote it (chroma:<collection id>); another store''s '
    'import of the same ids is refused';
"""

DOWNGRADE = """
ALTER TABLE documents DROP COLUMN import_source;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
