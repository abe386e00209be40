"""Which documents were named before names kept their folders: `documents.named_before_paths`.

Since decision 0013 ("Names are paths") a file of a folder is named by its path inside it
("hr/benefits.txt"). A document stored before has the file's name alone ("benefits.txt"), so a later
ingest of its folder adds the changed file beside it. `POST /documents/check-duplicates` reports such
documents (`bare_name`) so that the CLI and the web app can say so; matching the bare name alone could
not tell them from a folder's own top-level file of that name, stored since.

Every document here now was stored before (the column's default for existing rows is true, without
rewriting the table); every later one gets false.

Revision ID: 0020_names_before_paths
Revises: 0019_vectors_in_row
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0020_names_before_paths"
down_revision = "0019_vectors_in_row"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE documents ADD COLUMN named_before_paths boolean NOT NULL DEFAULT true;
ALTER TABLE documents ALTER COLUMN named_before_paths SET DEFAULT false;
COMMENT ON COLUMN documents.named_before_paths IS
    'stored before names kept their folders (0013): a folder''s file of its name has another name now';
"""

DOWNGRADE = """
ALTER TABLE documents DROP COLUMN named_before_paths;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
