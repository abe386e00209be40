"""PowerPoint, Excel and CSV locations; heading paths per format; bad Office files -> readable reasons."""

from __future__ import annotations

import io
import itertools
import re
import zipfile
from collections.abc import Callable

import pytest

from rag_server.ingestion.chunking import chunk_document, search_text_for
from rag_server.ingestion.parsing import ParseError, office, parse_document, sheets
from rag_server.retrieval.models import ChunkLocation
from tests.support.sample_files import (
    docx_bytes,
    docx_with_headings,
    encrypted_ooxml,
    pptx_bytes,
    xlsx_bytes,
)


def _chunks(filename: str, content: bytes, file_type: str, chunk_size: int = 128) -> list:  # type: ignore[type-arg]
    parsed = parse_document(filename, content, file_type)
    chunks = chunk_document(parsed, chunk_size=chunk_size, chunk_overlap=16, include_title=True)
    for c in chunks:  # offsets stay exact whatever the format
        assert c.char_start is not None and parsed.text[c.char_start : c.char_end] == c.text
    return chunks


def test_markdown_heading_paths_skip_code_fences_and_merge_bare_headings() -> None:
    md = (
        b"# Guide\n\nWelcome.\n\n## Install\n\n### Linux\n\nRun the package manager.\n\n"
        b"```sh\n# a shell comment, not a heading\n```\n\n## Use **it**\n\nStart [the server](x.md).\n"
    )
    chunks = _chunks("guide.md", md, "md")
    assert [c.heading_path for c in chunks] == ["Guide", "Guide > Install > Linux", "Guide > Use it"]
    assert chunks[1].text.startswith("## Install\n\n### Linux\n\nRun the package manager.")
    assert "# a shell comment" in chunks[1].text
    # The title is not repeated: the path under it follows it on the context line; the text is untouched.
    assert chunks[1].search_text == f"Guide\nInstall > Linux\n\n{chunks[1].text}"
    assert chunks[0].search_text == f"Guide\n\n{chunks[0].text}"


def test_html_heading_paths() -> None:
    html = (
        b"<html><head><title>Manual</title></head><body><p>Preface.</p><h1>Setup</h1><p>One.</p>"
        b"<h2>On <em>macOS</em></h2><p>Two.</p><h2>On Windows</h2><p>Three.</p><h1>FAQ</h1><p>Four.</p>"
    )
    chunks = _chunks("m.html", html, "html")
    assert [(c.heading_path, c.text.splitlines()[-1]) for c in chunks] == [
        (None, "Preface."),
        ("Setup", "One."),
        ("Setup > On macOS", "Two."),
        ("Setup > On Windows", "Three."),
        ("FAQ", "Four."),
    ]
    assert chunks[2].search_text == "Manual\nSetup > On macOS\n\nOn macOS\nTwo."


def test_docx_heading_paths_by_style() -> None:
    content = docx_with_headings(
        [
            (0, "Handbook"),
            (1, "Travel"),
            (None, "Book trains early."),
            (2, "Abroad"),
            (None, "Carry a passport."),
        ]
    )
    chunks = _chunks("h.docx", content, "docx")
    assert [(c.heading_path, c.text) for c in chunks] == [
        ("Handbook > Travel", "Handbook\nTravel\nBook trains early."),
        ("Handbook > Travel > Abroad", "Abroad\nCarry a passport."),
    ]


def test_docx_without_headings_is_unchanged() -> None:
    doc = parse_document("t.docx", docx_bytes(["One.", "Two."], [["A", "B"]]), "docx")
    assert [s.heading_path for s in doc.sections] == [()]
    assert doc.text == "One.\nTwo.\nA | B"


def test_pptx_slides_tables_and_notes() -> None:
    content = pptx_bytes(
        [
            {
                "title": "Quarterly results",
                "body": "Revenue grew.",
                "table": [["Region", "Sales"], ["North", 42]],
            },
            {"title": "Next steps", "body": "Hire two people.", "notes": "Mention the falcon project."},
        ],
        title="Board deck",
    )
    doc = parse_document("deck.pptx", content, "pptx")
    assert doc.title == "Board deck"
    chunks = _chunks("deck.pptx", content, "pptx")
    assert [(c.page, c.location, c.heading_path, c.text) for c in chunks] == [
        (1, {"slide": 1, "part": "text"}, "Quarterly results", "Quarterly results\nRevenue grew."),
        (1, {"slide": 1, "part": "table"}, "Quarterly results", "Region | Sales\nNorth | 42"),
        (2, {"slide": 2, "part": "text"}, "Next steps", "Next steps\nHire two people."),
        (2, {"slide": 2, "part": "notes"}, "Next steps", "Mention the falcon project."),
    ]
    # The slide title is the notes' context where they are indexed, not in what is shown.
    assert chunks[3].search_text == "Board deck\nNext steps\n\nMention the falcon project."


def test_xlsx_rows_are_packed_with_their_sheet_and_row_numbers() -> None:
    rows: list[list[object]] = [["Item", "Cost", "Note"]] + [[f"part {i}", i * 1.5, None] for i in range(60)]
    content = xlsx_bytes({"Budget": rows, "Blank": [], "Staff": [["Name"], ["Ada"]]})
    chunks = _chunks("b.xlsx", content, "xlsx", chunk_size=64)
    budget = [c for c in chunks if c.heading_path == "Budget"]
    assert len(budget) > 2
    # Consecutive, whole rows: the first data row is spreadsheet row 2, the last is 61.
    assert budget[0].location["row_start"] == 2 and budget[-1].location["row_end"] == 61
    for a, b in itertools.pairwise(budget):
        assert b.location["row_start"] == a.location["row_end"] + 1
    first = budget[0]
    assert first.text.splitlines()[:2] == ["Item: part 0; Cost: 0", "Item: part 1; Cost: 1.5"]
    assert len(first.text.splitlines()) == first.location["row_end"] - first.location["row_start"] + 1
    assert chunks[-1].location == {"sheet": "Staff", "row_start": 2, "row_end": 2}
    assert chunks[-1].text == "Name: Ada"


def _edited_sheet(content: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """The workbook with its first sheet's XML edited: as Excel, or another program, would save it."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, edit(data) if item.filename == "xl/worksheets/sheet1.xml" else data)
    return out.getvalue()


def _texts(content: bytes) -> list[str]:
    return [s.text for s in parse_document("b.xlsx", content, "xlsx").sections]


def test_an_xlsx_formula_shows_its_value_or_else_its_text() -> None:
    rows: list[list[object]] = [["Item", "Price"], ["tea", 3], ["cake", 4], ["total", "=SUM(B2:B3)"]]
    saved_by_a_library = xlsx_bytes({"Bill": rows})
    # Was "Item: total": no value was ever computed.
    assert _texts(saved_by_a_library)[-1] == "Item: total; Price: =SUM(B2:B3)"
    saved_by_excel = _edited_sheet(
        saved_by_a_library, lambda xml: xml.replace(b"</f><v></v>", b"</f><v>7</v>")
    )
    assert _texts(saved_by_excel)[-1] == "Item: total; Price: 7"


def _prefixed(xml: bytes, prefix: bytes = b"x") -> bytes:
    """The sheet as the .NET Open XML SDK writes it: every element of the main namespace as `x:`."""
    xml = xml.replace(
        b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"',
        b"xmlns:" + prefix + b'="http://schemas.openxmlformats.org/spreadsheetml/2006/main"',
    )
    return re.sub(rb"<(/?)([A-Za-z]+[ />])", rb"<\1" + prefix + rb":\2", xml)


def _prefixed_with_dots_and_dashes(xml: bytes) -> bytes:
    return _prefixed(xml, b"ss-main.v1")  # any XML name may be a prefix


def _pretty_printed(xml: bytes) -> bytes:
    return re.sub(rb">(<(?!/v>))", rb">\n    \1", xml)  # not inside an empty <v></v>: a value of "\n"


@pytest.mark.parametrize(
    "saved_as",
    [_prefixed, _prefixed_with_dots_and_dashes, _pretty_printed],
    ids=["prefixed", "prefixed-with-dots-and-dashes", "pretty-printed"],
)
def test_an_xlsx_formula_without_value_is_found_in_any_xml_form(saved_as: Callable[[bytes], bytes]) -> None:
    rows: list[list[object]] = [["Item", "Price"], ["tea", 3], ["cake", 4], ["total", "=SUM(B2:B3)"]]
    content = _edited_sheet(xlsx_bytes({"Bill": rows}), saved_as)
    with zipfile.ZipFile(io.BytesIO(content)) as saved:
        xml = saved.read("xl/worksheets/sheet1.xml")
    assert (b":f>" in xml) if saved_as is not _pretty_printed else (b"<f>SUM(B2:B3)</f>\n" in xml)
    # Was "Item: total": the formula was not found, so its text was never read.
    assert _texts(content)[-1] == "Item: total; Price: =SUM(B2:B3)"


def _as_is(xml: bytes) -> bytes:
    return xml


def _prefixed_and_pretty_printed(xml: bytes) -> bytes:
    return _pretty_printed(_prefixed(xml))


@pytest.mark.parametrize(
    "saved_as",
    [_as_is, _prefixed, _pretty_printed, _prefixed_and_pretty_printed],
    ids=["as-is", "prefixed", "pretty-printed", "both"],
)
def test_only_a_formula_without_value_makes_an_xlsx_be_read_twice(saved_as: Callable[[bytes], bytes]) -> None:
    # A second read (for the formulas' text) doubles the parse: never for formulas that have a value,
    # nor for a computed "" (t="str"), whatever form the XML takes.
    rows: list[list[object]] = [["Item", "Price"], ["tea", "=1+2"], ["cake", '=IF(A3="","",4)']]

    def computed(xml: bytes) -> bytes:  # as Excel saves them: a number, and an empty text result
        xml = xml.replace(b"<f>1+2</f><v></v>", b"<f>1+2</f><v>3</v>")
        return xml.replace(b'<c r="B3"><f>', b'<c r="B3" t="str"><f>')

    content = _edited_sheet(xlsx_bytes({"Bill": rows}), lambda xml: saved_as(computed(xml)))
    assert not sheets._has_formulas_without_values(content)
    assert _texts(content) == ["Item: tea; Price: 3", "Item: cake"]
    rows.append(["total", "=SUM(B2:B3)"])  # nothing computed it
    content = _edited_sheet(xlsx_bytes({"Bill": rows}), lambda xml: saved_as(computed(xml)))
    assert sheets._has_formulas_without_values(content)


def test_an_xlsx_formula_whose_result_is_empty_text_stays_blank() -> None:
    # How Excel saves =IF(A3="","",2) filled down past the data: a computed "" (t="str", empty value).
    # Shown as its formula, each such row became a record of its own.
    rows: list[list[object]] = [["Item", "Double"], ["tea", "=2*2"]]
    rows += [[None, f'=IF(A{n}="","",2)'] for n in (3, 4)]

    def as_excel_saves_it(xml: bytes) -> bytes:
        xml = xml.replace(b'<c r="B2"><f>2*2</f><v></v>', b'<c r="B2"><f>2*2</f><v>4</v>')
        return re.sub(rb'<c r="(B[34])"><f>(.*?)</f><v></v>', rb'<c r="\1" t="str"><f>\2</f><v></v>', xml)

    content = _edited_sheet(xlsx_bytes({"Bill": rows}), as_excel_saves_it)
    with zipfile.ZipFile(io.BytesIO(content)) as saved:
        assert saved.read("xl/worksheets/sheet1.xml").count(b't="str"') == 2
    assert _texts(content) == ["Item: tea; Double: 4"]


def test_an_xlsx_array_formula_shows_its_text_and_a_data_table_stays_blank() -> None:
    rows: list[list[object]] = [["Item", "Double"], ["tea", "=2*2"], ["cake", "=3*2"]]

    def as_saved(xml: bytes) -> bytes:
        xml = xml.replace(b"<f>2*2</f>", b'<f t="array" ref="B2">A9:A10*2</f>')
        # A data table's formula has no text: its object's repr was shown.
        return xml.replace(b"<f>3*2</f><v></v>", b'<f t="dataTable" ref="B3" dt2D="0" dtr="0" r1="A1"/>')

    assert _texts(_edited_sheet(xlsx_bytes({"Bill": rows}), as_saved)) == [
        "Item: tea; Double: =A9:A10*2",
        "Item: cake",
    ]


def test_csv_rows_keep_their_numbers() -> None:
    content = b"name,city\nAda,London\n\nAlan,Wilmslow\n"
    chunks = _chunks("p.csv", content, "csv")
    assert [(c.text, c.location, c.heading_path) for c in chunks] == [
        ("name: Ada; city: London\nname: Alan; city: Wilmslow", {"row_start": 2, "row_end": 4}, None)
    ]


@pytest.mark.parametrize(
    ("stored", "label"),
    [
        ({"slide": 3, "part": "text"}, "slide 3"),
        ({"slide": 3, "part": "notes"}, "slide 3, speaker notes"),
        ({"slide": 1, "part": "table"}, "slide 1, table"),
        ({"sheet": "Sheet1", "row_start": 12, "row_end": 30}, "Sheet1, rows 12\u201330"),
        ({"sheet": "Sheet1", "row_start": 7, "row_end": 7}, "Sheet1, row 7"),
        ({"row_start": 5, "row_end": 5}, "row 5"),
    ],
)
def test_location_labels(stored: dict[str, object], label: str) -> None:
    location = ChunkLocation.from_stored(stored)
    assert location is not None and location.label == label


def test_unusable_stored_locations_are_none() -> None:
    assert ChunkLocation.from_stored(None) is None
    assert ChunkLocation.from_stored({}) is None
    assert ChunkLocation.from_stored({"slide": "three"}) is None


def test_search_text_context_lines() -> None:
    assert search_text_for("T", "body", True, None) == "T\n\nbody"
    assert search_text_for("T", "body", False, "A > B") == "A > B\n\nbody"
    assert search_text_for("T", "body", True, "T > B") == "T\nB\n\nbody"
    assert search_text_for("T", "body", True, "T") == "T\n\nbody"
    assert search_text_for("", "body", False, None) == "body"


def test_headings_can_be_left_out_of_the_search_text() -> None:
    parsed = parse_document("g.md", b"# Guide\n\n## Install\n\nRun it.", "md")
    chunks = chunk_document(
        parsed, chunk_size=128, chunk_overlap=0, include_title=True, include_headings=False
    )
    assert chunks[-1].heading_path == "Guide > Install"
    assert chunks[-1].search_text == f"Guide\n\n{chunks[-1].text}"


def _truncated(content: bytes) -> bytes:
    return content[: len(content) // 2]


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@pytest.mark.parametrize(
    ("name", "make", "file_type", "reason"),
    [
        (
            "e.pptx",
            lambda: encrypted_ooxml(pptx_bytes([{"title": "x"}])),
            "pptx",
            "The PowerPoint presentation is encrypted (password-protected)",
        ),
        (
            "e.xlsx",
            lambda: encrypted_ooxml(xlsx_bytes({"S": [["a"], ["b"]]})),
            "xlsx",
            "The Excel workbook is encrypted (password-protected)",
        ),
        (
            "e.docx",
            lambda: encrypted_ooxml(docx_bytes(["x"])),
            "docx",
            "The Word document is encrypted (password-protected)",
        ),
        (
            "t.pptx",
            lambda: _truncated(pptx_bytes([{"title": "x"}])),
            "pptx",
            "The PowerPoint presentation is damaged (a truncated or corrupt zip package)",
        ),
        (
            "t.xlsx",
            lambda: _truncated(xlsx_bytes({"S": [["a"], ["b"]]})),
            "xlsx",
            "The Excel workbook is damaged (a truncated or corrupt zip package)",
        ),
        ("old.xlsx", lambda: OLE_MAGIC + b"\x00" * 512, "xlsx", "The file is an old binary Office document"),
        (
            "text.pptx",
            lambda: b"just some text",
            "pptx",
            "The file is not a PowerPoint presentation (.pptx): it is not an Office",
        ),
        (
            "plain.xlsx",
            lambda: _zip({"a.txt": b"hi"}),
            "xlsx",
            "The file is not an Excel workbook (.xlsx): it is a zip, not an Office package.",
        ),
        (
            "word.pptx",
            lambda: docx_bytes(["x"]),
            "pptx",
            "The file is a Word document, not a PowerPoint presentation (.pptx)",
        ),
        (
            "word.xlsx",
            lambda: docx_bytes(["x"]),
            "xlsx",
            "The file is a Word document, not an Excel workbook (.xlsx)",
        ),
        (
            "deck.docx",
            lambda: pptx_bytes([{"title": "x"}]),
            "docx",
            "The file is a PowerPoint presentation, not a Word document (.docx)",
        ),
    ],
)
def test_bad_office_files_have_readable_reasons(name: str, make, file_type: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as info:
        parse_document(name, make(), file_type)
    assert str(info.value).startswith(reason), str(info.value)


def test_zip_bomb_is_refused_by_declared_size(monkeypatch: pytest.MonkeyPatch) -> None:
    content = xlsx_bytes({"S": [["a" * 1000]] * 50})
    monkeypatch.setattr(office, "MAX_UNCOMPRESSED_BYTES", 20_000)
    with pytest.raises(ParseError, match="too large once uncompressed"):
        parse_document("big.xlsx", content, "xlsx")


def test_xml_heavy_presentation_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    content = pptx_bytes([{"title": "t", "body": "x" * 5000}])
    monkeypatch.setattr(office, "MAX_TREE_XML_BYTES", 1000)
    with pytest.raises(ParseError, match=r"too large once uncompressed \(over 0 MiB of text"):
        parse_document("big.pptx", content, "pptx")
    parse_document("ok.xlsx", xlsx_bytes({"S": [["a" * 5000], ["b"]]}), "xlsx")  # streamed: rows bound it


def _renamed_part(content: bytes, old: str, new: str, override: str) -> bytes:
    """The package with its part `old` stored as `new`, its content type's Override naming `override`."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "[Content_Types].xml":
                data = data.replace(f'PartName="/{old}"'.encode(), f'PartName="/{override}"'.encode())
            elif item.filename.endswith(".rels"):
                data = data.replace(old.encode(), new.encode()).replace(
                    old.split("/")[-1].encode(), new.split("/")[-1].encode()
                )
            z.writestr(new if item.filename == old else item.filename, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("part", "override"),
    [
        ("word/body.dat", "word/body.dat"),
        ("word/body.dat", "WORD/Body.DAT"),
        # As python-docx reads the list: a character reference decoded, a '>' inside a name (review).
        ("word/body.dat", "word/b&#111;dy.dat"),
        ("word/a>b.dat", "word/a>b.dat"),
    ],
)
def test_xml_under_another_name_counts_as_xml(
    monkeypatch: pytest.MonkeyPatch, part: str, override: str
) -> None:
    """The document's XML in a part named `body.dat` (its content type says XML) was not counted: a
    600 KB file of 200 MB of paragraphs so named reached the parser's 4 GB memory limit (QA)."""
    content = _renamed_part(docx_bytes(["x" * 5000]), "word/document.xml", part, override)
    assert "x" * 5000 in parse_document("renamed.docx", content, "docx").sections[0].text  # a valid package
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        rest = sum(m.file_size for m in package.infolist() if m.filename.endswith((".xml", ".rels")))
    monkeypatch.setattr(office, "MAX_TREE_XML_BYTES", rest + 4000)  # the body's 5,000 characters go over
    with pytest.raises(ParseError, match=r"too large once uncompressed \(over 0 MiB of text"):
        parse_document("renamed.docx", content, "docx")


def test_a_package_whose_list_of_parts_is_no_xml_is_damaged() -> None:
    content = _renamed_part(docx_bytes(["x"]), "word/document.xml", "word/document.xml", "word/document.xml")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as source, zipfile.ZipFile(out, "w") as z:
        for item in source.infolist():
            data = source.read(item.filename)
            z.writestr(item.filename, data[:-20] if item.filename == "[Content_Types].xml" else data)
    with pytest.raises(ParseError, match=r"^The Word document is damaged \(its list of parts is not XML"):
        parse_document("cut.docx", out.getvalue(), "docx")


def test_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_server.ingestion.parsing import sheets

    monkeypatch.setattr(sheets, "MAX_ROWS", 10)
    with pytest.raises(ParseError, match="more than 10 rows"):
        parse_document("many.csv", b"n\n" + b"".join(b"%d\n" % i for i in range(20)), "csv")
    with pytest.raises(ParseError, match="more than 10 rows"):
        parse_document("many.xlsx", xlsx_bytes({"S": [[i] for i in range(20)]}), "xlsx")


def test_blank_rows_do_not_count_towards_the_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Excel saves the rows (and the sheet's dimension) down to a formatted cell: a 1,001-row sheet
    with one bold empty cell at row 500,000 was refused as "more than 200,000 rows"."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Budget"
    for row in [["item", "amount"], *([f"item {i}", i] for i in range(1, 12))]:
        sheet.append(row)
    sheet.cell(row=500, column=1).font = Font(bold=True)  # formatted, no value
    out = io.BytesIO()
    workbook.save(out)
    monkeypatch.setattr(sheets, "MAX_ROWS", 20)
    parsed = parse_document("budget.xlsx", out.getvalue(), "xlsx").sections
    assert [s.location for s in parsed] == [{"sheet": "Budget", "row": n} for n in range(2, 13)]
    csv = b"n\n" + b"".join(b"%d\n" % i for i in range(12)) + b",\n" * 100
    assert len(parse_document("blank-tail.csv", csv, "csv").sections) == 12


@pytest.mark.parametrize("formula", [False, True], ids=["values", "a-formula-without-value"])
def test_a_row_padded_to_column_xfd_is_read_by_its_cells(
    monkeypatch: pytest.MonkeyPatch, formula: bool
) -> None:
    """openpyxl pads a row to its last cell: one in column XFD makes 16,384 values, and each was read in
    Python, three times over (a 100 KB workbook of 20,000 such rows: 99 s of a worker's processor time,
    QA). Only the cells that hold something are read; the records are the same."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "S"
    sheet.append(["name", "total"])
    for n in range(2, 42):
        sheet.cell(row=n, column=1, value=f"item {n}")
        sheet.cell(row=n, column=16384, value=n)
    if formula:
        sheet.cell(row=2, column=2, value="=SUM(A1:A2)")  # saved with no computed value
    out = io.BytesIO()
    workbook.save(out)
    read = []
    cell = sheets._cell
    monkeypatch.setattr(sheets, "_cell", lambda value: read.append(value) or cell(value))
    parsed = parse_document("wide.xlsx", out.getvalue(), "xlsx").sections
    assert len(read) <= 2 + 3 * 40  # the cells that hold something (a padded one was 16,384 a row)
    expected = [f"name: item {n}; column 16384: {n}" for n in range(2, 42)]
    if formula:
        expected[0] = "name: item 2; total: =SUM(A1:A2); column 16384: 2"
    assert [s.text for s in parsed] == expected


def test_a_cell_beyond_the_header_keeps_its_column_number() -> None:
    """A CSV row longer than its header lost its last cells without a word (an unlabelled notes column)."""
    csv = b"name,amount\nalpha,1,paid late\nbeta,2\n"
    assert [s.text for s in parse_document("p.csv", csv, "csv").sections] == [
        "name: alpha; amount: 1; column 3: paid late",
        "name: beta; amount: 2",
    ]
    content = xlsx_bytes({"S": [["name", "amount"], ["alpha", 1, "paid late"], ["beta", 2]]})
    assert [s.text for s in parse_document("p.xlsx", content, "xlsx").sections] == [
        "name: alpha; amount: 1; column 3: paid late",
        "name: beta; amount: 2",
    ]
