"""Citations in an LLM's answer: `[n]` markers that name a source it was given, and only those.

A model may cite `[9]` with five sources, or `[0]`: a marker that names no source points the reader at
nothing, and the web app, API and MCP clients would show it as if it did. Such numbers are dropped from
the answer as it streams (`[2, 9]` becomes `[2]`; `[9]` goes with the space before it), so the streamed
text and the stored answer are the same text. Brackets that are no citation (`[a]`, `[1.5]`) pass as
written.
"""

from __future__ import annotations

import re

# The markers the web app renders as citations (static/assets/markdown.js): up to three digits each.
# Not a link's text (`[1](https://...)`).
_MARKER = re.compile(r"(\s?)\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\](?!\()")
# Markers written side by side ("[9][2]"), cleaned as one: the space before the first stays while one is
# kept. `_RUN_END`: such a run, complete, at the end of a text.
_RUN = re.compile(r"(\s?)((?:\[\d{1,3}(?:\s*,\s*\d{1,3})*\](?!\())+)")
_RUN_END = re.compile(r"(?:\[\d{1,3}(?:\s*,\s*\d{1,3})*\])+\Z")


def without_citations(text: str) -> str:
    """`text` without its citation markers (each with the space before it): an earlier answer in a
    prompt, whose numbers named that turn's sources, not this one's."""
    return _MARKER.sub("", text)


def cited(text: str) -> list[tuple[int, int]]:
    """(where, n) for each source number `text` cites, in order: `where` is the index of its marker's
    `[` (code points)."""
    return [
        (marker.start(2) - 1, int(n)) for marker in _MARKER.finditer(text) for n in marker.group(2).split(",")
    ]


class CitationFilter:
    """Streamed deltas in, the same text out without out-of-range citation numbers. `feed` returns what
    is safe to send now; a possible marker cut between deltas is held back, however long, until the
    next delta or `flush`."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        cut = _incomplete_marker_start(text)
        self._held = text[cut:]
        return self._clean(text[:cut])

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._clean(text)

    def _clean(self, text: str) -> str:
        return _RUN.sub(self._keep_run_in_range, text)

    def _keep_run_in_range(self, run: re.Match[str]) -> str:
        kept = "".join(self._keep_in_range(marker) for marker in _MARKER.finditer(run.group(2)))
        return f"{run.group(1)}{kept}" if kept else ""

    def _keep_in_range(self, marker: re.Match[str]) -> str:
        numbers = [n.strip() for n in marker.group(2).split(",")]
        kept = [n for n in numbers if 1 <= int(n) <= self.sources]
        if len(kept) == len(numbers):
            return marker.group(0)
        return f"[{', '.join(kept)}]" if kept else ""


# What may follow a marker's "[" while it is not complete: numbers, commas, spaces, maybe its "]" (then
# what comes next says whether it is a link's text).
_OPEN_TAIL = re.compile(r"[\d\s,]*\]?")


def _incomplete_marker_start(text: str) -> int:
    """Where an unfinished marker at the end of `text` starts (len(text) when there is none). Not bounded:
    a marker listing many sources, held back only in part, passed its out-of-range numbers unfiltered."""
    bracket = text.rfind("[")
    if bracket >= 0 and _OPEN_TAIL.fullmatch(text, bracket + 1):
        # With the complete markers just before it: a run is cleaned whole (the space before it).
        if before := _RUN_END.search(text, 0, bracket):
            bracket = before.start()
        return bracket - 1 if bracket and text[bracket - 1].isspace() else bracket
    # A lone trailing space may be the one before a marker still to come.
    return len(text) - 1 if text.endswith((" ", "\n", "\t")) else len(text)
