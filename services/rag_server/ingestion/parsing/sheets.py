"""Tables: CSV and Excel (.xlsx, openpyxl in read-only mode). One record section per row, numbered as
a spreadsheet numbers it (the header is row 1), so a chunk can cite "Sheet1, rows 12-30"."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from itertools import compress, count, repeat
from operator import attrgetter, is_not
from typing import Any

from rag_server.ingestion.parsing.base import ParseError, Section
from rag_server.ingestion.parsing.office import check_ooxml
from rag_server.ingestion.parsing.text import decode_document

# Rows holding a value per file (all sheets together): beyond it the file is refused, never silently cut
# short. Blank rows do not count: Excel saves rows (and a sheet's dimension) down to a formatted cell far
# below the data, and a 1,000-row sheet with one such cell at row 500,000 was refused as too long.
MAX_ROWS = 200_000


# A row's cells that are not blank, by column (0 for the first), in column order. Sparse: openpyxl pads a
# row to its last cell, and a row whose last cell is in column XFD is 16,384 values; read cell by cell in
# Python (three passes), a 100 KB workbook of 20,000 such rows took 99 s of a worker's processor time.
Row = dict[int, str]


def record_line(header: Row, row: Row) -> str:
    """`column: value; ...`: each row readable on its own, whichever chunk it lands in (empty cells
    are left out: a wide sheet's blank columns would only pad the chunk). A cell beyond the header's
    last column is named by its number (a CSV's unlabelled last column was dropped)."""
    return "; ".join(f"{header.get(i, '').strip() or f'column {i + 1}'}: {v.strip()}" for i, v in row.items())


def _row(values: Sequence[str]) -> Row:
    return {i: v for i, v in enumerate(values) if v.strip()}


def _present(values: Sequence[Any]) -> list[int]:
    """The indices of the values that are not None, in one pass in C (a padded row is nearly all None)."""
    return list(compress(count(), map(is_not, values, repeat(None))))


def table_sections(rows: Iterable[tuple[int, Row]], sheet: str | None = None) -> list[Section]:
    """(row number, cells) -> one record per data row; the first non-blank row is the header."""
    base: dict[str, Any] = {"sheet": sheet} if sheet is not None else {}
    path = (sheet,) if sheet else ()
    header: tuple[int, Row] | None = None
    sections: list[Section] = []
    for number, cells in rows:
        if not cells:
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
        text = ", ".join(cells.values())
        sections.append(Section(text, heading_path=path, location={**base, "row": number}, record=True))
    return sections


def _bounded(rows: Iterable[tuple[int, Row]], counter: list[int]) -> Iterable[tuple[int, Row]]:
    for item in rows:
        if not item[1]:
            yield item  # blank: skipped by table_sections, not counted
            continue
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
        rows = ((number, _row(values)) for number, values in _csv_rows(text, dialect))
        return None, table_sections(_bounded(rows, [0]))
    except csv.Error as exc:
        raise ParseError(f"The CSV file could not be read ({exc}).") from exc


def _csv_rows(text: str, dialect: Any) -> Iterable[tuple[int, list[str]]]:
    """(row number, cells). A quote opened and never closed is refused: the csv module (not strict,
    since real files hold stray quotes like `5" screen`) reads the rest of the file as one cell.

    One closed by a later stray quote is not: the lines between become one cell, but no rule tells that
    from a real multi-line cell. `TV,"big` ... `Monitor,27"` is valid CSV, byte for byte like an address
    over two lines; a stray quote followed by text (`5" screen`) fails a strict reading exactly as a
    multi-line note with a quoted word from a writer that does not double quotes (`"Said "urgent" twice"`),
    which is read whole today."""
    source = io.StringIO(text)
    reader = csv.reader(source, dialect)
    last_start = read = 0  # offsets in `text`: where the last row starts, how far the reader is
    number = 0
    for number, row in enumerate(reader, start=1):
        last_start, read = read, source.tell()
        yield number, row
    # Only when it swallowed lines: an unclosed quote on the last line costs nothing.
    if text.count("\n", last_start, read - 1) and _ends_inside_quotes(text[last_start:], dialect):
        raise ParseError(
            f"Row {number} of the CSV file opens a quoted cell that is never closed, so every line after "
            "it would be read as that one cell: close the quote (a quote inside a cell is written twice) "
            "and upload the file again."
        )


def _ends_inside_quotes(text: str, dialect: Any) -> bool:
    try:
        for _ in csv.reader(io.StringIO(text), dialect, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


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


# A formula cell with no value after it (`<c r="B4"><f>SUM(B2:B3)</f><v></v></c>`): saved by a program
# that does not compute formulas (openpyxl, many exporters), so the workbook holds no value to show for it.
# Not a text result (`t="str"`): that is how Excel saves a formula whose result is "" (a blank it computed).
# Elements may carry a namespace prefix (`<x:c>`: the .NET Open XML SDK; any XML name, with `.` or `-`)
# and whitespace may stand between them (pretty-printed XML). It starts with the literal `c` (then looks
# back for `<` or a prefix's `:`): twice as fast as a leading `<(?:\w+:)?c` over computed formulas.
_FORMULA_WITHOUT_VALUE = re.compile(
    rb"c\b(?<=[<:]c)(?![^>]*\bt=[\"']str[\"'])[^>]*>\s*"
    rb"(?:<(?:[\w.-]+:)?f\b[^>]*/>|<((?:[\w.-]+:)?f)\b[^>]*>[^<]*</\1>)\s*"
    rb"(?:<((?:[\w.-]+:)?v)\s*/>|<((?:[\w.-]+:)?v)>\s*</\3>)?\s*</(?:[\w.-]+:)?c>"
)


def _has_formulas_without_values(content: bytes) -> bool:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name in archive.namelist():
            if not (name.startswith("xl/worksheets/") and name.endswith(".xml")):
                continue
            with archive.open(name) as sheet:  # in pieces: a sheet's XML can be far larger than the file
                tail = b""
                while piece := sheet.read(1 << 20):
                    window = tail + piece
                    # Only where a formula element may be (`<f`, `<x:f`): bytes.find is far faster than
                    # the pattern over a sheet of plain values, the common case.
                    if (b"<f" in window or b":f" in window) and _FORMULA_WITHOUT_VALUE.search(window):
                        return True
                    tail = piece[-65536:]  # a cell cut between two pieces is whole in the next search
    return False


def _formula_text(formula: Any) -> str | None:
    if isinstance(formula, str):
        return formula  # "=SUM(B2:B3)"
    text = getattr(formula, "text", None)  # an array formula; a data table's has none: left blank
    return text if isinstance(text, str) else None


_VALUE = attrgetter("value")


def _value_row(values: Sequence[Any]) -> Row:
    """A row of values (None where openpyxl padded it) as its cells that are not blank."""
    row: Row = {}
    for i in _present(values):
        if (text := _cell(values[i])).strip():
            row[i] = text
    return row


def _with_formulas(
    cell_rows: Iterable[tuple[Any, ...]], formula_rows: Iterable[tuple[Any, ...]]
) -> Iterable[Row]:
    """Each row's cells, where a formula with no computed value gives its text (`=SUM(B2:B3)`), which
    says more than a blank cell; an empty text result (data type "str") stays the blank it is."""
    for cells, formulas in zip(cell_rows, formula_rows, strict=False):
        width = min(len(cells), len(formulas))
        values = tuple(map(_VALUE, cells[:width]))
        row: list[Any] = [None] * width
        for i in sorted({*_present(values), *_present(formulas[:width])}):
            c = cells[i]
            row[i] = _formula_text(formulas[i]) if c.value is None and c.data_type != "str" else c.value
        yield _value_row(row)


def _reset_dimensions(sheet: Any) -> None:
    if hasattr(sheet, "reset_dimensions"):  # a read-only sheet (a chartsheet has no rows)
        sheet.reset_dimensions()


def parse_xlsx(content: bytes) -> tuple[str | None, list[Section]]:
    check_ooxml(content, "spreadsheetml")
    from openpyxl import load_workbook

    try:
        # read_only streams each sheet's XML instead of building every cell object; data_only gives
        # the values Excel last computed for formulas (what a reader sees), not the formulas.
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        # Formulas nothing computed: read a second time for their text (only then: it doubles the time).
        formulas = (
            load_workbook(io.BytesIO(content), read_only=True)
            if _has_formulas_without_values(content)
            else None
        )
    except Exception as exc:  # InvalidFileException, KeyError (no xl/workbook.xml), lxml errors
        raise ParseError(f"The file is not a valid Excel (.xlsx) workbook ({exc}).") from exc
    counter = [0]
    sections: list[Section] = []
    try:
        for i, sheet in enumerate(workbook.worksheets):
            # Rows as the XML holds them, each as wide as its last cell: the saved dimension (the used
            # range, down to any formatted cell) would pad every row to its width and add empty rows
            # down to its last; a cell beyond the header's width keeps a "column N" name (record_line).
            _reset_dimensions(sheet)
            if formulas is not None:
                _reset_dimensions(formulas.worksheets[i])
            if formulas is None:
                cells: Iterable[Row] = map(_value_row, sheet.iter_rows(values_only=True))
            else:  # cells, not values: their data type tells a computed "" from nothing computed
                cells = _with_formulas(sheet.iter_rows(), formulas.worksheets[i].iter_rows(values_only=True))
            rows = enumerate(cells, start=1)
            sections.extend(table_sections(_bounded(rows, counter), sheet=sheet.title))
        title = workbook.properties.title or None
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"The Excel workbook is damaged and could not be read ({exc}).") from exc
    finally:
        workbook.close()
        if formulas is not None:
            formulas.close()
    return title, sections
