"""Parsing: every supported type, and every bad input gives a ParseError with a readable reason."""

from __future__ import annotations

import json

import pytest

from rag_server.ingestion.parsing import (
    ParseError,
    decode_text,
    file_type_for,
    parse_document,
    sanitize_filename,
)
from tests.support.sample_files import (
    blank_pdf,
    corrupt_pdf,
    docx_bytes,
    encrypted_pdf,
    image_only_pdf,
    pdf_with_text,
)


def test_supported_types_by_extension() -> None:
    names = ("a.txt", "B.MD", "c.pdf", "d.htm", "e.html", "f.docx", "g.csv", "h.json")
    types = [file_type_for(n) for n in names]
    assert [t.name if t else None for t in types] == [
        "txt",
        "md",
        "pdf",
        "html",
        "html",
        "docx",
        "csv",
        "json",
    ]
    for name in ("a.exe", "noext", "a.pdf.zip", "archive.tar.gz", ".txt.png"):
        assert file_type_for(name) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("bad\x00name\x1b[31m.txt", "badname[31m.txt"),
        ("line\nbreak\r.md", "linebreak.md"),
        ("   ", "unnamed"),
        ("..", "unnamed"),
        (None, "unnamed"),
        ("/", "unnamed"),
        (".", "unnamed"),
        # A relative path keeps its folders (one file name in two folders: two names); an absolute one
        # or one climbing out keeps its last segment.
        ("guides/setup/README.md", "guides/setup/README.md"),
        ("guides\\setup\\README.md", "guides/setup/README.md"),
        ("./a//b /c.md", "a/b/c.md"),
        ("a/../b.md", "b.md"),
        ("/home/me/notes.md", "notes.md"),
        # A shell expands "~"; sent as a name, it is a folder of that name, like "~old".
        ("~/notes.md", "~/notes.md"),
        ("docs/~old/a.md", "docs/~old/a.md"),
        ("~old/a.md", "~old/a.md"),
        ("C:/Users/a.md", "a.md"),
        ("dir\u00a0./a.md", "dir/a.md"),
        ("\\\\server\\share\\notes.md", "notes.md"),
        ("a/\x1b\u202e/b.md", "a/b.md"),
        # Drawn as a slash, read as one: it would show as a path it is not.
        ("setup\u2215README.md", "setup/README.md"),
        ("a\u2044b\uff0fc\u29f8d.md", "a/b/c/d.md"),
        # A leading dot is part of the name; a trailing one is not.
        (".env.md", ".env.md"),
        (".config/.notes.md.", ".config/.notes.md"),
        # Bidirectional overrides and isolates make a name show as another: gone. Joiners (emoji
        # sequences) and right-to-left letters stay.
        ("\u202eevil\u202dtxt.exe.txt", "eviltxt.exe.txt"),
        ("invoice\u2067fdp.exe\u2069.txt", "invoicefdp.exe.txt"),
        ("\u202aa\u202bb\u202cc\u2066d\u2068e.md", "abcde.md"),
        (
            "\U0001f469\u200d\U0001f467 \u05e9\u05dc\u05d5\u05dd.txt",
            "\U0001f469\u200d\U0001f467 \u05e9\u05dc\u05d5\u05dd.txt",
        ),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_sanitize_filename_bounds_length_and_keeps_extension() -> None:
    name = sanitize_filename("x" * 1000 + ".pdf")
    assert len(name) <= 255 and name.endswith(".pdf")
    # Too long with its folders: the outer ones go first, the file's own name stays whole.
    deep = sanitize_filename("/".join(f"folder{i:02}" for i in range(40)) + "/report.pdf")
    assert len(deep) <= 255 and deep.endswith("/folder39/report.pdf") and not deep.startswith("folder00")
    # ... a digest of them in their place: paths that differ only in the folders given up stay apart.
    other = sanitize_filename("elsewhere/" + "/".join(f"folder{i:02}" for i in range(40)) + "/report.pdf")
    assert deep.startswith("…") and other.startswith("…") and deep != other
    assert deep.split("/", 1)[1] == other.split("/", 1)[1]
    # A long name is cut with a digest of it: two that differ only past the cut stay two (QA: they became
    # one name, and replace=true would replace one by the other).
    first, second = (sanitize_filename("report " * 60 + f"{n}.pdf") for n in (1, 2))
    assert first != second and len(first) <= 255 and first.endswith(".pdf") and "…" in first
    assert sanitize_filename("x" * 300) != sanitize_filename("x" * 299 + "y")


@pytest.mark.parametrize(
    "raw",
    [
        "dir\u00a0./a.md",
        "a/b .\u00a0/c.md. \u00a0",
        "x" * 300,
        "x" * 254 + " y",
        "/".join(f"f{i}" for i in range(120)) + "/z.md",
        "~/a.md",
        "q/C:/a.md",
    ],
)
def test_a_cleaned_name_is_clean(raw: str) -> None:
    """A name cleaned again is the same name: a replacement's name in its document's folder, and a JSONL
    export imported again, go through it twice."""
    once = sanitize_filename(raw)
    assert sanitize_filename(once) == once


def test_a_source_path_in_an_import_keeps_only_its_file_name() -> None:
    assert sanitize_filename("docs/a/README.md", folders=False) == "README.md"


def test_text_and_markdown() -> None:
    doc = parse_document("notes.txt", b"first line\r\nsecond line\x00", "txt")
    assert doc.title == "notes.txt"
    assert doc.text == "first line\nsecond line"
    md = parse_document("readme.md", b"# Project Atlas\n\nSome *markdown* text.", "md")
    assert md.title == "Project Atlas"
    assert "Some *markdown* text." in md.text


def test_non_utf8_text_is_decoded() -> None:
    latin1 = "Café crème brûlée, naïve façade, déjà vu. Élève à l'école.".encode("cp1252")
    assert decode_text(latin1) == "Café crème brûlée, naïve façade, déjà vu. Élève à l'école."
    doc = parse_document("menu.txt", latin1, "txt")
    assert "crème brûlée" in doc.text
    utf16 = "hello wörld".encode("utf-16")
    assert parse_document("u16.txt", utf16, "txt").text == "hello wörld"
    cyrillic = "Привет мир, как дела? Это тест кодировки.".encode("cp1251")
    assert decode_text(cyrillic) == "Привет мир, как дела? Это тест кодировки."
    # Arbitrary bytes never raise.
    assert isinstance(decode_text(bytes(range(256))), str)


def test_short_western_text_in_latin1_is_not_taken_for_another_script() -> None:
    # The charset detector, given a few words, read these as Korean (johab), UTF-16 and Mac Turkish.
    for text in (
        "Übung macht den Meister.",
        "Straße",
        "Über die Brücke geht der Fuchs, Straße Nummer fünf.\n",
        "Größe: 5 m², Preis: 30 €, «citation» ± 5° – l’été…",
    ):
        assert decode_text(text.encode("cp1252")) == text
    doc = parse_document("kurz.txt", "Übung macht den Meister.".encode("latin-1"), "txt")
    assert doc.text == "Übung macht den Meister."
    # Other scripts in their legacy code pages still go to the detector: Windows-1252 would read
    # every word of them as a run of accented letters.
    for text, encoding in (
        ("Привет мир, как дела? Это тест кодировки.", "cp1251"),
        ("Καλημέρα κόσμε, τι κάνεις;", "cp1253"),
        ("日本語のテキストです。これはテストです。", "shift_jis"),
        ("这是一个中文测试文本，用于检测编码。", "gb2312"),
        ("hello wörld, again and again", "utf-16-le"),  # no BOM: NULs, never Windows-1252
    ):
        assert decode_text(text.encode(encoding)) == text


def test_html_drops_scripts_and_uses_title() -> None:
    html = (
        b"<html><head><title>Quarterly Report</title><style>p{}</style></head><body>"
        b"<script>alert(1)</script><h1>Revenue</h1><p>Revenue grew 12%.</p></body></html>"
    )
    doc = parse_document("r.html", html, "html")
    assert doc.title == "Quarterly Report"
    assert doc.text == "Revenue\nRevenue grew 12%."


def test_pdf_pages_keep_page_numbers() -> None:
    doc = parse_document(
        "p.pdf", pdf_with_text(["Page one talks about otters.", "Page two about beavers."]), "pdf"
    )
    assert [(s.page, s.text) for s in doc.sections] == [
        (1, "Page one talks about otters."),
        (2, "Page two about beavers."),
    ]


def test_owner_only_encrypted_pdfs_open_and_aes_passwords_are_refused() -> None:
    for algorithm in ("RC4-128", "AES-256"):
        doc = parse_document(
            "o.pdf", encrypted_pdf("Readable text.", password="", algorithm=algorithm), "pdf"
        )
        assert doc.text == "Readable text."
    with pytest.raises(ParseError, match=r"^The PDF is password-protected"):
        parse_document("aes.pdf", encrypted_pdf(algorithm="AES-256"), "pdf")


def test_docx_paragraphs_tables_and_title() -> None:
    content = docx_bytes(
        ["Intro paragraph.", "Second paragraph."], [["Name", "Age"], ["Ada", "36"]], title="Team"
    )
    doc = parse_document("team.docx", content, "docx")
    assert doc.title == "Team"
    assert doc.text == "Intro paragraph.\nSecond paragraph.\nName | Age\nAda | 36"


def test_csv_rows_become_readable_lines() -> None:
    doc = parse_document("people.csv", b"name,city\nAda,London\nAlan,Wilmslow\n", "csv")
    assert doc.text == "name: Ada; city: London\nname: Alan; city: Wilmslow"


def test_json_is_flattened_to_paths() -> None:
    payload = {"title": "Atlas", "tags": ["maps", "geo"], "owner": {"name": "Ada"}, "empty": None}
    doc = parse_document("a.json", json.dumps(payload).encode(), "json")
    assert doc.text == "title: Atlas\ntags[0]: maps\ntags[1]: geo\nowner.name: Ada"


@pytest.mark.parametrize(
    ("filename", "content", "file_type", "reason"),
    [
        ("empty.txt", b"", "txt", "The file is empty."),
        ("empty.pdf", b"", "pdf", "The file is empty."),
        ("blank.txt", b"  \n\t \n", "txt", "The file contains no extractable text."),
        ("corrupt.pdf", corrupt_pdf(), "pdf", "The PDF is damaged or not a PDF and could not be read"),
        ("locked.pdf", encrypted_pdf(), "pdf", "The PDF is password-protected; upload an unprotected copy."),
        ("scan.pdf", image_only_pdf(), "pdf", "The PDF has no extractable text layer"),
        ("blank.pdf", blank_pdf(2), "pdf", "The PDF has no extractable text layer"),
        ("bad.docx", b"PK\x03\x04 not a zip", "docx", "The Word document is damaged"),
        ("bad.json", b'{"a": 1,', "json", "The file is not valid JSON"),
        ("x.exe", b"MZ", "exe", "Files of type 'exe' are not supported."),
    ],
)
def test_bad_inputs_raise_readable_parse_errors(
    filename: str, content: bytes, file_type: str, reason: str
) -> None:
    with pytest.raises(ParseError) as info:
        parse_document(filename, content, file_type)
    assert str(info.value).startswith(reason)
