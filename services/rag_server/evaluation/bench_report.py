"""Terminal tables for `rag-server bench search` and `rag-server bench ingest`, and the machine's load."""

from __future__ import annotations

import os
from typing import Any

from rag_server.infra.cores import usable_cores


def machine_load() -> dict[str, Any]:
    """How busy the machine was when a bench started: other processes change every number."""
    # The cores this process may use (a container's quota), under the key earlier reports used.
    return {"load_avg_1m_at_start": round(os.getloadavg()[0], 2), "cpu_count": usable_cores()}


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def search_table(result: dict[str, Any]) -> str:
    header = ["mode", "clients", "p50 ms", "p95 ms", "p99 ms", "QPS", "errors", "server p50 per stage (ms)"]
    rows = []
    for mode, runs in result["runs"].items():
        for run in runs:
            lat = run["latency_ms"]
            stages = " ".join(f"{k}={v:g}" for k, v in run["server_stages_ms_p50"].items())
            rows.append(
                [
                    mode,
                    str(run["clients"]),
                    f"{lat['p50']:.1f}",
                    f"{lat['p95']:.1f}",
                    f"{lat['p99']:.1f}",
                    f"{run['qps']:.1f}",
                    str(run["errors"]),
                    stages,
                ]
            )
    where = result.get("url") or f"{result.get('chunks')} chunks (synthetic, --scale {result.get('scale')})"
    title = (
        f"HTTP /search, {where}, top_k {result['top_k']}, {result['requests']} requests per row "
        f"(load average at start {result['load_avg_1m_at_start']} on {result['cpu_count']} cores)"
    )
    return f"{title}\n{_table(header, rows)}"


def ingest_table(result: dict[str, Any]) -> str:
    header = ["workers", "docs", "chunks", "wall s", "docs/s", "chunks/s", "raw chunks/s", "ratio", "failed"]
    rows = [
        [
            str(r["workers"]),
            str(r["documents"]),
            str(r["chunks"]),
            f"{r['wall_s']:.1f}",
            f"{r['docs_per_s']:.1f}",
            f"{r['chunks_per_s']:.1f}",
            f"{result['raw']['chunks_per_s']:.1f}",
            f"{r['ratio_to_raw']:.0%}",
            str(r["failed"]),
        ]
        for r in result["runs"]
    ]
    raw = result["raw"]
    title = (
        "ingest through POST /upload + worker(s); ceiling: best of "
        f"{raw['measurements_chunks_per_s']} chunks/s embedding {raw['chunks']} of the same chunk texts "
        f"directly (batch {raw['batch_size']}); load average at start {result['load_avg_1m_at_start']} "
        f"on {result['cpu_count']} cores"
    )
    return f"{title}\n{_table(header, rows)}"
