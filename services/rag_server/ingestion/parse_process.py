"""Parsing and chunking in a child process of the worker, with a time and a memory limit.

A parser runs on whatever a user uploads, and some files make one run for hours (a regular expression
that backtracks on a long line, a PDF whose structure loops) or take gigabytes. In the worker's own
thread pool such a file held its slot for good; one stuck in C code (`re`, lxml) also held the GIL, so
the whole worker froze: its other slot, its heartbeats (the message came back after the visibility
timeout and froze the next worker too) and its SIGTERM handler. Here the worker only waits on a pipe:
- past `RAG_PARSE_TIMEOUT_S` the child is killed and the task fails with a sentence saying so;
- over `RAG_PARSE_MAX_MEMORY_MB` (beyond what the child holds once started) an allocation fails in the
  child, which answers with that and exits; the task fails the same way;
- a child that dies (killed by the kernel, a crash in C) is an unexpected error of the task: retried
  up to RAG_WORKER_MAX_ATTEMPTS, and the worker goes on.
Timeouts and memory are final (`ParseError`): the same file does the same again. So is a panic in a
library written in Rust (tiktoken, pydantic-core, cryptography for encrypted PDFs), which pyo3 raises as
`PanicException`, a BaseException (not an Exception): the child answers with a sentence and exits (that
library's state may be broken), and the next file gets a fresh child.

One child per worker process, one file at a time (parsing is Python holding the GIL: two slots parsing
in threads took turns anyway); it starts with the worker, which is ready once the child has imported the
parsers and warmed the chunker up, and starts again after it was killed, unless rag_server's files
changed since the worker started (`CodeChanged`: the worker restarts instead). The child dies with the
worker (PR_SET_PDEATHSIG), so a worker killed with -9 leaves no parser running. Messages are
length-prefixed pickles over the child's stdin and stdout, the worker's Settings first (the child
parses, chunks and logs by the worker's settings, not by an environment that may say otherwise); its
log lines go to the worker's stderr, with the task's ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import signal
import struct
import sys
from pathlib import Path
from typing import Any

from rag_server.config import Settings
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.parsing import ParseError

# Named, not __name__: the child runs this module as __main__.
logger = logging.getLogger("rag_server.ingestion.parse_process")

_HEADER = struct.Struct("!Q")
# The child's start: imports (LlamaIndex, NLTK, the parsers) and the chunker's warm-up.
START_TIMEOUT_S = 300.0
# How long a child that closed its reply pipe gets to exit by itself before it is killed.
EXIT_GRACE_S = 5.0


class ParserCrashed(Exception):
    """The child stopped without answering (killed, or crashed in C code)."""


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


# The code this process runs: taken when it is imported, i.e. when the worker starts. The child (this
# module as __main__) never compares: it does not pay the walk of the package (3 ms per start).
STARTED_WITH = code_stamp() if __name__ != "__main__" else 0


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def timeout_message(seconds: float) -> str:
    return (
        f"The file took longer than {seconds:g} s to read (RAG_PARSE_TIMEOUT_S) and was stopped; it may be "
        "malformed or pathologically complex: split it or save it again, or raise the limit."
    )


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
        """The file's chunks, as pipeline.prepare_chunks_sync makes them. Raises ParseError (the file's
        fault, timeouts and memory included), ParserCrashed (the child died or failed unexpectedly on
        it) or ParserUnavailable (no child could be started: not the file's fault)."""
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
                reply = await asyncio.wait_for(self._exchange(proc, request), s.parse_timeout_s)
            except TimeoutError:
                logger.warning("parsing %s took over %g s: stopping its process", filename, s.parse_timeout_s)
                await self._stop()
                raise ParseError(timeout_message(s.parse_timeout_s)) from None
            except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError):
                code = await self._stop(grace_s=EXIT_GRACE_S)
                raise ParserCrashed(_died(code)) from None
            except BaseException:  # cancelled (shutdown grace exceeded): no half-read pipe is reused
                await asyncio.shield(self._stop())
                raise
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
            __name__,
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._proc = proc
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(_frame(self.settings))
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

    async def _exchange(self, proc: asyncio.subprocess.Process, request: dict[str, Any]) -> Any:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(_frame(request))
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
    (size,) = _HEADER.unpack(await stream.readexactly(_HEADER.size))
    return pickle.loads(await stream.readexactly(size))


# --- the child ------------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the worker dies (Linux), so a hung parse never outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def _limit_memory(megabytes: int) -> None:
    """Address space: what the child maps now (interpreter, imports) plus the budget."""
    try:
        import resource

        with open("/proc/self/status") as status:
            mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        limit = mapped + megabytes * 1024 * 1024
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, StopIteration, ValueError):
        logger.warning("the parser process's memory limit could not be set on this system")


def _read_exactly(stream: Any, size: int) -> bytearray | None:
    """`size` bytes, or None at the end of the stream. Allocated at once: a request larger than the
    memory limit is a MemoryError before it is read."""
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:
        n = stream.readinto(view[done:])
        if not n:
            return None
        done += n
    return data


def _serve(parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C and a SIGTERM to the whole group (systemd, `kill -- -PGID`) reach the worker, which stops
    # this child when it is done with the task (or kills it past its grace).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests = sys.stdin.buffer
    # The replies get their own copy of fd 1; fd 1 itself then points at stderr, so nothing else that
    # writes there (a print(), C code, a subprocess) can break into a reply.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from rag_server.infra.logs import configure_logging
    from rag_server.ingestion.pipeline import warm_up_chunking

    header = _read_exactly(requests, _HEADER.size)
    body = None if header is None else _read_exactly(requests, _HEADER.unpack(header)[0])
    if body is None:
        return  # the worker stopped before it sent the settings
    settings: Settings = pickle.loads(body)
    configure_logging(settings)
    # Every parser's imports now, and the chunker's tokenizers: each task then parses straight away.
    import bs4  # noqa: F401
    import charset_normalizer  # noqa: F401
    import docx  # noqa: F401
    import openpyxl  # noqa: F401
    import pptx  # noqa: F401
    import pypdf  # noqa: F401

    warm_up_chunking(settings)
    _limit_memory(settings.parse_max_memory_mb)

    def reply(value: Any) -> None:
        replies.write(_frame(value))
        replies.flush()

    reply(("ready", os.getpid()))
    while True:
        header = _read_exactly(requests, _HEADER.size)
        if header is None:
            return  # the worker closed the pipe: it is stopping
        outcome: tuple[str, Any] | None = None
        try:
            outcome = _answer(settings, requests, _HEADER.unpack(header)[0])
            if outcome is None:
                return
            reply(outcome)  # the frame is whole before a byte is written
            if outcome[0] == "panic":
                return  # a fresh process for the next file: the panicked library's state may be broken
            continue
        except MemoryError:
            pass
        # Said outside the handler, the chunks let go: inside it, the traceback's frames still held what
        # filled the memory, and even this small reply failed (the worker saw an exit, not the limit).
        outcome = None
        gc.collect()
        reply(("memory", None))
        return  # a fresh process for the next file


def _answer(settings: Settings, requests: Any, size: int) -> tuple[str, Any] | None:
    """Read one request and parse it: the reply, or None when the worker closed the pipe."""
    body = _read_exactly(requests, size)
    if body is None:
        return None
    request = pickle.loads(body)
    del body
    return _parse_one(settings, request)


# How a file type is named in a sentence.
_KINDS = {
    "txt": "text",
    "md": "Markdown",
    "html": "HTML",
    "docx": "Word",
    "pptx": "PowerPoint",
    "xlsx": "Excel",
}


def _is_rust_panic(exc: BaseException) -> bool:
    """pyo3's PanicException: each Rust extension module has its own class (none exports it), all named
    `pyo3_runtime.PanicException` and derived from BaseException."""
    return any(c.__module__ == "pyo3_runtime" and c.__name__ == "PanicException" for c in type(exc).__mro__)


def _panic_message(file_type: str, exc: BaseException) -> str:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    kind = _KINDS.get(file_type, file_type.upper())
    return (
        f"Reading this {kind} file failed inside a library it is read with (an internal error: {detail}); "
        "the file may be malformed: save it again or convert it, then upload it again."
    )


def _parse_one(settings: Settings, request: dict[str, Any]) -> tuple[str, Any]:
    """The reply for one file: its chunks, or why not."""
    from rag_server.infra.log_context import log_context
    from rag_server.ingestion.pipeline import prepare_chunks_sync

    ids = request["ids"]
    with log_context(request_id=ids.get("request_id"), task_id=ids.get("task_id")):
        try:
            chunks = prepare_chunks_sync(
                settings,
                request["filename"],
                request["content"],
                request["file_type"],
                request["title"],
            )
            return ("ok", chunks)
        except ParseError as exc:
            return ("parse_error", str(exc))
        except TimeoutError:  # NLTK's regular expressions run under a wall-clock limit (nltk.redos): a
            # busy machine can hit it, so it is retried like an unexpected error, not final
            return ("error", "the file's text could not be split into sentences in time")
        except RecursionError:
            return ("parse_error", "The file is nested too deeply to be read.")
        except MemoryError:
            raise
        except Exception as exc:
            logger.exception("parsing failed unexpectedly")
            return ("error", f"{exc.__class__.__name__}: {exc}")
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: as before
            if not _is_rust_panic(exc):
                raise
            logger.exception("a library panicked while parsing")
            return ("panic", _panic_message(request["file_type"], exc))


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
