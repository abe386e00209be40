"""Searching chat sessions (GET /chat/sessions?q=): GIN indexes over the words of each title and message.

A session matches when each word of `q` begins a word of its title or of one of its messages, read
through these indexes (a position test over every message's text took 0.6 s at 50,000 messages,
and 18 s with accents folded, rag_bm25_text's slow path): `simple` full-text (no stemming, no stop
words; case ignored), over the text as the BM25 leg folds it (rag_bm25_text: composed, Latin accents
folded, CJK as characters and pairs); the first 50,000 characters of a message (a tsvector holds at
most 1 MB: 100,000 CJK characters, as characters and pairs, came near it). REINDEX when
rag_bm25_text is replaced (as 0027 did).

The index is read by `rag_chat_sessions_holding(tsquery)`, SECURITY DEFINER: under row-level security
a condition that is not leakproof (`@@`) is never an index condition (it is checked after the
policies, on every message: 40 s at 30,000 messages). It returns the ids of the sessions whose title
or a message of which matches, whoever's: its only caller (chat/sessions.py) keeps those of them that
`chat_sessions`, under row-level security, shows the caller, so a key still finds only its own.

Revision ID: 0031_chat_search
Revises: 0030_stored_responses
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0031_chat_search"
down_revision = "0030_stored_responses"
branch_labels = None
depends_on = None

UPGRADE = """
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

DOWNGRADE = """
DROP FUNCTION rag_chat_sessions_holding(tsquery);
DROP INDEX chat_sessions_title_words_idx;
DROP INDEX chat_messages_words_idx;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
