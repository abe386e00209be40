"""Client-chosen chat session ids: `chat_sessions.external_id`, unique per owning key.

Clients that keep their own conversation names (`"session_id": "sess1"`) address a stored session by
that name; the server-generated `id` stays the primary key and what responses call `session_id`. The
name is unique per owner (`owner_key_id`, NULL in open mode: NULLS NOT DISTINCT makes two keyless
"sess1" collide too); row-level security (0004) already keeps each key to its own sessions. The shape
is checked here as well as in the API (chat/models.py EXTERNAL_ID_PATTERN) so no writer can store a
name the API could not address.

Revision ID: 0006_chat_external_ids
Revises: 0005_paradedb_026
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0006_chat_external_ids"
down_revision = "0005_paradedb_026"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE chat_sessions ADD COLUMN external_id text
    CONSTRAINT chat_sessions_external_id_shape CHECK (external_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$');
CREATE UNIQUE INDEX chat_sessions_owner_external_id_key ON chat_sessions (owner_key_id, external_id)
    NULLS NOT DISTINCT WHERE external_id IS NOT NULL;
"""

DOWNGRADE = """
DROP INDEX chat_sessions_owner_external_id_key;
ALTER TABLE chat_sessions DROP COLUMN external_id;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
