"""File types, filename hygiene and text extraction. Pure functions: no database, no event loop.

Every failure a user can cause (corrupt or encrypted PDF, no text, bad JSON) raises `ParseError`
with a sentence a person understands; the worker fails the task with it and never retries.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any


class ParseError(Exception):
    """The file cannot be turned into text. Deterministic: retrying gives the same result."""


@dataclass(frozen=True)
class FileType:
    name: str  # stored in documents.file_type
    content_type: str  # served on download


# Decided by extension only, before anything is stored (415 otherwise).
FILE_TYPES: dict[str, FileType] = {
    ".txt": FileType("txt", "text/plain; charset=utf-8"),
    ".md": FileType("md", "text/markdown; charset=utf-8"),
    ".markdown": FileType("md", "text/markdown; charset=utf-8"),
    ".pdf": FileType("pdf", "application/pdf"),
    ".html": FileType("html", "text/html; charset=utf-8"),
    ".htm": FileType("html", "text/html; charset=utf-8"),
    ".docx": FileType("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ".csv": FileType("csv", "text/csv; charset=utf-8"),
    ".json": FileType("json", "application/json"),
}
SUPPORTED_EXTENSIONS = sorted(FILE_TYPES)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def sanitize_filename(raw: str | None) -> str:
    """A display name: last path segment, no control characters, bounded length.

    Never used as a path anywhere: files live in Postgres, this is only shown and matched on.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[\\/]", name)[-1]
    name = _CONTROL.sub("", name).strip().strip(".").strip()
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[: 250 - len(ext)]}.{ext}" if dot and len(ext) <= 10 else name[:255]
    return name or "unnamed"


def file_type_for(filename: str) -> FileType | None:
    """The supported type of this filename (by extension), or None."""
    _, dot, ext = filename.lower().rpartition(".")
    return FILE_TYPES.get(f".{ext}") if dot else None


@dataclass(frozen=True)
class Section:
    """A run of text with its page number (PDF) or None."""

    text: str
    page: int | None = None


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]

    @property
    def text(self) -> str:
        return SECTION_SEPARATOR.join(s.text for s in self.sections)


SECTION_SEPARATOR = "\n\n"


def parse_document(filename: str, content: bytes, file_type: str) -> ParsedDocument:
    """Extract text from stored bytes. Raises ParseError with a readable reason."""
    if not content:
        raise ParseError("The file is empty.")
    parser = _PARSERS.get(file_type)
    if parser is None:
        raise ParseError(f"Files of type {file_type!r} are not supported.")
    title, sections = parser(content)
    sections = [Section(clean_text(s.text), s.page) for s in sections]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        if file_type == "pdf":
            raise ParseError(
                "The PDF has no extractable text layer (it may be scanned images); OCR is not supported."
            )
        raise ParseError("The file contains no extractable text.")
    return ParsedDocument(title=clean_text(title or "").strip() or filename, sections=sections)


def clean_text(text: str) -> str:
    # Postgres text cannot hold NUL; other control characters only confuse tokenisers.
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


_LATIN_CODE_PAGES = frozenset(
    [
        "cp1250",
        "cp1252",
        "cp1254",
        "cp1257",
        "iso8859_1",
        "iso8859_2",
        "iso8859_3",
        "iso8859_4",
        "iso8859_9",
        "iso8859_10",
        "iso8859_13",
        "iso8859_14",
        "iso8859_15",
        "iso8859_16",
        "latin_1",
        "mac_roman",
        "mac_latin2",
    ]
)


def decode_text(content: bytes) -> str:
    """UTF-8 (with or without BOM) when valid, else the detected charset, else Latin-1. Never raises."""
    for bom, encoding in ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if content.startswith(bom):
            return content.decode(encoding, errors="replace")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(content).best()
    if best is not None:
        # Short Western text often scores as some other single-byte code page (cp1257, cp1250...);
        # Windows-1252 is by far the most common legacy encoding, so prefer it among those.
        if best.encoding in _LATIN_CODE_PAGES:
            try:
                return content.decode("cp1252")
            except UnicodeDecodeError:
                pass
        return str(best)
    # Latin-1 maps every byte: the text may look odd but the worker never crashes on it.
    return content.decode("latin-1")


def _parse_text(content: bytes) -> tuple[str | None, list[Section]]:
    return None, [Section(decode_text(content))]


def _parse_markdown(content: bytes) -> tuple[str | None, list[Section]]:
    text = decode_text(content)
    heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return (heading.group(1).strip() if heading else None), [Section(text)]


def _parse_html(content: bytes) -> tuple[str | None, list[Section]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(content), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    text = "\n".join(line for line in lines if line)
    return title, [Section(text)]


def _parse_pdf(content: bytes) -> tuple[str | None, list[Section]]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password; real protection does not.
            try:
                if not reader.decrypt(""):
                    raise ParseError("The PDF is password-protected; upload an unprotected copy.")
            except (NotImplementedError, FileNotDecryptedError) as exc:
                raise ParseError("The PDF is password-protected; upload an unprotected copy.") from exc
            except DependencyError as exc:  # AES without the `cryptography` package installed
                raise ParseError(
                    "The PDF is encrypted in a way this server cannot open; upload an unprotected copy."
                ) from exc
        title = None
        try:
            meta = reader.metadata
            title = str(meta.title) if meta and meta.title else None
        except Exception:
            title = None  # broken metadata is not a reason to reject readable pages
        sections = [Section(page.extract_text() or "", page=i + 1) for i, page in enumerate(reader.pages)]
    except ParseError:
        raise
    except FileNotDecryptedError as exc:
        raise ParseError("The PDF is password-protected; upload an unprotected copy.") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise ParseError(f"The PDF is damaged or not a PDF and could not be read ({exc}).") from exc
    except RecursionError as exc:
        raise ParseError("The PDF is damaged (its structure is circular) and could not be read.") from exc
    return title, sections


def _parse_docx(content: bytes) -> tuple[str | None, list[Section]]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(content))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as exc:
        raise ParseError("The file is not a valid Word (.docx) document.") from exc
    except Exception as exc:  # zipfile.BadZipFile, lxml errors: all mean a damaged file
        raise ParseError(f"The Word document is damaged and could not be read ({exc}).") from exc
    parts = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells if c.text.strip()]
            if cells:
                parts.append(" | ".join(cells))
    title = document.core_properties.title or None
    return title, [Section("\n".join(parts))]


def _parse_csv(content: bytes) -> tuple[str | None, list[Section]]:
    text = decode_text(content)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return None, []
    header, body = rows[0], rows[1:]
    if not body:
        return None, [Section(", ".join(header))]
    # "column: value" keeps every chunk readable on its own, whichever rows it holds.
    lines = [
        "; ".join(
            f"{h.strip() or f'column {i + 1}'}: {v.strip()}"
            for i, (h, v) in enumerate(zip(header, row, strict=False))
        )
        for row in body
    ]
    return None, [Section("\n".join(lines))]


def _parse_json(content: bytes) -> tuple[str | None, list[Section]]:
    try:
        value = json.loads(decode_text(content))
    except json.JSONDecodeError as exc:
        raise ParseError(f"The file is not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
    lines: list[str] = []
    _flatten_json(value, "", lines)
    return None, [Section("\n".join(lines))]


def _flatten_json(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten_json(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten_json(item, f"{path}[{i}]", out)
    elif value is not None and str(value).strip():
        out.append(f"{path}: {value}" if path else str(value))


_PARSERS = {
    "txt": _parse_text,
    "md": _parse_markdown,
    "html": _parse_html,
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "csv": _parse_csv,
    "json": _parse_json,
}
