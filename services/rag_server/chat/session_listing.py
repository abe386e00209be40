"""Listing chat sessions, and searching them by their words (GET /chat/sessions, `q`: migration 0032).

A search reads the words indexes through `rag_chat_sessions_holding`, one word at a time, and only the
parts of them of the owners the caller may list (its key's; an admin's open-mode sessions; with
`every_owner`, an admin's every key's); row-level security on `chat_sessions` still decides what is
shown. The page and the total come from one statement: the search runs once.
"""

from __future__ import annotations

from rag_server.chat.models import ChatSession
from rag_server.chat.sessions import OWN, SESSION_COLUMNS, as_session
from rag_server.errors import InvalidInputError
from rag_server.infra.database import Executor, connection


async def list_sessions(
    conn: Executor,
    *,
    limit: int,
    offset: int,
    include_archived: bool,
    every_owner: bool = False,
    only_archived: bool = False,
    words: str | None = None,
) -> tuple[list[ChatSession], int]:
    """Most recently active first: `last_active_at` (creation, then each message written; a rename,
    an archive or a clear is no activity). The scope's own sessions (an admin's include those made in
    open mode, before the first key), or with `every_owner` all those row-level security shows it (an
    admin's: every session). `only_archived`: the archived ones alone (whatever `include_archived`
    says). `words`: only those whose title or one of whose messages has a word beginning with each of
    its words (split at white space), ignoring case and Latin accents."""
    async with connection(conn) as c:
        searched = await _searchable_words(c, words)
        each_word = "".join(_HOLDS.format(n=6 + i) for i in range(len(searched)))
        rows = await c.fetch(
            _LISTING_SQL.format(each_word=each_word),
            include_archived,
            every_owner,
            only_archived,
            limit,
            offset,
            *searched,
        )
    return [as_session(r) for r in rows if r["id"] is not None], int(rows[0]["total"])


# The matching sessions once, then their count and one page (a row of NULLs beside the count when the
# page is empty). A search's words follow: $6, $7...
_LISTING_SQL = f"""
WITH matching AS MATERIALIZED (
    SELECT s.id, s.last_active_at FROM chat_sessions s
    WHERE ($1 OR $3 OR NOT s.is_archived) AND (NOT $3 OR s.is_archived) AND ($2 OR {OWN}){{each_word}}
), shown AS (
    SELECT id FROM matching ORDER BY last_active_at DESC, id LIMIT $4 OFFSET $5
)
SELECT counted.total, page.*
FROM (SELECT count(*) AS total FROM matching) AS counted
LEFT JOIN LATERAL (SELECT {SESSION_COLUMNS} FROM shown JOIN chat_sessions s USING (id)) AS page ON true
ORDER BY page.last_active_at DESC, page.id
"""
# The session holds the word $n: its title or a message of it (among the owners the caller may list).
_HOLDS = "\n          AND s.id IN (SELECT rag_chat_sessions_holding(${n}::text, $2))"


async def _searchable_words(conn: Executor, words: str | None) -> list[str]:
    """The words of `words` (split at white space, each once) that hold a word of their own as the
    messages' are folded: each is found as a prefix ('regen' finds 'regenerates'; 'e-mail' needs
    'e-mail', 'e' and 'mail'). Punctuation alone is left out; a `words` of nothing else is refused."""
    if words is None:
        return []
    searchable = await conn.fetchval(
        """
        SELECT coalesce(array_agg(w.word ORDER BY w.n), '{}')
        FROM unnest($1::text[]) WITH ORDINALITY AS w (word, n)
        WHERE cardinality(tsvector_to_array(to_tsvector('simple'::regconfig, rag_bm25_text(w.word)))) > 0
        """,
        list(dict.fromkeys(words.split())),
    )
    if not searchable:  # punctuation alone (it listed every session); with words, it is left out
        raise InvalidInputError(f"q has no word to search for (letters or digits): {words!r}")
    return list(searchable)
