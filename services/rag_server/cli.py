"""`rag-server` command line: one entry point for the server, the worker and the tools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Only what main() needs before it catches the stop signals: pydantic, the settings and asyncio (~0.4 s
# on a loaded host) are imported after, so a stop during their imports is caught too.
from rag_server.infra.lifetime import StoppedBeforeReady, StopSignals

if TYPE_CHECKING:
    from rag_server.config import Settings

logger = logging.getLogger("rag_server")

Handler = Callable[[argparse.Namespace, "Settings"], int]


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.infra.database import resolve_database_url
    from rag_server.infra.migrations import current_revision, upgrade_to_head

    url = resolve_database_url(settings)
    upgrade_to_head(url, settings)
    print(f"database at revision {current_revision(url, settings)}")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rag_server.infra.capabilities import capability_report
    from rag_server.infra.runtime import open_runtime

    async def report() -> dict[str, object]:
        async with open_runtime(settings, migrate=True, read_replicas=True) as runtime:
            found: dict[str, object] = dict(await capability_report(runtime.pool))
            # RAG_READ_DATABASE_URLS: each replica's state; "degraded" when one serves no reads.
            if runtime.reads is not None:
                found["read_replicas"] = {
                    "summary": runtime.reads.summary()[1],
                    "replicas": [vars(s) for s in runtime.reads.status()],
                }
            return found

    print(json.dumps(asyncio.run(report()), indent=2))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.api.server import serve_api
    from rag_server.infra.embeddings import check_local_model

    check_local_model(settings)
    serve_api(settings, args.host, args.port, args.stop_signals)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rag_server.infra.embeddings import check_local_model
    from rag_server.ingestion.worker import run_worker

    if args.concurrency:
        settings = settings.model_copy(update={"worker_concurrency": args.concurrency})
    if args.parent is not None:
        from rag_server.infra.lifetime import die_with_parent

        die_with_parent(args.parent, signal.SIGTERM)  # `up` killed by -9 (or the OOM killer) runs no stop
    check_local_model(settings)
    asyncio.run(run_worker(settings, args.stop_signals))
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion.cli import ingest_paths

    base_url = args.url or f"http://{settings.host}:{settings.port}"
    return ingest_paths(
        args.paths,
        base_url=base_url,
        wait=not args.no_wait,
        skip_duplicates=not args.force,
        collection=args.collection,
        api_key=settings.api_key_value(),
        metadata=args.metadata,
        replace=args.replace,
        name=args.name,
    )


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.mcp_server.stdio import run_stdio

    return run_stdio(settings)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rag_server.infra.backup import backup, backup_target
    from rag_server.infra.database import resolve_database_url

    backup_target(args.file)  # a bad FILE is refused before the embedded server is started for it
    url = resolve_database_url(settings)  # DATABASE_URL, else the embedded server (started if needed)
    asyncio.run(backup(url, settings, args.file, report=print))
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rag_server.infra.backup import restore
    from rag_server.infra.backup_archive import check_source
    from rag_server.infra.database import resolve_database_url

    check_source(args.file)
    url = resolve_database_url(settings)  # an empty RAG_DATA_DIR: the embedded cluster is created
    asyncio.run(restore(url, settings, args.file, force=args.force, report=print))
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.infra.runtime import Runtime, run_with_runtime
    from rag_server.ingestion.integrity import check_integrity

    ok: list[bool] = []

    async def work(runtime: Runtime) -> None:
        report = await check_integrity(runtime.pool, settings.queue_name, quiescent=args.quiescent)
        print("\n".join(report.lines()))
        ok.append(report.ok)

    status = run_with_runtime(settings, work)
    return status or (0 if all(ok) else 1)


def cmd_pack(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.infra.runtime import Runtime, run_with_runtime
    from rag_server.retrieval import bm25_packs
    from rag_server.retrieval.service import bm25_engine

    async def work(runtime: Runtime) -> None:
        if await bm25_engine(runtime) != "native":
            print("the BM25 engine is pg_search: it has no pack")
            return
        if args.status:
            state = await bm25_packs.pack_state(runtime.pool)
            print(f"pack: {state.describe()}; {'due' if state.due(settings) else 'not due'} now")
            return
        packed = await bm25_packs.pack(runtime.pool, if_due=settings if args.if_due else None)
        state = await bm25_packs.pack_state(runtime.pool)
        print(("packed: " if packed else "not packed now: ") + state.describe())

    return run_with_runtime(settings, work)


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.infra.runtime import Runtime, run_with_runtime
    from rag_server.ingestion.retention import prune

    async def work(runtime: Runtime) -> None:
        result = await prune(
            runtime.pool,
            runtime.queue,
            settings,
            dry_run=args.dry_run,
            task_days=args.task_days,
            chat_days=args.chat_days,
        )
        for why in result.skipped:
            print(f"skipped: {why}")
        print(result.line())
        if result.busy:
            print("stopped: another process is pruning now (a worker prunes every RAG_RETENTION_INTERVAL_S)")

    return run_with_runtime(settings, work)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.infra.embeddings import check_local_model
    from rag_server.stack import run_stack

    check_local_model(settings)  # before the database, the worker and the server start
    run_stack(settings, args.host, args.port, args.stop_signals)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rag_server.cli_args import whole_number
    from rag_server.config import get_settings

    parser = argparse.ArgumentParser(prog="rag-server", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    settings_defaults = get_settings()

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    for name, handler, help_text in (
        ("up", cmd_up, "run the whole stack: database, migrations, worker and API server"),
        ("serve", cmd_serve, "run the API server (applies migrations first)"),
    ):
        p = add(name, handler, help_text)
        p.set_defaults(stops_in_order=True, creates_database=True)
        p.add_argument("--host", default=settings_defaults.host)
        p.add_argument("--port", type=whole_number(1, 65535), default=settings_defaults.port)

    p = add("worker", cmd_worker, "run an ingestion worker (applies migrations first)")
    p.set_defaults(stops_in_order=True, creates_database=True)
    p.add_argument("--concurrency", type=int, default=None, help="tasks processed at once")
    p.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)  # `up`: stop when it dies
    p = add("ingest", cmd_ingest, "upload files/folders (recursive) to a running server and wait for them")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--url", default=None, help="server URL (default http://RAG_HOST:RAG_PORT)")
    p.add_argument("--no-wait", action="store_true", help="print the batch ids instead of waiting")
    p.add_argument("--force", action="store_true", help="upload files even if already stored")
    p.add_argument("--collection", default="default", help="the collection (name or id) to upload into")
    p.add_argument(
        "--metadata", default=None, help='a JSON object given to every file, e.g. \'{"team": "x"}\''
    )
    p.add_argument("--replace", action="store_true", help="a file named like a stored document replaces it")
    p.add_argument(
        "--name",
        default=None,
        help="the document's name for the one file given, e.g. guides/README.md (default: the file's name)",
    )
    add("mcp", cmd_mcp, "serve the MCP tools (search, ask, collections, documents) on stdio")
    p = add("backup", cmd_backup, "write the whole database to FILE (pg_dump, a consistent snapshot)")
    p.add_argument("file", type=Path, metavar="FILE", help="the backup file (an existing one is replaced)")
    p = add("restore", cmd_restore, "restore a backup FILE into an empty database (then migrate)")
    p.set_defaults(creates_database=True)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace a database that already holds data")
    add("migrate", cmd_migrate, "apply database migrations up to the latest").set_defaults(
        creates_database=True
    )
    add("doctor", cmd_doctor, "print the database capability report")
    p = add("check", cmd_check, "verify the invariants (tasks, chunks, BM25, queue, chat); exit 1 if broken")
    p.add_argument("--quiescent", action="store_true", help="also fail on tasks still queued or processing")
    p = add("pack", cmd_pack, "rebuild the native BM25 engine's pack (workers do it when due)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--if-due", action="store_true", help="only when RAG_BM25_PACK_* say it is due")
    when.add_argument("--status", action="store_true", help="only print its state (and whether it is due)")
    p = add(
        "prune",
        cmd_prune,
        "remove finished batches, tasks, dead messages, idle chats past their retention (workers: hourly)",
    )
    p.add_argument("--dry-run", action="store_true", help="only count what would be removed, per kind")
    days = whole_number(0, 36_500)
    p.add_argument(
        "--task-days",
        type=days,
        default=None,
        metavar="N",
        help="instead of RAG_TASK_RETENTION_DAYS (0: keep)",
    )
    p.add_argument(
        "--chat-days",
        type=days,
        default=None,
        metavar="N",
        help="instead of RAG_CHAT_RETENTION_DAYS (0: keep)",
    )
    from rag_server.access.cli import register_keys_command
    from rag_server.collections.cli import register_collections_command
    from rag_server.evaluation.commands import register_eval_commands
    from rag_server.generations.cli import register_reembed_command
    from rag_server.ingestion.documents_cli import register_documents_command
    from rag_server.ingestion.operations_cli import register_operations_commands
    from rag_server.porting.cli import register_porting_commands
    from rag_server.retrieval.cli import register_search_command

    register_search_command(sub)
    register_collections_command(sub)
    register_documents_command(sub)
    register_keys_command(sub)
    register_operations_commands(sub)
    register_eval_commands(sub)
    register_porting_commands(sub)  # import chroma|pgvector|jsonl, export
    register_reembed_command(sub)
    return parser


def load_settings() -> Settings:
    """The settings; a variable they refuse (RAG_PORT=abc) is one `error:` line naming it, exit 2."""
    from pydantic import ValidationError

    from rag_server.cli_args import refusal
    from rag_server.config import Settings, env_name, get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        labels = {name: env_name(name) for name in Settings.model_fields}
        print(f"error: {refusal(exc, Settings, labels)} (set in the environment or .env)", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> None:
    # First: the parser's imports take a second or more, and a supervisor may stop `worker`, `serve` or
    # `up` during them (or during migrations, the model's load) just as well as later.
    signals = StopSignals().install()
    try:
        load_settings()  # before the parser, whose defaults come from the settings
        args = build_parser().parse_args(argv)
    except BaseException:  # -h, a bad argument: the caller's handlers back (a test calls main itself)
        signals.restore()
        raise
    from rag_server.cli_args import not_utf8

    if (name := not_utf8(args)) is not None:
        signals.restore()
        print(
            f"error: {name.replace('_', '-')} is not UTF-8 text (typed in another encoding?)", file=sys.stderr
        )
        sys.exit(2)
    from rag_server.config import ConfigError, get_settings
    from rag_server.infra.logs import configure_logging

    configure_logging(get_settings(), verbose=args.verbose)
    from rag_server.client import ClientError
    from rag_server.infra.backup_archive import BackupError
    from rag_server.infra.capabilities import SchemaMismatchError

    if not getattr(args, "creates_database", False):
        from rag_server.infra.embedded_postgres import may_create_cluster

        may_create_cluster.set(False)
    try:
        if getattr(args, "stops_in_order", False):
            args.stop_signals = signals
        else:
            signals.restore()  # a short command: the usual Ctrl-C and SIGTERM
        code = args.handler(args, get_settings())
        sys.stdout.flush()  # a reader gone early (`| head`) shows here, not at the interpreter's exit
        sys.exit(code)
    except BrokenPipeError:
        # As `ls | head`: quiet, with the shell's status for SIGPIPE; stdout to /dev/null so that the
        # interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    except (SchemaMismatchError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ClientError, BackupError) as exc:  # a running server's answer; backup/restore refusals
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except StoppedBeforeReady:
        logger.info("rag-server %s stopped before it was ready", args.command)
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from rag_server.infra.database import unreachable_database

        if (reason := unreachable_database(exc)) is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":  # `python -m rag_server.cli` runs it, as `python -m rag_server` does
    main()
