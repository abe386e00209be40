"""`rag-server eval` and `rag-server bench ...`: argument parsing and printing only.

Kept out of cli.py so the shared entry point only needs one line to register them; nothing heavy
is imported until a command actually runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag_server.config import Settings
from rag_server.paths import output_file_problem


def _quiet_libraries() -> None:
    # sentence-transformers draws its own per-batch progress bar at INFO; ours already shows progress.
    for name in ("sentence_transformers", "matplotlib", "bm25s"):
        logging.getLogger(name).setLevel(logging.WARNING)


Command = Callable[[argparse.Namespace, Settings], int]


def refusing_bad_input(command: Command) -> Command:
    """`command`, with bad input (a malformed dataset, an option value out of range) said in one line
    and exit status 2 instead of a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from rag_server.evaluation.beir import BeirFormatError

        try:
            return command(args, settings)
        except (BeirFormatError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


def output_path(text: str | None, option: str) -> Path | None:
    """The file an option names to write, checked now: a run of minutes or hours failed only at its
    end on a folder, a missing folder or a read-only one."""
    if text is None:
        return None
    path = Path(text)
    if problem := output_file_problem(path, makes_folders=True):
        raise ValueError(f"{option}: {problem}")
    return path


def parse_counts(text: str, option: str) -> list[int]:
    """`1,8,32` -> [1, 8, 32]: comma-separated whole numbers of at least 1 (clients, workers)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(
            f"{option} takes comma-separated whole numbers of at least 1, like 1,8; got {text!r}"
        )
    return counts


@refusing_bad_input
def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.evaluation.report import text_table
    from rag_server.evaluation.runner import EvalOptions, parse_modes, run_eval

    _quiet_libraries()
    options = EvalOptions(
        dataset=Path(args.dataset),
        modes=parse_modes(args.modes),
        top_k=args.top_k,
        max_queries=args.max_queries,
        peers=args.peers,
        fresh=args.fresh,
        json_path=output_path(args.json, "--json"),
        report_path=output_path(args.report, "--report"),
        collection=args.collection,
        group_by=args.group_by,
        tune=args.tune,
        holdout=args.holdout,
    )
    if args.peers:
        _require_eval_extra()
    result = asyncio.run(run_eval(settings, options))
    print()
    print(
        f"{result['dataset']}: {result['documents']} documents, {result['chunks']} chunks, "
        f"{result['queries']} queries (database {result['settings']['database']}, "
        f"{'reused' if result['settings']['reused_database'] else 'built now'})"
    )
    print(text_table(result))
    for label, path in (("json", options.json_path), ("report", options.report_path)):
        if path is not None:
            print(f"{label}: {path}")
    return 0


def _require_eval_extra() -> None:
    missing = []
    for module in ("bm25s", "Stemmer", "matplotlib", "llama_index.vector_stores.postgres"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ValueError(
            f"--peers/--report need the eval extra (missing: {', '.join(missing)}): pip install -e '.[eval]'"
        )


@refusing_bad_input
def cmd_bench_search(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.evaluation.bench_scale import parse_scales, run_bench_scale, write_scale_report
    from rag_server.evaluation.bench_search import BenchSearchOptions, run_bench_search
    from rag_server.evaluation.runner import parse_modes

    scales = parse_scales(args.scale)
    report_path = output_path(args.report, "--report")
    options = BenchSearchOptions(
        url=args.url,
        scale=scales[0],
        clients=parse_counts(args.clients, "--clients"),
        requests=args.requests,
        top_k=args.top_k,
        modes=parse_modes(args.modes),
        dataset=Path(args.dataset),
        json_path=output_path(args.json, "--json"),
        api_key=settings.api_key_value(),
        lock=Path(args.lock) if args.lock else None,
        build_only=args.build_only,
    )
    _quiet_libraries()
    if len(scales) == 1 and not args.report:
        return _print_bench(asyncio.run(run_bench_search(settings, options)), "search")
    if args.url:
        raise ValueError("several --scale values (or --report) build their own databases: drop --url")
    result = asyncio.run(run_bench_scale(settings, options, scales))
    if report_path is not None and not args.build_only:
        write_scale_report(result, report_path)
    for one in result["scales"]:
        if not args.build_only:
            _print_bench(one, "search")
    return 0


@refusing_bad_input
def cmd_bench_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.evaluation.bench_ingest import BenchIngestOptions, run_bench_ingest

    options = BenchIngestOptions(
        dataset=Path(args.dataset),
        workers=parse_counts(str(args.workers), "--workers"),
        limit=args.limit,
        json_path=output_path(args.json, "--json"),
    )
    _quiet_libraries()
    return _print_bench(run_bench_ingest(settings, options), "ingest")


def _print_bench(result: dict[str, Any], kind: str) -> int:
    from rag_server.evaluation.bench_report import ingest_table, search_table

    print()
    print(search_table(result) if kind == "search" else ingest_table(result))
    return 0


def _add_scale_arguments(s: argparse.ArgumentParser) -> None:
    """`bench search`'s options for sweeps over several --scale values."""
    s.add_argument("--report", default=None, metavar="OUT.md", help="Markdown table + a PNG chart next to it")
    s.add_argument("--lock", default=None, metavar="FILE", help="hold flock(FILE) while timing each scale")
    s.add_argument(
        "--build-only", action="store_true", help="build (or reuse) the bench databases; no timing"
    )


def register_eval_commands(sub: Any) -> None:
    """Add `eval` and `bench` to the `rag-server` sub-command parser."""
    p = sub.add_parser(
        "eval",
        help="score bm25/vector/hybrid on a BEIR dataset (nDCG@10, Recall, MRR, latency)",
        description="Ingest a BEIR dataset into an isolated eval database (reused on later runs) and "
        "score every search mode, optionally next to peers measured in the same run.",
    )
    p.set_defaults(handler=cmd_eval, creates_database=True)
    p.add_argument(
        "--dataset", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv"
    )
    p.add_argument("--modes", default="bm25,vector,hybrid", help="comma-separated (default: all three)")
    p.add_argument("--top-k", type=int, default=100, help="results per query, 1..100 (default 100)")
    p.add_argument("--max-queries", type=int, default=None, help="score only the first N test queries")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the results as JSON")
    p.add_argument("--report", default=None, metavar="OUT.md", help="write Markdown + a PNG chart next to it")
    p.add_argument("--peers", action="store_true", help="also run bm25s and LlamaIndex PGVectorStore hybrid")
    p.add_argument("--fresh", action="store_true", help="rebuild the eval database instead of reusing it")
    p.add_argument(
        "--collection",
        default=None,
        help="collection the corpus goes into (default: the dataset folder's name)",
    )
    p.add_argument(
        "--group-by",
        choices=("document", "chunk"),
        default="chunk",
        help="chunk (default, what /search returns by default): chunks fused, then folded to documents "
        "(the best chunk wins); document: /search's group_by=document, legs folded before fusion",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="first choose the convex hybrid_alpha that maximises nDCG@10 and write it to the collection",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        metavar="F",
        help="keep this fraction of the queries (spread evenly) out of --tune and score only them",
    )

    bench = sub.add_parser("bench", help="latency and throughput benchmarks (search, ingest)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")

    s = bench_sub.add_parser(
        "search",
        help="drive HTTP /search with concurrent clients; p50/p95/p99, QPS, per-stage split",
        description="Drive HTTP POST /search with 1, 8, 32 concurrent clients. Without --url a server is "
        "started on a bench database holding --scale synthetic chunks (built once, reused).",
    )
    s.set_defaults(handler=cmd_bench_search, creates_database=True)
    s.add_argument("--url", default=None, help="a running server (default: start one on a bench database)")
    s.add_argument(
        "--scale",
        default="20000",
        help="synthetic chunks in the bench database; a list (10k,100k,1M) runs each and writes one report",
    )
    s.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    s.add_argument("--requests", type=int, default=300, help="requests per mode and concurrency level")
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument("--modes", default="hybrid,bm25,vector")
    s.add_argument("--dataset", default="../shared/datasets/scifact", help="BEIR folder for texts/queries")
    s.add_argument("--json", default=None, metavar="OUT.json")
    _add_scale_arguments(s)

    i = bench_sub.add_parser(
        "ingest",
        help="ingest a BEIR corpus through the real API and workers; docs/s, chunks/s vs raw embedding",
        description="Write the corpus out as one .txt file per document, upload it through POST /upload "
        "to a server with N worker processes on a fresh bench database, wait for every batch, then "
        "embed the same chunk texts directly to measure the model's raw throughput (the ceiling).",
    )
    i.set_defaults(handler=cmd_bench_ingest, creates_database=True)
    i.add_argument("--dataset", default="../shared/datasets/scifact")
    i.add_argument("--workers", default="1", help="worker processes; a list like 1,2 runs each in turn")
    i.add_argument("--limit", type=int, default=None, help="only the first N documents")
    i.add_argument("--json", default=None, metavar="OUT.json")
