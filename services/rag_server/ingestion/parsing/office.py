"""Office Open XML: Word (.docx, python-docx) and PowerPoint (.pptx, python-pptx), and the checks every
OOXML file passes first (encrypted, old binary format, damaged zip, zip bomb)."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from rag_server.ingestion.parsing.base import Outline, ParseError, Section

# An OLE compound file: what an encrypted OOXML file is (and the old .doc/.xls/.ppt formats).
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# The stream every encrypted OOXML package holds (its directory entry names are UTF-16).
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
# Zip-bomb guard: the sizes the zip's central directory declares, which zipfile will not read past.
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
# python-docx and python-pptx build an lxml tree of every XML part (several times its size in memory);
# openpyxl's read-only mode streams sheets, so workbooks are bounded by rows read instead.
MAX_TREE_XML_BYTES = 64 * 1024 * 1024


# The main part's content type names the family: what a package really is, whatever its extension.
_FAMILIES = {
    "wordprocessingml": ("Word document", ".docx"),
    "presentationml": ("PowerPoint presentation", ".pptx"),
    "spreadsheetml": ("Excel workbook", ".xlsx"),
}


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}"


def check_ooxml(content: bytes, family: str) -> None:
    """Raise ParseError unless `content` is a readable Office Open XML package of `family`
    ("wordprocessingml", "presentationml" or "spreadsheetml")."""
    kind, extension = _FAMILIES[family]
    if content.startswith(_OLE_MAGIC):
        if _ENCRYPTED_STREAM in content:
            raise ParseError(f"The {kind} is encrypted (password-protected); upload an unprotected copy.")
        raise ParseError(
            f"The file is an old binary Office document (.doc, .xls or .ppt), not {_a(kind)} ({extension}); "
            f"save it as {extension} and upload that."
        )
    if not content.startswith(b"PK"):
        raise ParseError(f"The file is not {_a(kind)} ({extension}): it is not an Office Open XML package.")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as package:
            members = package.infolist()
            _check_sizes(members, kind)
            raw_types = package.read("[Content_Types].xml")
            if family != "spreadsheetml":
                _check_xml_size(members, raw_types, kind)
            types = raw_types.decode("utf-8", "replace")
    except KeyError as exc:  # no [Content_Types].xml
        raise ParseError(
            f"The file is not {_a(kind)} ({extension}): it is a zip, not an Office package."
        ) from exc
    except SyntaxError as exc:  # lxml's XMLSyntaxError: [Content_Types].xml is no XML
        raise ParseError(
            f"The {kind} is damaged (its list of parts is not XML: {exc}) and could not be read."
        ) from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise ParseError(
            f"The {kind} is damaged (a truncated or corrupt zip package) and could not be read ({exc})."
        ) from exc
    if f"{family}." not in types:
        actual = next((k for f, (k, _) in _FAMILIES.items() if f"{f}." in types), None)
        what = _a(actual) if actual else "another kind of Office file"
        raise ParseError(
            f"The file is {what}, not {_a(kind)} ({extension}); upload it with its own extension."
        )


def _check_sizes(members: list[zipfile.ZipInfo], kind: str) -> None:
    if len(members) > MAX_ZIP_MEMBERS or sum(m.file_size for m in members) > MAX_UNCOMPRESSED_BYTES:
        raise ParseError(
            f"The {kind} is too large once uncompressed (over {MAX_UNCOMPRESSED_BYTES // 2**20} MiB "
            f"or {MAX_ZIP_MEMBERS} parts); split it into smaller files."
        )


def _xml_parts(types: bytes) -> tuple[set[str], set[str]]:
    """The extensions and the part names (lower case, no leading slash) the package declares
    XML: what python-docx and python-pptx parse into a tree, whatever the part is called. Read by lxml
    as they read it (character references decoded, entities not resolved): a pattern over the text took
    `/word/b&#111;dy.dat`, or a name holding a '>', for another part than theirs."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    extensions: set[str] = set()
    names: set[str] = set()
    for entry in etree.fromstring(types, parser).iter():
        if not isinstance(entry.tag, str):
            continue  # a comment, a processing instruction
        if not (entry.get("ContentType") or "").strip().lower().endswith("xml"):
            continue
        if etree.QName(entry).localname == "Default":
            extensions.add((entry.get("Extension") or "").lower())
        else:
            names.add((entry.get("PartName") or "").lstrip("/").lower())  # part names ignore case (OPC)
    return extensions, names


def _check_xml_size(members: list[zipfile.ZipInfo], types: bytes, kind: str) -> None:
    """The XML parsed into trees, counted by the package's own content types: a part holding the
    document's XML may be named anything ("word/body.dat"), and one named so was not counted (a 600 KB
    file reached the parser's 4 GB memory limit). The parts named .xml/.rels first: [Content_Types].xml
    itself is read into a tree only within the bound."""
    named = [m for m in members if m.filename.endswith((".xml", ".rels"))]
    xml = sum(m.file_size for m in named)
    if xml <= MAX_TREE_XML_BYTES:
        extensions, names = _xml_parts(types)
        xml += sum(
            m.file_size
            for m in members
            if not m.filename.endswith((".xml", ".rels"))
            and (m.filename.lower() in names or m.filename.rpartition(".")[2].lower() in extensions)
        )
    if xml > MAX_TREE_XML_BYTES:
        raise ParseError(
            f"The {kind} is too large once uncompressed (over {MAX_TREE_XML_BYTES // 2**20} MiB of "
            "text and layout); split it into smaller files."
        )


def _damaged(kind: str, exc: BaseException) -> ParseError:
    return ParseError(f"The {kind} is damaged or not a {kind} and could not be read ({exc}).")


# --- Word ---------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^heading\s+([1-9])$", re.IGNORECASE)


def _heading_level(paragraph: Any) -> int | None:
    """0 for the Title style, N for "Heading N", else None (body text)."""
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    if name.lower() == "title":
        return 0
    match = _HEADING_STYLE.match(name)
    return int(match.group(1)) if match else None


def parse_docx(content: bytes) -> tuple[str | None, list[Section]]:
    check_ooxml(content, "wordprocessingml")
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(content))
        outline = Outline()
        # Body order: a table stays under the heading it follows.
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells = [c.text.strip() for c in row.cells if c.text.strip()]
                    if cells:
                        outline.body(" | ".join(cells))
                continue
            text = block.text
            if not text.strip():
                continue
            level = _heading_level(block)
            if level is None:
                outline.body(text)
            else:
                outline.heading(level, text, text)
        title = document.core_properties.title or None
    except (PackageNotFoundError, KeyError) as exc:
        raise ParseError("The file is not a valid Word (.docx) document.") from exc
    except Exception as exc:  # lxml errors, a part missing: all mean a damaged file
        raise _damaged("Word document", exc) from exc
    return title, outline.finish()


# --- PowerPoint ---------------------------------------------------------------------------------

# What a pptx section holds, as the citation says it.
SLIDE_PARTS = ("text", "table", "notes")


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape on a slide, inside groups too, in z-order."""
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _table_lines(table: Any) -> list[str]:
    lines = []
    for row in table.rows:
        cells = [c.text.strip() for c in row.cells if c.text.strip()]
        if cells:
            lines.append(" | ".join(cells))
    return lines


def _slide_sections(number: int, slide: Any) -> list[Section]:
    title_shape = slide.shapes.title
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
    texts: list[str] = []
    tables: list[str] = []
    for shape in _shapes(slide.shapes):
        if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
            texts.append(shape.text_frame.text.strip())
        if getattr(shape, "has_table", False):
            tables.extend(_table_lines(shape.table))
    notes = ""
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
    path = (title,) if title else ()
    parts = zip(SLIDE_PARTS, ("\n".join(texts), "\n".join(tables), notes), strict=True)
    return [
        Section(text, page=number, heading_path=path, location={"slide": number, "part": part})
        for part, text in parts
        if text.strip()
    ]


def parse_pptx(content: bytes) -> tuple[str | None, list[Section]]:
    check_ooxml(content, "presentationml")
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        presentation = Presentation(io.BytesIO(content))
        sections = [s for n, slide in enumerate(presentation.slides, 1) for s in _slide_sections(n, slide)]
        title = presentation.core_properties.title or None
    except (PackageNotFoundError, KeyError) as exc:
        raise ParseError("The file is not a valid PowerPoint (.pptx) presentation.") from exc
    except ValueError as exc:  # python-pptx: "file is not a PowerPoint file, content type is ..."
        raise ParseError(f"The file is not a valid PowerPoint (.pptx) presentation ({exc}).") from exc
    except Exception as exc:
        raise _damaged("PowerPoint presentation", exc) from exc
    return title, sections
