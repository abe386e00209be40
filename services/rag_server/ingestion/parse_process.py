"""Parsing and chunking in a child process of the worker, with a time and a memory limit.

A parser runs on whatever a user uploads, and some files make one run for hours (a regular expression
that backtracks on a long line, a PDF whose structure loops) or take gigabytes. In the worker's own
thread pool such a file held its slot for good; one stuck in C code (`re`, lxml) also held the GIL, so
the whole worker froze: its other slot, its heartbeats (the message came back after the visibility
timeout and froze the next worker too) and its SIGTERM handler. Here the worker only waits on a pipe:
- past `RAG_PARSE_TIMEOUT_S` seconds of processor time spent on the file (counted from the request:
  the child's start-up and earlier files do not count), the child is killed and the task fails with a
  sentence saying so; a child that sleeps without using the processor (blocked, stopped, deadlocked) is
  killed within a minute and the task retried like a crash (below). How each is counted: parse_clock.py;
- over `RAG_PARSE_MAX_MEMORY_MB` (beyond what the child holds once started) an allocation fails in the
  child, which answers with that and exits; the task fails the same way. Where the failure is not a
  MemoryError it can answer with (a Rust library panics or aborts, CPython spins), the worker, which
  watches the child's peak memory, tells the limit from a malformed file or a timeout;
- a child that dies (killed by the kernel, a crash in C) is an unexpected error of the task: retried
  up to RAG_WORKER_MAX_ATTEMPTS, and the worker goes on.
The processor-time and memory limits are final (`ParseError`): the same file does the same again. So is
a panic in a library written in Rust (tiktoken, pydantic-core, cryptography for encrypted PDFs), which
pyo3 raises as `PanicException`, a BaseException (not an Exception): the child answers with a sentence
and exits (that library's state may be broken), and the next file gets a fresh child.

One child per worker process, one file at a time (parsing is Python holding the GIL: two slots parsing
in threads took turns anyway); it starts with the worker, which is ready once the child has imported the
parsers and warmed the chunker up, and starts again after it was killed, unless rag_server's files
changed since the worker started (`CodeChanged`: the worker restarts instead). The child dies with the
worker (PR_SET_PDEATHSIG), so a worker killed with -9 leaves no parser running. Messages are
length-prefixed pickles over the child's stdin and stdout, the worker's Settings first (the child
parses, chunks and logs by the worker's settings, not by an environment that may say otherwise); its
log lines go to the worker's stderr, with the task's ids. The child's side is ingestion/parse_child.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

from rag_server.config import Settings
from rag_server.ingestion import parse_child
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.parse_child import HEADER, frame
from rag_server.ingestion.parse_clock import OverTime, ParseClock, Stalled
from rag_server.ingestion.parsing import ParseError

logger = logging.getLogger(__name__)

# The child's start: imports (LlamaIndex, NLTK, the parsers) and the chunker's warm-up.
START_TIMEOUT_S = 300.0
# How long a child that closed its reply pipe gets to exit by itself before it is killed.
EXIT_GRACE_S = 5.0
# How often the worker looks at the child's memory and time while it parses, and how long a child whose
# memory reached its limit gets to answer before it is stopped (it answers in well under a second when
# it can).
POLL_S = 0.5
MEMORY_GRACE_S = 10.0


class _OverMemory(Exception):
    """The child reached its memory limit and then died or stopped answering."""


class ParserCrashed(Exception):
    """The child stopped without answering (killed, or crashed in C code), or was stopped after waiting
    past the wall-clock backstop without using up its processor time."""


class ParserUnavailable(Exception):
    """The child could not be started (an upgrade in place, a broken environment): not the file's fault."""


class CodeChanged(ParserUnavailable):
    """rag_server's files changed since this worker started (an upgrade in place): a child started now
    would run other code than its worker, so the worker must restart instead."""


def code_stamp() -> int:
    """What rag_server's Python files are on disk now (names, sizes, modification times)."""
    root = Path(__file__).resolve().parent.parent
    try:
        files = [
            (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*.py")
        ]
    except OSError:  # a file went while listing: an upgrade is under way (any stamp taken later differs)
        return 0
    return hash(tuple(sorted(files)))


# The code this process runs: taken when it is imported, i.e. when the worker starts. The child
# (parse_child) does not import this module: it does not pay the walk of the package (3 ms per start).
STARTED_WITH = code_stamp()


def memory_message(megabytes: int) -> str:
    return (
        f"The file needed more than {megabytes} MB of memory to read (RAG_PARSE_MAX_MEMORY_MB) and was "
        "stopped: split it into smaller files, or raise the limit."
    )


def _died(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
    else:
        how = f"exited with code {code}"
    return f"the file's parser process {how} before it answered"


class ParseProcess:
    """The worker's parsing child: `start()`, then `prepare(...)` per task, `close()` at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._said_no_cpu_clock = False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        """Start the child and wait until it is ready (imports and warm-up done)."""
        async with self._lock:
            await self._running()

    async def prepare(
        self,
        filename: str,
        content: bytes,
        file_type: str,
        title: str | None,
        *,
        ids: dict[str, str | None] | None = None,
    ) -> list[Chunk]:
        """The file's chunks, as preparation.prepare_chunks_sync makes them. Raises ParseError (the file's
        fault, the processor-time and memory limits included), ParserCrashed (the child died, failed
        unexpectedly on it or waited past the wall-clock backstop) or ParserUnavailable (no child could
        be started: not the file's fault)."""
        s = self.settings
        request = {
            "filename": filename,
            "content": content,
            "file_type": file_type,
            "title": title,
            "ids": ids or {},
        }
        async with self._lock:
            try:
                proc = await self._running()
            except ParserCrashed as exc:
                raise ParserUnavailable(str(exc)) from None
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                raise ParserUnavailable(f"the parser process could not start: {exc!r}") from None
            try:
                reply = await self._watch(proc, request)
            except _OverMemory:
                await self._stop()
                raise ParseError(memory_message(s.parse_max_memory_mb)) from None
            except OverTime as exc:
                logger.warning("parsing %s: %s", filename, exc)
                await self._stop()
                raise ParseError(str(exc)) from None
            except Stalled as exc:
                # Not final: a child that waits without using the processor is not obviously the file's
                # doing (a stopped process, a lock in a library, a machine too busy to run it), and the
                # attempts (RAG_WORKER_MAX_ATTEMPTS) still bound a file that does it every time.
                logger.warning("parsing %s: %s", filename, exc)
                await self._stop()
                raise ParserCrashed(str(exc)) from None
            except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError):
                code = await self._stop(grace_s=EXIT_GRACE_S)
                raise ParserCrashed(_died(code)) from None
            except BaseException:  # cancelled (shutdown grace exceeded): no half-read pipe is reused
                await asyncio.shield(self._stop())
                raise
            if reply[0] in ("ok", "parse_error") and parse_child.reached_memory_limit(
                proc.pid, s.parse_max_memory_mb
            ):
                # It touched its limit and recovered, but a peak never goes down: reused, it would count
                # every later failure as out of memory. The next file gets a fresh child.
                await self._stop()
        kind, value = reply
        if kind == "ok":
            chunks: list[Chunk] = value
            return chunks
        if kind == "parse_error":
            raise ParseError(value)
        if kind == "memory":
            await self._stop()  # it exits after a MemoryError; do not wait for that
            raise ParseError(memory_message(s.parse_max_memory_mb))
        if kind == "panic":
            await self._stop()  # it exits after a panic too
            raise ParseError(value)
        raise ParserCrashed(value)

    async def close(self) -> None:
        async with self._lock:
            await self._stop()

    async def _running(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        await self._stop()
        if code_stamp() != STARTED_WITH:
            raise CodeChanged(
                "rag-server's files changed since this worker started (an upgrade?): a parser started now "
                "would run other code than the worker's"
            )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # the worker's working directory is not on the child's path (a docx.py there would win)
            "-m",
            parse_child.__name__,
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._proc = proc
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(frame(self.settings))
            await proc.stdin.drain()
            ready = await asyncio.wait_for(_receive(proc.stdout), START_TIMEOUT_S)
        except BaseException:
            await asyncio.shield(self._stop())
            raise
        if ready != ("ready", proc.pid):
            await self._stop()
            raise ParserCrashed(f"the file's parser process did not start (it said {ready!r})")
        logger.info("parser process %d ready", proc.pid)
        return proc

    async def _watch(self, proc: asyncio.subprocess.Process, request: dict[str, Any]) -> Any:
        """The child's reply to `request`, its memory and time watched meanwhile: a child that reached its
        memory limit and then dies (a library aborts) or spins (CPython failing to allocate while it
        unwinds) is `_OverMemory`, not a crash or the time limit; past its time, `OverTime` or
        `Stalled` (`ParseClock.check`)."""
        loop = asyncio.get_running_loop()
        clock = ParseClock(proc.pid, loop.time())
        if clock.cpu_before is None and not self._said_no_cpu_clock:
            self._said_no_cpu_clock = True
            logger.warning(
                "the parser process's processor time cannot be read on this system (no /proc): "
                "RAG_PARSE_TIMEOUT_S counts time by the clock instead"
            )
        exchange = asyncio.ensure_future(self._exchange(proc, request))
        reached_at: float | None = None
        try:
            while True:
                await asyncio.wait({exchange}, timeout=POLL_S)
                if exchange.done():
                    try:
                        return exchange.result()
                    except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError):
                        if reached_at is None:
                            raise
                        raise _OverMemory from None
                if reached_at is None:
                    if parse_child.reached_memory_limit(proc.pid, self.settings.parse_max_memory_mb):
                        reached_at = loop.time()
                elif loop.time() - reached_at > MEMORY_GRACE_S:
                    raise _OverMemory
                clock.check(loop.time(), self.settings.parse_timeout_s)
        finally:
            exchange.cancel()  # the child is stopped in every case that leaves it unread

    async def _exchange(self, proc: asyncio.subprocess.Process, request: dict[str, Any]) -> Any:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(frame(request))
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading (a request over its memory limit): its answer says why, if any
        return await _receive(proc.stdout)

    async def _stop(self, grace_s: float = 0.0) -> int | None:
        """Reap the child (if any), killed unless it exits within `grace_s`; its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if grace_s:
            # A child that closed its pipe is dying: killing it now would misreport how it died.
            # Popen.kill() polls first and reaps a child that is already dead, before asyncio's child
            # watcher, which then reports exit code 255 instead of the signal that killed it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace_s)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return await proc.wait()


async def _receive(stream: asyncio.StreamReader) -> Any:
    (size,) = HEADER.unpack(await stream.readexactly(HEADER.size))
    return pickle.loads(await stream.readexactly(size))
