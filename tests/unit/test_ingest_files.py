"""`rag-server ingest`'s walk of the paths it is given (ingestion/cli.collect_files)."""

from __future__ import annotations

from pathlib import Path

from rag_server.ingestion.cli import collect_files


def test_a_folder_gives_its_files_sorted_and_reports_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# B")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "tool.exe").write_bytes(b"MZ")
    (tmp_path / ".hidden.txt").write_text("h")
    (tmp_path / "linked.txt").symlink_to(tmp_path / "a.txt")  # the same file twice: once
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "gone.txt")  # left out without a word before
    found, skipped, hidden = collect_files([tmp_path])
    assert found == [tmp_path / "a.txt", tmp_path / "sub" / "b.md"]
    assert skipped == [tmp_path / "dangling.txt", tmp_path / "tool.exe"]
    assert hidden == 1
