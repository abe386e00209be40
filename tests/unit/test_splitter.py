"""The splitter gives LlamaIndex's SentenceSplitter's chunks (the chunker every relevance figure was
measured with), without importing LlamaIndex."""

from __future__ import annotations

import random

import pytest
from llama_index.core.node_parser import SentenceSplitter as LlamaIndexSplitter
from llama_index.core.utils import get_tokenizer

from rag_server.infra.tokenizer import count_tokens
from rag_server.ingestion.splitter import SentenceSplitter

# Words, abbreviations Punkt may or may not end a sentence at, every level's separators, CJK stops, a
# long word, emoji and a special token's text.
PARTS = [
    "word", "Dr.", "U.S.", "e.g.", "a", "otters", "x" * 40, "\n", "\n\n", "\n\n\n", " ", "  ", "\t", ",",
    ";", "。", "？", "！", "émoji🧬", "<|endoftext|>", "1.5", "Mr. Smith", "(see Fig. 2).", "end.", "Why?",
]  # fmt: skip


def theirs(text: str, size: int, overlap: int) -> list[str] | str:
    try:
        chunks = LlamaIndexSplitter(chunk_size=size, chunk_overlap=overlap).split_text(text)
    except ValueError:
        return "refused"
    return [c for c in chunks if c.strip()]  # "" gives [""]


def ours(text: str, size: int, overlap: int) -> list[str] | str:
    try:
        return SentenceSplitter(size, overlap).split_text(text)
    except ValueError:
        return "refused"


def test_random_texts_give_llamaindex_chunks() -> None:
    rng = random.Random(5)
    cut_at_every_level = 0
    for _ in range(600):
        text = "".join(rng.choice(PARTS) + " " * (rng.random() < 0.7) for _ in range(rng.randint(0, 300)))
        size = rng.choice([8, 16, 32, 64, 128])
        overlap = rng.randint(0, size // 2)
        expected = theirs(text, size, overlap)
        assert ours(text, size, overlap) == expected, (text, size, overlap)
        cut_at_every_level += isinstance(expected, list) and len(expected) > 3
    assert cut_at_every_level > 300


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n  ",
        "One short sentence.",
        "First paragraph about otters. " * 30 + "\n\n\n" + "Second about beavers. " * 30,
        "Dr. Smith met Mr. Jones in the U.S. on Jan. 5. They spoke of otters. " * 20,
        "no punctuation at all just words " * 60,
        "x" * 2_000,
        "句子一。句子二？句子三！" * 80,
    ],
)
def test_prose_gives_llamaindex_chunks(text: str) -> None:
    for size, overlap in ((128, 16), (64, 8), (32, 16)):
        assert ours(text, size, overlap) == theirs(text, size, overlap)


@pytest.mark.parametrize(
    "text",
    [
        "hello\n\n\n" + " " * 20_000 + "\n\n\nworld",
        "a\n\n\n" + "\t" * 3_000 + "\n\n\nb",
        "a\n\n\n" + " \n" * 3_000 + "\n\n\nb",
        " " * 20_000,
    ],
)
def test_a_long_run_of_white_space_gives_llamaindex_chunks(text: str) -> None:
    """A paragraph of white space alone, over the size, holds no sentence: it is cut by the next level.
    The sentence cut raised a ValueError of zip() on it, and such a file (a text file padded with
    spaces) failed as an unexpected error, retried, in those words."""
    for size, overlap in ((128, 16), (16, 4)):
        assert ours(text, size, overlap) == theirs(text, size, overlap)


def test_tokens_are_llamaindex_tokens() -> None:
    tokenizer = get_tokenizer()
    for text in [*PARTS, "A sentence of some length, with punctuation; and more.", ""]:
        assert count_tokens(text) == len(tokenizer(text))


def test_an_overlap_over_the_size_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        SentenceSplitter(16, 17)
