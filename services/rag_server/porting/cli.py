"""`rag-server import chroma|pgvector|jsonl` and `rag-server export`: straight on the database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime, run_with_runtime
from rag_server.paths import input_file_problem, input_folder_problem, output_file_problem

GROUP_HELP = (
    "the metadata key naming a record's document (default: the first of ref_doc_id, document_id, doc_id, "
    "source, file_path, file_name, filename); 'none': one document per record"
)


def register_porting_commands(sub: Any) -> None:
    p = sub.add_parser(
        "import", help="import documents from Chroma, pgvector tables or a JSONL export", description=__doc__
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="SOURCE")
    chroma = kinds.add_parser("chroma", help="a Chroma persistent directory (needs the 'chroma' extra)")
    chroma.set_defaults(handler=cmd_import_chroma, creates_database=True)
    chroma.add_argument("path", type=Path, metavar="PATH")
    chroma.add_argument(
        "--chroma-collection", default=None, help="the Chroma collection (if it holds several)"
    )
    chroma.add_argument(
        "--take-over",
        action="store_true",
        help="update the documents another Chroma store's collection of this name imported into the "
        "collection with the same keys (else refused)",
    )
    pg = kinds.add_parser("pgvector", help="a LlamaIndex PGVectorStore or LangChain PGVector table")
    pg.set_defaults(handler=cmd_import_pgvector, creates_database=True)
    pg.add_argument("--from-url", required=True, help="the source database's URL")
    pg.add_argument("--table", required=True, help="data_<name> (LlamaIndex) or langchain_pg_embedding")
    pg.add_argument("--source-collection", default=None, help="the LangChain collection (if several)")
    for q in (chroma, pg):
        q.add_argument(
            "--embedding-model",
            default=None,
            help="the model that made the stored vectors: reused when it is the searched generation's",
        )
        q.add_argument("--group-by", default=None, metavar="KEY", help=GROUP_HELP)
    jsonl = kinds.add_parser("jsonl", help="a file written by `rag-server export`")
    jsonl.set_defaults(handler=cmd_import_jsonl, creates_database=True)
    jsonl.add_argument("file", type=Path, metavar="FILE")
    for q in (chroma, pg, jsonl):
        q.add_argument("--collection", default="default", help="into this collection (created if missing)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("export", help="write a collection's documents and chunks to a JSONL file")
    e.set_defaults(handler=cmd_export)
    e.add_argument("file", type=Path, metavar="FILE")
    e.add_argument("--collection", default="default", help="the collection (name or id)")
    e.add_argument("--with-vectors", action="store_true", help="include each chunk's embedding")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_import_chroma(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.porting.chroma import CHROMA_FOLDER
    from rag_server.porting.service import import_chroma

    async def work(runtime: Runtime) -> None:
        await import_chroma(
            runtime,
            args.path,
            collection=args.collection,
            chroma_collection=args.chroma_collection,
            embedding_model=args.embedding_model,
            group_by=args.group_by,
            quiet=args.quiet,
            take_over=args.take_over,
        )

    return _checked(settings, work, input_folder_problem(args.path, CHROMA_FOLDER))


def cmd_import_pgvector(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.porting.service import import_pgvector

    async def work(runtime: Runtime) -> None:
        await import_pgvector(
            runtime,
            args.from_url,
            args.table,
            collection=args.collection,
            source_collection=args.source_collection,
            embedding_model=args.embedding_model,
            group_by=args.group_by,
            quiet=args.quiet,
        )

    return run_with_runtime(settings, work)


def cmd_import_jsonl(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.porting.jsonl import EXPORT_FILE
    from rag_server.porting.service import import_jsonl_file

    async def work(runtime: Runtime) -> None:
        await import_jsonl_file(runtime, args.file, collection=args.collection, quiet=args.quiet)

    return _checked(settings, work, input_file_problem(args.file, EXPORT_FILE))


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.porting.service import export_jsonl

    async def work(runtime: Runtime) -> None:
        await export_jsonl(
            runtime, args.collection, args.file, with_vectors=args.with_vectors, quiet=args.quiet
        )

    return _checked(settings, work, output_file_problem(args.file))


def _checked(settings: Settings, work: Any, problem: str | None) -> int:
    """A wrong path is a sentence before the database is even opened (a directory would otherwise fail
    mid-way with IsADirectoryError)."""
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return run_with_runtime(settings, work)
