"""Chat sessions ordered by activity (`chat_sessions.last_active_at`); documents by name in natural
order (`documents.name_key`).

"Recent" chats are listed most recently active first. `updated_at` moves with every change of a session
(a rename, an archive, a new search type, cleared messages), so ordering by it put a renamed old chat at
the top of the list. `last_active_at` moves only with activity: the session's creation and each message
written to it (a question and its answer, a chat memory's message). `updated_at` stays what it says.

Existing sessions: their last message's time, else their creation.

Sorting documents by name compared `lower(filename)` as text: "chapter 10.pdf" came before "chapter
2.pdf". `rag_name_key(filename)` is a key whose plain comparison is the natural order file managers give:
the name in lower case, each run of ASCII digits replaced by its value written so that a longer number
sorts after a shorter one (leading zeros dropped, then the count of digits' own length, the count, the
digits: 7 -> "117", 10 -> "1210", 0 -> "110"; the length prefix keeps a digit in first place, so a
number sorts against other characters as a digit does, and makes the key prefix-free). Numbers of any
length compare right; "file 007" and "file 7" tie (the listing breaks ties by id). The key is compared
byte by byte (COLLATE "C"), not by the database's collation: the embedded PostgreSQL (built without ICU,
C.UTF-8) and ParadeDB (en_US.utf8) then give one order. Lower case is the database's `lower()` (glibc's
case mapping in both). Cut at 600 characters (an index entry's bound; names are at most 255).

A stored generated column, not an expression index alone: the function costs about 16 us a name, which
a text-filtered listing (whose matches are sorted without the index) paid for every match (0.24 s at
15,000). `documents_name_key_idx` serves the unfiltered listing, as `documents_filename_idx` (now
dropped: nothing else read it) served `lower(filename)`.

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

CREATE FUNCTION rag_name_key(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT left(coalesce(string_agg(
               CASE WHEN part.run[1] IS NULL THEN part.run[2]
                    ELSE length(length(n.digits)::text)::text || length(n.digits)::text || n.digits END,
               '' ORDER BY part.ord), ''), 600)
    FROM regexp_matches(lower(name), '([0-9]+)|([^0-9]+)', 'g') WITH ORDINALITY AS part (run, ord)
    CROSS JOIN LATERAL (SELECT coalesce(nullif(ltrim(part.run[1], '0'), ''), '0') AS digits) AS n;
END;
ALTER TABLE documents
    ADD COLUMN name_key text COLLATE "C" NOT NULL GENERATED ALWAYS AS (rag_name_key(filename)) STORED;
COMMENT ON COLUMN documents.name_key IS 'natural order of the name (rag_name_key): sort by name';
CREATE INDEX documents_name_key_idx ON documents (name_key);
DROP INDEX documents_filename_idx;
"""

DOWNGRADE = """
CREATE INDEX documents_filename_idx ON documents (lower(filename));
ALTER TABLE documents DROP COLUMN name_key;
DROP FUNCTION rag_name_key(text);
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
