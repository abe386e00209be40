"""`rag-server search "text"`: run a search in-process (or against a running server with --url)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from typing import Any

from rag_server.config import Settings
from rag_server.errors import NotFoundError
from rag_server.retrieval.models import SearchRequest, SearchResponse


def register_search_command(sub: Any) -> None:
    p = sub.add_parser("search", help="search the chunks and print a table", description=__doc__)
    p.set_defaults(handler=cmd_search)
    p.add_argument("query")
    p.add_argument("--type", dest="search_type", choices=["hybrid", "vector", "bm25"], default="hybrid")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--fusion", choices=["rrf", "convex"], default=None, help="default: RAG_FUSION")
    p.add_argument("--alpha", type=float, default=None, help="convex weight of the vector leg (0..1)")
    p.add_argument(
        "--group-by",
        choices=["chunk", "document"],
        default="chunk",
        help="document: one hit per document (its best chunk), documents fused per document",
    )
    p.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        help="leave out hits whose cosine with the query is below this, unless they hold every word of it",
    )
    p.add_argument("--url", default=None, help="ask a running server instead of opening the database")
    p.add_argument("--json", action="store_true", help="print the raw JSON response")
    p.add_argument(
        "--collection",
        dest="collections",
        action="append",
        default=None,
        metavar="NAME",
        help="search this collection (name or id; repeat for several); default: default",
    )


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from rag_server.cli_args import refusal

    try:
        request = SearchRequest(
            query=args.query,
            top_k=args.top_k,
            search_type=args.search_type,
            fusion=args.fusion,
            collections=args.collections,
            alpha=args.alpha,
            group_by=args.group_by,
            min_similarity=args.min_similarity,
        )
    except ValidationError as exc:  # pydantic's many lines (and a link), as one
        labels = {
            "query": "QUERY",
            "top_k": "--top-k",
            "alpha": "--alpha",
            "collections": "--collection",
            "min_similarity": "--min-similarity",
        }
        print(f"error: {refusal(exc, SearchRequest, labels)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        response = (
            _via_http(args.url, request, settings.api_key_value())
            if args.url
            else asyncio.run(_in_process(settings, request))
        )
    except NotFoundError as exc:  # an unknown collection
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(response.model_dump_json(indent=2))
    else:
        print(format_table(response))
    return 0


async def _in_process(settings: Settings, request: SearchRequest) -> SearchResponse:
    from rag_server.infra.embeddings import EmbedderRole
    from rag_server.infra.runtime import open_runtime
    from rag_server.retrieval.service import search

    # A floor compares vectors: a BM25 search under one embeds its query too.
    alone = request.search_type == "bm25" and request.min_similarity is None
    load: EmbedderRole | None = None if alone else "queries"
    async with open_runtime(settings, migrate=True, load_embedder=load) as rt:
        return await search(rt, request)


def _via_http(url: str, request: SearchRequest, api_key: str | None) -> SearchResponse:
    from rag_server.client import Client, ClientError

    body = request.model_dump(mode="json", exclude={"query"}, exclude_none=True)
    with Client(url, api_key=api_key) as client:
        try:
            return client.search(request.query, **body)
        except ClientError as exc:
            if exc.status == 404:
                raise NotFoundError(str(exc)) from None
            raise


def format_table(response: SearchResponse) -> str:
    lines = [f"{'#':>3} {'score':>8} {'vec':>5} {'bm25':>5}  {'document':<28} {'chunk':>5}  text"]
    for i, hit in enumerate(response.results, 1):
        vec = str(hit.vector.rank) if hit.vector else "-"
        bm25 = str(hit.bm25.rank) if hit.bm25 else "-"
        name = textwrap.shorten(hit.document_name, 28, placeholder="…")
        text = textwrap.shorten(" ".join(hit.text.split()), 70, placeholder="…")
        chunk = hit.chunk_index + 1  # counted from 1, as the web app and `documents show` do
        lines.append(f"{i:>3} {hit.score:>8.4f} {vec:>5} {bm25:>5}  {name:<28} {chunk:>5}  {text}")
    if not response.results:
        lines.append("    (no results)")
    timings = ", ".join(f"{k} {v:.1f}" for k, v in response.timings_ms.items())
    lines.append(f"{response.search_type}: {len(response.results)} results; ms: {timings}")
    return "\n".join(lines)
