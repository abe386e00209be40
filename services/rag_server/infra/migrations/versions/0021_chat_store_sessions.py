"""Which chat sessions a LlamaIndex chat memory writes: `chat_sessions.chat_store`.

The chat service writes a question and its answer in one transaction, and `rag-server check` reports a
question without an answer (or an answer without a question) as a half-written turn. A LlamaIndex chat
memory (integrations/llamaindex_chat_store.py) writes one message at a time, so a question waiting for
its answer is normal there: the check leaves out the sessions it made.

Existing sessions: those with an answer the chat service did not write (no `answer_mode` in its
metadata), or with questions and no answer at all, are marked as a chat memory's.

Revision ID: 0021_chat_store_sessions
Revises: 0020_names_before_paths
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0021_chat_store_sessions"
down_revision = "0020_names_before_paths"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE chat_sessions ADD COLUMN chat_store boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN chat_sessions.chat_store IS
    'made by a LlamaIndex chat memory: written a message at a time (check allows a lone question)';
UPDATE chat_sessions s SET chat_store = true
WHERE EXISTS (SELECT 1 FROM chat_messages m
              WHERE m.session_id = s.id AND m.role = 'assistant' AND NOT m.metadata ? 'answer_mode')
   OR (EXISTS (SELECT 1 FROM chat_messages m WHERE m.session_id = s.id AND m.role = 'user')
       AND NOT EXISTS (SELECT 1 FROM chat_messages m WHERE m.session_id = s.id AND m.role = 'assistant'));
"""

DOWNGRADE = """
ALTER TABLE chat_sessions DROP COLUMN chat_store;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
