"""Which words of a hit's text the query matched, as the BM25 leg reads words (`highlight: true`).

A client that marks the query's words itself has to copy BM25's analyzer: the web app copied the accent
folding, the CJK rule and PostgreSQL's number rules into JavaScript, and could not copy the English
stemmer, so "state" marked the start of "statement" (another word to BM25) and "vacation" half of
"vacations" (the same word). The server has the analyzer: each distinct word of the hits goes through
`to_tsvector('english', rag_bm25_text(word))`, the BM25 leg's own (bm25_native, relevance.EVERY_WORD), and
a word is marked when one of its lexemes is one of the query's. One statement for all the hits.

A word here is a run of letters and digits with their combining marks, a `.` between two digits inside it
(`10.5`, `v2.3.1`, which PostgreSQL reads whole), a sign before it as PostgreSQL keeps one (`-7`, `+3`), or
one Chinese, Japanese or Korean character (BM25 reads those scripts by characters and pairs, 0025). So
`FY-2024` holds the words `FY` and `2024`, an e-mail address its names. A stop word (`the`) is never
marked: the analyzer drops it from the query as from the text. The parser has cases a regular expression
does not follow: `1.5x`, one word here, is two tokens to it (the word is marked whole when one matched);
`a1.2_3`, one token to it, is two words here (neither is marked by a query `a1.2_3`).
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Sequence
from functools import cache

import asyncpg

from rag_server.retrieval.models import SearchHit
from rag_server.text import CJK_RUN


def _marks_class() -> str:
    """A regular-expression class of every combining mark (categories Mn, Mc, Me): Python's `\\w` stops at
    them, so "élève" typed decomposed or a Hindi vowel sign would end a word."""
    ranges: list[str] = []
    start = previous = -2
    # The planes holding scripts (8 ms; all of them took 0.1 s), then the variation selectors' supplement,
    # the only marks beyond (U+E0100-U+E01EF).
    for code in (*range(0x300, 0x20000), *range(0xE0100, 0xE01F0)):
        if not unicodedata.category(chr(code)).startswith("M"):
            continue
        if code != previous + 1:
            if start >= 0:
                ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(previous))}")
            start = code
        previous = code
    ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(previous))}")
    return "".join(ranges)


@cache
def word_pattern() -> re.Pattern[str]:
    """One CJK character, or letters and digits with their marks, joined by a `.` between two digits
    (`10.5`, `v2.3.1`, `2.5e3`: PostgreSQL reads them whole), after a sign before a digit as PostgreSQL
    keeps it: `+` always, `-` unless a letter or digit is before it (`-7`, `(-5)`; `FY-2024` is split,
    0028). Possessive: a run of letters is never given back to try the marks' large class inside it. Each
    lookbehind follows the `-` or `.` it tests, so a word that has none is not slowed by them."""
    cjk = CJK_RUN.pattern.removesuffix("+")[1:-1]  # the class's ranges, without its brackets
    marks = _marks_class()
    run = rf"(?:[^\W_{cjk}]++[{marks}]*+)++"
    sign = rf"(?:\+|-(?<![^\W_{cjk}]-)(?<![{marks}]-))(?=[0-9])"
    return re.compile(rf"[{cjk}]|(?:{sign})?{run}(?:\.(?<=[0-9]\.)(?=[0-9]){run})*+")


# The hits' distinct words whose lexemes meet the query's; the query's lexemes are an InitPlan (once). An
# ASCII word skips rag_bm25_text, which returns it as it is (a word holds no punctuation to split) and
# costs ten times to_tsvector's time per word: 23 ms for the 861 words of ten SciFact chunks, 1.8 without.
MATCHING_WORDS = """
    SELECT w FROM unnest($1::text[]) AS w
    WHERE tsvector_to_array(to_tsvector('english',
            CASE WHEN octet_length(w) = char_length(w) THEN w ELSE rag_bm25_text(w) END))
        && (SELECT tsvector_to_array(to_tsvector('english', rag_bm25_text($2::text))))
"""


def word_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of each word of `text`; offsets in code points (Python's str indexes)."""
    return [(m.start(), m.end(), m.group()) for m in word_pattern().finditer(text)]


async def highlight(conn: asyncpg.Connection, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
    """`hits`, each with `highlights`: the [start, end) code-point spans of its text's words that share a
    lexeme with `query` (empty when none does)."""
    # CPU work off the event loop: 100 hits of 1,500 characters take ~15 ms, the first call builds the
    # pattern (~20 ms).
    spans = await asyncio.to_thread(lambda: [word_spans(hit.text) for hit in hits])
    words = sorted({word for hit_spans in spans for _, _, word in hit_spans})
    matching = {row["w"] for row in await conn.fetch(MATCHING_WORDS, words, query)} if words else set()
    return [
        hit.model_copy(update={"highlights": [(s, e) for s, e, word in hit_spans if word in matching]})
        for hit, hit_spans in zip(hits, spans, strict=True)
    ]
