"""Result tables for the terminal and Markdown, the PNG bar chart of nDCG@10 / Recall@100, and
the JSON file every eval and bench command can write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRIC_COLUMNS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def result_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, metrics) for our modes, then the peers."""
    rows = [(mode, scores) for mode, scores in result["modes"].items()]
    rows += [(f"peer: {name}", scores) for name, scores in result.get("peers", {}).items()]
    return rows


def _cells(scores: dict[str, Any]) -> list[str]:
    latency = scores.get("latency_ms", {})
    return [f"{scores[m]:.4f}" for m in METRIC_COLUMNS] + [
        f"{latency.get('p50', 0.0):.1f}",
        f"{latency.get('p95', 0.0):.1f}",
    ]


HEADER = ["system", "nDCG@10", "R@10", "R@100", "MRR@10", "p50 ms", "p95 ms"]


def text_table(result: dict[str, Any]) -> str:
    rows = [[label, *_cells(scores)] for label, scores in result_rows(result)]
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    for label, scores in result_rows(result):
        lines.append("| " + " | ".join([label, *_cells(scores)]) + " |")
    return "\n".join(lines)


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    """`result` as indented JSON at `path` (folders created); nothing when path is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def write_chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    rows = result_rows(result)
    labels = [label.removeprefix("peer: ") for label, _ in rows]
    ndcg = [scores["ndcg@10"] for _, scores in rows]
    recall = [scores["recall@100"] for _, scores in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4))
    bars1 = ax.bar([x - 0.2 for x in xs], ndcg, width=0.4, label="nDCG@10")
    bars2 = ax.bar([x + 0.2 for x in xs], recall, width=0.4, label="Recall@100")
    ax.bar_label(bars1, fmt="%.3f", fontsize=7)
    ax.bar_label(bars2, fmt="%.3f", fontsize=7)
    ax.set_xticks(list(xs), labels, rotation=15, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{result['dataset']}: {result['documents']} docs, {result['queries']} queries")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(
    result: dict[str, Any], path: Path, chart: Path | None, peer_notes: dict[str, str] | None = None
) -> None:
    s = result["settings"]
    lines = [
        f"# Retrieval quality: {result['dataset']}",
        "",
        f"{result['documents']} documents, {result['chunks']} chunks, {result['queries']} test queries; "
        f"embedding model `{s.get('embedding_model')}`, chunk size {s.get('chunk_size')} "
        f"(overlap {s.get('chunk_overlap')}), top_k {s.get('top_k')}. Chunk hits are folded to documents "
        "(best chunk per document) before scoring. nDCG@10 uses linear gains (trec_eval). Latency is per "
        "query, sequential, including the query embedding.",
        "",
        markdown_table(result),
        "",
    ]
    notes = peer_notes or {}
    if notes:
        lines += ["Peers, measured in the same run on the same documents and embeddings:", ""]
        lines += [f"- **{name}**: {note}" for name, note in notes.items()]
        lines.append("")
    if chart is not None:
        lines += [f"![nDCG@10 and Recall@100]({chart.name})", ""]
    lines += ["Settings:", "", "```", *(f"{k}: {v}" for k, v in s.items()), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def write_outputs(result: dict[str, Any], json_path: Path | None, report_path: Path | None) -> None:
    """An eval's JSON, and with `report_path` its Markdown and the PNG chart next to it."""
    write_json(json_path, result)
    if report_path is not None:
        chart = report_path.with_suffix(".png")
        write_chart(result, chart)
        from rag_server.evaluation.peers import PEER_NOTES

        notes = {name: PEER_NOTES[name] for name in result["peers"] if name in PEER_NOTES}
        write_markdown(result, report_path, chart, notes)
