"""`rag-server collections list|create|delete`: straight on the database (open_runtime), no server needed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rag_server.config import Settings
from rag_server.infra.runtime import run_with_runtime


def register_collections_command(sub: Any) -> None:
    p = sub.add_parser("collections", help="list, create or delete collections", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every collection with its document count").set_defaults(handler=cmd_list)
    create = actions.add_parser("create", help="a new, empty collection")
    create.set_defaults(handler=cmd_create, creates_database=True)
    create.add_argument("name", help="lower-case letters, digits, '-' and '_' (up to 63)")
    create.add_argument("--description", default="")
    create.add_argument(
        "--hybrid-alpha",
        type=float,
        default=None,
        help="its fusion weight of the vector leg, 0..1 (default: RAG_HYBRID_ALPHA)",
    )
    delete = actions.add_parser("delete", help="delete a collection (refused while it holds documents)")
    delete.set_defaults(handler=cmd_delete)
    delete.add_argument("name", help="name or id")
    delete.add_argument("--force", action="store_true", help="delete its documents, chunks and tasks too")


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.collections.store import list_collections

    async def work(runtime: Any) -> None:
        listing = await list_collections(runtime.pool, limit=10_000)
        print(f"{'name':<32} {'documents':>9}  {'alpha':>5}  {'id':<36}  description")
        for c in listing.items:
            alpha = "-" if c.hybrid_alpha is None else f"{c.hybrid_alpha:g}"
            print(f"{c.name:<32} {c.document_count:>9}  {alpha:>5}  {c.id!s:<36}  {c.description}")

    return run_with_runtime(settings, work)


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from rag_server.cli_args import refusal
    from rag_server.collections.models import CreateCollection
    from rag_server.collections.store import create_collection

    try:  # before opening the database: a bad name is refused with its rule, in one line
        body = CreateCollection(name=args.name, description=args.description, hybrid_alpha=args.hybrid_alpha)
    except ValidationError as exc:
        labels = {"name": "collection name", "description": "--description", "hybrid_alpha": "--hybrid-alpha"}
        print(f"error: {refusal(exc, CreateCollection, labels)}", file=sys.stderr)
        return 1

    async def work(runtime: Any) -> None:
        created = await create_collection(runtime.pool, body)
        print(f"created collection {created.name} ({created.id})")

    return run_with_runtime(settings, work)


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.collections.store import CollectionNotEmptyError, delete_collection
    from rag_server.errors import ConflictError

    async def work(runtime: Any) -> None:
        try:
            await delete_collection(runtime.pool, runtime.queue, args.name, force=args.force)
        except CollectionNotEmptyError as exc:  # the API's advice names force=true: here it is a flag
            raise ConflictError(exc.advice("--force")) from None
        print(f"deleted collection {args.name}")

    return run_with_runtime(settings, work)
