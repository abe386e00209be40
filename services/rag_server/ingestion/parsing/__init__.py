"""File types, filename hygiene and text extraction. Pure functions: no database, no event loop.

Every failure a user can cause (corrupt or encrypted file, no text, bad JSON, a file that is not what its
extension says) raises `ParseError` with a sentence a person understands; the worker fails the task
with it and never retries. Parsers live by family: text.py (txt, md, html, json), pdf.py, office.py
(docx, pptx, the OOXML checks), sheets.py (csv, xlsx).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace

from rag_server.ingestion.parsing.base import (
    HEADING_SEPARATOR,
    MAX_HEADING_CHARS,
    SECTION_SEPARATOR,
    ParsedDocument,
    ParseError,
    Section,
    clean_text,
    short_heading,
)
from rag_server.ingestion.parsing.office import parse_docx, parse_pptx
from rag_server.ingestion.parsing.pdf import parse_pdf
from rag_server.ingestion.parsing.sheets import parse_csv, parse_xlsx
from rag_server.ingestion.parsing.text import (
    decode_text,
    parse_html,
    parse_json,
    parse_markdown,
    parse_text,
)

__all__ = [
    "FILE_TYPES",
    "HEADING_SEPARATOR",
    "MAX_HEADING_CHARS",
    "SECTION_SEPARATOR",
    "SUPPORTED_EXTENSIONS",
    "FileType",
    "ParseError",
    "ParsedDocument",
    "Section",
    "clean_text",
    "decode_text",
    "file_type_for",
    "parse_document",
    "sanitize_filename",
]


@dataclass(frozen=True)
class FileType:
    name: str  # stored in documents.file_type
    content_type: str  # served on download


_OOXML = "application/vnd.openxmlformats-officedocument"
# Decided by extension only, before anything is stored (415 otherwise).
FILE_TYPES: dict[str, FileType] = {
    ".txt": FileType("txt", "text/plain; charset=utf-8"),
    ".md": FileType("md", "text/markdown; charset=utf-8"),
    ".markdown": FileType("md", "text/markdown; charset=utf-8"),
    ".pdf": FileType("pdf", "application/pdf"),
    ".html": FileType("html", "text/html; charset=utf-8"),
    ".htm": FileType("html", "text/html; charset=utf-8"),
    ".docx": FileType("docx", f"{_OOXML}.wordprocessingml.document"),
    ".pptx": FileType("pptx", f"{_OOXML}.presentationml.presentation"),
    ".xlsx": FileType("xlsx", f"{_OOXML}.spreadsheetml.sheet"),
    ".csv": FileType("csv", "text/csv; charset=utf-8"),
    ".json": FileType("json", "application/json"),
}
SUPPORTED_EXTENSIONS = sorted(FILE_TYPES)

# C0 and C1 controls, and the bidirectional embeddings, overrides and isolates (U+202A-U+202E,
# U+2066-U+2069): "\u202eevil\u202dtxt.exe.txt" shows as "evil" and "txt.exe.txt" turned around.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# "/home/me/a.md", "\\server\\share\\a.md", "C:\\Users\\a.md": a path on the sender's machine. ("~/a.md"
# is a folder named "~": a shell expands the home folder, and "~old/" is a folder's name too.)
_ABSOLUTE = re.compile(r"^\s*(?:[\\/]|[A-Za-z]:[\\/])")
# A segment's end: dots and any white space (a no-break space included), however mixed.
_TRAILING = re.compile(r"[\s.]+$")
MAX_NAME_CHARS = 255
# Characters drawn as a slash (division, fraction, fullwidth, big solidus): a name holding one would show
# as a path it is not ("setup∕README.md"). They are read as the folder separator they look like.
_SLASHES = str.maketrans(dict.fromkeys("\u2215\u2044\uff0f\u29f8", "/"))


def sanitize_filename(raw: str | None, *, folders: bool = True) -> str:
    """A document's name: a file name, or a relative path ("guides/setup/README.md") as a folder upload
    sends it, so that one file name in two folders makes two names. An absolute path, or one climbing
    out with "..", keeps only its last segment, as does every path when `folders` is False (a source's
    own path in an import). No control characters (nor bidirectional overrides, which make a name show
    as another); a segment keeps a leading dot (".env.md") but no trailing one; bounded length, the
    outer folders given up first for a digest of them.

    Never used as a path anywhere: files live in Postgres, this is only shown and matched on.
    """
    name = unicodedata.normalize("NFC", raw or "").translate(_SLASHES)
    parts = re.split(r"[\\/]", name)
    base = _segment(parts[-1])
    if not base:
        return "unnamed"
    outer = parts[:-1]
    climbs = any(_CONTROL.sub("", p).strip() == ".." for p in outer)
    kept = [] if not folders or climbs or _ABSOLUTE.match(name) else [s for s in map(_segment, outer) if s]
    if len(base) > MAX_NAME_CHARS:
        # Cut, with a digest of the whole name before its extension ("…3f9a0c1d.pdf"): two long names that
        # differ only past the cut stay two names (else one would replace the other by name).
        stem, dot, ext = base.rpartition(".")
        digest = f"…{_digest(base)}"
        if not (dot and len(ext) <= 10):
            stem, ext = base, ""
        short = MAX_NAME_CHARS - 5 - len(ext) - len(digest)
        base = f"{_segment(stem[:short])}{digest}" + (f".{ext}" if ext else "")
    if len("/".join([*kept, base])) > MAX_NAME_CHARS:
        # The outer folders go, a digest of all of them in their place ("…3f9a0c1d/"): two deep paths
        # that differ only there stay two names (else one would replace the other by name).
        cut = f"…{_digest('/'.join(kept))}"
        # The innermost folders that fit between the digest and the name, counted once each (dropping the
        # outermost one at a time and joining again took seconds for a request of many deep paths).
        room = MAX_NAME_CHARS - len(cut) - 1 - len(base)
        inner = len(kept)
        while inner > 0 and room >= len(kept[inner - 1]) + 1:
            inner -= 1
            room -= len(kept[inner]) + 1
        kept = [cut, *kept[inner:]] if len(f"{cut}/{base}") <= MAX_NAME_CHARS else []
    return "/".join([*kept, base])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _segment(raw: str) -> str:
    """One folder or file name, cleaned: "" for nothing, "." or ".."."""
    return _TRAILING.sub("", _CONTROL.sub("", raw).lstrip())


def file_type_for(filename: str) -> FileType | None:
    """The supported type of this filename (by extension), or None."""
    _, dot, ext = filename.lower().rpartition(".")
    return FILE_TYPES.get(f".{ext}") if dot else None


Parser = Callable[[bytes], tuple[str | None, list[Section]]]
_PARSERS: dict[str, Parser] = {
    "txt": parse_text,
    "md": parse_markdown,
    "html": parse_html,
    "pdf": parse_pdf,
    "docx": parse_docx,
    "pptx": parse_pptx,
    "xlsx": parse_xlsx,
    "csv": parse_csv,
    "json": parse_json,
}


def _clean(section: Section) -> Section:
    path = tuple(
        short_heading(p) for p in (" ".join(clean_text(h).split()) for h in section.heading_path) if p
    )
    return replace(section, text=clean_text(section.text), heading_path=path)


def parse_document(filename: str, content: bytes, file_type: str, title: str | None = None) -> ParsedDocument:
    """Extract text from stored bytes. Raises ParseError with a readable reason. `title` (e.g. the
    document's metadata title) replaces the file's own; either is one line of MAX_HEADING_CHARS at
    most (a title is in every chunk's search text), else the file name."""
    if not content:
        raise ParseError("The file is empty.")
    parser = _PARSERS.get(file_type)
    if parser is None:
        raise ParseError(f"Files of type {file_type!r} are not supported.")
    own_title, sections = parser(content)
    sections = [s for s in map(_clean, sections) if s.text.strip()]
    if not sections:
        if file_type == "pdf":
            raise ParseError(
                "The PDF has no extractable text layer (it may be scanned images); OCR is not supported."
            )
        raise ParseError("The file contains no extractable text.")
    return ParsedDocument(title=_one_line(title) or _one_line(own_title) or filename, sections=sections)


def _one_line(title: str | None) -> str:
    return short_heading(" ".join(clean_text(title or "").split()))
