"""`rag-server reembed`: a new embedding model without downtime (rag_server.generations)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rag_server.cli_args import whole_number
from rag_server.config import Settings
from rag_server.generations.store import MAX_DIM, Generation, active_generation
from rag_server.infra.embeddings import EmbeddingError, model_settings
from rag_server.infra.runtime import Runtime, run_with_runtime

HELP = "re-embed every chunk with another model through the workers, then switch search to it"


def register_reembed_command(sub: Any) -> None:
    p = sub.add_parser("reembed", help=HELP, description=__doc__)
    p.set_defaults(handler=cmd_reembed)
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--model", help="the new model's name (start, or resume, its re-embed)")
    action.add_argument("--status", action="store_true", help="print every generation and its progress")
    action.add_argument("--rollback", action="store_true", help="search the retired generation again")
    action.add_argument(
        "--finalize", action="store_true", help="drop the retired generation's vectors and index"
    )
    p.add_argument(
        "--dim", type=whole_number(1, MAX_DIM), help="the new model's dimension (required with --model)"
    )
    p.add_argument("--provider", choices=["local", "ollama", "openai"], default=None)
    p.add_argument("--base-url", default=None, help="the provider's URL (ollama, openai)")
    p.add_argument("--eval", type=Path, default=None, metavar="DATASET", help="BEIR dir: nDCG@10 of both")
    p.add_argument("--no-wait", action="store_true", help="queue the work and return")
    p.add_argument("--no-switch", action="store_true", help="wait for the vectors but do not switch")
    p.add_argument("--json", action="store_true", help="--status as JSON")


def cmd_reembed(args: argparse.Namespace, settings: Settings) -> int:
    if args.model and not args.dim:
        print("error: --dim is required with --model", file=sys.stderr)
        return 2

    def report(line: str) -> None:
        print(line, flush=True)

    async def work(runtime: Runtime) -> None:
        try:
            await _run(runtime)
        except EmbeddingError as exc:  # the new model cannot be reached or answers wrongly: a sentence
            raise ValueError(f"the new model failed: {exc}") from exc

    async def _run(runtime: Runtime) -> None:
        # Here, not at the top: it imports the chunker (LlamaIndex, seconds), and every command's parser
        # imports this module.
        from rag_server.generations import reembed

        if args.status:
            _print_status(await reembed.status(runtime), args.json)
        elif args.rollback:
            await reembed.rollback(runtime, report)
        elif args.finalize:
            await reembed.finalize(runtime, report)
        else:
            spec = reembed.ModelSpec(
                args.provider or settings.embedding_provider, args.model, args.dim, args.base_url
            )

            async def evaluate(generation: Generation) -> None:
                await _evaluate(settings, await active_generation(runtime.pool), generation, args.eval)

            await reembed.run_reembed(
                runtime,
                spec,
                report,
                wait=not args.no_wait,
                do_switch=not args.no_switch,
                evaluate=evaluate if args.eval else None,
            )

    return run_with_runtime(settings, work)


def _print_status(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        progress = "" if r["state"] == "dropped" else f"  {r['vectors']}/{r['chunks']} chunks"
        queued = f"  {r['queued_messages']} queued" if r["queued_messages"] else ""
        error = f"  last error: {r['error']}" if r["error"] else ""
        model = f"{r['provider']} {r['model']} ({r['dim']}-d)"
        print(f"{r['id']:>3}  {r['state']:<8}  {model}{progress}{queued}{error}")


async def _evaluate(settings: Settings, old: Generation, new: Generation, dataset: Path) -> None:
    """nDCG@10 of the vector leg with the searched model and with the new one on a BEIR dataset (each
    in an eval database of its own, built by evaluation/runner with that model)."""
    from rag_server.evaluation.runner import EvalOptions, run_eval

    options = EvalOptions(dataset=dataset, modes=["vector"], quiet=True)
    for label, g in (("old", old), ("new", new)):
        eval_settings = model_settings(settings, g.provider, g.model, g.dim, g.base_url)
        result = await run_eval(eval_settings, options)
        ndcg = result["modes"]["vector"]["ndcg@10"]
        print(f"eval {dataset.name}: {label} model {g.model} (generation {g.id}): nDCG@10 {ndcg:.4f}")
    sys.stdout.flush()
