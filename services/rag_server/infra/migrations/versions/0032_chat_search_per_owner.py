"""Chat search (0031) reads only the searching key's part of its indexes.

0031's indexes held every key's words together: a search read the index entries of every message with
a matching word, whoever's, before row-level security kept the caller's. Its time grew with other keys'
chats (a signal of whether they hold a word), and a one-letter word read a large part of the index.

Now each word in these indexes begins with its owner's tag (`rag_chat_owner_tag`: the owning key id's
first 8 characters; `open0000` for sessions made without a key), so a search reads only the entries of
the owners it may list: the key itself, an admin's open-mode sessions too, and for an admin's
"every owner" listing each key in turn. A shared tag (two key ids alike in their first 8 characters)
costs only time: rows are still kept by their owner, and row-level security still decides.

The messages carry their session's owner (`chat_messages.owner_key_id`, filled on insert by a trigger
from the session, whatever the INSERT says; a session's owner never changes), because an index reads
only its own row (a restore loads the rows before it makes triggers). Positions are not indexed
(array_to_tsvector): with the tag, a message of 20,000 distinct CJK characters (rag_bm25_text splits
at most that many) is ~550 kB, under a tsvector's 1 MB. Words over 2,000 bytes are left out (a word
longer than 2,047 cannot be stored).

No pending list (fastupdate off): every search reads it whole, once per owner, and an admin's "every
owner" search once per key owning a session (41 keys, 40,000 messages not yet vacuumed: 48 ms for a
word no chat holds, 1.8 ms vacuumed). A message is written into the index at once instead: chats are
written a question and an answer at a time.

Revision ID: 0032_chat_search_per_owner
Revises: 0031_chat_search
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0032_chat_search_per_owner"
down_revision = "0031_chat_search"
branch_labels = None
depends_on = None

# Schema-qualified inside: an index expression runs under a restore's empty search_path too.
UPGRADE = """
CREATE FUNCTION rag_chat_owner_tag(owner uuid) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT coalesce(left(owner::text, 8), 'open0000') $fn$;

CREATE FUNCTION rag_chat_words(owner uuid, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT array_to_tsvector(coalesce(array_agg(public.rag_chat_owner_tag(owner) || l), '{}'))
    FROM unnest(tsvector_to_array(to_tsvector('simple'::regconfig,
                                              public.rag_bm25_text(left(body, 50000))))) AS l
    WHERE octet_length(l) <= 2000
$fn$;
COMMENT ON FUNCTION rag_chat_words(uuid, text) IS
    'The words of a chat title or message as chat search indexes them: each prefixed by its owner''s tag';

DROP FUNCTION rag_chat_sessions_holding(tsquery);
DROP INDEX chat_messages_words_idx;
DROP INDEX chat_sessions_title_words_idx;

ALTER TABLE chat_messages ADD COLUMN owner_key_id uuid;
COMMENT ON COLUMN chat_messages.owner_key_id IS 'Its session''s owner (a copy, for the words index)';
UPDATE chat_messages m SET owner_key_id = s.owner_key_id
FROM chat_sessions s WHERE s.id = m.session_id AND s.owner_key_id IS NOT NULL;

CREATE FUNCTION rag_chat_message_owner() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
BEGIN
    NEW.owner_key_id := (SELECT s.owner_key_id FROM chat_sessions s WHERE s.id = NEW.session_id);
    RETURN NEW;
END $fn$;
CREATE TRIGGER chat_messages_owner BEFORE INSERT ON chat_messages
    FOR EACH ROW EXECUTE FUNCTION rag_chat_message_owner();
CREATE INDEX chat_messages_words_idx ON chat_messages USING gin (rag_chat_words(owner_key_id, content))
    WITH (fastupdate = off);
CREATE INDEX chat_sessions_title_words_idx ON chat_sessions
    USING gin (rag_chat_words(owner_key_id, coalesce(title, ''))) WITH (fastupdate = off);

-- SECURITY DEFINER: under row-level security `@@` is never an index condition (0031). It reads only
-- the owners the caller may list (as chat/sessions.py's OWN, or row-level security's with
-- every_owner), and the caller keeps what chat_sessions shows it.
CREATE FUNCTION rag_chat_sessions_holding(word text, every_owner boolean) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
    WITH owners AS (
        SELECT DISTINCT o FROM (
            SELECT rag_key_id() AS o
            UNION ALL SELECT NULL WHERE rag_is_admin()
            UNION ALL SELECT k.id FROM api_keys k WHERE every_owner AND rag_is_admin()
                AND EXISTS (SELECT 1 FROM chat_sessions s WHERE s.owner_key_id = k.id)
        ) AS each_owner
        WHERE rag_role() <> 'none'
    ), queries AS (
        SELECT owners.o, (
            SELECT string_agg(
                '''' || replace(replace(rag_chat_owner_tag(owners.o) || l, E'\\\\', E'\\\\\\\\'),
                                '''', '''''') || ''':*',
                ' & ')
            FROM unnest(tsvector_to_array(to_tsvector('simple'::regconfig, rag_bm25_text(word)))) AS l
        )::tsquery AS q
        FROM owners
    )
    SELECT s.id FROM queries JOIN chat_sessions s
        ON rag_chat_words(s.owner_key_id, coalesce(s.title, '')) @@ queries.q
       AND s.owner_key_id IS NOT DISTINCT FROM queries.o
    UNION
    SELECT m.session_id FROM queries JOIN chat_messages m
        ON rag_chat_words(m.owner_key_id, m.content) @@ queries.q
       AND m.owner_key_id IS NOT DISTINCT FROM queries.o
$fn$;
COMMENT ON FUNCTION rag_chat_sessions_holding(text, boolean) IS
    'Ids of the sessions whose title or a message of which holds each of word''s words as a prefix, '
    'among the owners the caller may list (0032); callers keep those chat_sessions shows them.';
-- Not PUBLIC's from the start (ensure_runtime_role grants the runtime role after the migrations).
REVOKE EXECUTE ON FUNCTION rag_chat_sessions_holding(text, boolean) FROM PUBLIC;
"""

DOWNGRADE = """
DROP FUNCTION rag_chat_sessions_holding(text, boolean);
DROP INDEX chat_messages_words_idx;
DROP INDEX chat_sessions_title_words_idx;
DROP TRIGGER chat_messages_owner ON chat_messages;
DROP FUNCTION rag_chat_message_owner();
ALTER TABLE chat_messages DROP COLUMN owner_key_id;
DROP FUNCTION rag_chat_words(uuid, text);
DROP FUNCTION rag_chat_owner_tag(uuid);
CREATE INDEX chat_messages_words_idx ON chat_messages
    USING gin (to_tsvector('simple'::regconfig, rag_bm25_text(left(content, 50000))));
CREATE INDEX chat_sessions_title_words_idx ON chat_sessions
    USING gin (to_tsvector('simple'::regconfig, rag_bm25_text(coalesce(title, ''))));
CREATE FUNCTION rag_chat_sessions_holding(q tsquery) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
    SELECT id FROM chat_sessions
    WHERE to_tsvector('simple'::regconfig, rag_bm25_text(coalesce(title, ''))) @@ q
    UNION
    SELECT session_id FROM chat_messages
    WHERE to_tsvector('simple'::regconfig, rag_bm25_text(left(content, 50000))) @@ q
$fn$;
COMMENT ON FUNCTION rag_chat_sessions_holding(tsquery) IS
    'Ids of the sessions (anyone''s) whose title or a message of which matches q, through the indexes '
    'of 0031; callers keep those chat_sessions shows them.';
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
