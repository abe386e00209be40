"""The parsed-document types every format parser returns, and the text helpers they share."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rag_server.text import canonical


class ParseError(Exception):
    """The file cannot be turned into text. Deterministic: retrying gives the same result."""


# How a heading path is shown and indexed ("Guide > Install > Linux").
HEADING_SEPARATOR = " > "
SECTION_SEPARATOR = "\n\n"
# A heading or a title longer than this is cut at a word: it goes above every chunk below it, in the
# search text BM25 indexes and the model embeds (a 1 MB first line of Markdown was in every chunk).
# Long enough for real titles (SciFact's longest paper title is 300 characters), short enough to leave
# most of the model's 256 tokens to the chunk's own text.
MAX_HEADING_CHARS = 300
# Consecutive rows of one table are joined by a single newline: a chunk of several rows is then one
# contiguous span of ParsedDocument.text (its offsets stay exact).
RECORD_SEPARATOR = "\n"


@dataclass(frozen=True)
class Section:
    """A run of text and where it sits in its document.

    `page`: PDF page or PPTX slide number. `heading_path`: the headings above it, outermost first
    (Markdown, HTML, DOCX; a slide's title; a sheet's name). `location`: format-specific place, stored
    as the chunk's jsonb location (`{"slide": 3, "part": "notes"}`, `{"sheet": "S", "row": 12}`).
    `record`: one table row; the chunker packs consecutive records of the same table into one chunk.
    """

    text: str
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    location: dict[str, Any] | None = None
    record: bool = False

    def same_table(self, other: Section) -> bool:
        return (
            self.record
            and other.record
            and (self.location or {}).get("sheet") == (other.location or {}).get("sheet")
        )


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]

    @property
    def text(self) -> str:
        return "".join(s.text + sep for s, _, sep in self.with_offsets())

    def with_offsets(self) -> Iterator[tuple[Section, int, str]]:
        """(section, its start in `text`, the separator after it); the last separator is ""."""
        start = 0
        for i, section in enumerate(self.sections):
            if i + 1 == len(self.sections):
                sep = ""
            elif section.same_table(self.sections[i + 1]):
                sep = RECORD_SEPARATOR
            else:
                sep = SECTION_SEPARATOR
            yield section, start, sep
            start += len(section.text) + len(sep)


def short_heading(text: str) -> str:
    """`text` cut to MAX_HEADING_CHARS at a word (an ellipsis says so); shorter text as it is."""
    if len(text) <= MAX_HEADING_CHARS:
        return text
    cut = text.rfind(" ", MAX_HEADING_CHARS // 2, MAX_HEADING_CHARS)
    return text[: cut if cut > 0 else MAX_HEADING_CHARS].rstrip() + "…"


def clean_text(text: str) -> str:
    # Postgres text cannot hold NUL; other control characters only confuse tokenisers. Canonical: composed
    # (NFC), as names are, so a decomposed text (macOS writes "o" + U+0308 for "ö") reads the same and a
    # word typed composed finds it in "Contains" and highlights (BM25 composes on its own: rag_bm25_text,
    # 0025); a PDF's ligatures spelled out ("ﬁ" -> "fi"), so "financial" finds "ﬁnancial".
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    return canonical(text)


class Outline:
    """Builds sections split at headings, each carrying the path of headings above it.

    A heading with no body before the next heading stays with the next section (its text is kept,
    the deeper path wins), so "# Guide / ## Install / body" is one section under "Guide > Install".
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._lines: list[str] = []
        self._has_body = False
        self.sections: list[Section] = []

    def heading(self, level: int, title: str, line: str | None = None) -> None:
        title = " ".join(title.split())
        if not title:
            self.body(line or "")
            return
        if self._has_body:
            self._flush()
        self._stack = [(lv, t) for lv, t in self._stack if lv < level] + [(level, title)]
        self._lines.append(title if line is None else line)

    def body(self, line: str) -> None:
        self._lines.append(line)
        if line.strip():
            self._has_body = True

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _flush(self) -> None:
        text = "\n".join(self._lines).strip("\n")
        if text.strip():
            self.sections.append(Section(text, heading_path=tuple(t for _, t in self._stack)))
        self._lines, self._has_body = [], False
