"""Native BM25: Chinese, Japanese and Korean text is split into characters and character pairs
(`rag_bm25_text`), so a word inside a sentence is found; decomposed text is composed (NFC).

These scripts write no spaces between words. PostgreSQL's parser (the `english` configuration) made a
whole run of them ONE token: "公司的年假政策规定每位员工" was one lexeme, so a search for 年假 (annual
leave) found nothing by BM25, nor did the chat's every-word check; only a run standing alone (a heading,
a cell) was findable, and only by its exact whole run.

A text in decomposed Unicode (NFD: "e" + U+0301 for "é", as macOS writes file contents and some PDFs'
text layers hold) was not found by a word typed composed: "Größenprüfung" missed it by BM25 (a name is
composed at upload; a text was not). The function composes such a text (NFC) first.

`rag_bm25_text(text)` is the text BM25 tokenises, applied identically to a chunk at index time
(bm25_index_add) and to the query (bm25_native's terms, relevance's every-word check, the recount of
`rag-server check`): each run of Han, Hiragana, Katakana or Hangul characters becomes its characters
and its overlapping pairs, separated by spaces ("年假政策" -> "年 假 政 策 年假 假政 政策"), as Lucene's
CJKBigramFilter does with outputUnigrams (Elasticsearch's `cjk_bigram`, `output_unigrams: true`). A
query's pairs are rare terms, so chunks holding the word itself rank first; the single characters let a
one-character query (猫) match too. A text over 20,000 characters (an imported record) is only
composed: its pairs could pass PostgreSQL's 1 MB bound on a tsvector. Any other text is returned as it
is (a regular expression test, about 10 us per chunk of 1,100 characters, where to_tsvector takes about
200: English search and indexing are unchanged within the noise).

Existing chunks holding such characters or marks are indexed again here (the UPDATE trigger's steps: postings
removed and added, the chunk noted in bm25_unpacked when a pack covers it, so the pack's stale copy is not
read). Native engine only: ParadeDB's index (`search_text::pdb.simple('stemmer=english')`) is unchanged,
and its tokenizer also keeps such a run as one token (README, "Languages").

Revision ID: 0025_bm25_cjk
Revises: 0024_stale_replacement_bytes
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql, scalar

revision = "0025_bm25_cjk"
down_revision = "0024_stale_replacement_bytes"
branch_labels = None
depends_on = None

# Hiragana, Katakana; CJK Extension A; CJK Unified Ideographs; Compatibility Ideographs; Hangul syllables;
# Extensions B-G (planes 2 and 3).
CJK_CLASS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f"
# What makes a text take the slow path: CJK, or the combining marks of decomposed (NFD) Latin, Greek and
# Cyrillic letters, Hangul jamo, Hebrew points, Arabic marks and the Devanagari nukta (a test of about 10 us;
# `IS NFC NORMALIZED` took 40 us per chunk).
SLOW_CLASS = CJK_CLASS + r"\u0300-\u036f\u1100-\u11ff\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u093c"
# Longer texts are only composed, their CJK runs kept whole as before: characters and pairs of 60,000 Han
# characters already make a 906 kB tsvector, and PostgreSQL refuses one over 1 MB ("string is too long
# for tsvector"), which would fail the re-index below, and so this migration, on one big imported record.
# A worker's chunk is far shorter (RAG_CHUNK_SIZE tokens); bm25_reference.SPLIT_MAX_CHARS is the same.
SPLIT_MAX_CHARS = 20000

FUNCTION = rf"""
CREATE FUNCTION rag_bm25_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
SELECT CASE WHEN t !~ '[{SLOW_CLASS}]' THEN t
            WHEN char_length(t) > {SPLIT_MAX_CHARS} THEN normalize(t, NFC) ELSE (
    SELECT string_agg(
        CASE WHEN m.part[1] IS NULL THEN m.part[2] ELSE
            ' ' || array_to_string(regexp_split_to_array(m.part[1], ''), ' ')
            || coalesce((SELECT ' ' || string_agg(substr(m.part[1], i, 2), ' ' ORDER BY i)
                         FROM generate_series(1, char_length(m.part[1]) - 1) AS i), '')
            || ' '
        END, '' ORDER BY m.n)
    FROM regexp_matches(normalize(t, NFC), '([{CJK_CLASS}]+)|([^{CJK_CLASS}]+)', 'g')
         WITH ORDINALITY AS m (part, n)
) END
$fn$;
COMMENT ON FUNCTION rag_bm25_text(text) IS
    'The text BM25 tokenises: composed (NFC), runs of CJK characters as characters and pairs (0025).';
"""

# 0003's bm25_index_add with `{tokens}` for what to_tsvector reads.
INDEX_ADD = """
CREATE OR REPLACE FUNCTION bm25_index_add(p_ids bigint[], p_texts text[], p_collections uuid[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    added_len bigint;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    -- The writers' mutex: taken first, so every other lock below is taken in its shadow.
    PERFORM 1 FROM bm25_stats WHERE id = 1 FOR UPDATE;

    WITH docs AS (
        SELECT d.id AS chunk_id, d.collection_id, to_tsvector('english', {tokens}) AS tsv
        FROM unnest(p_ids, p_texts, p_collections) AS d (id, search_text, collection_id)
    ), toks AS (
        SELECT docs.chunk_id, docs.collection_id, t.lexeme AS term, cardinality(t.positions) AS tf
        FROM docs CROSS JOIN LATERAL unnest(docs.tsv) AS t
    ), lens AS (
        SELECT chunk_id, sum(tf)::integer AS doc_len FROM toks GROUP BY chunk_id
    ), postings AS (
        INSERT INTO bm25_postings (term, chunk_id, tf, doc_len, collection_id)
        SELECT toks.term, toks.chunk_id, toks.tf, lens.doc_len, toks.collection_id
        FROM toks JOIN lens USING (chunk_id)
    ), df AS (
        -- Sorted: concurrent upserts of the same terms lock them in one order.
        INSERT INTO bm25_terms AS bt (term, df)
        SELECT term, count(*) FROM toks GROUP BY term ORDER BY term
        ON CONFLICT (term) DO UPDATE SET df = bt.df + EXCLUDED.df
    )
    SELECT coalesce(sum(doc_len), 0) INTO added_len FROM lens;

    UPDATE bm25_stats
    SET n_docs = n_docs + cardinality(p_ids), total_len = total_len + added_len
    WHERE id = 1;
END
$fn$;
"""

# What the UPDATE triggers do for a chunk whose text changed, for every chunk taking the slow path, in
# batches in id order: a corpus mostly in these scripts (millions of chunks) is never held in one array.
REINDEX_BATCH = 5000
REINDEX = rf"""
DO $do$
DECLARE
    ids bigint[];
    texts text[];
    colls uuid[];
    after bigint := 0;
BEGIN
    LOOP
        SELECT array_agg(id ORDER BY id), array_agg(search_text ORDER BY id),
               array_agg(collection_id ORDER BY id)
        INTO ids, texts, colls
        FROM (SELECT id, search_text, collection_id FROM chunks
              WHERE id > after AND search_text ~ '[{SLOW_CLASS}]' ORDER BY id LIMIT {REINDEX_BATCH}) AS slow;
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


def _native_bm25() -> bool:
    return bool(scalar("SELECT to_regclass('bm25_postings') IS NOT NULL"))


def upgrade() -> None:
    # Both engines: the chat's every-word check (retrieval/relevance.py) reads it on either.
    execute_sql(FUNCTION)
    if _native_bm25():
        execute_sql(INDEX_ADD.format(tokens="rag_bm25_text(d.search_text)") + REINDEX)


def downgrade() -> None:
    if _native_bm25():
        execute_sql(INDEX_ADD.format(tokens="d.search_text") + REINDEX)
    execute_sql("DROP FUNCTION rag_bm25_text(text);")
