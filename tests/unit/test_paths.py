from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag_server.paths import input_file_problem, input_folder_problem, output_file_problem, written_file


def test_a_file_can_be_written_in_an_existing_folder_over_an_existing_file(tmp_path: Path) -> None:
    assert output_file_problem(tmp_path / "new.jsonl") is None
    (tmp_path / "old.jsonl").write_text("x")
    assert output_file_problem(tmp_path / "old.jsonl") is None


def test_what_cannot_be_written_is_said(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert output_file_problem(tmp_path, "rag.ragbackup") == (
        f"{tmp_path} is a folder: name the file to write, e.g. {tmp_path / 'rag.ragbackup'}"
    )
    assert output_file_problem(fifo) == f"{fifo} exists and is not a regular file"
    missing = tmp_path / "nowhere" / "x.jsonl"
    assert output_file_problem(missing) == f"the folder {missing.parent} does not exist"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
def test_a_folder_without_write_permission_is_said(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert output_file_problem(tmp_path / "x") == f"the folder {tmp_path} is not writable"
    finally:
        tmp_path.chmod(0o700)


def test_what_cannot_be_read_is_said(tmp_path: Path) -> None:
    fifo, file = tmp_path / "pipe", tmp_path / "file.jsonl"
    os.mkfifo(fifo)
    file.write_text("x")
    assert input_file_problem(file) is None and input_folder_problem(tmp_path) is None
    assert input_file_problem(tmp_path / "no") == f"{tmp_path / 'no'}: no such file or directory"
    assert input_file_problem(tmp_path, "an export") == f"{tmp_path} is a folder: name an export"
    assert input_file_problem(fifo) == f"{fifo} is not a regular file: name a file"
    assert input_folder_problem(file, "a store") == f"{file} is not a folder: name a store"


def test_a_writer_that_makes_its_folders_needs_only_a_writable_ancestor(tmp_path: Path) -> None:
    deep = tmp_path / "reports" / "2026" / "r.json"
    assert output_file_problem(deep, makes_folders=True) is None
    assert output_file_problem(deep) == f"the folder {deep.parent} does not exist"
    (tmp_path / "notes.txt").write_text("x")
    under_a_file = tmp_path / "notes.txt" / "r.json"
    assert (
        output_file_problem(under_a_file, makes_folders=True) == f"{tmp_path / 'notes.txt'} is not a folder"
    )


def test_a_link_is_written_through_to_its_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "notes.jsonl"
    target.write_text("old")
    link, dangling, plain = tmp_path / "link.jsonl", tmp_path / "dangling.jsonl", tmp_path / "plain.jsonl"
    link.symlink_to(Path("real") / "notes.jsonl")  # relative, as `ln -s` makes them
    dangling.symlink_to(tmp_path / "real" / "new.jsonl")
    assert written_file(link) == target and written_file(dangling) == tmp_path / "real" / "new.jsonl"
    assert written_file(plain) == plain
    assert output_file_problem(link) is None and output_file_problem(dangling) is None
    # Checked where the file is written: the target's folder, not the link's.
    lost = tmp_path / "lost.jsonl"
    lost.symlink_to(tmp_path / "gone" / "x.jsonl")
    assert output_file_problem(lost) == f"the folder {tmp_path / 'gone'} does not exist"
    loop_a, loop_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    assert output_file_problem(loop_a) == f"{loop_a} is a symbolic link that leads to no file (a loop)"
