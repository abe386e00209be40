"""Citation numbers an answer may show: those of the sources the LLM was given (chat/citations.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rag_server.chat import citations
from rag_server.chat.citations import CitationFilter, cited


def shown_whole(answer: str, sources: int) -> str:
    citations = CitationFilter(sources)
    return citations.feed(answer) + citations.flush()


CASES = [
    ("Graphs [1] and lists [2].", "Graphs [1] and lists [2]."),
    ("Graphs [1][3] and [9].", "Graphs [1] and."),
    ("Both [2, 9] and [9,1].", "Both [2] and [1]."),
    ("None at all [0].", "None at all."),
    ("Line one [7]\nLine two [1]", "Line one\nLine two [1]"),
    ("A link [9](https://example.org) stays.", "A link [9](https://example.org) stays."),
    ("Not citations: [a], [1.5], [], [1000].", "Not citations: [a], [1.5], [], [1000]."),
    ("Ends cut [", "Ends cut ["),
    ("Ends with one [9]", "Ends with one"),
    # A dropped marker right before a kept one leaves the space before them: not "ahead[2]".
    ("Booked ahead [9][2].", "Booked ahead [2]."),
    ("Booked ahead [1][9][2].", "Booked ahead [1][2]."),
    ("Booked ahead [9][8] done.", "Booked ahead done."),
    # Code is no citation (the web app shows it as written): an index in it stays.
    ("Use `rows[5]` [1].", "Use `rows[5]` [1]."),
    (
        "Code:\n```python\nrow = table[3]\nx = m[0]\n```\nDone [2] [9].",
        "Code:\n```python\nrow = table[3]\nx = m[0]\n```\nDone [2].",
    ),
    ("Unclosed:\n~~~\nm[7]", "Unclosed:\n~~~\nm[7]"),
    ("A lone ` then [9] [1].", "A lone ` then [1]."),
    # A longer closing fence closes, a fence with more after it does not; "\r\n" lines.
    ("~~~\r\nm[9]\r\n~~~~\r\nDone [9] [1].", "~~~\r\nm[9]\r\n~~~~\r\nDone [1]."),
    ("```\nm[9]\n```x [9]\n```\nDone [9] [1].", "```\nm[9]\n```x [9]\n```\nDone [1]."),
    ("```a b [9]\nDone [1].", "```a b\nDone [1]."),
    # Streamed, a span's closing run may still grow ("``" closes no "`"), a line starting "```" may
    # still become no fence; a span never crosses a blank line, even right after its backtick.
    ("Odd ticks `m[9]`` [1].", "Odd ticks `m`` [1]."),
    ("`[9]\n``` ` [1]", "`[9]\n``` ` [1]"),
    ("A tick `\n\n`m[9]` [1] [9].", "A tick `\n\n`m[9]` [1]."),
    # A line ends at "\r" as in the web app (not at U+2028): a lone "\r" line is a blank one, and any
    # space goes before a marker, as a no-break space.
    ("`\r\r`[9]` [1]", "`\r\r`[9]` [1]"),
    ("`\u2028\u2028`[9]` [1]", "`\u2028\u2028`` [1]"),
    ("See\u00a0[9] and\r[9] [1].", "See and [1]."),
    # Longer than the 64 characters once held back: streamed, its tail passed unfiltered.
    ("Many [" + ", ".join(["1", "2"] * 12 + ["9"]) + "].", "Many [" + ", ".join(["1", "2"] * 12) + "]."),
]


@pytest.mark.parametrize(("answer", "shown"), CASES)
def test_numbers_of_no_source_are_dropped_and_the_rest_is_as_written(answer: str, shown: str) -> None:
    assert shown_whole(answer, sources=2) == shown


@pytest.mark.parametrize(("answer", "shown"), CASES)
def test_streamed_in_any_pieces_the_text_is_the_same(answer: str, shown: str) -> None:
    # Every way of cutting the answer in two, and one character at a time.
    cuts = [[answer[:i], answer[i:]] for i in range(len(answer) + 1)] + [list(answer)]
    for pieces in cuts:
        citations = CitationFilter(sources=2)
        streamed = "".join(citations.feed(p) for p in pieces) + citations.flush()
        assert streamed == shown, pieces


def test_text_is_held_back_only_while_it_may_still_become_a_marker() -> None:
    citations = CitationFilter(sources=2)
    assert citations.feed("Graphs are fast") == "Graphs are fast"
    assert citations.feed(" [") == ""
    assert citations.feed("2, ") == ""
    assert citations.feed("9]") == ""  # a link's text or a citation: the next character says
    assert citations.feed(" here.") == " [2] here."
    assert citations.flush() == ""


def test_cited_gives_each_number_with_its_markers_bracket() -> None:
    text = "BM25 ranks [1]. HNSW [2, 3] links; [x] and [4](https://example.org) are no citations."
    assert cited(text) == [(11, 1), (21, 2), (21, 3)]
    assert text[11] == text[21] == "["
    assert cited("In code `m[1]` and\n```\nm[2]\n```\n[2]") == [(32, 2)]


def test_a_long_answer_streamed_in_any_pieces_is_cleaned_as_in_one() -> None:
    """The filter looks for code from the current paragraph only (else each delta re-read the whole
    answer: quadratic); paragraphs, fences and spans across its restart points must not change a thing."""
    part = (
        "Vacation is booked ahead [1][9]. Use `rows[3]` or `m[0]`, not [7].\n\n"
        "```python\nx = table[3]\n\ny = m[12]\n```\n\n"
        "Sick leave needs a note [2, 8]; see ``a`b[4]`` and [3].\n   \n"
        "~~~\n[5]\n"
    )
    text = part * 6 + "An open fence's [1] stays.\n"
    whole = CitationFilter(2)
    expected = whole.feed(text) + whole.flush()
    assert "`rows[3]`" in expected and "x = table[3]" in expected and "[7]" not in expected.split("```")[0]
    for size in (1, 2, 3, 5, 8, 13, 64):
        f = CitationFilter(2)
        streamed = "".join(f.feed(text[i : i + size]) for i in range(0, len(text), size)) + f.flush()
        assert streamed == expected, size


def test_each_delta_reads_its_own_line_of_a_long_code_block_not_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cost, counted not timed: inside a fence still open, each delta re-read the block from its fence
    (a 5 KB block in 4-character deltas: 40 ms of the event loop; quadratic in the block)."""
    scanned = 0
    code_spans = citations._code_spans

    def counting(text: str, *resume: Any) -> Any:
        nonlocal scanned
        start = resume[0] if resume else 0
        scanned += len(text) - getattr(start, "at", start)
        return code_spans(text, *resume)

    monkeypatch.setattr(citations, "_code_spans", counting)
    answer = "Here [1]:\n```python\n" + "".join(f"row_{i} = table[{i % 9}]\n" for i in range(2000))
    f = CitationFilter(2)
    streamed = "".join(f.feed(answer[i : i + 4]) for i in range(0, len(answer), 4)) + f.flush()
    assert streamed == answer
    assert scanned < 20 * len(answer)


def test_each_delta_reads_its_own_line_of_a_long_list_not_the_paragraph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cost, counted not timed: a list of `code` items with no blank line is one paragraph, which each
    delta re-read from its start, every span of it compared with every backtick (cubic: 500 items in
    4-character deltas held the event loop 27 s)."""
    scanned = 0
    inline_spans = citations._inline_spans

    def counting(text: str, start: int, end: int) -> Any:
        nonlocal scanned
        scanned += end - start
        return inline_spans(text, start, end)

    monkeypatch.setattr(citations, "_inline_spans", counting)
    answer = "Here:\n" + "".join(f"- item {i} uses `x[{i % 9}]` [1] [9]\n" for i in range(500))
    f = CitationFilter(2)
    streamed = "".join(f.feed(answer[i : i + 4]) for i in range(0, len(answer), 4)) + f.flush()
    assert streamed == answer.replace(" [9]", "")
    assert scanned < 20 * len(answer)


def test_random_answers_streamed_in_random_pieces_are_cleaned_as_whole() -> None:
    # Prose, spans, fences and markers at random (a fixed seed): streamed text disagreed with the whole
    # in about 1 answer of 18 before spans that may still grow were held back.
    atoms = ["`", "``", "```", "~~~", "\n", "\n\n", "\r\n", " ", "[9]", "[1]", "[2, 9]", "x", ". ", "rows[3]"]
    atoms += ["\r", "\u2028"]  # a line end of the web app's, and one of str.splitlines' only
    rnd = random.Random(7)
    for _ in range(2000):
        text = "".join(rnd.choice(atoms) for _ in range(rnd.randint(1, 24)))
        pieces, at = [], 0
        while at < len(text):
            step = rnd.randint(1, 6)
            pieces.append(text[at : at + step])
            at += step
        streamed_filter, whole_filter = CitationFilter(2), CitationFilter(2)
        streamed = "".join(streamed_filter.feed(p) for p in pieces) + streamed_filter.flush()
        assert streamed == whole_filter.feed(text) + whole_filter.flush(), pieces


def test_a_stray_backtick_holds_back_at_most_a_code_spans_length() -> None:
    """An unpaired backtick may open a span, so the text after it waits for its closing run; it waited to
    the paragraph's end (a long paragraph: nothing shown for its whole length, re-read on every delta).
    A span is at most CODE_SPAN_MAX characters, in the web app too: past that, the text goes on."""
    tail = "".join(f"Sentence {i} goes on [1] and [9]. " for i in range(60))
    answer = "Run the `--force flag carefully. " + tail
    f = CitationFilter(2)
    shown = "".join(f.feed(answer[i : i + 5]) for i in range(0, len(answer), 5))
    assert len(shown) > len(answer) - citations.CODE_SPAN_MAX - 400  # [9]s dropped: 60 x 4 characters
    whole = CitationFilter(2)
    assert shown + f.flush() == whole.feed(answer) + whole.flush()
    assert "[9]" not in shown


def test_a_span_longer_than_the_bound_is_no_code() -> None:
    inside = "word " * (citations.CODE_SPAN_MAX // 5)
    assert shown_whole(f"`{inside}[9]`", sources=2) == f"`{inside.rstrip()}`"
    assert shown_whole(f"`{inside[:200]}[9]`", sources=2) == f"`{inside[:200]}[9]`"
