"""Chat sessions ordered by activity: `chat_sessions.last_active_at`.

"Recent" chats are listed most recently active first. `updated_at` moves with every change of a session
(a rename, an archive, a new search type, cleared messages), so ordering by it put a renamed old chat at
the top of the list. `last_active_at` moves only with activity: the session's creation and each message
written to it (a question and its answer, a chat memory's message). `updated_at` stays what it says.

Existing sessions: their last message's time, else their creation.

Revision ID: 0022_activity_and_name_order
Revises: 0021_chat_store_sessions
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0022_activity_and_name_order"
down_revision = "0021_chat_store_sessions"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE chat_sessions ADD COLUMN last_active_at timestamptz NOT NULL DEFAULT now();
COMMENT ON COLUMN chat_sessions.last_active_at IS
    'created, or its last message written (not a rename, archive or clear): the order of recent chats';
UPDATE chat_sessions s SET last_active_at = coalesce(
    (SELECT max(m.created_at) FROM chat_messages m WHERE m.session_id = s.id), s.created_at);
DROP INDEX chat_sessions_updated_idx;
DROP INDEX chat_sessions_owner_idx;
CREATE INDEX chat_sessions_active_idx ON chat_sessions (last_active_at DESC);
CREATE INDEX chat_sessions_owner_idx ON chat_sessions (owner_key_id, last_active_at DESC);
"""

DOWNGRADE = """
DROP INDEX chat_sessions_owner_idx;
DROP INDEX chat_sessions_active_idx;
ALTER TABLE chat_sessions DROP COLUMN last_active_at;
CREATE INDEX chat_sessions_updated_idx ON chat_sessions (updated_at DESC);
CREATE INDEX chat_sessions_owner_idx ON chat_sessions (owner_key_id, updated_at DESC);
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
