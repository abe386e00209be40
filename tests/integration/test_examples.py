"""The examples/ scripts run as users would run them (a subprocess), against this module's database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from rag_server.infra.runtime import Runtime
from tests.support.processes import process_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_llamaindex_retriever_example_ingests_and_prints_nodes(
    runtime: Runtime, database_url: str, data_dir: Path
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(EXAMPLES / "llamaindex_retriever.py"), "Fresnel lens lighthouse beam"],
        env=process_env(database_url, data_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "query: Fresnel lens lighthouse beam"
    assert len(lines) >= 2 and "lighthouses.txt#0" in lines[1] and "Fresnel" in result.stdout
    names = await runtime.pool.fetch("SELECT filename, status FROM documents")
    assert [(r["filename"], r["status"]) for r in names] == [("lighthouses.txt", "ready")]
