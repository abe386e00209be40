"""`collections.import_created`: the collection was made by `rag-server import` and no import batch has
committed into it since. A failed import removes such a collection while it holds no document and no
other import holds its import lock (porting/store.py `delete_unused_collection`), whichever import
created it: two imports sharing a new collection that both failed left it behind when its creator failed
first (the other was still running, and had not created it). Set in the transaction that creates the
collection, cleared by the first batch that commits into it; a collection made any other way (the API,
an older server) is never an import's to remove.

Revision ID: 0031_import_created_collections
Revises: 0030_stored_responses
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0031_import_created_collections"
down_revision = "0030_stored_responses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql("ALTER TABLE collections ADD COLUMN import_created boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    execute_sql("ALTER TABLE collections DROP COLUMN import_created")
