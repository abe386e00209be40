from __future__ import annotations

from rag_server.ingestion.documents import download_name

TEXT = "text/plain; charset=utf-8"


def test_a_file_served_as_its_name_says_keeps_its_name() -> None:
    assert download_name("people.csv", "text/csv; charset=utf-8") == "people.csv"
    assert download_name("notes.md", "text/markdown; charset=utf-8") == "notes.md"
    assert download_name("a.txt", TEXT) == "a.txt"
    assert download_name("old.csv", "text/csv") == "old.csv"  # parameters aside, the same type


def test_text_served_under_another_types_name_says_it_is_text() -> None:
    # An imported document: its chunk text, served as text/plain, under its source's name.
    assert download_name("people.csv", TEXT) == "people.csv.txt"
    assert download_name("report.pdf", TEXT) == "report.pdf.txt"
    assert download_name("notes.md", TEXT) == "notes.md.txt"
    assert download_name("record-17", TEXT) == "record-17"  # no type claimed: nothing to correct
