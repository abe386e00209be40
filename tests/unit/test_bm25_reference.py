"""The reference BM25 under statistics of all chunks (global) or of one collection, computed by hand.

k1 = 1.2, b = 0.75; idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)); a chunk whose length is the average
and whose tf is 1 gets exactly idf (tf (k1 + 1) / (tf + k1) = 1).
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from rag_server.evaluation.bm25_reference import Bm25Index, Bm25Stats, bm25_text, fold, ranked
from rag_server.evaluation.bm25_stats_corpora import queries_inside, stdlib_docstrings
from rag_server.text import fold_latin

# Collection A: chunks 1, 2, 5; collection B: chunks 3, 4, 6, where "cat" is common. Every chunk has 2 tokens.
A = {1: Counter(cat=1, x=1), 2: Counter(dog=1, y=1), 5: Counter(dog=1, z=1)}
B = {3: Counter(cat=1, w=1), 4: Counter(cat=1, v=1), 6: Counter(cat=1, u=1)}


def test_statistics_are_counted_over_the_chunks_asked_for() -> None:
    index = Bm25Index({**A, **B})
    everything = index.stats()
    assert (everything.n_docs, everything.total_len, everything.avgdl) == (6, 12, 2.0)
    assert (everything.df["cat"], everything.df["dog"]) == (4, 2)
    only_a = index.stats(A.keys())
    assert (only_a.n_docs, only_a.total_len, only_a.df["cat"], only_a.df["dog"]) == (3, 6, 1, 2)
    assert only_a == Bm25Stats.of(A.values())


def test_a_term_common_elsewhere_loses_weight_under_global_statistics_and_the_ranking_flips() -> None:
    index = Bm25Index({**A, **B})
    scope = set(A)
    local = index.scores(["cat", "dog"], index.stats(scope), allowed=scope)
    # Inside A, "cat" is the rarer term: idf(cat) = ln(1 + 2.5/1.5) = ln(8/3), idf(dog) = ln(1 + 1.5/2.5).
    assert local == pytest.approx({1: math.log(8 / 3), 2: math.log(1.6), 5: math.log(1.6)}, abs=1e-12)
    assert ranked(local, 10) == [1, 2, 5]
    # Over A and B, "cat" is in 4 of 6 chunks: idf(cat) = ln(1 + 2.5/4.5), idf(dog) = ln(1 + 4.5/2.5).
    shared = index.scores(["cat", "dog"], index.stats(), allowed=scope)
    assert shared == pytest.approx({1: math.log(14 / 9), 2: math.log(2.8), 5: math.log(2.8)}, abs=1e-12)
    assert ranked(shared, 10) == [2, 5, 1]  # equal scores: chunk id ascending
    assert ranked(shared, 2) == [2, 5]
    # Without a scope, B's chunks are scored too.
    assert set(index.scores(["cat"], index.stats())) == {1, 3, 4, 6}


def test_the_average_length_comes_from_the_same_chunks() -> None:
    # A's one chunk has 2 tokens; B's has 6: the global average is 4, A's own is 2.
    index = Bm25Index({1: Counter(cat=1, x=1), 2: Counter(y=6)})
    local = index.scores(["cat"], index.stats([1]), allowed={1})
    assert local[1] == pytest.approx(math.log(1 + 0.5 / 1.5), abs=1e-12)  # dl = avgdl: idf alone
    shared = index.scores(["cat"], index.stats(), allowed={1})
    # idf = ln(1 + 1.5/1.5) = ln 2; dl/avgdl = 0.5: tf part = 2.2 / (1 + 1.2 (0.25 + 0.375)) = 2.2/1.75.
    assert shared[1] == pytest.approx(math.log(2) * 2.2 / 1.75, abs=1e-12)
    # Other parameters reach the formula.
    other = index.scores(["cat"], index.stats(), k1=2.0, b=0.0, allowed={1})
    assert other[1] == pytest.approx(math.log(2), abs=1e-12)


def test_a_term_absent_from_the_statistics_scores_nothing() -> None:
    index = Bm25Index({**A, **B})
    assert index.scores(["cat", "zebra"], index.stats(A.keys()), allowed=set(A)) == pytest.approx(
        {1: math.log(8 / 3)}, abs=1e-12
    )
    assert index.scores(["cat"], index.stats(B.keys()), allowed=set(A)) == pytest.approx(
        {1: math.log(1 + 0.5 / 3.5)}, abs=1e-12
    )
    assert index.scores(["dog"], index.stats(B.keys()), allowed=set(A)) == {}


def test_a_query_belongs_to_a_collection_only_when_all_its_relevant_documents_are_in_it() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"a": 1, "b": 1}, "q3": {"a": 1, "c": 0}, "q4": {"c": 0}}
    assert queries_inside(qrels, {"a"}) == {"q1": {"a": 1}, "q3": {"a": 1, "c": 0}}
    assert queries_inside(qrels, {"a", "b"}) == {
        "q1": {"a": 1},
        "q2": {"a": 1, "b": 1},
        "q3": {"a": 1, "c": 0},
    }


def test_stdlib_docstrings_read_definitions_without_importing_and_skip_tests(tmp_path: Path) -> None:
    words = " ".join(f"word{i}" for i in range(12))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(
        f'"""{words}"""\nraise SystemExit("imported")\n\n'
        f'class Thing:\n    """{words} thing"""\n\n    def method(self):\n        """{words} method"""\n\n'
        'def short():\n    """Too short."""\n'
    )
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_x.py").write_text(f'"""{words}"""\n')
    (tmp_path / "broken.py").write_text("def (:\n")
    docs = stdlib_docstrings(10, root=tmp_path)
    assert sorted(d.doc_id for d in docs) == ["pkg", "pkg.Thing", "pkg.Thing.method"]
    assert {d.doc_id: d.text for d in docs}["pkg.Thing.method"] == f"{words} method"
    assert len(stdlib_docstrings(2, root=tmp_path)) == 2


def test_bm25_text_folds_latin_letters_as_lucene_and_nothing_else() -> None:
    """The reference's own statement of migration 0027's folding: Latin-1 Supplement, Latin Extended-A,
    the decomposable letters of Extended-B and Extended Additional; other scripts keep their marks."""
    assert bm25_text("élève información Straße café") == "eleve informacion Strasse cafe"
    assert bm25_text("Ærøskøbing Œuvre Þing Łódź đ ħ ı ŉ ſ ĸ") == "AEroskobing OEuvre THing Lodz d h i n s q"
    assert bm25_text("ẞ ș ț ǎ ệ ơ ư Ǿ ǽ") == "SS s t a e o u O ae"
    assert bm25_text("× ÷ « ¹ ƀ ǝ ﬁ") == "× ÷ « ¹ ƀ ǝ ﬁ"  # Lucene folds these; 0027 does not
    others = "Йод ёлка ΐά שָׁלוֹם العَرَبِيَّة हिन्दी ภาษาไทย"
    assert bm25_text(others) == unicodedata.normalize("NFC", others)
    assert "й" in bm25_text("йод") and "ё" in bm25_text(unicodedata.normalize("NFD", "ёлка"))


def test_bm25_text_splits_cjk_runs_into_characters_and_pairs_and_composes() -> None:
    """The reference's own statement of migration 0025's rag_bm25_text."""
    assert bm25_text("The 年假政策 rule") == "The  年 假 政 策 年假 假政 政策  rule"
    assert bm25_text("猫") == " 猫 "  # a lone character: no pair
    assert bm25_text("휴가 신청") == " 휴 가 휴가   신 청 신청 "  # Hangul syllables; the space ends a run
    assert bm25_text("予約はポータル") == " 予 約 は ポ ー タ ル 予約 約は はポ ポー ータ タル "
    # Extension B (U+20BB7, outside the BMP): one character, not two surrogates.
    assert bm25_text("\U00020bb7野家") == " \U00020bb7 野 家 \U00020bb7野 野家 "
    # Decomposed (NFD) Latin is composed, then folded (0027); text with neither is returned as it is.
    nfd = unicodedata.normalize("NFD", "Größenprüfung café")
    assert nfd != "Größenprüfung café"
    assert bm25_text(nfd) == bm25_text("Größenprüfung café") == "Grossenprufung cafe"
    assert bm25_text("e-mail x-ray 3.14 🚀") == "e-mail x-ray 3.14 🚀"
    # Decomposed Hangul (conjoining jamo) composes into syllables, which are then split.
    assert bm25_text(unicodedata.normalize("NFD", "학교")) == " 학 교 학교 "


def test_bm25_text_splits_urls_addresses_paths_and_a_number_after_a_hyphen() -> None:
    """The reference's own statement of migration 0028: a hyphen after a letter or digit before a digit,
    every / and @, a dot between letters or a letter and a digit become spaces; decimals stay."""
    assert bm25_text("FY-2024 COVID-19 2024-01-15") == "FY 2024 COVID 19 2024 01 15"
    assert bm25_text("https://a.example.com/x-y.html") == "https:  a example com x-y html"
    assert (
        bm25_text("jane.doe@example.com /var/log/app_server.log")
        == "jane doe example com  var log app_server log"
    )
    assert (
        bm25_text("10.5% v2.3.1 -5 (-5) x--5 e.g. end. Fig.3") == "10.5% v2.3.1 -5 (-5) x--5 e g. end. Fig 3"
    )
    assert bm25_text("ёлка.рф Größe-2") == "ёлка рф Grosse 2"


def test_the_extractive_answers_folding_is_the_references() -> None:
    """text.fold_latin (the chat's extractive answer) folds as BM25 does, on every letter of the folded
    blocks, marks left after a letter and other scripts."""
    samples = [chr(c) for c in [*range(0x00A0, 0x0250), *range(0x1E00, 0x1F00)]]
    samples += ["x\u0301y \u0142\u0301 \u00e9\u0301\u0308", "Йод ёлка ΐά हिन्दी", "Straße Ærø œuvre"]
    for sample in samples:
        text = unicodedata.normalize("NFC", sample)
        assert fold_latin(text) == fold(text), sample
