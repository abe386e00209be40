"""Stored responses of the OpenAI-compatible Responses API (`POST /v1/responses` with `store`, OpenAI's
default): `v1_responses`, one row per stored response, so that `previous_response_id` continues from it
and `GET`/`DELETE /v1/responses/{id}` find it (openai_compat/response_store.py).

A row belongs to a collection (the model's: `rag:<collection>`) and to the key that made it, as a chat
session does (0004): a key reads, continues and deletes only its own responses, in collections it can
read; an admin any in its reach. As a chat turn (0017), a response is stored only while its key is live:
one answering when its key was revoked is not kept. `previous_id` links a chain (no foreign key: a
response deleted or pruned before its successors ends their history there). Rows go with their
collection; retention prunes them after RAG_CHAT_RETENTION_DAYS by `created_at` (ingestion/retention.py).

Revision ID: 0030_stored_responses
Revises: 0029_import_source
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0030_stored_responses"
down_revision = "0029_import_source"
branch_labels = None
depends_on = None

# 0004's VISIBLE and OWN_SESSION (a migration never imports another: each is a fixed text).
VISIBLE = "((SELECT rag_sees_all()) OR collection_id = ANY ((SELECT rag_collections())::uuid[]))"
OWN = "(owner_key_id IS NOT DISTINCT FROM (SELECT rag_key_id()) OR (SELECT rag_is_admin()))"
MINE = "(owner_key_id IS NOT DISTINCT FROM (SELECT rag_key_id()))"

UPGRADE = f"""
CREATE TABLE v1_responses (
    id            text PRIMARY KEY CHECK (id ~ '^resp_[0-9a-f]{{32}}$'),
    collection_id uuid NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    owner_key_id  uuid REFERENCES api_keys (id) DEFAULT rag_key_id(),
    previous_id   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The request's input items (messages with ids, as GET /v1/responses/{{id}}/input_items lists them).
    input         jsonb NOT NULL CHECK (jsonb_typeof(input) = 'array'),
    -- The response object as it was answered (with `sources`).
    response      jsonb NOT NULL CHECK (jsonb_typeof(response) = 'object')
);
CREATE INDEX v1_responses_collection_idx ON v1_responses (collection_id);
CREATE INDEX v1_responses_created_idx ON v1_responses (created_at);
COMMENT ON TABLE v1_responses IS
    'stored /v1/responses (store: true): continued by previous_response_id, read and deleted by id';

ALTER TABLE v1_responses ENABLE ROW LEVEL SECURITY;
-- Read and delete: the key's own (an admin: any) in a collection it can read. Write: only as itself.
CREATE POLICY v1_responses_own ON v1_responses FOR ALL
    USING ((SELECT rag_role()) <> 'none' AND {VISIBLE} AND {OWN})
    WITH CHECK ((SELECT rag_role()) <> 'none' AND {VISIBLE} AND ({MINE} OR (SELECT rag_role()) = 'system'));

-- SECURITY DEFINER: the runtime role cannot read api_keys. No key (open mode, the system scope): live.
CREATE FUNCTION rag_key_is_live() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT rag_key_id() IS NULL
        OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = rag_key_id() AND k.revoked_at IS NULL)
$$;
CREATE POLICY v1_responses_live_key ON v1_responses AS RESTRICTIVE FOR INSERT
    WITH CHECK ((SELECT rag_key_is_live()));
"""

DOWNGRADE = """
DROP TABLE v1_responses;
DROP FUNCTION rag_key_is_live();
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
