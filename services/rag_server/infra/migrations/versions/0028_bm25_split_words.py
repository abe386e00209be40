"""Native BM25 finds a number after a hyphen and the words of URLs, hosts, e-mail addresses and file paths:
`2024` finds `FY-2024`, `install` finds `https://docs.example.com/guide/install-steps.html`, `jane` and
`example` find `jane.doe@example.com`, `app_server` and `log` find `/var/log/app_server.log`.

PostgreSQL's parser (the `english` configuration) read `FY-2024`, `COVID-19`, `ISO-9001` as a word and a
signed integer (`fy`, `-2024`), so `2024` never found them; a URL as three whole tokens (the url, its host
`docs.example.com`, its path `/guide/install-steps.html`), an e-mail address, a file path (`/var/log/x.log`,
`and/or`) and a bare host (`docs.example.com`) each as one: none of their words was findable alone, by
BM25 nor by the chat's every-word check. ParadeDB's `simple` tokenizer (production) splits at every
character that is not a letter or digit, so there they were found.

`rag_bm25_text(text)` (0025, 0027) now also, on every text (ASCII too, which 0027 returned at once), after
composing, folding and the CJK split, turns into a space:
- a hyphen before a digit that follows a letter or digit: `FY-2024` -> `FY 2024`, `1-2-3` -> `1 2 3`,
  `2024-01-15` -> `2024 01 15`, `+1-555-0100` -> `+1 555 0100`. A hyphen after anything else (a space,
  a bracket, another hyphen, the text's start) is a minus sign and stays: `-5` and `(-5)` keep the signed
  number `-5`, found by `-5`, not by `5` (ParadeDB finds it by `5`: it drops every sign). A CJK character
  before it is spaced out first (0025), so `年-5` keeps `-5` too;
- every `/` and `@`: `and/or` -> `and or`, `12/05/2024` -> `12 05 2024`; but not the `/` of `</`, a
  closing tag: PostgreSQL's parser skips what `<script>` or `<style>` holds up to its closing tag, and
  without one it skipped every word after it (a document quoting HTML);
- a `.` between two letters, a letter and a digit, or a digit and a letter: `docs.example.com` -> `docs
  example com`, `e.g.` -> `e g.`, `Fig.3` -> `Fig 3`. A `.` between two digits stays, so decimal and
  version numbers stay one word: `10.5`, `3.14`, `v2.3.1` (a query `10` does not find `10.5%`, as before;
  ParadeDB splits them: there `10` finds it). A `.` before a space (a full stop) stays: nothing changes.
A `:` is left: once `/` and `.` are spaced the parser reads none of it into a token (`localhost:8080`,
`https:`, `mailto:jane` are two words), and leaving it keeps a text with `Note:` unchanged (not indexed
again). `\\` was already a separator, `_` too (`app_server` is `app`, `server`).

It is the one transform of a chunk at index time (bm25_index_add), of a query (bm25_native: a query
`FY-2024`, `docs.example.com` or a whole URL finds its text), of the chat floor's every-word check
(retrieval/relevance.py) and of `rag-server check`'s recount, so they split alike. "Letter or digit" is
the database's `[[:alnum:]]` (a letter of any script, the locale's); digits are 0-9. Written without a
backslash (`[.]`), so the body means the same with standard_conforming_strings off (0027 says why).

It stays IMMUTABLE and cheap: one regexp_replace over the text 0027 returns, with lookaround (the letter
before and the digit after are tested, not replaced). Measured on 5,000 SciFact chunks (1,500 characters) on
a shared 2-core machine under load (0027 and 0028 alternated, min-max of 4 runs): the regexp_replace
alone 58-76 ms for all of them (12-15 us a chunk, where to_tsvector takes 150-240 us); the function
0.12-0.20 -> 0.15-0.22 s; to_tsvector over it 0.63-0.92 -> 0.42-0.79 s; indexing them (bm25_index_add)
3.5-6.5 -> 4.1-4.9 s; a BM25 query (median of 200 SciFact queries, top 10) 5.6-7.7 -> 2.7-7.2 ms: the
change is inside the noise. The same chunks each with a URL, an e-mail address, a path and `FY-2024`
added (3 runs, the machine busier): regexp_replace 89 ms, the function 0.12-0.34 -> 0.32-0.75 s, indexing
7.6-8.9 -> 8.6-25 s, a query 10.5-19 -> 12.7-24 ms (noise again: the function is a small part of it). SciFact
by BM25 alone (one chunk per abstract, 300 test queries): nDCG@10 0.6909 -> 0.6924, R@100 0.9216 -> 0.9242.

The upgrade indexes again only the chunks whose BM25 text changes: those the same pattern matches in their
stored text, or with a combining mark before a `.` or `-` (decomposed: the letter it ends is composed
first), 5,000 per statement in one transaction holding the writers' mutex to its end, as 0027 did (chunk
writes wait: at 1-2 ms a chunk, 20-30 minutes for a million technical chunks): postings out and in, the
chunk noted in bm25_unpacked when a pack covers it. Scientific and technical text holds many (`IL-10`,
`75-250`, `ligand/receptor`): 3,270 of the 5,000 SciFact chunks, indexed again in 6.0-9.1 s (the downgrade
5.0-5.9 s); an English text without them is only read (the pattern). The downgrade restores 0027's function
and indexes the same chunks again.

ParadeDB (production): the index is unchanged (its tokenizer already splits them); the function changes on
both engines, since the chat's every-word check reads it on either (0025).

Revision ID: 0028_bm25_split_words
Revises: 0027_bm25_ascii_folding
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from rag_server.infra.migrations.helpers import execute_on_native_bm25, execute_sql

revision = "0028_bm25_split_words"
down_revision = "0027_bm25_ascii_folding"
branch_labels = None
depends_on = None

# What becomes a space, each alternative a single character with its neighbours only looked at: a hyphen
# after a letter or digit and before a digit; / (not a closing tag's: PostgreSQL's parser skips a script's
# or style's content up to `</script>`, and everything after a broken one) and @; a dot between letters
# and digits, not two digits.
SPLIT = (
    "(?<=[[:alnum:]])-(?=[0-9])|(?<!<)/|@"
    "|(?<=[[:alpha:]])[.](?=[[:alnum:]])|(?<=[0-9])[.](?=[[:alpha:]])"
)  # fmt: skip
# Combining Diacritical Marks, as characters (0027's MARKS).
MARKS = "\u0300-\u036f"


def _v27() -> ModuleType:
    """0027's module, loaded from its file beside this one: no Alembic context needed (tests record the
    statements of an upgrade without one)."""
    spec = importlib.util.spec_from_file_location(
        down_revision, Path(__file__).with_name(f"{down_revision}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function_sql() -> str:
    """0027's function, its result passed through one regexp_replace of SPLIT (0027's body is one
    expression, `SELECT CASE ... END`, so the call wraps that expression: no subquery)."""
    previous = _v27().function_sql()
    start = previous.index("$fn$\n") + len("$fn$\n")
    body = previous[start : previous.index("\n$fn$", start)]
    assert body.startswith("SELECT CASE "), body[:40]
    expression = body.removeprefix("SELECT ")
    return f"""
CREATE OR REPLACE FUNCTION rag_bm25_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
SELECT regexp_replace({expression}, '{SPLIT}', ' ', 'g')
$fn$;
COMMENT ON FUNCTION rag_bm25_text(text) IS
    'The text BM25 tokenises: composed (NFC), Latin accents folded (0027), CJK runs as characters '
    'and pairs (0025); a hyphen before a digit, / @ and a dot between letters spaced (0028).';
"""


# The chunks whose rag_bm25_text this migration changes: folding and composing keep every / @ . - where it
# is and a letter a letter, so SPLIT finds them in the stored text, except a dot or hyphen after a letter
# stored decomposed (a mark before it). A CJK character before a dot matches here and not once spaced out
# (0025): indexed again for nothing, rarely.
REINDEX_BATCH = 5000
REINDEX = rf"""
DO $do$
DECLARE
    ids bigint[];
    texts text[];
    colls uuid[];
    after bigint := 0;
BEGIN
    -- The writers' mutex first, to commit: a batch read before it could hold a chunk whose delete (or a
    -- replacement's final write) was waiting for the mutex, and index that chunk again once it is gone.
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;
    LOOP
        SELECT array_agg(id ORDER BY id), array_agg(search_text ORDER BY id),
               array_agg(collection_id ORDER BY id)
        INTO ids, texts, colls
        FROM (SELECT id, search_text, collection_id FROM chunks
              WHERE id > after AND search_text ~ '{SPLIT}|[{MARKS}][-.]'
              ORDER BY id LIMIT {REINDEX_BATCH}) AS split;
        EXIT WHEN ids IS NULL;
        PERFORM bm25_index_remove(ids, texts);
        PERFORM bm25_index_add(ids, texts, colls);
        INSERT INTO bm25_unpacked (chunk_id, collection_id)
        SELECT u.id, u.collection_id FROM unnest(ids, colls) AS u (id, collection_id), bm25_pack k
        WHERE u.id <= k.watermark
        ON CONFLICT (chunk_id) DO NOTHING;
        after := ids[cardinality(ids)];
    END LOOP;
END
$do$;
"""


def upgrade() -> None:
    # Both engines: the chat's every-word check reads it on either (0025).
    execute_sql(function_sql())
    execute_on_native_bm25(REINDEX)


def downgrade() -> None:
    execute_sql(_v27().function_sql())
    execute_on_native_bm25(REINDEX)
