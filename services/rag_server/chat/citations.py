"""Citations in an LLM's answer: `[n]` markers that name a source it was given, and only those.

A model may cite `[9]` with five sources, or `[0]`: a marker that names no source points the reader at
nothing, and the web app, API and MCP clients would show it as if it did. Such numbers are dropped from
the answer as it streams (`[2, 9]` becomes `[2]`; `[9]` goes with the space before it), so the streamed
text and the stored answer are the same text. Brackets that are no citation (`[a]`, `[1.5]`) pass as
written, and so does code (a fenced block, an inline code span: `rows[3]` is an index, which the web app
shows as code).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

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
    spans, _, _ = _code_spans(text)
    return _outside_code(text, 0, len(text), spans, lambda piece: _MARKER.sub("", piece))


def cited(text: str) -> list[tuple[int, int]]:
    """(where, n) for each source number `text` cites, in order: `where` is the index of its marker's
    `[` (code points)."""
    code, _, _ = _code_spans(text)
    return [
        (marker.start(2) - 1, int(n))
        for marker in _MARKER.finditer(text)
        if not any(a <= marker.start(2) < b for a, b in code)
        for n in marker.group(2).split(",")
    ]


class CitationFilter:
    """Streamed deltas in, the same text out without out-of-range citation numbers. `feed` returns what
    is safe to send now; a possible marker cut between deltas is held back, however long, until the
    next delta or `flush`, and so is an inline code span still open (its brackets are code, not
    citations: code is shown as written)."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self._text = ""  # everything fed
        self._sent = 0  # how much of it was returned
        # Where code is looked for from (_Resume): spans from at or before `_sent`. What is before it is
        # settled, so each delta costs about its own line's length, not its paragraph's or the answer's.
        self._resume = _START

    def feed(self, delta: str) -> str:
        self._text += delta
        spans, open_at, resume = _code_spans(self._text, self._resume, self._sent)
        cut = self._sent + _incomplete_marker_start(self._text[self._sent :])
        released = self._release(max(self._sent, cut if open_at is None else min(cut, open_at)), spans)
        if (resume.fence_start if resume.fence else resume.prose) <= self._sent:
            self._resume = resume
        return released

    def flush(self) -> str:
        spans, _, _ = _code_spans(self._text, self._resume)
        return self._release(len(self._text), spans)

    def _release(self, end: int, spans: list[tuple[int, int]]) -> str:
        start, self._sent = self._sent, end
        return _outside_code(
            self._text, start, end, spans, lambda piece: _RUN.sub(self._keep_run_in_range, piece)
        )

    def _keep_run_in_range(self, run: re.Match[str]) -> str:
        kept = "".join(self._keep_in_range(marker) for marker in _MARKER.finditer(run.group(2)))
        return f"{run.group(1)}{kept}" if kept else ""

    def _keep_in_range(self, marker: re.Match[str]) -> str:
        numbers = [n.strip() for n in marker.group(2).split(",")]
        kept = [n for n in numbers if 1 <= int(n) <= self.sources]
        if len(kept) == len(numbers):
            return marker.group(0)
        return f"[{', '.join(kept)}]" if kept else ""


# Code as the web app reads it (static/assets/markdown.js): a fenced block (``` or ~~~, to its closing
# fence or the end), an inline code span (backticks, within a paragraph). A line ends at "\n", "\r\n" or
# a lone "\r", as the web app splits it (not at str.splitlines' others: U+2028, form feed...).
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})\s*[\w+#.-]*\s*")
_NL = r"(?:\r\n|\r(?!\n)|\n)"  # "\r\n" is one line end, never "\r" then "\n"
# An inline span holds at most CODE_SPAN_MAX characters (markdown.js's bound too): a stray backtick is
# code's start only that long, so a paragraph after one is held back and re-read that far, not to its end.
CODE_SPAN_MAX = 500
_INLINE = re.compile(
    rf"(`+)(?!{_NL}[ \t]*{_NL})"
    rf"(?:[^`]|[^`](?:(?!{_NL}[ \t]*{_NL})[\s\S]){{0,{CODE_SPAN_MAX - 2}}}?[^`])\1(?!`)"
)
_BLANK_LINE = re.compile(rf"{_NL}[ \t]*{_NL}")
_TICKS = re.compile("`+")


class _Resume(NamedTuple):
    """Where a scan for code may start: `at`, a line's start, outside a fence or (`fence` set) inside the
    fence opened at `fence_start`. Outside one, `prose` is where inline spans are looked for from: what is
    before it is settled (no backtick before it may still open a span, none of its spans may still grow),
    so a delta costs its own line, not its paragraph (a long list of `code` items: cubic)."""

    at: int
    fence: str = ""
    fence_start: int = 0
    prose: int = 0


_START = _Resume(0)


def _code_spans(
    text: str, resume: _Resume = _START, settled: int | None = None
) -> tuple[list[tuple[int, int]], int | None, _Resume]:
    """The [start, end) of each code span of `text` from `resume`, where an inline span still open at its
    end starts (a backtick run its last paragraph does not close; None: none), and where a scan of a
    longer text may start, at or before `settled` (default: the end) outside a fence."""
    limit = len(text) if settled is None else settled
    spans: list[tuple[int, int]] = []
    fence, fence_start = resume.fence, resume.fence_start
    prose_start, pos, line_start, complete = resume.prose, resume.at, resume.at, True
    reopen: _Resume | None = None
    for line in _lines(text, resume.at):
        line_start = pos
        # A last line may still grow: its "\r" into "\r\n", its text into a fence or none.
        complete = line.endswith("\n") or (line.endswith("\r") and pos + len(line) < len(text))
        body = line.rstrip("\r\n").strip()
        if not fence and (opening := _FENCE.fullmatch(line.rstrip("\r\n"))):
            spans += _inline_spans(text, prose_start, pos)
            fence, fence_start = opening.group(1), pos
        elif fence and body.startswith(fence) and not body.strip(fence[0]):
            spans.append((fence_start, pos + len(line)))
            # A closing line still open may grow into none ("```x"): from its start, in the fence.
            reopen = None if complete else _Resume(pos, fence, fence_start)
            fence, prose_start = "", pos + len(line)
        pos += len(line)
    at = pos if complete else line_start
    if fence:
        # A last line still open may grow into the closing fence: from its start. The opening fence's own
        # line may still grow into no fence: from it, outside the fence. Until then, a backtick before it
        # may still pair with one in that line.
        if at > fence_start:
            return [*spans, (fence_start, len(text))], None, _Resume(at, fence, fence_start)
        open_at = _open_tick(text, spans, prose_start, fence_start)
        inline = [s for s in spans if s[0] >= prose_start]
        prose = _settled(inline, prose_start, min(limit, fence_start), open_at)
        return [*spans, (fence_start, len(text))], open_at, _Resume(fence_start, prose=prose)
    if reopen is not None:
        return spans, None, reopen
    inline = _inline_spans(text, prose_start, len(text))
    spans += inline
    open_at = _open_tick(text, spans, prose_start, len(text))
    if inline and inline[-1][1] == len(text):  # its closing run may still grow ("`a``": no span)
        open_at = min(open_at, inline[-1][0]) if open_at is not None else inline[-1][0]
    return spans, open_at, _Resume(at, prose=_settled(inline, prose_start, limit, open_at))


def _lines(text: str, pos: int) -> Iterator[str]:
    """The lines of text[pos:], each with its end ("\n", "\r\n", "\r"): str.find, as fast as splitlines."""
    nl, cr = text.find("\n", pos), text.find("\r", pos)
    while pos < len(text):
        if nl < 0 and cr < 0:
            end = len(text)
        elif cr < 0 or 0 <= nl < cr:
            end = nl + 1
        else:
            end = cr + 2 if text.startswith("\n", cr + 1) else cr + 1
        yield text[pos:end]
        pos = end
        if 0 <= nl < pos:
            nl = text.find("\n", pos)
        if 0 <= cr < pos:
            cr = text.find("\r", pos)


def _settled(inline: list[tuple[int, int]], start: int, end: int, open_at: int | None) -> int:
    """Where in text[start:end] (prose) a scan for inline spans may restart: before the first backtick
    that opens no span yet (it may pair with a later run), and never inside a span (its start instead)."""
    at = end if open_at is None else min(end, open_at)
    at = next((a for a, b in inline if a < at < b), at)
    return max(start, at)


def _open_tick(text: str, spans: list[tuple[int, int]], start: int, end: int) -> int | None:
    """Where the first backtick of text[start:end]'s last paragraph that may still open a span is: in no
    span, and less than CODE_SPAN_MAX characters before the text's end."""
    paragraph = max((m.end() for m in _BLANK_LINE.finditer(text, start, end)), default=start)
    paragraph = max(paragraph, len(text) - CODE_SPAN_MAX - 64)  # 64: a run's own backticks
    ticks = _TICKS.finditer(text, paragraph, end)
    return next(
        (
            t.start()
            for t in ticks
            if len(text) - t.end() <= CODE_SPAN_MAX and not any(a <= t.start() < b for a, b in spans)
        ),
        None,
    )


def _inline_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [m.span() for m in _INLINE.finditer(text, start, end)]


def _outside_code(
    text: str, start: int, end: int, spans: list[tuple[int, int]], clean: Callable[[str], str]
) -> str:
    """text[start:end] with `clean` applied to each piece of it outside code (`spans`)."""
    out, pos = [], start
    for a, b in spans:
        if b <= pos or a >= end:
            continue
        out += [clean(text[pos:a]) if a > pos else "", text[max(a, pos) : min(b, end)]]
        pos = min(b, end)
    return "".join([*out, clean(text[pos:end]) if end > pos else ""])


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
    return len(text) - 1 if text[-1:].isspace() else len(text)
