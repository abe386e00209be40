"""The worker's parsing child (`python -m rag_server.ingestion.parse_child <worker pid>`): reads the
worker's Settings, then one file per request, and answers each with its chunks or why not. What it is
for, its limits and how the worker drives it: ingestion/parse_process.py.

Messages both ways are length-prefixed pickles (`HEADER`, `frame`). It never imports parse_process: a
child start does not walk the package for the worker's code stamp.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal
import struct
import sys
from typing import Any

from rag_server.config import Settings
from rag_server.infra.lifetime import die_with_parent
from rag_server.ingestion.parsing import ParseError

# Named, not __name__: this module runs as __main__.
logger = logging.getLogger("rag_server.ingestion.parse_child")

HEADER = struct.Struct("!Q")

# NLTK's package imports SciPy and scikit-learn for statistics, translation and a dependency parser the
# chunker never calls, and guards each of those imports (both are optional for NLTK). Hidden from the
# child, a start takes ~1.9 s less CPU and the child ~90 MB less memory (reports/test-suite-time.md).
NOT_NEEDED_TO_PARSE = ("scipy", "sklearn")


def _skip_unneeded_imports() -> None:
    for name in NOT_NEEDED_TO_PARSE:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: `import name` fails


def frame(value: Any) -> bytes:
    """One message: its pickle's length, then the pickle."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


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


def reached_memory_limit(pid: int | str, megabytes: int) -> bool:
    """Whether a process's address space has reached its limit (within an eighth of the budget): then
    an allocation failed in it. Where the process cannot be read (no /proc, gone): False.

    Not every failed allocation is a MemoryError this child can answer with: a Rust library panics
    ("PyObject pointer is null", its MemoryError only printed by pyo3), and CPython 3.11 can spin
    forever failing to allocate while it unwinds. The peak tells these from a malformed file."""
    try:
        with open(f"/proc/{pid}/status") as status:
            peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmPeak:"))
        with open(f"/proc/{pid}/limits") as limits:
            limit = next(line for line in limits if line.startswith("Max address space")).split()[3]
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    margin = max(16, megabytes // 8) * 1024 * 1024
    return limit.isdigit() and peak >= int(limit) - margin


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


def serve(parent: int) -> None:
    die_with_parent(parent, signal.SIGKILL)  # a hung parse never outlives its worker
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

    _skip_unneeded_imports()
    from rag_server.infra.logs import configure_logging
    from rag_server.ingestion.preparation import warm_up_chunking

    header = _read_exactly(requests, HEADER.size)
    body = None if header is None else _read_exactly(requests, HEADER.unpack(header)[0])
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
        replies.write(frame(value))
        replies.flush()

    reply(("ready", os.getpid()))
    while True:
        header = _read_exactly(requests, HEADER.size)
        if header is None:
            return  # the worker closed the pipe: it is stopping
        outcome: tuple[str, Any] | None = None
        try:
            outcome = _answer(settings, requests, HEADER.unpack(header)[0])
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
    return parse_one(settings, request)


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


def parse_one(settings: Settings, request: dict[str, Any]) -> tuple[str, Any]:
    """The reply for one file: its chunks, or why not."""
    from rag_server.infra.log_context import log_context
    from rag_server.ingestion.preparation import prepare_chunks_sync

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
            if reached_memory_limit("self", settings.parse_max_memory_mb):
                raise MemoryError from exc
            logger.exception("a library panicked while parsing")
            return ("panic", _panic_message(request["file_type"], exc))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
