"""Tables: CSV and Excel (.xlsx, openpyxl in read-only mode). One record section per row, numbered as
a spreadsheet numbers it (the header is row 1), so a chunk can cite "Sheet1, rows 12-30"."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from typing import Any

from rag_server.ingestion.parsing.base import ParseError, Section
from rag_server.ingestion.parsing.office import check_ooxml
from rag_server.ingestion.parsing.text import decode_document

# Rows read per file (all sheets together): beyond it the file is refused, never silently cut short.
MAX_ROWS = 200_000


def record_line(header: Sequence[str], row: Sequence[str]) -> str:
    """`column: value; ...`: each row readable on its own, whichever chunk it lands in (empty cells
    are left out: a wide sheet's blank columns would only pad the chunk)."""
    return "; ".join(
        f"{h.strip() or f'column {i + 1}'}: {v.strip()}"
        for i, (h, v) in enumerate(zip(header, row, strict=False))
        if v.strip()
    )


def table_sections(rows: Iterable[tuple[int, list[str]]], sheet: str | None = None) -> list[Section]:
    """(row number, cells) -> one record per data row; the first non-blank row is the header."""
    base: dict[str, Any] = {"sheet": sheet} if sheet is not None else {}
    path = (sheet,) if sheet else ()
    header: tuple[int, list[str]] | None = None
    sections: list[Section] = []
    for number, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = (number, cells)
            continue
        sections.append(
            Section(
                record_line(header[1], cells),
                heading_path=path,
                location={**base, "row": number},
                record=True,
            )
        )
    if header is not None and not sections:
        number, cells = header
        text = ", ".join(c for c in cells if c.strip())
        sections.append(Section(text, heading_path=path, location={**base, "row": number}, record=True))
    return sections


def _bounded(rows: Iterable[tuple[int, list[str]]], counter: list[int]) -> Iterable[tuple[int, list[str]]]:
    for item in rows:
        counter[0] += 1
        if counter[0] > MAX_ROWS:
            raise ParseError(f"The table has more than {MAX_ROWS:,} rows; split it into smaller files.")
        yield item


def parse_csv(content: bytes) -> tuple[str | None, list[Section]]:
    text = decode_document(content)
    # The csv module refuses a cell over 128 KiB by default ("field larger than field limit"); a cell
    # is bounded by the file, and the file by the upload limit.
    csv.field_size_limit(max(csv.field_size_limit(), min(len(text) + 1, 2**31 - 1)))
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = ((n, row) for n, row in enumerate(csv.reader(io.StringIO(text), dialect), start=1))
        return None, table_sections(_bounded(rows, [0]))
    except csv.Error as exc:
        raise ParseError(f"The CSV file could not be read ({exc}).") from exc


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def parse_xlsx(content: bytes) -> tuple[str | None, list[Section]]:
    check_ooxml(content, "spreadsheetml")
    from openpyxl import load_workbook

    try:
        # read_only streams each sheet's XML instead of building every cell object; data_only gives
        # the values Excel last computed for formulas (what a reader sees), not the formulas.
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # InvalidFileException, KeyError (no xl/workbook.xml), lxml errors
        raise ParseError(f"The file is not a valid Excel (.xlsx) workbook ({exc}).") from exc
    counter = [0]
    sections: list[Section] = []
    try:
        for sheet in workbook.worksheets:
            rows = (
                (n, [_cell(v) for v in values])
                for n, values in enumerate(sheet.iter_rows(values_only=True), start=1)
            )
            sections.extend(table_sections(_bounded(rows, counter), sheet=sheet.title))
        title = workbook.properties.title or None
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"The Excel workbook is damaged and could not be read ({exc}).") from exc
    finally:
        workbook.close()
    return title, sections
