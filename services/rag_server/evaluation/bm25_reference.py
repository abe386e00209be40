"""Reference Okapi BM25 in Python over PostgreSQL's own tokens: what the native engine computes.

`tests/integration/test_bm25_native.py` holds the native engine to these scores (1e-6); the BM25
statistics study (`bm25_stats_study`) scores with them under statistics from different sets of chunks.
Formula and parameters: docs/decisions/0003-native-bm25.md. Tokens come from `ts_debug` (the parser and
the `english` dictionaries, token by token), counted here: independent of the engine's to_tsvector
positions, which the comparison therefore checks too.

What they tokenise is `bm25_text(text)`: this module's own Python statement of what migration 0025's
`rag_bm25_text` is meant to do (composed, NFC; Latin accents folded as migration 0027 says; a run of Han,
Hiragana, Katakana or Hangul characters as its characters and overlapping pairs; a hyphen before a digit,
`/`, `@` and a dot between letters spaced as migration 0028 says), written from that description and never
calling the SQL function, so the comparison holds the function to it too. The
folding here is a rule (a Latin letter whose canonical decomposition is a letter plus marks becomes that
letter, plus a short list of letters without one), where the migration lists every letter it maps.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from rag_server.text import CJK_RUN


def _characters_and_pairs(run: re.Match[str]) -> str:
    chars = run.group()
    pairs = [chars[i : i + 2] for i in range(len(chars) - 1)]
    return " " + " ".join([*chars, *pairs]) + " "


# Latin letters Lucene's ASCIIFoldingFilter folds that no canonical decomposition reduces to ASCII (also
# the base of a decomposable one: Ǿ is Ø + acute, Ǽ is Æ + acute).
_FOLD_SPECIAL = {
    "Æ": "AE", "æ": "ae", "Ð": "D", "ð": "d", "Ø": "O", "ø": "o", "Þ": "TH", "þ": "th", "ß": "ss",
    "ẞ": "SS", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i", "Ĳ": "IJ", "ĳ": "ij", "ĸ": "q",
    "Ŀ": "L", "ŀ": "l", "Ł": "L", "ł": "l", "ŉ": "n", "Ŋ": "N", "ŋ": "n", "Œ": "OE", "œ": "oe",
    "Ŧ": "T", "ŧ": "t", "ſ": "s",
}  # fmt: skip
# The blocks folded: Latin-1 Supplement, Latin Extended-A and -B, Latin Extended Additional.
_FOLD_BLOCKS = ((0x00C0, 0x024F), (0x1E00, 0x1EFF))


def fold_letter(char: str) -> str:
    """`char` folded to ASCII (one or two letters), or itself when migration 0027 does not fold it."""
    if char.isascii() or not any(lo <= ord(char) <= hi for lo, hi in _FOLD_BLOCKS):
        return char
    if char in _FOLD_SPECIAL:
        return _FOLD_SPECIAL[char]
    decomposed = unicodedata.normalize("NFD", char)
    marks = decomposed[1:]
    if not marks or not all(unicodedata.combining(m) for m in marks):
        return char
    base = _FOLD_SPECIAL.get(decomposed[0], decomposed[0])
    return base if base.isascii() and base.isalpha() else char


# A combining mark (U+0300-U+036F) left after a letter folded to ASCII, or after an ASCII letter, is dropped
# too: "x" + U+0301 (no such letter composed) -> "x".
_MARKS_AFTER_LETTER = re.compile("(?<=[A-Za-z])[\u0300-\u036f]+")


def fold(text: str) -> str:
    """`text` (composed) with every Latin letter migration 0027 folds folded."""
    if text.isascii():
        return text
    return _MARKS_AFTER_LETTER.sub("", "".join(map(fold_letter, text)))


# A longer text is only composed (migration 0025's bound: its pairs could pass a tsvector's 1 MB).
SPLIT_MAX_CHARS = 20000

# Migration 0028: a hyphen after a letter or digit before a digit (not a lone minus sign), every / (not a
# closing tag's `</`) and @,
# a dot with a letter on one side and a letter or digit on the other (not between two digits: 10.5, v2.3.1).
_LETTER, _ALNUM = r"[^\W\d_]", r"[^\W_]"
_SEPARATOR = re.compile(
    rf"(?<={_ALNUM})-(?=[0-9])|(?<!<)/|@|(?<={_LETTER})\.(?={_ALNUM})|(?<=[0-9])\.(?={_LETTER})"
)


def split_words(text: str) -> str:
    """`text` with the separators of URLs, hosts, e-mail addresses, file paths and of a number after a
    hyphen spaced: "FY-2024" -> "FY 2024", "jane.doe@example.com" -> "jane doe example com"."""
    return _SEPARATOR.sub(" ", text)


def bm25_text(text: str) -> str:
    """The text BM25 tokenises: `text` composed (NFC), its Latin accents folded ("Größe" -> "Grosse"),
    each CJK run replaced by its characters and its overlapping pairs, spaced ("年假政策" -> " 年 假 政 策
    年假 假政 政策 "), over SPLIT_MAX_CHARS composed and folded only; then its words split (split_words)."""
    folded = fold(unicodedata.normalize("NFC", text))
    return split_words(folded if len(text) > SPLIT_MAX_CHARS else CJK_RUN.sub(_characters_and_pairs, folded))


# One row per lexeme a token yields (a hyphenated word yields its parts too); stopwords yield none.
_LEXEMES_SQL = """
    SELECT t.i, d.lexemes
    FROM unnest($1::text[]) WITH ORDINALITY AS t (text, i),
         LATERAL ts_debug('english', t.text) AS d
    WHERE d.lexemes IS NOT NULL
"""
# Texts per round trip: large enough to amortise it, small enough to bound a statement's memory.
_TOKENIZE_BATCH = 500


async def lexemes(conn: asyncpg.Connection, text: str) -> list[str]:
    """Every lexeme the english configuration emits for `bm25_text(text)`, with repeats."""
    return list((await token_counts(conn, [text]))[0].elements())


async def token_counts(conn: asyncpg.Connection, texts: Sequence[str]) -> list[Counter[str]]:
    """Lexeme -> number of occurrences (tf) in `bm25_text(text)`, one Counter per text, in input order."""
    counts: list[Counter[str]] = [Counter() for _ in texts]
    for start in range(0, len(texts), _TOKENIZE_BATCH):
        batch = [bm25_text(text) for text in texts[start : start + _TOKENIZE_BATCH]]
        rows = await conn.fetch(_LEXEMES_SQL, batch)
        for row in rows:
            counts[start + row["i"] - 1].update(row["lexemes"])
    return counts


@dataclass(frozen=True)
class Bm25Stats:
    """N (chunks), the sum of their lengths and each lexeme's document frequency: what idf and the
    length normalisation read. Which chunks they are counted over is the question of
    docs/decisions/0009-bm25-statistics.md."""

    n_docs: int
    total_len: int
    df: Mapping[str, int]

    @classmethod
    def of(cls, docs: Iterable[Counter[str]]) -> Bm25Stats:
        n_docs, total_len = 0, 0
        df: Counter[str] = Counter()
        for counts in docs:
            n_docs += 1
            total_len += sum(counts.values())
            df.update(counts.keys())
        return cls(n_docs, total_len, df)

    @property
    def avgdl(self) -> float:
        return self.total_len / self.n_docs if self.n_docs else 0.0

    def idf(self, term: str) -> float:
        df = self.df.get(term, 0)
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))


class Bm25Index:
    """Chunks' token counts with an inverted index, so a query touches only the chunks holding its terms."""

    def __init__(self, docs: Mapping[int, Counter[str]]) -> None:
        self.docs = docs
        self.lengths = {chunk_id: sum(counts.values()) for chunk_id, counts in docs.items()}
        self.postings: dict[str, list[int]] = {}
        for chunk_id, counts in docs.items():
            for term in counts:
                self.postings.setdefault(term, []).append(chunk_id)

    def stats(self, chunk_ids: Iterable[int] | None = None) -> Bm25Stats:
        """Statistics over `chunk_ids` (None: every chunk of the index)."""
        ids = self.docs.keys() if chunk_ids is None else chunk_ids
        return Bm25Stats.of(self.docs[i] for i in ids)

    def scores(
        self,
        terms: Iterable[str],
        stats: Bm25Stats,
        k1: float = 1.2,
        b: float = 0.75,
        allowed: Collection[int] | None = None,
    ) -> dict[int, float]:
        """BM25 of every chunk (in `allowed`, None: all) that holds one of the distinct `terms`."""
        avgdl = stats.avgdl
        scores: dict[int, float] = {}
        for term in set(terms):
            if stats.df.get(term, 0) == 0:
                continue  # the engine finds no such term in its statistics and skips it
            idf = stats.idf(term)
            for chunk_id in self.postings.get(term, ()):
                if allowed is not None and chunk_id not in allowed:
                    continue
                tf = self.docs[chunk_id][term]
                norm = tf + k1 * (1 - b + b * self.lengths[chunk_id] / avgdl)
                scores[chunk_id] = scores.get(chunk_id, 0.0) + idf * tf * (k1 + 1) / norm
        return scores


def ranked(scores: Mapping[int, float], k: int) -> list[int]:
    """The k best chunk ids: score descending, chunk id ascending on ties (the engine's order)."""
    return sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
