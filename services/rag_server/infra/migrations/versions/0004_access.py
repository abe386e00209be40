"""Access control: API keys, chat sessions owned by a key, and row-level security on every table that
holds a collection's data.

The policies read three per-transaction settings the runtime sets from the authenticated key
(`infra.database.ScopedPool`, `set_config(..., true)`): `rag.collections` ('*' or a uuid[] literal),
`rag.role` (reader, editor, admin, system) and `rag.key_id`. Unset settings match no row. The policy
functions are wrapped in scalar sub-selects so each is evaluated once per query (an InitPlan), not once
per row. The table owner (migrations, admin commands) is exempt (ENABLE, not FORCE); the runtime role
(`infra.admin.ensure_runtime_role`) is not. docs/decisions/0010-access-control.md.

Revision ID: 0004_access
Revises: 0003_collections
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql, scalar

revision = "0004_access"
down_revision = "0003_collections"
branch_labels = None
depends_on = None

FUNCTIONS = """
CREATE FUNCTION rag_sees_all() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('rag.collections', true), '') = '*' $$;
CREATE FUNCTION rag_collections() RETURNS uuid[] LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN coalesce(current_setting('rag.collections', true), '') LIKE '{%'
                      THEN current_setting('rag.collections', true)::uuid[] ELSE '{}'::uuid[] END $$;
CREATE FUNCTION rag_role() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(nullif(current_setting('rag.role', true), ''), 'none') $$;
CREATE FUNCTION rag_key_id() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('rag.key_id', true), '')::uuid $$;
CREATE FUNCTION rag_can_edit() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT rag_role() IN ('editor', 'admin', 'system') $$;
CREATE FUNCTION rag_is_admin() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT rag_role() IN ('admin', 'system') $$;
"""

KEYS = """
CREATE TABLE api_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL,
    role            text NOT NULL CHECK (role IN ('reader', 'editor', 'admin')),
    -- false: only the collections in api_key_collections (none left: nothing).
    all_collections boolean NOT NULL,
    key_hash        bytea NOT NULL UNIQUE,  -- sha256 of the key; the key itself is never stored
    key_prefix      text NOT NULL,          -- its first characters, to tell keys apart in listings
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    CHECK (role <> 'admin' OR all_collections)
);
CREATE UNIQUE INDEX api_keys_active_name_key ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE api_key_collections (
    key_id        uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    collection_id uuid NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, collection_id)
);
CREATE INDEX api_key_collections_collection_idx ON api_key_collections (collection_id);

-- The owner is whoever the transaction's settings name: PostgreSQL fills it in, the policy checks it.
ALTER TABLE chat_sessions ADD COLUMN owner_key_id uuid REFERENCES api_keys (id) DEFAULT rag_key_id();
CREATE INDEX chat_sessions_owner_idx ON chat_sessions (owner_key_id, updated_at DESC);

-- SECURITY DEFINER: the runtime role cannot read api_keys (only admins can, through RLS) but must
-- check a presented key before it knows who is asking. last_used_at is written at most once a minute
-- per key, so concurrent requests with one key do not queue on its row.
CREATE FUNCTION rag_authenticate(p_hash bytea)
    RETURNS TABLE (id uuid, name text, role text, collection_ids uuid[])
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE api_keys k SET last_used_at = now()
    WHERE k.key_hash = p_hash AND k.revoked_at IS NULL
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute');
    RETURN QUERY
    SELECT k.id, k.name, k.role,
           CASE WHEN k.all_collections THEN NULL ELSE
               coalesce((SELECT array_agg(c.collection_id ORDER BY c.collection_id)
                         FROM api_key_collections c WHERE c.key_id = k.id), '{}') END
    FROM api_keys k WHERE k.key_hash = p_hash AND k.revoked_at IS NULL;
END $$;

-- An upload holds its collection row (FOR KEY SHARE) so that a concurrent delete waits. Row locks need
-- the UPDATE policy, which only admins pass on collections: an editor takes the lock through this
-- function, which checks the same scope first.
CREATE FUNCTION rag_share_collection(p_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT (rag_can_edit() AND (rag_sees_all() OR p_id = ANY (rag_collections()))) THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM collections WHERE id = p_id FOR KEY SHARE;
    RETURN FOUND;
END $$;

CREATE FUNCTION rag_keys_exist() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL) $$;
"""

# Visible: every collection, or one of the scope's. A scalar sub-select is an InitPlan: once per query.
VISIBLE = "((SELECT rag_sees_all()) OR {column} = ANY ((SELECT rag_collections())::uuid[]))"
CAN_EDIT = "(SELECT rag_can_edit())"
IS_ADMIN = "(SELECT rag_is_admin())"


def _collection_policies(table: str, column: str = "collection_id") -> str:
    visible = VISIBLE.format(column=column)
    return f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {table}_read ON {table} FOR SELECT USING {visible};
CREATE POLICY {table}_write ON {table} FOR ALL
    USING ({CAN_EDIT} AND {visible}) WITH CHECK ({CAN_EDIT} AND {visible});
"""


def _child_policies(table: str, parent: str, link: str) -> str:
    # Rows without a collection of their own follow their parent row, itself under its policy.
    exists = f"EXISTS (SELECT 1 FROM {parent} p WHERE p.id = {table}.{link})"
    return f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {table}_read ON {table} FOR SELECT USING ({exists});
CREATE POLICY {table}_write ON {table} FOR ALL
    USING ({CAN_EDIT} AND {exists}) WITH CHECK ({CAN_EDIT} AND {exists});
"""


OWN_SESSION = "(owner_key_id IS NOT DISTINCT FROM (SELECT rag_key_id()) OR (SELECT rag_is_admin()))"

POLICIES = f"""
ALTER TABLE collections ENABLE ROW LEVEL SECURITY;
CREATE POLICY collections_read ON collections FOR SELECT USING {VISIBLE.format(column="id")};
CREATE POLICY collections_admin ON collections FOR ALL USING ({IS_ADMIN}) WITH CHECK ({IS_ADMIN});
{_collection_policies("documents")}
{_collection_policies("chunks")}
{_collection_policies("job_batches")}
{_child_policies("document_files", "documents", "document_id")}
{_child_policies("job_tasks", "job_batches", "batch_id")}
ALTER TABLE chat_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY chat_sessions_own ON chat_sessions FOR ALL
    USING ((SELECT rag_role()) <> 'none' AND {OWN_SESSION})
    WITH CHECK ((SELECT rag_role()) <> 'none' AND {OWN_SESSION});
ALTER TABLE chat_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY chat_messages_own ON chat_messages FOR ALL
    USING (EXISTS (SELECT 1 FROM chat_sessions s WHERE s.id = chat_messages.session_id))
    WITH CHECK (EXISTS (SELECT 1 FROM chat_sessions s WHERE s.id = chat_messages.session_id));
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_keys_admin ON api_keys FOR ALL USING ({IS_ADMIN}) WITH CHECK ({IS_ADMIN});
ALTER TABLE api_key_collections ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_key_collections_admin ON api_key_collections FOR ALL
    USING ({IS_ADMIN}) WITH CHECK ({IS_ADMIN});
"""

# The native engine's postings carry their chunk's collection (0003): the same policy as chunks.
# bm25_terms and bm25_stats hold corpus-wide counts (N, average length, document frequencies), no text
# of any chunk beyond the vocabulary: see the decision record.
NATIVE_POLICIES = _collection_policies("bm25_postings")

# Every policy above, by table (the downgrade drops them).
POLICY_NAMES = {
    "collections": ["collections_read", "collections_admin"],
    **{t: [f"{t}_read", f"{t}_write"] for t in ("documents", "chunks", "job_batches", "document_files")},
    "job_tasks": ["job_tasks_read", "job_tasks_write"],
    "chat_sessions": ["chat_sessions_own"],
    "chat_messages": ["chat_messages_own"],
    "api_keys": ["api_keys_admin"],
    "api_key_collections": ["api_key_collections_admin"],
}

DOWNGRADE_FUNCTIONS = """
DROP FUNCTION rag_keys_exist();
DROP FUNCTION rag_share_collection(uuid);
DROP FUNCTION rag_authenticate(bytea);
ALTER TABLE chat_sessions DROP COLUMN owner_key_id;
DROP TABLE api_key_collections;
DROP TABLE api_keys;
DROP FUNCTION rag_is_admin();
DROP FUNCTION rag_can_edit();
DROP FUNCTION rag_key_id();
DROP FUNCTION rag_role();
DROP FUNCTION rag_collections();
DROP FUNCTION rag_sees_all();
"""


def _native_bm25() -> bool:
    return bool(scalar("SELECT to_regclass('bm25_postings') IS NOT NULL"))


def upgrade() -> None:
    execute_sql(FUNCTIONS + KEYS + POLICIES)
    if _native_bm25():
        execute_sql(NATIVE_POLICIES)


def downgrade() -> None:
    policies = POLICY_NAMES | (
        {"bm25_postings": ["bm25_postings_read", "bm25_postings_write"]} if _native_bm25() else {}
    )
    statements = [
        "".join(f"DROP POLICY {name} ON {table};" for name in names)
        + f" ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;"
        for table, names in policies.items()
    ]
    execute_sql("\n".join(statements) + DOWNGRADE_FUNCTIONS)
