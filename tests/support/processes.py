"""Real processes for tests: `rag-server serve` and `rag-server worker` as subprocesses.

The same helpers the benchmarks use (rag_server.evaluation.processes), under the tests' names, plus
`settings_env`: the environment that runs a child with the very settings an in-process app has.
"""

from __future__ import annotations

import json
import subprocess
import sys

from rag_server.config import Settings
from rag_server.evaluation.processes import (
    START_TIMEOUT_S,
    free_port,
    listens_on,
    start,
    start_listening,
    start_server,
    start_worker,
    wait_healthy,
)
from rag_server.evaluation.processes import Child as Proc
from rag_server.evaluation.processes import child_env as process_env

__all__ = [
    "START_TIMEOUT_S",
    "Proc",
    "free_port",
    "listens_on",
    "process_env",
    "rag_server_cli",
    "settings_env",
    "start",
    "start_listening",
    "start_server",
    "start_worker",
    "wait_healthy",
]


def settings_env(settings: Settings) -> dict[str, str]:
    """A child environment with every field `settings` set explicitly, as the RAG_* variable it reads,
    so a worker subprocess and the in-process app run on one database with one configuration."""
    fields = settings.model_dump(mode="json", exclude_unset=True, exclude={"database_url", "data_dir"})
    extra = {f"RAG_{name.upper()}": v if isinstance(v, str) else json.dumps(v) for name, v in fields.items()}
    assert settings.database_url and settings.data_dir
    return process_env(settings.database_url, settings.data_dir, **extra)


def rag_server_cli(
    settings: Settings, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`rag-server ARGS...` run to its end with `settings` (settings_env), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "rag_server", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
