"""Eval/bench progress bars (tqdm): readable lines in a log, nothing when quiet."""

from __future__ import annotations

import io

from rag_server.evaluation import progress


def test_a_log_gets_one_line_per_redraw_and_one_final_line() -> None:
    log = io.StringIO()  # not a terminal
    with progress.progress_bar("querying bm25", 300, stream=log) as bar:
        for _ in range(300):
            bar.update()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # The opening 0% line and the final count; LOG_INTERVAL_S (10 s) keeps the 300 updates in between quiet.
    assert len(lines) == 2, lines
    assert lines[0].startswith("querying bm25:   0%") and "0/300" in lines[0]
    assert lines[1].startswith("querying bm25: 100%") and "300/300" in lines[1]


def test_quiet_writes_nothing_but_still_counts() -> None:
    log = io.StringIO()
    with progress.progress_bar("ingesting documents", 10, quiet=True, stream=log) as bar:
        bar.update(4)
        bar.update(10 - bar.n)
        assert bar.n == 10
    assert log.getvalue() == ""


def test_a_terminal_gets_tqdm_redrawing_in_place() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    with progress.progress_bar("filling", 3, stream=term) as bar:
        bar.update(3)
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
