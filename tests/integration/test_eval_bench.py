"""`rag-server bench search` / `bench ingest` plumbing at toy sizes: real server, workers, HTTP.

No timing is asserted (numbers come from `just bench`); these check that every request is made
and answered, that the synthetic load is complete and reused, and the JSON shape.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rag_server.evaluation.bench_search import drive
from rag_server.infra import admin
from rag_server.infra.database import with_database
from tests.integration.test_eval import make_dataset


def run_cli(args: list[str], database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rag_server", *args], env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("beir") / "tiny")


async def test_bench_search_loads_synthetic_chunks_once(
    dataset: Path, database_url: str, data_dir: Path, pg_server: str, tmp_path: Path
) -> None:
    args = [
        "bench",
        "search",
        "--dataset",
        str(dataset),
        "--scale",
        "300",
        "--requests",
        "12",
        "--clients",
        "1,3",
        "--modes",
        "hybrid,bm25",
    ]
    proc = run_cli([*args, "--json", str(tmp_path / "s.json")], database_url, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["scale"] == 300 and result["chunks"] == 300
    assert list(result["runs"]) == ["hybrid", "bm25"]
    for runs in result["runs"].values():
        assert [r["clients"] for r in runs] == [1, 3]
        for run in runs:
            assert run["errors"] == 0 and run["requests"] == 12
            assert set(run["latency_ms"]) == {"p50", "p95", "p99"}
            assert "total" in run["server_stages_ms_p50"]
    assert "bm25" in result["runs"]["hybrid"][0]["server_stages_ms_p50"]
    assert "hybrid" in proc.stdout and "QPS" in proc.stdout

    # The synthetic chunks are BM25-indexed like ingested ones (the statement triggers fired).
    names = await admin.list_databases(pg_server, "bench_search_300_")
    assert len(names) == 1
    async with admin.connection(with_database(pg_server, names[0])) as conn:
        assert await conn.fetchval("SELECT count(*) FROM documents") == 30
        assert await conn.fetchval("SELECT count(DISTINCT chunk_id) FROM bm25_postings") == 300

    again = run_cli([*args, "--clients", "1"], database_url, data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(reused)" in again.stderr


def test_bench_ingest_through_api_and_workers(
    dataset: Path, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        [
            "bench",
            "ingest",
            "--dataset",
            str(dataset),
            "--limit",
            "8",
            "--workers",
            "1,2",
            "--json",
            str(tmp_path / "i.json"),
        ],
        database_url,
        data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "i.json").read_text())
    assert [r["workers"] for r in result["runs"]] == [1, 2]
    # Each worker process runs the configured concurrency (default 2), like `rag-server worker`.
    assert [r["concurrency"] for r in result["runs"]] == [2, 2]
    assert result["embedding_precision"] == "fp32"
    for run in result["runs"]:
        assert run["documents"] == 8 and run["failed"] == 0 and run["chunks"] >= 8
        assert run["ratio_to_raw"] > 0
    # Small runs: the ceiling embeds every chunk text, once after each run.
    assert result["raw"]["chunks"] == result["runs"][0]["chunks"]
    assert len(result["raw"]["measurements_chunks_per_s"]) == 2
    assert "ratio" in proc.stdout


async def _searches_served(url: str, mode: str) -> float:
    """The app's own count of searches of `mode` (its Prometheus histogram of total stage times)."""
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
    prefix = f'rag_search_stage_duration_seconds_count{{mode="{mode}",stage="total"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def test_drive_times_its_requests_after_one_untimed_search_per_client(live_app_url: str) -> None:
    before = await _searches_served(live_app_url, "bm25")
    run = await drive(live_app_url, ["zebrafish", "heart", "cells"], "bm25", 3, 7, 5, {})
    assert run["errors"] == 0 and run["qps"] > 0
    # 7 timed searches plus one warm-up per client reached the server.
    assert await _searches_served(live_app_url, "bm25") - before == 7 + 3

    # One client's warm-up refused (422: an empty query) ends the run at once, and the clients whose
    # warm-up succeeded are not left waiting for it.
    with pytest.raises(httpx.HTTPStatusError):
        await asyncio.wait_for(drive(live_app_url, ["", "heart", "cells"], "bm25", 3, 7, 5, {}), 30)
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if "one_client" in t.get_coro().__qualname__]
