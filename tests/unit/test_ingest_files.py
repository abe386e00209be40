"""`rag-server ingest`'s walk of the paths it is given (ingestion/cli.collect_files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag_server.ingestion.cli import LocalFile, _command, collect_files


def test_a_folder_gives_its_files_sorted_and_reports_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# B")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "tool.exe").write_bytes(b"MZ")
    (tmp_path / ".hidden.txt").write_text("h")
    (tmp_path / "linked.txt").symlink_to(tmp_path / "a.txt")  # the same file twice: once
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "gone.txt")  # left out without a word before
    found, skipped, hidden = collect_files([tmp_path])
    # A file in a folder is named by its path inside the folder given: one name in two sub-folders is
    # two documents.
    assert found == [LocalFile(tmp_path / "a.txt", "a.txt"), LocalFile(tmp_path / "sub" / "b.md", "sub/b.md")]
    assert skipped == [tmp_path / "dangling.txt", tmp_path / "tool.exe"]
    assert hidden == 1


def unreadable_file(path: Path) -> Path:
    """A file this process may not open: mode 000, or for root (who opens any mode) a link to a write-only
    sysfs file."""
    if os.geteuid() != 0:
        path.write_text("secret")
        path.chmod(0)
        return path
    target = Path("/sys/bus/pci/rescan")
    if not target.exists():
        pytest.skip("running as root, with no write-only file to link to")
    path.symlink_to(target)
    return path


def test_a_file_that_cannot_be_read_is_skipped_not_a_traceback(tmp_path: Path) -> None:
    # `ingest` read every file for its digest before sending any: one unreadable file (PermissionError)
    # ended the whole run with a traceback, nothing sent (QA 4).
    (tmp_path / "ok.txt").write_text("ok")
    locked = unreadable_file(tmp_path / "locked.txt")
    found, skipped, _ = collect_files([tmp_path])
    assert found == [LocalFile(tmp_path / "ok.txt", "ok.txt")]
    assert skipped == [locked]


def _collected_without_root_s_reach(paths: list[Path]) -> tuple[list[str], list[str]]:
    """collect_files(paths) as names (found, skipped), run where permissions hold: for root (who lists
    any folder) in a child without the capabilities that pass over them."""
    code = (
        "import json, sys; from rag_server.ingestion.cli import collect_files;"
        "found, skipped, _ = collect_files(sys.argv[1:]);"
        "print(json.dumps([[f.name for f in found], [str(p) for p in skipped]]))"
    )
    command = [sys.executable, "-c", code, *map(str, paths)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, without setpriv to drop the capability to read any folder")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ).stdout
    found, skipped = json.loads(out)
    return found, skipped


def test_a_folder_that_cannot_be_listed_is_reported_not_left_out_unsaid(tmp_path: Path) -> None:
    # rglob passed over a folder it may not list without a word: its files were not sent, and nothing
    # said so (QA 4).
    (tmp_path / "ok.txt").write_text("ok")
    for locked in (tmp_path / "locked", tmp_path / ".cache" / "locked"):
        locked.mkdir(parents=True)
        (locked / "secret.txt").write_text("secret")
        locked.chmod(0)
    try:
        found, skipped = _collected_without_root_s_reach([tmp_path])
        # A hidden folder's content is left out anyway: not a line of its own.
        assert (found, skipped) == (["ok.txt"], [str(tmp_path / "locked")])
        # The folder given itself: it said "nothing to ingest", as if it were empty.
        assert _collected_without_root_s_reach([tmp_path / "locked"]) == ([], [str(tmp_path / "locked")])
    finally:
        (tmp_path / "locked").chmod(0o700)
        (tmp_path / ".cache" / "locked").chmod(0o700)


def test_a_file_given_by_itself_is_named_by_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".notes.md").write_text("# N")  # named on purpose: not left out
    found, _, hidden = collect_files([tmp_path / "sub" / ".notes.md", tmp_path / "sub"])
    assert found == [LocalFile(tmp_path / "sub" / ".notes.md", ".notes.md")] and hidden == 1


def test_names_are_the_servers_so_that_a_repeated_one_is_found_before_sending(tmp_path: Path) -> None:
    """A folder named "~old" kept its name; one whose name ends in a no-break space lost it only on the
    server, where two files then had one name."""
    for folder in ("~old", "notes\u00a0", "notes"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.md").write_text(f"# {folder}")
    found, _, _ = collect_files([tmp_path])
    assert sorted(f.name for f in found) == ["notes/a.md", "notes/a.md", "~old/a.md"]


def test_a_command_it_advises_names_the_collection_and_is_quoted_for_a_shell() -> None:
    # Without the collection it would have deleted (or listed) in `default`; a space split the name.
    assert _command("documents", "list", "--name", "my notes.md", collection="hr") == (
        "rag-server documents list --name 'my notes.md' --collection hr"
    )
    assert _command("documents", "delete", "ID", collection="default") == "rag-server documents delete ID"


def test_the_progress_counts_chunks_against_the_files_read_so_far() -> None:
    """One 50 MB file is minutes of `0/1 files`: the chunks embedded are shown out of those to embed
    (it said `chunks=1088`, out of nothing)."""
    from datetime import UTC, datetime
    from uuid import uuid4

    from rag_server.ingestion.cli import chunk_progress
    from rag_server.ingestion.models import BatchStatus, BatchTask

    def task(status: str, total: int, done: int) -> BatchTask:
        return BatchTask.model_validate(
            {
                "task_id": uuid4(),
                "filename": "f",
                "status": status,
                "total_chunks": total,
                "completed_chunks": done,
                "attempts": 1,
                "failures": 0,
                "error": None,
                "document_id": uuid4(),
                "started_at": None,
                "finished_at": None,
            }
        )

    tasks = [task("completed", 300, 300), task("processing", 52776, 1088), task("queued", 0, 0)]
    status = BatchStatus(
        batch_id=uuid4(),
        status="processing",
        done=False,
        created_at=datetime.now(UTC),
        total=3,
        counts={"completed": 1, "processing": 1, "queued": 1},
        total_chunks=53076,
        completed_chunks=1388,
        tasks=tasks,
    )
    assert chunk_progress([status]) == "1,388/53,076"


def test_the_bar_of_a_run_whose_document_was_deleted_says_so_not_chunks_0_of_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """QA, 2026-12-07: `rag-server ingest` waited for a file whose document was deleted meanwhile (its
    task failed, its document_id null) and its bar ended at `chunks=0/0`: it reads `deleted=1`."""
    from datetime import UTC, datetime
    from uuid import uuid4

    from rag_server.ingestion.cli import _wait
    from rag_server.ingestion.models import BatchStatus, BatchTask

    deleted = BatchTask.model_validate(
        {
            "task_id": uuid4(),
            "filename": "big.txt",
            "status": "failed",
            "total_chunks": 5675,
            "completed_chunks": 2944,
            "attempts": 1,
            "failures": 0,
            "error": "The document was deleted before processing finished.",
            "document_id": None,
            "started_at": None,
            "finished_at": None,
        }
    )
    status = BatchStatus(
        batch_id=uuid4(),
        status="failed",
        done=True,
        created_at=datetime.now(UTC),
        total=1,
        counts={"failed": 1},
        total_chunks=5675,
        completed_chunks=2944,
        tasks=[deleted],
    )

    class Server:
        def batch_status(self, batch_id: str) -> BatchStatus:
            return status

    _wait(Server(), [str(status.batch_id)], 1, "default")  # type: ignore[arg-type]
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "1/1" in bar and "deleted=1" in bar, bar
    assert "chunks" not in bar, bar
