"""Files the commands read or write, checked before any work: a folder or a missing one named as the
file failed only at the end (a whole dump written, then IsADirectoryError, a `.partial` left behind)."""

from __future__ import annotations

import os
from pathlib import Path


def written_file(path: Path) -> Path:
    """The file that writing `path` writes: a symbolic link's target (as `cp`, a shell's `>` and most
    tools do), so that a write made atomic by a rename replaces the target, not the link (an export
    renamed over a link left a regular file in its place, its target stale). A dangling link's target
    is created, as `>` creates it."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def output_file_problem(
    path: Path, example_name: str | None = None, *, makes_folders: bool = False
) -> str | None:
    """Why no file can be written at `path` (an existing file is replaced; a link's target: written_file),
    or None. `example_name`:
    a file name to suggest when `path` is a folder; `makes_folders`: the writer creates missing folders."""
    if path.is_dir():
        example = f", e.g. {path / example_name}" if example_name else ""
        return f"{path} is a folder: name the file to write{example}"
    if path.exists() and not path.is_file():
        return f"{path} exists and is not a regular file"
    if path.is_symlink() and written_file(path).is_symlink():
        return f"{path} is a symbolic link that leads to no file (a loop)"
    folder = written_file(path).parent  # where the file is written, and its temporary beside it
    while makes_folders and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder" if folder.exists() else f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return None


def input_file_problem(path: Path, what: str = "a file") -> str | None:
    """Why `path` cannot be read as `what` (e.g. "a file written by `rag-server export`"), or None."""
    if not path.exists():
        return f"{path}: no such file or directory"
    if path.is_dir():
        return f"{path} is a folder: name {what}"
    if not path.is_file():
        return f"{path} is not a regular file: name {what}"
    return None


def input_folder_problem(path: Path, what: str = "a folder") -> str | None:
    """Why `path` cannot be read as the folder `what`, or None."""
    if not path.exists():
        return f"{path}: no such file or directory"
    if not path.is_dir():
        return f"{path} is not a folder: name {what}"
    return None
