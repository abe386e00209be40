"""`rag-server documents list|delete`: a collection's documents straight on the database (open_runtime,
the system scope), no server needed. A deletion shows what it matches first and asks (or needs --yes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, get_args
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from rag_server.cli_args import refusal, whole_number
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime, run_with_runtime
from rag_server.ingestion.models import DeleteDocuments, Document, DocumentSort, DocumentStatus
from rag_server.retrieval.models import MetadataMatch, TextMatch

LIMIT = whole_number(1, 10_000)
_METADATA = (
    'a JSON object every key of which must match, e.g. \'{"source": "old.pdf"}\' or, with Chroma\'s '
    'operators, \'{"year": {"$lt": 2020}}\''
)
_TEXT = (
    "a JSON object of Chroma's where_document, on the documents' chunks: '{\"$contains\": \"draft\"}', "
    "$not_contains, $and, $or"
)


def register_documents_command(sub: Any) -> None:
    p = sub.add_parser("documents", help="list or delete a collection's documents", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="documents, newest first")
    listing.set_defaults(handler=cmd_list)
    listing.add_argument("--collection", default="default", help="name or id (default: default)")
    listing.add_argument("--status", choices=get_args(DocumentStatus), default=None)
    listing.add_argument("--type", dest="file_type", default=None, help="a file type: pdf, txt...")
    listing.add_argument("--name", default=None, help="part of the name, any case")
    listing.add_argument("--metadata", default=None, help=_METADATA)
    listing.add_argument("--text", default=None, help=_TEXT)
    listing.add_argument("--sort", choices=get_args(DocumentSort), default="uploaded")
    listing.add_argument("--limit", type=LIMIT, default=100)
    delete = actions.add_parser(
        "delete",
        help="delete the documents that ids, --metadata and/or --text name",
        description="Delete a collection's documents (bytes, chunks, running tasks) that DOCUMENT_IDs, "
        "--metadata, --text or several name. It lists them first, then asks; --yes does not ask.",
    )
    delete.set_defaults(handler=cmd_delete)
    delete.add_argument("ids", nargs="*", type=UUID, metavar="DOCUMENT_ID")
    delete.add_argument("--collection", default="default", help="name or id (default: default)")
    delete.add_argument("--metadata", default=None, help=_METADATA)
    delete.add_argument("--text", default=None, help=_TEXT)
    delete.add_argument("--yes", action="store_true", help="delete without asking")
    delete.add_argument("--dry-run", action="store_true", help="only list what would be deleted")


def _match(flag: str, adapter: TypeAdapter[Any], form: str, value: str | None) -> Any:
    """A match option's JSON, checked as the API checks it; a refusal is one `error:` line."""
    if value is None:
        return None
    try:
        return adapter.validate_python(json.loads(value))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: {flag} is not JSON ({exc.msg}): give {form}") from None
    except ValidationError as exc:
        raise SystemExit(f"error: {flag}: {refusal(exc)}") from None


def _metadata(value: str | None) -> MetadataMatch | None:
    return _match("--metadata", TypeAdapter(MetadataMatch), _METADATA, value)


def _text(value: str | None) -> TextMatch | None:
    return _match("--text", TypeAdapter(TextMatch), _TEXT, value)


def _count(n: int) -> str:
    return f"{n} document{'' if n == 1 else 's'}"


def _print(documents: list[Document]) -> None:
    print(f"{'id':<36}  {'status':<10} {'chunks':>6} {'type':<5} name")
    for d in documents:
        print(f"{d.id!s:<36}  {d.status:<10} {d.chunk_count:>6} {d.file_type:<5} {d.filename}")


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.collections.store import resolve_ids
    from rag_server.ingestion.documents import list_documents

    metadata, text = _metadata(args.metadata), _text(args.text)

    async def work(runtime: Runtime) -> None:
        listing = await list_documents(
            runtime.pool,
            limit=args.limit,
            sort=args.sort,
            descending=args.sort in ("uploaded", "chunks", "size"),
            status=args.status,
            file_type=args.file_type,
            collection_ids=await resolve_ids(runtime.pool, [args.collection]),
            name=args.name,
            metadata=metadata,
            text=text,
        )
        _print(listing.items)
        print(f"{len(listing.items)} of {listing.total} documents")

    return run_with_runtime(settings, work)


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.collections.store import resolve_ids
    from rag_server.ingestion.documents import delete_matching, matching_documents

    try:
        request = DeleteDocuments(
            collection=args.collection,
            ids=args.ids or None,
            metadata=_metadata(args.metadata),
            text=_text(args.text),
        )
    except ValidationError as exc:
        labels = {
            "ids": "DOCUMENT_ID",
            "metadata": "--metadata",
            "text": "--text",
            "collection": "--collection",
        }
        print(f"error: {refusal(exc, DeleteDocuments, labels)}", file=sys.stderr)
        return 1
    if not (args.yes or args.dry_run or sys.stdin.isatty()):
        print(
            "error: nothing to ask here (no terminal): add --yes to delete, or --dry-run to list",
            file=sys.stderr,
        )
        return 1

    async def work(runtime: Runtime) -> int:
        (collection_id,) = await resolve_ids(runtime.pool, [request.collection])
        chosen = await matching_documents(runtime.pool, collection_id, request)
        _print(chosen)
        if not chosen:
            print("no document matches: nothing deleted")
            return 0
        if args.dry_run:
            print(f"{_count(len(chosen))} would be deleted (--dry-run)")
            return 0
        if not args.yes:
            answer = await asyncio.to_thread(input, f"Delete {_count(len(chosen))}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        # Only what was shown, and only if it still matches.
        shown = request.model_copy(update={"ids": [d.id for d in chosen]})
        result = await delete_matching(runtime.pool, collection_id, shown)
        gone = f" ({len(result.not_deleted)} gone or changed meanwhile)" if result.not_deleted else ""
        print(f"deleted {_count(len(result.deleted))}{gone}")
        return 0

    return run_with_runtime(settings, work)
