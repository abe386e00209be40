"""The worker's parsing child (ingestion/parse_process.py) used directly: how it reports its own death."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

import rag_server
from rag_server.config import Settings
from rag_server.ingestion import parse_clock
from rag_server.ingestion.parse_clock import WALL_LIMIT_FACTOR, timeout_message
from rag_server.ingestion.parse_process import ParseProcess, ParserCrashed, memory_message
from rag_server.ingestion.parsing import ParseError
from tests.integration.test_parse_limits import SLOW
from tests.support.child_hooks import (
    PANIC,
    SCANDIRS_UNDER,
    TOKENIZER_BURNS_THEN_SLEEPS_ON,
    TOKENIZER_FILLS_MEMORY_ON,
    TOKENIZER_PANICS_ON,
    run_at_child_start,
)


def _wait_until_dead(pid: int) -> None:
    """Block (the event loop included) until the process is a zombie or reaped: the moment where
    killing it again once reaped it before asyncio's child watcher, which then reported exit code 255."""
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    return
        except (FileNotFoundError, ProcessLookupError):
            return


async def test_a_killed_parser_is_reported_as_killed_not_as_an_unknown_exit(settings: Settings) -> None:
    parser = ParseProcess(settings)
    try:
        # Each round lost the race about half the time before the fix: eight make a miss unlikely.
        for _ in range(8):
            await parser.start()
            pid = parser.pid
            assert pid is not None
            parsing = asyncio.ensure_future(parser.prepare(*SLOW, "txt", None))
            await asyncio.sleep(0.3)  # the request is sent and being parsed
            os.kill(pid, signal.SIGKILL)
            _wait_until_dead(pid)
            with pytest.raises(ParserCrashed) as crashed:
                await parsing
            assert str(crashed.value) == (
                "the file's parser process was killed by SIGKILL (out of memory?) before it answered"
            )
    finally:
        await parser.close()


async def test_the_parser_parses_by_the_worker_settings_not_by_its_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An environment the child would read differently (here: not at all) from the worker's own settings.
    monkeypatch.setenv("RAG_CHUNK_SIZE", "not a number")
    parser = ParseProcess(settings.model_copy(update={"chunk_size": 64, "chunk_overlap": 0}))
    try:
        text = " ".join(f"word{i}" for i in range(2000)).encode()
        chunks = await parser.prepare("words.txt", text, "txt", None)
    finally:
        await parser.close()
    assert len(chunks) > 70  # 64-token chunks (the default 128 makes about half as many)


async def test_a_file_over_the_memory_limit_is_refused_with_the_limit_not_a_crash(settings: Settings) -> None:
    # Five million distinct words fill 96 MB while they are chunked. The child's answer itself failed
    # for lack of memory (the frames of the MemoryError still held it): the worker saw an exit with
    # code 1, an unexpected error retried five times, not the limit.
    parser = ParseProcess(settings.model_copy(update={"parse_max_memory_mb": 96}))
    words = " ".join(f"w{i}" for i in range(5_000_000)).encode()
    try:
        with pytest.raises(ParseError) as refused:
            await parser.prepare("words.txt", words, "txt", None)
    finally:
        await parser.close()
    assert str(refused.value) == memory_message(96)


@pytest.mark.parametrize(
    ("then", "before"),
    [
        # tiktoken out of memory: "PyObject pointer is null", reported as a malformed file.
        (PANIC, "Reading this text file failed inside a library"),
        # CPython 3.11 failing to allocate while it unwinds spins in C: the parse timeout, minutes later.
        ("while True: pass", "The file needed more than 60 s of processor time"),
        # A Rust allocation that fails aborts the process: a crash, retried as if it had been killed.
        ("import os, time; time.sleep(1); os.abort()", "killed by SIGABRT"),
    ],
    ids=["panic", "spin", "abort"],
)
async def test_a_library_out_of_memory_without_a_memory_error_is_the_memory_limit(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str, before: str
) -> None:
    mark = "fills-the-memory"
    # A panic's backtrace needs memory too: printing it spins like `while True`, which the worker's
    # watch would catch. Without it, the child's own answer is what is tested.
    monkeypatch.setenv("RUST_BACKTRACE", "0")
    run_at_child_start(TOKENIZER_FILLS_MEMORY_ON.format(mark=mark, then=then), tmp_path, monkeypatch)
    limits = {"parse_max_memory_mb": 64, "parse_timeout_s": 60.0}
    parser = ParseProcess(settings.model_copy(update=limits))
    try:
        with pytest.raises((ParseError, ParserCrashed)) as refused:
            await parser.prepare("notes.txt", f"tea {mark}".encode(), "txt", None)
        assert str(refused.value) == memory_message(64), before
        # The next file gets a fresh child, which parses it.
        chunks = await parser.prepare("notes.txt", b"green tea", "txt", None)
        assert [c.text for c in chunks] == ["green tea"]
    finally:
        await parser.close()


async def test_a_file_that_reached_the_memory_limit_and_still_parsed_leaves_no_mark_on_the_next(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's peak address space never goes down: a child that touched its limit and recovered
    would count every later failure (here a library's panic) as the memory limit."""
    fills, panics = "fills-the-memory", "needs-a-broken-tokenizer"
    monkeypatch.setenv("RUST_BACKTRACE", "0")
    hooks = TOKENIZER_FILLS_MEMORY_ON.format(mark=fills, then="pass") + TOKENIZER_PANICS_ON.format(
        mark=panics
    )
    run_at_child_start(hooks, tmp_path, monkeypatch)
    parser = ParseProcess(settings.model_copy(update={"parse_max_memory_mb": 64}))
    try:
        chunks = await parser.prepare("notes.txt", f"tea {fills}".encode(), "txt", None)
        assert [c.text for c in chunks] == [f"tea {fills}"]
        with pytest.raises(ParseError) as failed:
            await parser.prepare("notes.txt", f"tea {panics}".encode(), "txt", None)
        assert str(failed.value) != memory_message(64)
        assert "failed inside a library" in str(failed.value)
    finally:
        await parser.close()


async def test_a_rust_panic_fails_the_file_with_a_sentence_and_the_next_file_gets_a_fresh_parser(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = "needs-a-broken-tokenizer"
    run_at_child_start(TOKENIZER_PANICS_ON.format(mark=mark), tmp_path, monkeypatch)
    parser = ParseProcess(settings)
    try:
        await parser.start()
        first = parser.pid
        # Before: the panic (a BaseException) ended the child: ParserCrashed, an "Unexpected error" the
        # worker retried as if the process had been killed.
        with pytest.raises(ParseError) as failed:
            await parser.prepare("notes.csv", f"name,note\ntea,{mark}\n".encode(), "csv", None)
        assert str(failed.value) == (
            "Reading this CSV file failed inside a library it is read with (an internal error: Encoder and "
            "decoder must be of equal length. Encoder length: 2, decoder length: 1.); the file may be "
            "malformed: save it again or convert it, then upload it again."
        )
        chunks = await parser.prepare("notes.csv", b"name,note\ntea,green\n", "csv", None)
        assert [c.text for c in chunks] == ["name: tea; note: green"]
        assert parser.pid != first  # a fresh child: the panicked library's state may be broken
    finally:
        await parser.close()


async def test_the_parser_child_does_not_walk_the_package_for_a_code_stamp(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the worker compares code stamps (parse_process.STARTED_WITH); the child took one too when it
    # imported the module, walking every .py file of rag_server on each start (~3 ms).
    root, log = str(Path(rag_server.__file__).parent), tmp_path / "child.log"
    run_at_child_start(SCANDIRS_UNDER.format(root=root, log=str(log)), tmp_path, monkeypatch)
    parser = ParseProcess(settings)
    try:
        chunks = await parser.prepare("notes.csv", b"name,note\ntea,green\n", "csv", None)
        assert [c.text for c in chunks] == ["name: tea; note: green"]
        assert log.read_text().splitlines() == [f"started {parser.pid}"]
    finally:
        await parser.close()


# RAG_PARSE_TIMEOUT_S counts the parser's processor time; a wall-clock backstop WALL_LIMIT_FACTOR times
# longer ends a parser that waits without using any. Before, the limit was time by the clock: a busy
# machine (the worker's own embedding, other workers) could fail a file for good that passed later.
def _limit(settings: Settings, seconds: float) -> Settings:
    return settings.model_copy(update={"parse_timeout_s": seconds})


async def _stopped_then_fresh(parser: ParseProcess, mark: str, error: type[Exception]) -> str:
    """The sentence `parser` stops the marked file with (raising `error`); the next file gets a fresh
    child that reads it."""
    with pytest.raises(error) as stopped:
        await asyncio.wait_for(parser.prepare("notes.txt", f"tea {mark}".encode(), "txt", None), 600)
    chunks = await parser.prepare("notes.txt", b"green tea", "txt", None)
    assert [c.text for c in chunks] == ["green tea"]
    return str(stopped.value)


async def test_a_parser_waiting_past_the_limit_without_using_the_processor_is_not_stopped(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a parser starved of the processor on a busy machine looks like: time passes, its work does not.
    mark = "waits"
    run_at_child_start(
        TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=0, sleep_s=2), tmp_path, monkeypatch
    )
    parser = ParseProcess(_limit(settings, 1))
    try:
        chunks = await parser.prepare("notes.txt", f"tea {mark}".encode(), "txt", None)
    finally:
        await parser.close()
    assert [c.text for c in chunks] == [f"tea {mark}"]


async def test_a_parser_using_the_processor_past_the_limit_is_stopped_with_that_sentence(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = "spins"
    run_at_child_start(
        TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=3600, sleep_s=0), tmp_path, monkeypatch
    )
    parser = ParseProcess(_limit(settings, 1))
    try:
        stopped = await _stopped_then_fresh(parser, mark, ParseError)  # final: the same file does the same
        assert stopped == timeout_message(1)
        assert stopped.startswith("The file needed more than 1 s of processor time to read")
    finally:
        await parser.close()


async def test_a_parser_stuck_without_using_the_processor_is_stopped_by_the_clock_and_retried(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = "blocks"
    run_at_child_start(
        TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=0, sleep_s=3600), tmp_path, monkeypatch
    )
    parser = ParseProcess(_limit(settings, 1))
    try:
        await parser.start()
        started = time.monotonic()
        # ParserCrashed: the worker retries it (RAG_WORKER_MAX_ATTEMPTS); a parser that does nothing is
        # not the file's verdict.
        stopped = await _stopped_then_fresh(parser, mark, ParserCrashed)
        waited = time.monotonic() - started
        assert waited >= WALL_LIMIT_FACTOR  # not before the backstop (how much later: the machine's load)
        assert re.fullmatch(
            rf"the file's parser process was stopped after waiting {WALL_LIMIT_FACTOR} s for it "
            rf"\({WALL_LIMIT_FACTOR} x RAG_PARSE_TIMEOUT_S\), in which it used only \d+\.\d s of processor "
            r"time: it was stuck \(blocked, stopped or deadlocked\) or starved by a busy machine",
            stopped,
        ), stopped
    finally:
        await parser.close()


async def test_a_parser_using_no_processor_for_the_stall_window_is_stopped_long_before_the_backstop(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file that blocks its parser held a slot WALL_LIMIT_FACTOR x RAG_PARSE_TIMEOUT_S (50 minutes by
    # default) per attempt. The window is 60 s; 2 s here, under a limit of an hour.
    monkeypatch.setattr(parse_clock, "STALL_WINDOW_S", 2.0)
    mark = "blocks-after-working"
    run_at_child_start(
        TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=3, sleep_s=3600), tmp_path, monkeypatch
    )
    parser = ParseProcess(_limit(settings, 3600))
    try:
        stopped = await _stopped_then_fresh(parser, mark, ParserCrashed)  # retried, as the backstop's is
        assert re.fullmatch(
            r"the file's parser process was stopped after sleeping more than 2 s, in which it used only "
            r"0\.\d\d s of processor time: it was stuck \(blocked, stopped or deadlocked\)",
            stopped,
        ), stopped
    finally:
        await parser.close()


async def test_a_worker_that_did_not_run_for_a_while_does_not_stop_its_parser_on_waking(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The whole stack paused (Ctrl-Z on `rag-server up`, `docker pause`, a VM stopped): the clock ran on,
    # neither process did. On waking, the child had not "slept" for the window: the worker had not looked.
    monkeypatch.setattr(parse_clock, "STALL_WINDOW_S", 2.0)
    monkeypatch.setattr(parse_clock, "FROZEN_GAP_S", 1.0)
    mark = "sleeps-while-the-worker-is-frozen"
    run_at_child_start(
        TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=0, sleep_s=4), tmp_path, monkeypatch
    )
    parser = ParseProcess(_limit(settings, 3600))
    try:
        await parser.start()
        # The worker's event loop stands still for 3 s, from just after the request is sent.
        asyncio.get_running_loop().call_later(0.2, time.sleep, 3)
        chunks = await parser.prepare("notes.txt", f"tea {mark}".encode(), "txt", None)
    finally:
        await parser.close()
    assert [c.text for c in chunks] == [f"tea {mark}"]


async def test_a_parser_at_work_longer_than_the_stall_window_is_not_stopped(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_clock, "STALL_WINDOW_S", 1.0)
    mark = "works"
    run_at_child_start(
        TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=4, sleep_s=0), tmp_path, monkeypatch
    )
    parser = ParseProcess(_limit(settings, 3600))
    try:
        chunks = await parser.prepare("notes.txt", f"tea {mark}".encode(), "txt", None)
    finally:
        await parser.close()
    assert [c.text for c in chunks] == [f"tea {mark}"]


async def test_the_processor_time_a_parser_used_before_a_file_does_not_count_against_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each file takes 1.5 s of processor time under a 2 s limit, and 2.5 s or more by the clock. The
    # child is reused across files, and its start-up takes processor time too (~0.8 s).
    limit, mark = 2, "works-then-waits"
    run_at_child_start(
        TOKENIZER_BURNS_THEN_SLEEPS_ON.format(mark=mark, burn_s=1.5, sleep_s=1), tmp_path, monkeypatch
    )
    parser = ParseProcess(_limit(settings, limit))
    try:
        for n in (1, 2):
            chunks = await parser.prepare("notes.txt", f"tea {mark} {n}".encode(), "txt", None)
            assert [c.text for c in chunks] == [f"tea {mark} {n}"]
            assert parser.pid is not None
            used = psutil.Process(parser.pid).cpu_times()
            assert used.user + used.system > limit  # more than the limit, all files together
    finally:
        await parser.close()
