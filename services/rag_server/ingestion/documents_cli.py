"""`rag-server documents list|show|update|delete`: a collection's documents straight on the database
(open_runtime, the system scope), no server needed. An update or a deletion shows what it matches first and
asks (or needs --yes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TypeVar, get_args
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from rag_server.cli_args import refusal, whole_number
from rag_server.config import Settings
from rag_server.errors import InvalidInputError, NotFoundError
from rag_server.infra.runtime import Runtime, run_with_runtime
from rag_server.ingestion.metadata import check_metadata
from rag_server.ingestion.models import (
    DeleteDocuments,
    Document,
    DocumentSelection,
    DocumentSort,
    DocumentStatus,
    MetadataUpdate,
)
from rag_server.retrieval.models import MetadataMatch, TextMatch

LIMIT = whole_number(1, 10_000)
CHUNKS = whole_number(1, 200)
OFFSET = whole_number(0, 2**31 - 1)
_METADATA = (
    'a JSON object every key of which must match, e.g. \'{"source": "old.pdf"}\' or, with Chroma\'s '
    'operators, \'{"year": {"$lt": 2020}}\''
)
_TEXT = (
    "a JSON object of Chroma's where_document, on the documents' chunks: '{\"$contains\": \"draft\"}', "
    "$not_contains, $and, $or"
)
_SET = (
    "a JSON object: its keys are set on each document's metadata (a null removes one), e.g. '{\"reviewed\": "
    "true}'; with --replace it becomes the whole metadata"
)
# Named documents that do not exist are an error, as a TASK_ID or a --batch that is none; a selection that
# matches nothing is not (as a listing of nothing, or `tasks retry --collection C` with nothing to retry).
_EXITS = (
    "A DOCUMENT_ID that is not one of the collection's documents is an error (exit 1, nothing {done}); "
    "--metadata or --text matching no document (or none of the ids) is not (nothing {done}, exit 0)."
)
_LABELS = {"ids": "DOCUMENT_ID", "metadata": "--metadata", "text": "--text", "collection": "--collection"}

Selection = TypeVar("Selection", bound=DocumentSelection)


class UpdateSelection(DocumentSelection):
    action = "update"


def register_documents_command(sub: Any) -> None:
    p = sub.add_parser(
        "documents",
        help="list, show (with their chunks), update the metadata of, or delete a collection's documents",
        description=__doc__,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="documents, newest first")
    listing.set_defaults(handler=cmd_list)
    listing.add_argument("--collection", default="default", help="name or id (default: default)")
    listing.add_argument("--status", choices=get_args(DocumentStatus), default=None)
    listing.add_argument("--type", dest="file_type", default=None, help="a file type: pdf, txt...")
    listing.add_argument("--name", default=None, help="part of the name, any case, accents or none")
    listing.add_argument("--metadata", default=None, help=_METADATA)
    listing.add_argument("--text", default=None, help=_TEXT)
    listing.add_argument("--sort", choices=get_args(DocumentSort), default="uploaded")
    listing.add_argument("--limit", type=LIMIT, default=100)
    show = actions.add_parser(
        "show",
        help="a document's details and its chunks, in order (what search and chat cite)",
        description="A document's details and a page of its chunks in order, with their page, slide or "
        "rows and headings; --text keeps the chunks that match it.",
    )
    show.set_defaults(handler=cmd_show)
    show.add_argument("id", type=UUID, metavar="DOCUMENT_ID")
    show.add_argument("--text", default=None, help=_TEXT.replace("the documents' chunks", "each chunk"))
    show.add_argument("--offset", type=OFFSET, default=0, help="chunks (or matches) to skip")
    show.add_argument("--limit", type=CHUNKS, default=20, help="chunks to show (default 20, at most 200)")
    update = actions.add_parser(
        "update",
        help="set metadata on the documents that ids, --metadata and/or --text name",
        description="Set metadata (--set) on a collection's documents that DOCUMENT_IDs, --metadata, "
        "--text or several name, in one transaction; search filters see it at once. It lists them "
        f"first, then asks; --yes does not ask. {_EXITS.format(done='updated')}",
    )
    update.set_defaults(handler=cmd_update)
    _selection_arguments(update)
    update.add_argument("--set", dest="values", required=True, metavar="JSON", help=_SET)
    update.add_argument("--replace", action="store_true", help="--set becomes the whole metadata")
    _confirmation_arguments(update)
    delete = actions.add_parser(
        "delete",
        help="delete the documents that ids, --metadata and/or --text name",
        description="Delete a collection's documents (bytes, chunks, running tasks) that DOCUMENT_IDs, "
        "--metadata, --text or several name. It lists them first, then asks; --yes does not ask. "
        f"{_EXITS.format(done='deleted')}",
    )
    delete.set_defaults(handler=cmd_delete)
    _selection_arguments(delete)
    _confirmation_arguments(delete)


def _selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="*", type=UUID, metavar="DOCUMENT_ID")
    p.add_argument("--collection", default="default", help="name or id (default: default)")
    p.add_argument("--metadata", default=None, help=_METADATA)
    p.add_argument("--text", default=None, help=_TEXT)


def _confirmation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true", help="do it without asking")
    p.add_argument("--dry-run", action="store_true", help="only list the documents it would change")


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


def _count(n: int, noun: str = "document") -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion.documents import get_document
    from rag_server.retrieval.store import document_chunks_page

    text = _text(args.text)

    async def work(runtime: Runtime) -> None:
        doc = await get_document(runtime.pool, args.id)
        total, chunks = await document_chunks_page(
            runtime.pool, doc.id, doc.chunk_count, args.offset, args.limit, text
        )
        facts = {
            "id": str(doc.id),
            "name": doc.filename,
            "status": f"{doc.status}, version {doc.version}, {_count(doc.chunk_count, 'chunk')}",
            "type": f"{doc.file_type} ({doc.content_type}), {doc.size_bytes} bytes",
            "metadata": json.dumps(doc.metadata, ensure_ascii=False),
            "error": doc.error,
        }
        for label, value in facts.items():
            if value is not None:
                print(f"{label:<9} {value}")
        for chunk in chunks:
            place = (
                chunk.location.label
                if chunk.location
                else (f"page {chunk.page}" if chunk.page is not None else None)
            )
            head = " · ".join(filter(None, [f"chunk {chunk.chunk_index + 1}", place, chunk.heading_path]))
            print(f"\n[{head}]\n{chunk.text}")
        shown = f"{args.offset + 1}-{args.offset + len(chunks)} of {total}" if chunks else f"none of {total}"
        print(f"\n{'matching ' if text else ''}chunks {shown}")

    return run_with_runtime(settings, work)


def _selection(args: argparse.Namespace, model: type[Selection]) -> Selection:
    """The documents the arguments name, checked as the API checks them; a refusal is one `error:` line.
    Without a terminal to ask on, --yes or --dry-run is needed."""
    try:
        selection = model(
            collection=args.collection,
            ids=args.ids or None,
            metadata=_metadata(args.metadata),
            text=_text(args.text),
        )
    except ValidationError as exc:
        raise SystemExit(f"error: {refusal(exc, model, _LABELS)}") from None
    if not (args.yes or args.dry_run or sys.stdin.isatty()):
        raise SystemExit(
            f"error: nothing to ask here (no terminal): add --yes to {model.action}, or --dry-run to list"
        )
    return selection


async def _confirmed(
    runtime: Runtime, selection: Selection, args: argparse.Namespace, done: str
) -> tuple[UUID, Selection] | int:
    """The collection, and the selection narrowed to the documents shown and confirmed (so only those,
    and only if they still match, are changed); or the exit code when nothing is to be changed."""
    from rag_server.collections.store import resolve_ids
    from rag_server.ingestion.documents import matching_documents

    (collection_id,) = await resolve_ids(runtime.pool, [selection.collection])
    chosen = await matching_documents(runtime.pool, collection_id, selection)
    if selection.ids:
        await _check_named(runtime, collection_id, selection, chosen, done)
    _print(chosen)
    if not chosen:
        print(f"no document matches: nothing {done}")
        return 0
    if args.dry_run:
        print(f"{_count(len(chosen))} would be {done} (--dry-run)")
        return 0
    if not args.yes:
        question = f"{selection.action.capitalize()} {_count(len(chosen))}? [y/N] "
        if not await asyncio.to_thread(_yes, question):
            print(f"nothing {done}")
            return 1
    return collection_id, selection.model_copy(update={"ids": [d.id for d in chosen]})


async def _check_named(
    runtime: Runtime, collection_id: UUID, selection: Selection, chosen: list[Document], done: str
) -> None:
    """A DOCUMENT_ID that is no document of the collection is a NotFoundError (the CLI's `error:` line,
    exit 1), nothing changed: a mistyped or already deleted id printed "no document matches", exit 0,
    as if the command had done what it was asked. An id of the collection's that --metadata or --text
    leaves out is a selection that matches nothing, as a filter alone (exit 0)."""
    from rag_server.ingestion.documents import matching_documents

    found = {d.id for d in chosen}
    if selection.metadata is not None or selection.text is not None:
        named = DocumentSelection(collection=selection.collection, ids=selection.ids)
        found = {d.id for d in await matching_documents(runtime.pool, collection_id, named)}
    missing = [str(i) for i in dict.fromkeys(selection.ids or []) if i not in found]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        what = f"document {missing[0]}" if len(missing) == 1 else f"documents {', '.join(missing[:3])}{more}"
        raise NotFoundError(f"no {what} in the collection {selection.collection!r}: nothing {done}")


def _yes(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:  # Ctrl-D: a no
        print()
        return False


def _changed(verb: str, count: int, missed: int) -> str:
    return f"{verb} {_count(count)}" + (f" ({missed} gone or changed meanwhile)" if missed else "")


def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion.metadata_edits import update_matching

    try:
        values = check_metadata(json.loads(args.values), "--set")
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --set is not JSON ({exc.msg}): give {_SET}") from None
    except InvalidInputError as exc:
        raise SystemExit(f"error: {exc}") from None
    update = MetadataUpdate(metadata=values, mode="replace" if args.replace else "merge")
    selection = _selection(args, UpdateSelection)

    async def work(runtime: Runtime) -> int:
        confirmed = await _confirmed(runtime, selection, args, "updated")
        if isinstance(confirmed, int):
            return confirmed
        result = await update_matching(runtime.pool, *confirmed, update)
        print(_changed("updated", len(result.updated), len(result.not_updated)))
        return 0

    return run_with_runtime(settings, work)


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion.deletion import delete_matching

    selection = _selection(args, DeleteDocuments)

    async def work(runtime: Runtime) -> int:
        confirmed = await _confirmed(runtime, selection, args, "deleted")
        if isinstance(confirmed, int):
            return confirmed
        result = await delete_matching(runtime.pool, *confirmed)
        print(_changed("deleted", len(result.deleted), len(result.not_deleted)))
        return 0

    return run_with_runtime(settings, work)
