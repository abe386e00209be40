"""What every `rag-server` command pays before it does anything: its parser imports each command's module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _imported_after(setup: str, prefixes: tuple[str, ...]) -> str:
    """The top-level packages among `prefixes` that a fresh interpreter has imported after `setup`."""
    listed = f"sorted({{m.split('.')[0] for m in sys.modules if m.startswith({prefixes!r})}})"
    code = f"import sys\n{setup}\nprint({listed})\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_command_line_does_not_import_llama_index_until_a_command_needs_it() -> None:
    # LlamaIndex took ~1.1 s of CPU of every command (`keys list`, `tasks list`), through the runtime's
    # LLM type and `reembed`'s chunker; only chat, ingestion and the eval use it.
    setup = (
        "from rag_server.cli import build_parser\n"
        "from rag_server.infra.runtime import open_runtime\n"
        "build_parser()"
    )
    assert _imported_after(setup, ("llama_index",)) == "[]"


def test_the_command_line_imports_alembic_and_pgmq_only_to_use_them() -> None:
    # Alembic (with SQLAlchemy and Mako) and pgmq's package (its psycopg and SQLAlchemy clients) took
    # ~0.65 s of every command's 1 s, `--help` included, through the runtime's imports.
    setup = (
        "from rag_server.cli import build_parser\n"
        "from rag_server.infra.runtime import open_runtime\n"
        "import rag_server.ingestion.worker\n"
        "build_parser()"
    )
    assert _imported_after(setup, ("alembic", "pgmq", "sqlalchemy")) == "[]"


def test_the_workers_own_process_does_not_import_llama_index() -> None:
    # Parsing and chunking run in the worker's child (ingestion/parse_process.py); the parent only
    # receives Chunk objects. It imported LlamaIndex through chunking.py: ~1 s and ~35 MB per worker.
    assert _imported_after("import rag_server.ingestion.worker", ("llama_index", "nltk")) == "[]"


def test_python_m_rag_server_cli_is_the_command_line() -> None:
    """`python -m rag_server.cli up` exited 0 without a word: the module had no entry point."""
    for module in ("rag_server", "rag_server.cli"):
        done = subprocess.run(
            [sys.executable, "-m", module, "-h"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "usage: rag-server" in done.stdout, (module, done.stdout, done.stderr)


def test_ingest_refuses_bad_metadata_in_one_error_line(tmp_path: Path) -> None:
    """`ingest --metadata '[1]'` (or JSON that does not parse) printed its sentence without the `error:`
    every other refused argument starts with; it exits 2 before reaching any server."""
    note = tmp_path / "note.md"
    note.write_text("A note.\n", encoding="utf-8")
    for given in ("[1]", "{bad"):
        command = [sys.executable, "-m", "rag_server", "ingest", "--url", "http://127.0.0.1:9"]
        done = subprocess.run(
            [*command, "--metadata", given, str(note)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --metadata "), done.stderr


def test_a_value_that_is_not_utf8_is_one_error_line_and_a_path_may_be_any_bytes(tmp_path: Path) -> None:
    """A name typed in a Latin-1 terminal (`café` as one byte 0xe9) ended in a traceback (asyncpg's
    DataError, httpx's UnicodeEncodeError), depending on the command; a file's name may be any bytes."""
    rag = [sys.executable, "-m", "rag_server"]
    # No database is reached: an unreachable one, never the checkout's embedded server.
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql://127.0.0.1:9/none"}
    for argv in (
        ["documents", "list", "--name", b"caf\xe9"],
        ["ingest", "--collection", b"c\xe9", "/nonexistent"],
    ):
        done = subprocess.run([*rag, *argv], capture_output=True, timeout=120, env=env)
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 2 and "Traceback" not in stderr, (argv, stderr)
        assert stderr.strip().splitlines()[-1].startswith("error: ") and "UTF-8" in stderr, stderr
    # A path of such bytes is a file's name: refused for not existing, not for its bytes.
    done = subprocess.run(
        [*rag, "import", "jsonl", b"/nonexistent/caf\xe9.jsonl"], capture_output=True, timeout=120, env=env
    )
    assert "UTF-8" not in done.stderr.decode("utf-8", "replace")
