"""Chunking: sentence-aware splits, offsets into the parsed text, pages, title context."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from rag_server.ingestion.chunking import chunk_document
from rag_server.ingestion.parsing import ParsedDocument, Section
from tests.support.sample_files import long_text


def test_offsets_point_at_the_chunk_text() -> None:
    parsed = ParsedDocument("Doc", [Section(long_text(2000, seed=1))])
    chunks = chunk_document(parsed, chunk_size=64, chunk_overlap=8, include_title=False)
    assert len(chunks) > 10
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.char_start is not None and c.char_end is not None
        assert parsed.text[c.char_start : c.char_end] == c.text
        assert c.search_text == c.text
    # In order, no gaps beyond the whitespace between sentences, and together they cover the document.
    for a, b in itertools.pairwise(chunks):
        assert a.char_start < b.char_start <= a.char_end + 1  # type: ignore[operator]
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(parsed.text)


def test_pages_and_offsets_across_sections() -> None:
    parsed = ParsedDocument(
        "Report", [Section("First page sentence.", 1), Section("Second page sentence.", 2)]
    )
    chunks = chunk_document(parsed, chunk_size=64, chunk_overlap=8, include_title=True)
    assert [(c.page, c.text) for c in chunks] == [(1, "First page sentence."), (2, "Second page sentence.")]
    assert (chunks[1].char_start, chunks[1].char_end) == (22, 43)
    assert parsed.text[22:43] == "Second page sentence."
    assert chunks[1].search_text == "Report\n\nSecond page sentence."


def test_chunk_size_changes_the_number_of_chunks() -> None:
    parsed = ParsedDocument("Doc", [Section(long_text(3000, seed=2))])
    small = chunk_document(parsed, chunk_size=64, chunk_overlap=0, include_title=False)
    large = chunk_document(parsed, chunk_size=256, chunk_overlap=0, include_title=False)
    assert len(small) > 3 * len(large) > 0


def test_warming_up_loads_the_sentence_tokenizer_a_long_paragraph_needs_and_not_llamaindex() -> None:
    # In a fresh interpreter: this one may have loaded NLTK already. A worker warms up before it
    # reports ready, so its first document does not spend a second loading NLTK. LlamaIndex is not
    # imported (the splitter follows its rules): ~0.9 s of CPU and ~60 MB less for each parsing child.
    script = (
        "import sys\n"
        "from rag_server.config import Settings\n"
        "from rag_server.ingestion.preparation import warm_up_chunking\n"
        "from rag_server.ingestion.splitter import _punkt\n"
        "assert 'nltk' not in sys.modules\n"
        "warm_up_chunking(Settings())\n"
        "assert 'nltk' in sys.modules and _punkt.cache_info().currsize == 1\n"
        "assert not [m for m in sys.modules if m.startswith('llama_index.core')]\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_long_section_reaches_the_sentence_splitter_in_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # NLTK runs each regular expression under a 5 s wall-clock limit: a text file of a few MB with no
    # blank line (one section, one paragraph) failed with a TimeoutError, sooner on a busy machine.
    from rag_server.ingestion import chunking

    seen: list[int] = []
    real = chunking._splitter(64, 8)

    class Recording:
        def split_text(self, text: str) -> list[str]:
            seen.append(len(text))
            return real.split_text(text)

    monkeypatch.setattr(chunking, "_splitter", lambda size, overlap: Recording())
    monkeypatch.setattr(chunking, "WINDOW_CHARS", 5_000)
    lines = [f"Line {i} of a log without blank lines, about item {i}." for i in range(600)]
    parsed = ParsedDocument("Log", [Section("\n".join(lines))])
    chunks = chunk_document(parsed, chunk_size=64, chunk_overlap=8, include_title=False)
    assert len(seen) > 4 and max(seen) <= 5_000
    for c in chunks:  # offsets still point at each chunk's text; nothing is lost between windows
        assert c.char_start is not None and parsed.text[c.char_start : c.char_end] == c.text
    assert all(line in "".join(c.text for c in chunks) for line in lines)


def test_windows_cut_after_a_paragraph_break_a_line_break_or_a_space() -> None:
    from rag_server.ingestion.chunking import windows

    text = "ab cd\n" * 5_000
    pieces = list(windows(text, 1_000))
    assert "".join(p for p, _ in pieces) == text and all(text[s : s + len(p)] == p for p, s in pieces)
    assert all(p.endswith("\n") and len(p) <= 1_000 for p, _ in pieces[:-1])
    assert [len(p) for p, _ in windows("x" * 2_500, 1_000)] == [1_000, 1_000, 500]
    assert [p for p, _ in windows("short", 1_000)] == ["short"]
    # A paragraph break is preferred to the line breaks around it: a cut moves as few chunks as it can.
    paragraphs = ("one line of a paragraph\n" * 12 + "\n") * 40
    cuts = list(windows(paragraphs, 1_000))
    assert "".join(p for p, _ in cuts) == paragraphs
    assert all(p.endswith("\n\n") for p, _ in cuts[:-1])


def test_a_passage_repeated_word_for_word_is_kept_once() -> None:
    notice = "This page intentionally left blank."
    pages = [
        Section(notice, 1),
        Section("The pump starts at dawn.", 2),
        Section(notice, 3),
        Section(notice, 4),
    ]
    chunks = chunk_document(
        ParsedDocument("Manual", pages), chunk_size=64, chunk_overlap=8, include_title=True
    )
    assert [(c.index, c.page, c.text) for c in chunks] == [(0, 1, notice), (1, 2, "The pump starts at dawn.")]
    # The same words under another heading are another passage.
    sections = [Section("Fixed nothing.", heading_path=(v, "Fixed")) for v in ("1.0", "1.1")]
    chunks = chunk_document(
        ParsedDocument("Changelog", sections), chunk_size=64, chunk_overlap=8, include_title=True
    )
    assert [c.heading_path for c in chunks] == ["1.0 > Fixed", "1.1 > Fixed"]
