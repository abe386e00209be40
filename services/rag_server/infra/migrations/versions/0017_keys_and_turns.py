"""Keys stay required once one was made; a chat turn comes from the session's own, live key
(docs/decisions/0010-access-control.md).

- `rag_keys_exist()` counted only live keys, so revoking the last one reopened the API on loopback to
  anyone, also to a client sending a revoked key, as an admin. It now counts every key ever made: open
  mode is only for a database that never had one.
- An admin sees every session (to read, rename, archive or delete it) and could also answer in one:
  its answer, from collections the owner may not read, then showed in the owner's history. A message
  now goes only into a session of the writing key (a session made in open mode, with no owner, also
  into an admin's), and only while that key is not revoked: an answer still streaming when its key is
  revoked is not saved.

Revision ID: 0017_keys_and_turns
Revises: 0016_bm25_pack_deleted
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0017_keys_and_turns"
down_revision = "0016_bm25_pack_deleted"
branch_labels = None
depends_on = None

# SECURITY DEFINER: the runtime role reads neither api_keys nor other keys' sessions. The system scope
# (migrations, maintenance) has no key and writes anywhere.
UPGRADE = """
CREATE OR REPLACE FUNCTION rag_keys_exist() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM api_keys) $$;

CREATE FUNCTION rag_may_add_turn(p_session uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT rag_role() = 'system' OR (
        EXISTS (SELECT 1 FROM chat_sessions s WHERE s.id = p_session
                AND (s.owner_key_id IS NOT DISTINCT FROM rag_key_id()
                     OR (s.owner_key_id IS NULL AND rag_is_admin())))
        AND (rag_key_id() IS NULL
             OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = rag_key_id() AND k.revoked_at IS NULL)))
$$;

CREATE POLICY chat_messages_turns ON chat_messages AS RESTRICTIVE FOR INSERT
    WITH CHECK (rag_may_add_turn(session_id));
"""

DOWNGRADE = """
DROP POLICY chat_messages_turns ON chat_messages;
DROP FUNCTION rag_may_add_turn(uuid);
CREATE OR REPLACE FUNCTION rag_keys_exist() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL) $$;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
