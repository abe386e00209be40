"""Files a user can upload that once went wrong: binary data under a text name became chunks of noise, a
Markdown heading line that made a regular expression backtrack for hours, a heading a megabyte long in
every chunk's search text, a CSV cell over the csv module's 128 KiB default."""

from __future__ import annotations

import base64
import contextlib
import io
import random
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from rag_server.config import Settings
from rag_server.ingestion.parsing import MAX_HEADING_CHARS, ParseError, parse_document
from rag_server.ingestion.parsing.text import atx_heading
from rag_server.ingestion.preparation import prepare_chunks_sync


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.bin", random.Random(3).randbytes(4000))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("filename", "content", "file_type"),
    [
        ("random.txt", random.Random(1).randbytes(20_000), "txt"),
        ("program.txt", Path(sys.executable).read_bytes()[:300_000], "txt"),
        ("archive.md", _zip(), "md"),
        ("image.csv", bytes.fromhex("89504e470d0a1a0a") + random.Random(2).randbytes(3000), "csv"),
        ("data.json", random.Random(4).randbytes(5000), "json"),
    ],
)
def test_binary_data_under_a_text_name_is_refused(filename: str, content: bytes, file_type: str) -> None:
    with pytest.raises(ParseError, match=r"^The file is binary data, not text \(\d+% of its first"):
        parse_document(filename, content, file_type)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Plain text, UTF-16 without a byte order mark.".encode("utf-16-be"), "Plain text, UTF-16"),
        ("熊猫的文字，没有字节顺序标记。".encode("utf-16-le"), "熊猫的文字"),
        (b"\x1b[32mINFO\x1b[0m a coloured log line\n" * 50, "[32mINFO[0m a coloured"),
        ("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e".encode("latin-1"), "Café crème"),
        (b"\xef\xbb\xbfA text with a BOM\r\nand CRLF", "A text with a BOM\nand CRLF"),
        (b"hello\r\n\x1a", "hello"),  # a short DOS file ending in Ctrl-Z (1/8 control characters)
        (b"An old DOS note, long enough to be judged on its characters alone.\r\n\x1a", "An old DOS"),
    ],
)
def test_text_in_any_encoding_is_still_text(content: bytes, expected: str) -> None:
    parsed = parse_document("t.txt", content, "txt")
    assert parsed.sections[0].text.startswith(expected)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# Title", (1, "Title")),
        ("## Install ##", (2, "Install")),
        ("# Title#", (1, "Title#")),
        ("# ##", (1, "##")),
        ("##\tTab\t#\t", (2, "Tab")),
        ("# a # b #", (1, "a # b")),
        ("#    ", (1, "")),
        ("   # three", (1, "three")),
        ("#", None),
        ("    # code", None),
        ("####### seven", None),
    ],
)
def test_atx_headings(line: str, expected: tuple[int, str] | None) -> None:
    assert atx_heading(line) == expected


def test_a_heading_line_with_a_long_run_of_spaces_parses_at_once() -> None:
    # The former pattern backtracked quadratically: this line took most of an hour and, holding the
    # GIL, froze the whole worker. A child interpreter, so a regression fails here instead of hanging.
    script = (
        "from rag_server.ingestion.parsing import parse_document\n"
        "text = '# Intro\\n\\nbody\\n\\n# a' + ' ' * 400_000 + 'b\\n\\n# ' + '[' * 400_000 + '\\n\\nend\\n'\n"
        "parsed = parse_document('slow.md', text.encode(), 'md')\n"
        "print(len(parsed.sections), parsed.sections[-1].text.split()[-1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "end"]  # the bare heading `# a...b` joins the next one


def test_long_headings_and_titles_are_cut_in_every_chunk() -> None:
    heading = "word " * 200_000  # a 1 MB first line: once the title and heading path of every chunk
    # Distinct sentences: a passage repeated word for word is kept once (chunking.chunk_document).
    body = " ".join(f"Sentence {i} of body text under a very long heading." for i in range(200))
    chunks = prepare_chunks_sync(Settings(), "long.md", f"# {heading}\n\n{body}".encode(), "md")
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.heading_path is not None and len(chunk.heading_path) <= MAX_HEADING_CHARS + 1
        assert chunk.heading_path.endswith("…")
        assert len(chunk.search_text) < len(chunk.text) + 2 * MAX_HEADING_CHARS + 10


def test_a_metadata_title_is_one_line_cut_like_a_heading() -> None:
    # The upload's metadata title replaces the file's in every chunk's search text: 16 KiB of it was
    # prefixed to each chunk as it came, newlines and all.
    body = "A sentence of body text. " * 100
    long_title = "Annual report\n\n" + "word " * 3000
    chunks = prepare_chunks_sync(Settings(), "doc.txt", body.encode(), "txt", long_title)
    title = parse_document("doc.txt", body.encode(), "txt", long_title).title
    assert len(title) <= MAX_HEADING_CHARS + 1 and title.endswith("…")
    assert title.startswith("Annual report word word") and "\n" not in title
    assert all(c.search_text.startswith(title) for c in chunks)
    # A blank one leaves the file's own title (here: its name).
    assert parse_document("doc.txt", body.encode(), "txt", " \n ").title == "doc.txt"


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF of these objects (1 0 obj is the catalog), with a correct cross-reference table."""
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def _pdf_page(contents: bytes, kids: bytes = b"3 0 R") -> bytes:
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count 1 >>" % kids,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            contents,
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def test_a_pdf_past_the_readers_bounds_is_refused_with_a_sentence() -> None:
    """pypdf's LimitReachedError (a stream inflating past 75 MB, an array of too many elements) is no
    PdfReadError: such a PDF, 80 KB holding a page of 80 MB, failed as an unexpected error, retried to
    the last attempt."""
    packer = zlib.compressobj(9)
    inflated = packer.compress(b"BT /F1 12 Tf 72 720 Td (hi) Tj ET\n")
    inflated += b"".join(packer.compress(b" " * 2**20) for _ in range(80)) + packer.flush()
    bomb = _pdf_page(
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(inflated), inflated)
    )
    text = b"<< /Length 35 >>\nstream\nBT /F1 12 Tf 72 720 Td (hi) Tj ET\nendstream"
    long_array = _pdf_page(text, kids=b"3 0 R " * 200_000)
    assert "hi" in parse_document("fine.pdf", _pdf_page(text), "pdf").sections[0].text
    for content in (bomb, long_array):
        with pytest.raises(ParseError, match=r"^The PDF is too large or too complex to read \(past a bound"):
            parse_document("bomb.pdf", content, "pdf")


def test_a_json_integer_of_any_length_is_read_as_its_digits() -> None:
    """int() refuses over 4,300 digits: json.loads raised a ValueError that was no JSONDecodeError, and the
    file failed as an unexpected error, retried. Every integer keeps its digits as they were written."""
    content = b'{"id": ' + b"9" * 5_000 + b', "n": [-20, 0, 7], "x": 1.5}'
    text = parse_document("big.json", content, "json").sections[0].text
    assert text.splitlines() == ["id: " + "9" * 5_000, "n[0]: -20", "n[1]: 0", "n[2]: 7", "x: 1.5"]


def test_a_csv_cell_over_128_kib_is_read() -> None:
    cell = " ".join(f"word{i}" for i in range(40_000))  # ~300 KB
    parsed = parse_document("big.csv", f'name,notes\nalpha,"{cell}"\nbeta,short\n'.encode(), "csv")
    assert [s.location for s in parsed.sections] == [{"row": 2}, {"row": 3}]
    assert parsed.sections[0].text == f"name: alpha; notes: {cell}"


def test_a_csv_quote_never_closed_is_refused_with_its_row_not_read_as_one_cell() -> None:
    content = b'name,notes\nAda,"unclosed note\nAlan,fine\nGrace,ok\n'  # 3 rows were read as 1
    with pytest.raises(ParseError, match=r"^Row 2 of the CSV file opens a quoted cell that is never closed"):
        parse_document("q.csv", content, "csv")
    # Quotes that close, stray quotes inside a cell, and an open quote on the last line (it swallows
    # nothing) are read as they are.
    fine = b'name,notes\nAda,"a ""quoted"" word"\nAlan,"two\nlines"\nGrace,5" screen\nLin,"7 inch\n'
    assert [s.text for s in parse_document("q.csv", fine, "csv").sections] == [
        'name: Ada; notes: a "quoted" word',
        "name: Alan; notes: two\nlines",
        'name: Grace; notes: 5" screen',
        "name: Lin; notes: 7 inch",
    ]
    # A last row whose quoted cell spans lines and closes: read (its quote is checked, and closed).
    for ending in (b"\n", b"\r\n"):
        last = b"name,notes" + ending + b'Ada,"two' + ending + b'lines"' + ending
        assert [s.text for s in parse_document("q.csv", last, "csv").sections] == [
            "name: Ada; notes: two\nlines"
        ]


def test_a_csv_multi_line_cell_is_read_whole_even_with_quotes_that_are_not_doubled() -> None:
    # A writer that does not double quotes inside a cell: the note is read whole (its quotes are bent).
    # Its shape, a quoted cell over lines closed by a quote with text after it, is also that of a quote
    # left open and closed rows later by a stray one (`Carl,5" screen`): refusing one refuses the other,
    # so neither is (sheets._csv_rows).
    content = b'id,note\n1,"Customer called.\nSaid "urgent" twice"\n2,"ok"\n'
    assert [(s.text, s.location) for s in parse_document("n.csv", content, "csv").sections] == [
        ('id: 1; note: Customer called.\nSaid urgent" twice"', {"row": 2}),
        ("id: 2; note: ok", {"row": 3}),
    ]


def test_random_bytes_of_every_length_never_crash_the_text_parsers() -> None:
    rng = random.Random(7)
    for size in (1, 2, 3, 17, 255, 4096):
        data = rng.randbytes(size)
        for file_type in ("txt", "md", "csv", "json", "html"):
            with contextlib.suppress(ParseError):  # a readable refusal, or text: nothing else
                parse_document(f"x.{file_type}", data, file_type)


def test_an_image_embedded_in_markdown_is_no_text_to_chunk() -> None:
    """Markdown exported by many editors carries its images inline, as base64 data URIs: 1 MB of one
    made 8,930 chunks of noise (security QA), each embedded and searchable. The payload goes; the image's
    alt text and the text around it stay."""
    payload = base64.b64encode(random.Random(1).randbytes(750_000)).decode()
    text = (
        "# Report\n\nThe figure shows the lighthouse beam.\n\n"
        f"![beam diagram](data:image/png;base64,{payload})\n\n"
        f'<img alt="logo" src="data:image/svg+xml;base64,{payload[:4000]}">\n\nThe keeper trims the wick.\n'
    )
    chunks = prepare_chunks_sync(Settings(), "report.md", text.encode(), "md")
    assert len(chunks) <= 2
    whole = " ".join(c.text for c in chunks)
    assert "beam diagram" in whole and "The keeper trims the wick." in whole and "lighthouse" in whole
    assert payload[:64] not in whole and payload[-64:] not in whole
