"""A file whose parsing runs too long fails with a sentence and the worker goes on; the parser's process
dies with its worker. Parsing runs in a child of the worker (ingestion/parse_process.py): in the worker's
own threads such a file held its slot for good, and one stuck in C code (a backtracking regular
expression) froze the whole worker, heartbeats and SIGTERM included."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

import rag_server
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.parse_clock import WALL_LIMIT_FACTOR, timeout_message
from rag_server.ingestion.worker import EXIT_CODE_CHANGED
from tests.support.child_hooks import TOKENIZER_BURNS_THEN_SLEEPS_ON, run_at_child_start
from tests.support.ingest import assert_exact_chunks, enqueue, task_row, wait_for
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text

# A log of ~8 MB with no blank line: chunking it takes far more than the 2 s of processor time allowed
# below.
SLOW = ("slow.txt", "".join(f"Line {i} of a long log, about item {i}.\n" for i in range(200_000)).encode())
SMALL = ("small.txt", long_text(300, seed=3).encode())


def _parser_pid(worker: Proc) -> int:
    found = re.search(r"parser process (\d+) ready", worker.log())
    assert found, worker.log_tail()
    return int(found.group(1))


def _package_copy(tmp_path: Path) -> Path:
    """A copy of rag_server for a worker to run (PYTHONPATH), whose files can change under it as an
    upgrade in place changes them; the folder to put on the path."""
    site = tmp_path / "site"
    shutil.copytree(
        Path(rag_server.__file__).parent, site / "rag_server", ignore=shutil.ignore_patterns("__pycache__")
    )
    return site


def _touch(path: Path) -> None:
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))


async def test_a_worker_whose_code_changed_on_disk_hands_its_task_back_and_exits_to_be_restarted(
    runtime: Runtime, database_url: str, data_dir: Path, tmp_path: Path, workers: list[Proc]
) -> None:
    # A parser started after an upgrade in place would run the new code under the old worker (their
    # messages, Settings and chunks may no longer agree).
    site = _package_copy(tmp_path)
    [slow] = await enqueue(runtime, [("slow-upgraded.txt", SLOW[1] + b"Upgraded meanwhile.\n")])
    env = process_env(
        database_url, data_dir, PYTHONPATH=str(site), RAG_PARSE_TIMEOUT_S="3", RAG_WORKER_CONCURRENCY="1"
    )
    worker = start_worker(env, tmp_path / "worker.log")
    workers.append(worker)
    wait_for(lambda: task_row(database_url, slow.task_id)["status"] == "processing", what="parsing started")
    _touch(site / "rag_server" / "config.py")
    # After the change, whenever the slow file's time limit stops the parser: the next file needs a new
    # one, on the new code. The worker stops instead, handing that file back uncounted.
    [small] = await enqueue(runtime, [("small-upgraded.txt", long_text(300, seed=5).encode())])
    assert worker.popen.wait(120) == EXIT_CODE_CHANGED, worker.log_tail()
    assert "stopping this worker so that it restarts on the new code" in worker.log()
    assert task_row(database_url, slow.task_id)["error"] == timeout_message(3)
    row = task_row(database_url, small.task_id)
    assert (row["status"], row["failures"], row["error"]) == ("queued", 0, None), row


def test_a_worker_whose_code_changes_while_it_starts_exits_to_be_restarted(
    database_url: str, data_dir: Path, tmp_path: Path, workers: list[Proc]
) -> None:
    # Migrations and the model load take seconds between the code's import and the first parser: an
    # upgrade then made the worker exit 1 with a traceback, not 75 as a restart on the new code.
    site = _package_copy(tmp_path)
    worker = start_worker(process_env(database_url, data_dir, PYTHONPATH=str(site)), tmp_path / "worker.log")
    workers.append(worker)
    while worker.popen.poll() is None and "parser process" not in worker.log():
        _touch(site / "rag_server" / "config.py")  # from before its import until its first parser
        time.sleep(0.05)
    assert worker.popen.wait(120) == EXIT_CODE_CHANGED, worker.log_tail()
    assert "exiting so that it restarts on the new code" in worker.log()
    assert "Traceback" not in worker.log()


async def test_a_file_parsed_past_the_time_limit_fails_and_the_worker_goes_on(
    runtime: Runtime,
    settings: Settings,
    database_url: str,
    data_dir: Path,
    tmp_path: Path,
    workers: list[Proc],
) -> None:
    slow, small = await enqueue(runtime, [SLOW, SMALL])
    env = process_env(database_url, data_dir, RAG_PARSE_TIMEOUT_S="2", RAG_WORKER_POLL_INTERVAL_S="0.1")
    worker = start_worker(env, tmp_path / "worker.log")
    workers.append(worker)

    failed = wait_for(
        lambda: (row := task_row(database_url, slow.task_id))["status"] == "failed" and row,
        timeout=240,
        what="the slow file failed",
    )
    # Final at once, with a sentence: the same file would take as long again.
    assert (failed["error"], failed["attempts"], failed["failures"]) == (timeout_message(2), 1, 1)
    wait_for(
        lambda: task_row(database_url, small.task_id)["status"] == "completed",
        timeout=240,
        what="the small file completed",
    )
    assert small.document_id is not None
    assert_exact_chunks(database_url, settings, small.document_id, *SMALL)
    assert worker.stop(signal.SIGTERM, timeout=60) == 0, worker.log_tail()
    assert "Traceback" not in worker.log()


async def test_a_parser_killed_mid_file_is_an_unexpected_error_of_that_file_and_the_worker_goes_on(
    runtime: Runtime,
    settings: Settings,
    database_url: str,
    data_dir: Path,
    tmp_path: Path,
    workers: list[Proc],
) -> None:
    # The kernel's OOM killer, or a crash in C code: counted against the document (it may be the cause),
    # retried up to RAG_WORKER_MAX_ATTEMPTS (1 here: given up at its next delivery), with what happened.
    # Before the test below, which leaves a slow file behind in the queue.
    small_file = ("small-after-a-kill.txt", long_text(300, seed=4).encode())  # not a duplicate of SMALL
    slow, small = await enqueue(runtime, [("killed.txt", SLOW[1] + b"Killed here.\n"), small_file])
    env = process_env(database_url, data_dir, RAG_WORKER_MAX_ATTEMPTS="1", RAG_WORKER_POLL_INTERVAL_S="0.1")
    worker = start_worker(env, tmp_path / "worker.log")
    workers.append(worker)
    wait_for(lambda: task_row(database_url, slow.task_id)["status"] == "processing", what="parsing started")
    psutil.Process(_parser_pid(worker)).kill()
    failed = wait_for(
        lambda: (row := task_row(database_url, slow.task_id))["status"] == "failed" and row,
        timeout=240,
        what="the file given up",
    )
    assert failed["failures"] == 1, failed
    assert failed["error"] == (
        "Gave up after 1 attempts: Unexpected error while processing: the file's parser process was "
        "killed by SIGKILL (out of memory?) before it answered."
    ), failed
    wait_for(lambda: task_row(database_url, small.task_id)["status"] == "completed", timeout=240, what="next")
    assert worker.stop(signal.SIGTERM, timeout=60) == 0, worker.log_tail()


async def test_a_parser_stuck_without_using_the_processor_is_stopped_by_the_clock_and_its_file_retried(
    runtime: Runtime,
    database_url: str,
    data_dir: Path,
    tmp_path: Path,
    workers: list[Proc],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past WALL_LIMIT_FACTOR x RAG_PARSE_TIMEOUT_S by the clock: not the file's final verdict, as the
    # processor-time limit is, but an unexpected error retried up to RAG_WORKER_MAX_ATTEMPTS (1 here:
    # given up at its next delivery). Before the test below, which leaves a slow file behind in the queue.
    mark = "blocks-the-parser"
    hook = TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=0, sleep_s=3600)
    run_at_child_start(hook, tmp_path, monkeypatch)
    [stuck] = await enqueue(runtime, [("stuck.txt", f"tea {mark}".encode())])
    env = process_env(
        database_url,
        data_dir,
        RAG_PARSE_TIMEOUT_S="1",
        RAG_WORKER_MAX_ATTEMPTS="1",
        RAG_WORKER_POLL_INTERVAL_S="0.1",
        RAG_WORKER_RETRY_BACKOFF_S="0.1",
    )
    worker = start_worker(env, tmp_path / "worker.log")
    workers.append(worker)
    failed = wait_for(
        lambda: (row := task_row(database_url, stuck.task_id))["status"] == "failed" and row,
        timeout=120,
        what="the stuck file given up",
    )
    assert failed["failures"] == 1, failed
    assert re.fullmatch(
        rf"Gave up after 1 attempts: Unexpected error while processing: the file's parser process was "
        rf"stopped after waiting {WALL_LIMIT_FACTOR} s for it \({WALL_LIMIT_FACTOR} x RAG_PARSE_TIMEOUT_S\), "
        r"in which it used only 0\.\d s of processor time: it was stuck \(blocked, stopped or deadlocked\) "
        r"or starved by a busy machine\.",
        failed["error"],
    ), failed
    assert worker.stop(signal.SIGTERM, timeout=60) == 0, worker.log_tail()


async def test_the_parser_process_dies_with_its_worker(
    runtime: Runtime, database_url: str, data_dir: Path, tmp_path: Path, workers: list[Proc]
) -> None:
    [task] = await enqueue(runtime, [("slow-again.txt", SLOW[1] + b"One more line.\n")])
    worker = start_worker(process_env(database_url, data_dir), tmp_path / "worker.log")
    workers.append(worker)
    wait_for(lambda: task_row(database_url, task.task_id)["status"] == "processing", what="parsing started")
    parser = psutil.Process(_parser_pid(worker))
    assert parser.is_running()
    # Stopped, it can neither finish the file nor notice the closed pipe and exit by itself: only the
    # signal its parent's death sends (SIGKILL ends a stopped process) takes it away.
    parser.suspend()
    worker.stop(signal.SIGKILL)
    # PR_SET_PDEATHSIG: a hung parse never outlives the worker that started it.
    wait_for(lambda: not parser.is_running() or parser.status() == psutil.STATUS_ZOMBIE, what="parser gone")
