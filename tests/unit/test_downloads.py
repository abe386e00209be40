"""The Content-Disposition of a download (api/downloads.attachment)."""

from __future__ import annotations

import pytest

from rag_server.api.downloads import attachment


@pytest.mark.parametrize(
    ("name", "saved_as"),
    [
        ("report.pdf", "report.pdf"),
        ("setup/README.md", "README.md"),  # a document's name with folders: the file's own name
        (".env.md", "env.md"),  # never a hidden file
        ("notes/.draft.md", "draft.md"),
        ("...", "download"),
        ("..md", "download.md"),  # the extension's dot is not a leading one
        ("notes/...md", "download.md"),
        ("README", "README"),
    ],
)
def test_a_download_is_saved_under_the_files_own_name(name: str, saved_as: str) -> None:
    header = attachment(name)["Content-Disposition"]
    assert header == f"attachment; filename=\"{saved_as}\"; filename*=UTF-8''{saved_as}"


def test_a_name_beyond_ascii_keeps_its_letters_in_filename_star() -> None:
    header = attachment('Berichte/Übersicht "Q1".md')["Content-Disposition"]
    assert (
        header == "attachment; filename=\"_bersicht 'Q1'.md\"; filename*=UTF-8''%C3%9Cbersicht%20%22Q1%22.md"
    )
