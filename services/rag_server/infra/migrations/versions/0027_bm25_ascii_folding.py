"""BM25 folds Latin accents: `eleve` finds `élève`, `Strasse` finds `Straße`, and the reverse.

Users type French, Spanish, Portuguese or German without accents. BM25 matched words as written, so an
unaccented query missed an accented text in the BM25 leg and in the chat's every-word check (README,
"Languages"). Now both sides are folded, the way Lucene's ASCIIFoldingFilter does for Latin script.

Native engine: `rag_bm25_text(text)` (0025: composed, CJK as characters and pairs) also folds, after
composing (NFC), each Latin letter with an accent, cedilla, umlaut, tilde, ring, caron, ogonek, stroke...
to its base letter, and a few letters to two (ß -> ss, æ -> ae, œ -> oe, þ -> th). It is the one
transform of a chunk at index time (bm25_index_add), of a query (bm25_native), of the chat floor's
every-word check (retrieval/relevance.py) and of `rag-server check`'s recount, so they all fold alike.
Covered, as Lucene (and pg_search's `ascii_folding`, a port of it) maps them:
- Latin-1 Supplement (U+00C0-U+00FF): every letter (not × ÷);
- Latin Extended-A (U+0100-U+017F): every letter (ı -> i, ĸ -> q, ŉ -> n, ſ -> s, ŋ -> n, ħ -> h...);
- Latin Extended-B (U+0180-U+024F) and Latin Extended Additional (U+1E00-U+1EFF, Vietnamese): the letters
  whose canonical decomposition is a letter above plus marks (ǎ, ș, ț, ơ, ư, ạ, ế...), and ẞ -> SS.
Not covered (Lucene folds them too): the other letters of Extended-B (ƀ, ƒ, ǝ, ǅ...), IPA, small
capitals, ligatures such as ﬁ, fullwidth and circled letters, and the symbols and digits Lucene maps
(« » ¹ ² ³). ẛ (long s with dot) becomes s where Lucene writes f; a combining mark no letter composes
with is dropped after a Latin letter ("x" + U+0301 -> x), where Lucene keeps it. Other scripts keep their
marks: Cyrillic й, Greek, Hebrew, Arabic, Devanagari and Thai stay as they are.

It stays IMMUTABLE and cheap: ASCII text (a length test) and text with none of these letters or marks
(0025's regular expression, with them added) are returned as they are. The rest is decomposed (NFD), the
marks after a Latin letter dropped (regexp_replace), composed (NFC), and only where they occur the
two-letter folds replace()d and the letters without a decomposition translate()d; the CJK split runs
only where a CJK character is. Measured on 5,000 SciFact chunks (1,500 characters, 22% not ASCII, 63 with
a letter to fold): the function 0.08-0.10 s -> 0.11-0.12 s for all of them, indexing them 3.0-3.2 s
before and after, a BM25 query 1.44-1.51 ms before and after. The same chunks with a French, Spanish and
German sentence added (ß too): the function 0.29 ms a chunk, indexing 3.6-3.7 -> 5.0 s (to_tsvector
remains most of it). One translate() of every letter above cost 2.5 ms a chunk: O(letters x text).

The upgrade indexes again only the chunks whose BM25 text changes (those holding, once composed, a folded
letter or a mark after a Latin letter), 5,000 per statement as 0025 did: postings out and in
(`bm25_index_remove`, `bm25_index_add`: document frequencies, lengths, N), and the chunk noted in
bm25_unpacked when a pack covers it (the pack's copy is stale). 5,000 English chunks: 0.18 s; 5,000
accented ones: 5.7 s. The downgrade restores 0025's function and indexes the same chunks again.

ParadeDB (production): the index's tokenizer becomes `pdb.simple('stemmer=english',
'ascii_folding=true')` (keyless on 0.26, as 0005's), built beside the old one CONCURRENTLY and then swapped
in, ParadeDB's documented way (helpers.rebuild_index_concurrently): searches and writes go on meanwhile,
on the old index until the new one is valid. The query is tokenised by the index's tokenizer, so it folds.

Revision ID: 0027_bm25_ascii_folding
Revises: 0026_bm25_deferred_write
"""

from __future__ import annotations

import codecs
import re

from alembic import context

from rag_server.infra.migrations.helpers import (
    execute_on_native_bm25,
    execute_sql,
    rebuild_index_concurrently,
    scalar,
)

revision = "0027_bm25_ascii_folding"
down_revision = "0026_bm25_deferred_write"
branch_labels = None
depends_on = None

# Every letter folded, as it is stored composed (NFC): the letters of these blocks whose canonical
# decomposition is a letter of BASES plus marks (U+0300-U+036F), and the ones Lucene folds without one.
FOLDED_LETTERS = (
    # Latin-1 Supplement
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞßàáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿ"
    # Latin Extended-A
    "ĀāĂăĄąĆćĈĉĊċČčĎďĐđĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĦħĨĩĪīĬĭĮįİıĲĳĴĵĶķĸĹĺĻļĽľĿŀŁłŃńŅņŇňŉŊŋŌōŎŏŐőŒœŔŕŖŗŘřŚśŜŝŞş"
    "ŠšŢţŤťŦŧŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžſ"
    # Latin Extended-B (decomposable letters)
    "ƠơƯưǍǎǏǐǑǒǓǔǕǖǗǘǙǚǛǜǞǟǠǡǢǣǦǧǨǩǪǫǬǭǰǴǵǸǹǺǻǼǽǾǿȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȞȟȦȧȨȩȪȫȬȭȮȯȰȱȲȳ"
    # Latin Extended Additional (decomposable letters; ẞ)
    "ḀḁḂḃḄḅḆḇḈḉḊḋḌḍḎḏḐḑḒḓḔḕḖḗḘḙḚḛḜḝḞḟḠḡḢḣḤḥḦḧḨḩḪḫḬḭḮḯḰḱḲḳḴḵḶḷḸḹḺḻḼḽḾḿṀṁṂṃṄṅṆṇṈṉṊṋṌṍṎṏṐṑṒṓṔṕṖṗṘṙṚṛ"
    "ṜṝṞṟṠṡṢṣṤṥṦṧṨṩṪṫṬṭṮṯṰṱṲṳṴṵṶṷṸṹṺṻṼṽṾṿẀẁẂẃẄẅẆẇẈẉẊẋẌẍẎẏẐẑẒẓẔẕẖẗẘẙẛẞẠạẢảẤấẦầẨẩẪẫẬậẮắẰằẲẳẴẵẶặẸẹẺẻẼẽ"
    "ẾếỀềỂểỄễỆệỈỉỊịỌọỎỏỐốỒồỔổỖỗỘộỚớỜờỞởỠỡỢợỤụỦủỨứỪừỬửỮữỰựỲỳỴỵỶỷỸỹ"
)
# Letters without a decomposition to ASCII, folded by translate() (one letter) or replace() (two).
SPECIAL_FROM, SPECIAL_TO = "ÐðØøĐđĦħıĸĿŀŁłŉŊŋŦŧſ", "DdOoDdHhiqLlLlnNnTts"
SPECIAL_TWO = (
    ("Æ", "AE"), ("æ", "ae"), ("Þ", "TH"), ("þ", "th"), ("ß", "ss"), ("ẞ", "SS"), ("Ĳ", "IJ"),
    ("ĳ", "ij"), ("Œ", "OE"), ("œ", "oe"),
)  # fmt: skip
SPECIALS = SPECIAL_FROM + "".join(letter for letter, _ in SPECIAL_TWO)
# A combining mark after one of these loses it once the text is decomposed: é (e + U+0301) -> e,
# Ǿ (Ø + U+0301) -> Ø -> O. A mark after any other letter stays (и + U+0306 composes back to й).
BASES = "A-Za-z" + SPECIALS
# What makes a text fold: a letter above, a combining mark (0025's SLOW_CLASS has them), or U+212B
# (ANGSTROM SIGN, which is A + ring once decomposed).
FOLD_CLASS = FOLDED_LETTERS + "\u212b"
# Combining Diacritical Marks, as characters: the function's literals hold no backslash, so its body means
# the same in a session with standard_conforming_strings off (0025's \u escapes did not).
MARKS = "\u0300-\u036f"


def fold_sql(expr: str) -> str:
    """SQL folding the text `expr`, composed (NFC) on the way: decomposed (NFD), the marks after a letter
    of BASES dropped, composed again; then the letters of SPECIAL_TWO and of SPECIAL_FROM, each group only
    when the text holds one of it (a test of a few microseconds, where translate() costs about 5 us per
    letter it maps per 1,500 characters, each replace() about 4 us). OFFSET 0: the planner would otherwise
    copy the expression into each place that reads it, and compute it there."""
    marks_dropped = f"regexp_replace(normalize({expr}, NFD), '([{BASES}])[{MARKS}]+', E'\\\\1', 'g')"
    two = "s.y"
    for letter, pair in SPECIAL_TWO:
        two = f"replace({two}, '{letter}', '{pair}')"
    letters = "".join(letter for letter, _ in SPECIAL_TWO)
    two = f"CASE WHEN s.y ~ '[{letters}]' THEN {two} ELSE s.y END"
    return (
        f"(SELECT CASE WHEN s.y ~ '[{SPECIAL_FROM}]' THEN translate({two}, '{SPECIAL_FROM}', '{SPECIAL_TO}')"
        f" ELSE {two} END FROM (SELECT normalize({marks_dropped}, NFC) AS y OFFSET 0) AS s)"
    )


# 0025's, as they were: CJK scripts; what else takes the slow path (decomposed marks of Latin, Greek and
# Cyrillic letters, Hangul jamo, Hebrew points, Arabic marks, the Devanagari nukta); the bound on splitting.
CJK_CLASS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f"
SLOW_CLASS = CJK_CLASS + r"\u0300-\u036f\u1100-\u11ff\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u093c"
SPLIT_MAX_CHARS = 20000


def function_sql() -> str:
    """0025's function, composing by the folding, with a length test before its regular expression (ASCII:
    returned at once) and the CJK split only where a CJK character is (a test of a few microseconds);
    the folded text is computed once (OFFSET 0, as in fold_sql)."""
    slow, cjk = (codecs.decode(c, "unicode_escape") for c in (SLOW_CLASS, CJK_CLASS))  # characters, as MARKS
    split_max = SPLIT_MAX_CHARS
    folded = fold_sql("t")
    return rf"""
CREATE OR REPLACE FUNCTION rag_bm25_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
SELECT CASE WHEN octet_length(t) = char_length(t) OR t !~ '[{slow}{FOLD_CLASS}]' THEN t ELSE (
    SELECT CASE WHEN char_length(t) > {split_max} OR f.x !~ '[{cjk}]' THEN f.x ELSE (
        SELECT string_agg(
            CASE WHEN m.part[1] IS NULL THEN m.part[2] ELSE
                ' ' || array_to_string(regexp_split_to_array(m.part[1], ''), ' ')
                || coalesce((SELECT ' ' || string_agg(substr(m.part[1], i, 2), ' ' ORDER BY i)
                             FROM generate_series(1, char_length(m.part[1]) - 1) AS i), '')
                || ' '
            END, '' ORDER BY m.n)
        FROM regexp_matches(f.x, '([{cjk}]+)|([^{cjk}]+)', 'g') WITH ORDINALITY AS m (part, n)
    ) END
    FROM (SELECT {folded} AS x OFFSET 0) AS f
) END
$fn$;
COMMENT ON FUNCTION rag_bm25_text(text) IS
    'The text BM25 tokenises: composed (NFC), Latin accents folded (0027), CJK runs as characters '
    'and pairs (0025).';
"""


# The chunks whose rag_bm25_text this migration changes: those holding, once composed, a folded letter or
# a mark left after a letter of BASES (a cheap test first: such a letter, a combining mark, or the
# Angstrom sign). Re-indexed as 0025 did, in batches in id order, but under the writers' mutex from the
# first read (0025 read each batch before it: a chunk deleted meanwhile was indexed again).
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
              WHERE id > after AND search_text ~ '[{FOLD_CLASS}\u0300-\u036f]'
                AND normalize(search_text, NFC) ~ '[{FOLD_CLASS}]|[{BASES}][\u0300-\u036f]'
              ORDER BY id LIMIT {REINDEX_BATCH}) AS folded;
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

# ParadeDB: 0005's index with the folding filter on the text (id first, the collection a pushed-down scope).
INDEX_NAME = "chunks_bm25_idx"
INDEX_FIELDS = ("id", "(search_text::pdb.simple('stemmer=english', 'ascii_folding=true'))", "collection_id")


def bm25_index_sql(pg_search_version: str) -> str:
    """The chunks BM25 index, folding, for this pg_search version: keyless from 0.26 (as 0005's)."""
    match = re.match(r"(\d+)\.(\d+)", pg_search_version)
    if match is None:
        raise ValueError(f"unrecognised pg_search version {pg_search_version!r}")
    keyless = (int(match[1]), int(match[2])) >= (0, 26)
    with_key = "" if keyless else "\n    WITH (key_field = 'id')"
    return f"CREATE INDEX {INDEX_NAME} ON chunks\n    USING paradedb ({', '.join(INDEX_FIELDS)}){with_key};\n"


def _engine() -> str:
    """0002's choice, recorded in app_meta: 'pg_search' or 'native'."""
    return str(scalar("SELECT value #>> '{}' FROM app_meta WHERE key = 'bm25_engine'"))


def _pg_search_version() -> str:
    # The library's version, not pg_extension's (0005 says why).
    return str(scalar("SELECT version FROM paradedb.version_info()"))


def upgrade() -> None:
    # Both engines: the chat's every-word check reads it on either (0025).
    execute_sql(function_sql())
    if _engine() == "pg_search":
        rebuild_index_concurrently(bm25_index_sql(_pg_search_version()))
    execute_on_native_bm25(REINDEX)


def downgrade() -> None:
    v25 = context.script.get_revision("0025_bm25_cjk").module
    execute_sql(v25.FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    if _engine() == "pg_search":
        v5 = context.script.get_revision("0005_paradedb_026").module
        rebuild_index_concurrently(v5.bm25_index_sql(_pg_search_version()))
    execute_on_native_bm25(REINDEX)
