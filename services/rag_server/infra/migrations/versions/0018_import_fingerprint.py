"""What an import's source last gave for each imported document: `documents.import_fingerprint`.

Running an import again is a sync FROM THE SOURCE. Comparing the source with the document as it is now
cannot tell a source that changed from a user who changed the document (a PUT of a new file, a PATCH of
its metadata): a re-run "updated" such documents back to the source and lost the user's work. The
importer now stores a sha256 of what the source gave (porting/writer.py `fingerprint`) and compares the
source with that: the same -> the document is left as it is, whatever was done to it here; different
-> the document is updated from the source as a new version (like a replacement). NULL: a document not
imported, or imported before this migration (the importer records its fingerprint the next time).

Revision ID: 0018_import_fingerprint
Revises: 0017_keys_and_turns
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0018_import_fingerprint"
down_revision = "0017_keys_and_turns"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE documents ADD COLUMN import_fingerprint text;
COMMENT ON COLUMN documents.import_fingerprint IS
    'imported documents: sha256 of what the source last gave (a re-run skips the document when equal)';
"""

DOWNGRADE = """
ALTER TABLE documents DROP COLUMN import_fingerprint;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
