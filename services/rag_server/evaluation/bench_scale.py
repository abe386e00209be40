"""`rag-server bench search --scale 10000,100000,...`: the search bench at several corpus sizes, one report.

Each scale is a `bench search` run of its own (its database built once in bulk, then reused; its timed
part under --lock when given), so a sweep can be stopped and resumed. The report puts latency, QPS,
build time and sizes side by side, with the growth exponent between neighbouring scales: how a cost
grows with the corpus (1.0: as fast as the corpus, 0: not at all).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from rag_server.config import Settings
from rag_server.evaluation.bench_search import BenchSearchOptions, run_bench_search
from rag_server.evaluation.report import write_json

_SCALE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}
MB = 2**20

SIZE_COLUMNS = {
    "chunks_heap": "chunks heap",
    "hnsw_index": "HNSW index",
    "bm25_postings_heap": "BM25 postings heap",
    "bm25_postings_index": "BM25 postings key",
    "bm25_terms": "BM25 terms",
    "bm25_pack": "BM25 pack",
    "database": "database",
}
BUILD_COLUMNS = {
    "load_s": "load",
    "bm25_index_s": "BM25 index",
    "hnsw_index_s": "HNSW index",
    "vacuum_s": "VACUUM",
    "bm25_pack_s": "BM25 pack",
}


def parse_scales(text: str) -> list[int]:
    """'10k,100000,1M' -> [10000, 100000, 1000000]: positive, distinct, in the order given."""
    scales: list[int] = []
    for part in text.replace("_", "").split(","):
        match = _SCALE.match(part.strip())
        if not match:
            raise ValueError(f"--scale: {part.strip()!r} is not a number of chunks (like 100000, 300k or 1M)")
        value = float(match[1]) * _UNITS[match[2].lower()]
        if value < 1 or value != int(value):
            raise ValueError(f"--scale: {part.strip()!r} is not a whole positive number of chunks")
        if int(value) in scales:
            raise ValueError(f"--scale: {int(value)} is given twice")
        scales.append(int(value))
    return scales


def label(chunks: int) -> str:
    """10000 -> '10k', 1000000 -> '1M'."""
    if chunks >= 1_000_000 and chunks % 100_000 == 0:
        return f"{chunks / 1_000_000:g}M"
    if chunks >= 1_000 and chunks % 100 == 0:
        return f"{chunks / 1_000:g}k"
    return str(chunks)


async def run_bench_scale(
    settings: Settings, options: BenchSearchOptions, scales: list[int]
) -> dict[str, Any]:
    """One bench search per scale, smallest first; the JSON is rewritten after each (partial sweeps stay)."""
    result: dict[str, Any] = {"scales": [], "clients": list(options.clients), "requests": options.requests}
    for scale in sorted(scales):
        one = await run_bench_search(settings, replace(options, scale=scale, json_path=None))
        result["scales"].append(one)
        write_json(options.json_path, result)
    return result


def _run(row: dict[str, Any], mode: str, clients: int) -> dict[str, Any] | None:
    return next((r for r in row.get("runs", {}).get(mode, []) if r["clients"] == clients), None)


def exponent(a: float, b: float, n_a: int, n_b: int) -> float | None:
    """k in cost ~ n^k between two scales (None when a cost is missing or zero)."""
    if a <= 0 or b <= 0 or n_a == n_b:
        return None
    return math.log(b / a) / math.log(n_b / n_a)


def latency_rows(result: dict[str, Any], modes: list[str]) -> list[list[str]]:
    rows = []
    for row in result["scales"]:
        for mode in modes:
            one, eight = _run(row, mode, 1), _run(row, mode, 8)
            stages = " ".join(f"{k}={v:g}" for k, v in (one or {}).get("server_stages_ms_p50", {}).items())
            rows.append(
                [
                    label(row["chunks"]),
                    mode,
                    f"{one['latency_ms']['p50']:.1f}" if one else "-",
                    f"{one['latency_ms']['p95']:.1f}" if one else "-",
                    f"{eight['qps']:.1f}" if eight else "-",
                    stages,
                    f"{row['buffers']['hit_rate']:.1%}" if "buffers" in row else "-",
                    f"{row['load_avg_1m_at_start']:.2f}",
                ]
            )
    return rows


def build_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in result["scales"]:
        build = row.get("build") or {}
        sizes = row.get("sizes_bytes") or {}
        rows.append(
            [
                label(row["chunks"]),
                f"{build['total_s']:.0f}" if "total_s" in build else "-",
                *(f"{build[k]:.0f}" if k in build else "-" for k in BUILD_COLUMNS),
                *(f"{sizes[k] / MB:,.0f}" if k in sizes else "-" for k in SIZE_COLUMNS),
                f"{build['maintenance_work_mem_mb']}MB" if "maintenance_work_mem_mb" in build else "-",
            ]
        )
    return rows


def growth_rows(result: dict[str, Any], modes: list[str]) -> list[list[str]]:
    """Growth exponents between neighbouring scales: p50 at 1 client per mode, then each size."""
    rows = []
    scales = result["scales"]
    for a, b in itertools.pairwise(scales):
        cells = [f"{label(a['chunks'])} -> {label(b['chunks'])}"]
        for mode in modes:
            ra, rb = _run(a, mode, 1), _run(b, mode, 1)
            k = (
                exponent(ra["latency_ms"]["p50"], rb["latency_ms"]["p50"], a["chunks"], b["chunks"])
                if ra and rb
                else None
            )
            cells.append("-" if k is None else f"{k:.2f}")
        for key in SIZE_COLUMNS:
            sa, sb = (a.get("sizes_bytes") or {}).get(key, 0), (b.get("sizes_bytes") or {}).get(key, 0)
            k = exponent(sa, sb, a["chunks"], b["chunks"])
            cells.append("-" if k is None else f"{k:.2f}")
        rows.append(cells)
    return rows


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def markdown_report(result: dict[str, Any], chart: str | None) -> str:
    modes = list(result["scales"][0]["runs"]) if result["scales"] else []
    first = result["scales"][0] if result["scales"] else {}
    lines = [
        "# Search cost by corpus size",
        "",
        f"HTTP /search on synthetic chunks (evaluation/synthetic.py), top_k {first.get('top_k')}, "
        f"{result['requests']} requests per row after one untimed hybrid pass over all "
        f"{first.get('queries')} queries and one untimed request per client; latency at 1 client, QPS at "
        "8. Load average: the 1-minute load "
        "when that scale's timed run started (2 shared cores); hit rate: shared-buffer hits / block reads "
        "during that scale's timed run.",
        "",
        *_markdown(
            [
                "chunks",
                "mode",
                "p50 ms",
                "p95 ms",
                "QPS (8 clients)",
                "server p50 per stage (ms)",
                "hit rate",
                "load",
            ],
            latency_rows(result, modes),
        ),
        "",
        "Build (seconds) and size on disk (MB; heaps include TOAST):",
        "",
        *_markdown(
            ["chunks", "build s", *BUILD_COLUMNS.values(), *SIZE_COLUMNS.values(), "maintenance_work_mem"],
            build_rows(result),
        ),
        "",
        "Growth exponent k (cost ~ chunks^k) between neighbouring scales; 1.0 grows as fast as the corpus:",
        "",
        *_markdown(
            ["scales", *(f"{m} p50" for m in modes), *SIZE_COLUMNS.values()], growth_rows(result, modes)
        ),
        "",
    ]
    if chart:
        lines += [f"![latency, QPS and sizes by corpus size]({chart})", ""]
    return "\n".join(lines)


def write_scale_chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    rows = result["scales"]
    xs = [row["chunks"] for row in rows]
    modes = list(rows[0]["runs"]) if rows else []
    fig, (lat, qps, size) = plt.subplots(1, 3, figsize=(15, 4.5))
    for mode in modes:
        ones = [_run(row, mode, 1) for row in rows]
        eights = [_run(row, mode, 8) for row in rows]
        line = lat.plot(
            xs, [r["latency_ms"]["p50"] if r else math.nan for r in ones], marker="o", label=f"{mode} p50"
        )
        lat.plot(
            xs,
            [r["latency_ms"]["p95"] if r else math.nan for r in ones],
            linestyle="--",
            color=line[0].get_color(),
            label=f"{mode} p95",
        )
        qps.plot(xs, [r["qps"] if r else math.nan for r in eights], marker="o", label=mode)
    for key, name in SIZE_COLUMNS.items():
        size.plot(
            xs,
            [(row.get("sizes_bytes") or {}).get(key, math.nan) / MB for row in rows],
            marker="o",
            label=name,
        )
    for ax, title, ylabel in (
        (lat, "latency, 1 client", "ms"),
        (qps, "throughput, 8 clients", "queries/s"),
        (size, "size on disk", "MB"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("chunks")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    size.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_scale_report(result: dict[str, Any], path: Path) -> None:
    """Markdown at `path`, the chart next to it (same name, .png)."""
    chart = path.with_suffix(".png")
    write_scale_chart(result, chart)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_report(result, chart.name))
